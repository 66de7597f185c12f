-- Moves a flow from a settled visit into a new phase, once: a
-- compare-and-set on the cursor (rules::may_leave).
-- KEYS: hot visits transitions
-- ARGV: from_seq from_phase to slots at visit transition error waits
local from_seq, from_phase = ARGV[1], ARGV[2]
local st = redis.call('HMGET', KEYS[1], F.status, F.seq, F.phase .. from_seq, F.state .. from_seq)
if not may_leave(st[1], st[2], st[3], st[4], from_seq, from_phase) then return -1 end
local seq = tonumber(from_seq) + 1
local slots = tonumber(ARGV[4])
local state = VISIT_RUNNING
if slots == 0 and ARGV[9] ~= '1' then state = VISIT_COMPLETED end
redis.call('HSET', KEYS[1], F.seq, seq, F.phase .. seq, ARGV[3], F.slots .. seq, slots, F.state .. seq, state)
if state == VISIT_COMPLETED then redis.call('HSET', KEYS[1], F.finished .. seq, ARGV[5]) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], F.error, ARGV[8]) end
redis.call('RPUSH', KEYS[2], ARGV[6])
redis.call('RPUSH', KEYS[3], ARGV[7])
return seq
