-- Counts a job done once per job id (a bit per job), keeps its output, and
-- settles its visit. A job outside the recorded enumeration is refused.
-- KEYS: hot done outputs
-- ARGV: seq slot index has_output output at
-- Returns JSON: {status, seq, state, refused}
local hot = KEYS[1]
local seq, slot, index = ARGV[1], ARGV[2], tonumber(ARGV[3])
local status = redis.call('HGET', hot, F.status)
if not status then return cjson.encode({}) end
local h = seq .. ':' .. slot
local c = redis.call('HMGET', hot, F.enumerated .. h, F.total .. h)
if c[1] ~= '1' or index >= tonumber(c[2] or '0') then
  return cjson.encode({status = status, seq = tonumber(redis.call('HGET', hot, F.seq)), refused = true})
end
if redis.call('SETBIT', KEYS[2], index, 1) == 0 then
  if ARGV[4] == '1' then redis.call('HSET', KEYS[3], index, ARGV[5]) end
  local done = redis.call('HINCRBY', hot, F.done .. h, 1)
  if done >= tonumber(c[2]) then redis.call('HSET', hot, F.handler_finished .. h, ARGV[6]) end
end
local state = nil
if redis.call('HEXISTS', hot, F.state .. seq) == 1 then state = settle(hot, seq, ARGV[6]) end
return cjson.encode({status = status, seq = tonumber(redis.call('HGET', hot, F.seq)), state = state})
