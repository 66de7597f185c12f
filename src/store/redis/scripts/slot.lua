-- Takes a slot of a limit shared by every worker, for a task admission let
-- run, if its flow still runs the task's visit (checked in the same step).
-- Slots are a sorted set of holders by the time their lease ends.
-- KEYS: hot slots
-- ARGV: seq now lease_ms limit holder note
-- Returns {"taken"} | {"busy", held} | {"moved"}
local hot = KEYS[1]
local st = redis.call('HMGET', hot, F.status, F.seq)
if st[1] ~= RUNNING or st[2] ~= ARGV[1] then return {'moved'} end
if redis.call('HGET', hot, F.state .. ARGV[1]) ~= VISIT_RUNNING then return {'moved'} end
local now = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local held = redis.call('ZCARD', KEYS[2])
if held >= tonumber(ARGV[4]) and not redis.call('ZSCORE', KEYS[2], ARGV[5]) then
  redis.call('HSET', hot, F.limit_note, ARGV[6] .. held .. '/' .. ARGV[4])
  return {'busy', tostring(held)}
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[5])
redis.call('HDEL', hot, F.limit_note)
return {'taken'}
