-- Changes a flow's status if it is still the one the rules decided from (a
-- compare-and-set), and records the command in the flow's history. Its
-- indexes follow in a second step (index_settle.lua).
-- KEYS: hot parked commands
-- ARGV: from to at command
-- Returns {0} when the status moved meanwhile; {1, runs, parked tasks...}
-- when applied (the tasks only on resume).
local st = redis.call('HMGET', KEYS[1], F.status, F.runs)
if st[1] ~= ARGV[1] then return {0} end
local runs = tonumber(st[2] or '0')
redis.call('HSET', KEYS[1], F.status, ARGV[2])
redis.call('RPUSH', KEYS[3], ARGV[4])
if ENDED[ARGV[2]] then
  redis.call('HSET', KEYS[1], F.ended_at, ARGV[3])
  redis.call('DEL', KEYS[2])
  return {1, runs}
end
if ARGV[2] == RUNNING then
  local parked = redis.call('LRANGE', KEYS[2], 0, -1)
  table.insert(parked, 1, runs)
  table.insert(parked, 1, 1)
  return parked
end
return {1, runs}
