-- Creates a flow in its initial phase, and indexes it.
-- KEYS: meta hot visits transitions flows by_status(running) by_workflow unfinished
-- ARGV: id workflow definition data created_at phase slots visit transition
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'workflow', ARGV[2], 'definition', ARGV[3], 'data', ARGV[4], 'created_at', ARGV[5])
local slots = tonumber(ARGV[7])
local state = VISIT_RUNNING
if slots == 0 then state = VISIT_COMPLETED end
redis.call('HSET', KEYS[2], F.status, RUNNING, F.seq, '0', F.phase .. '0', ARGV[6], F.slots .. '0', slots, F.state .. '0', state)
if slots == 0 then redis.call('HSET', KEYS[2], F.finished .. '0', ARGV[5]) end
redis.call('RPUSH', KEYS[3], ARGV[8])
redis.call('RPUSH', KEYS[4], ARGV[9])
redis.call('ZADD', KEYS[5], 0, ARGV[1])
redis.call('ZADD', KEYS[6], 0, ARGV[1])
redis.call('ZADD', KEYS[7], 0, ARGV[1])
redis.call('SADD', KEYS[8], ARGV[1])
return 1
