-- Counts jobs of one visit's handler done, once per job id (a bit per job),
-- keeps their outputs, and settles the visit. Completions that arrive
-- together come in one call. A job outside the recorded enumeration is
-- refused, and not counted.
-- KEYS: hot done outputs
-- ARGV: seq slot at, then for each job: index has_output output
-- Returns JSON: {status, seq, state, refused}, where refused has a character
-- per job, in order: '1' for a job refused, '0' for one counted.
local hot = KEYS[1]
local seq, slot, at = ARGV[1], ARGV[2], ARGV[3]
local status = redis.call('HGET', hot, F.status)
if not status then return cjson.encode({}) end
local h = seq .. ':' .. slot
local c = redis.call('HMGET', hot, F.enumerated .. h, F.total .. h)
local total = tonumber(c[2] or '0')
local refused = {}
local counted = 0
for i = 4, #ARGV, 3 do
  local index = tonumber(ARGV[i])
  if c[1] ~= '1' or index >= total then
    refused[#refused + 1] = '1'
  else
    refused[#refused + 1] = '0'
    if redis.call('SETBIT', KEYS[2], index, 1) == 0 then
      if ARGV[i + 1] == '1' then redis.call('HSET', KEYS[3], index, ARGV[i + 2]) end
      counted = counted + 1
    end
  end
end
if counted > 0 then
  local done = redis.call('HINCRBY', hot, F.done .. h, counted)
  if done >= total then redis.call('HSET', hot, F.handler_finished .. h, at) end
end
local state = nil
if redis.call('HEXISTS', hot, F.state .. seq) == 1 then state = settle(hot, seq, at) end
return cjson.encode({
  status = status,
  seq = tonumber(redis.call('HGET', hot, F.seq)),
  state = state,
  refused = table.concat(refused),
})
