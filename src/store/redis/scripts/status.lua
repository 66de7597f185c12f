-- Changes a flow's status if it is still the one the rules decided from (a
-- compare-and-set), records the command in the flow's history, and moves
-- the flow between the indexes.
-- KEYS: hot by_status(from) by_status(to) unfinished parked ended commands feed feed_head
-- ARGV: id from to at command
-- Returns {0} when the status moved meanwhile; {1, parked tasks...} when
-- applied (the tasks only on resume).
if redis.call('HGET', KEYS[1], F.status) ~= ARGV[2] then return {0} end
redis.call('HSET', KEYS[1], F.status, ARGV[3])
redis.call('RPUSH', KEYS[7], ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
if ENDED[ARGV[3]] then
  redis.call('HSET', KEYS[1], F.ended_at, ARGV[4])
  redis.call('SREM', KEYS[4], ARGV[1])
  redis.call('DEL', KEYS[5])
  redis.call('ZADD', KEYS[6], ARGV[4], ARGV[1])
  redis.call('ZADD', KEYS[8], redis.call('INCR', KEYS[9]), ARGV[1])
  return {1}
end
if ARGV[3] == RUNNING then
  local parked = redis.call('LRANGE', KEYS[5], 0, -1)
  table.insert(parked, 1, 1)
  return parked
end
return {1}
