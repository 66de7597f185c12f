-- Keeps a task aside while its flow is paused, atomically with the check.
-- KEYS: hot parked
-- ARGV: task
if redis.call('HGET', KEYS[1], F.status) ~= PAUSED then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
