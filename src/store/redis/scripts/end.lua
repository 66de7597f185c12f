-- Ends a flow at a settled visit, once (rules::may_leave). Its indexes
-- follow in a second step (index_settle.lua).
-- KEYS: hot
-- ARGV: from_seq from_phase status at error
-- Returns the flow's retry count when it ended it, -1 when not.
local st = redis.call('HMGET', KEYS[1], F.status, F.seq, F.phase .. ARGV[1], F.state .. ARGV[1], F.runs)
if not may_leave(st[1], st[2], st[3], st[4], ARGV[1], ARGV[2]) then return -1 end
redis.call('HSET', KEYS[1], F.status, ARGV[3], F.ended_at, ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], F.error, ARGV[5]) end
return tonumber(st[5] or '0')
