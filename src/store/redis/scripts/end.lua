-- Ends a flow at a settled visit, once (rules::may_leave), and moves it
-- between the indexes, to the end of the feed of ended flows among them.
-- KEYS: hot by_status(running) by_status(new) unfinished ended feed feed_head
-- ARGV: id from_seq from_phase status at error
local st = redis.call('HMGET', KEYS[1], F.status, F.seq, F.phase .. ARGV[2], F.state .. ARGV[2])
if not may_leave(st[1], st[2], st[3], st[4], ARGV[2], ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], F.status, ARGV[4], F.ended_at, ARGV[5])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], F.error, ARGV[6]) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[6], redis.call('INCR', KEYS[7]), ARGV[1])
return 1
