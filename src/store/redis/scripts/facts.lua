-- Gathers what admission decides on (rules::admission), in one read.
-- KEYS: hot done
-- ARGV: seq slot index (empty for an enumerate task)
-- Returns JSON: {status, seq, state, enumerated, job_done}
local hot = KEYS[1]
local h = ARGV[1] .. ':' .. ARGV[2]
local st = redis.call('HMGET', hot, F.status, F.seq, F.queued .. h, F.enumerated .. h, F.total .. h)
if not st[1] then return cjson.encode({}) end
local job_done = false
if ARGV[3] ~= '' then
  local index = tonumber(ARGV[3])
  -- A job outside the recorded enumeration is not this visit's to run.
  if st[4] ~= '1' or index >= tonumber(st[5] or '0') then
    job_done = true
  else
    job_done = redis.call('GETBIT', KEYS[2], index) == 1
  end
end
return cjson.encode({
  status = st[1],
  seq = tonumber(st[2]),
  state = redis.call('HGET', hot, F.state .. st[2]) or nil,
  enumerated = st[3] == '1',
  job_done = job_done,
})
