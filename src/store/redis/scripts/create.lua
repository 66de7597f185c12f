-- Creates a flow's keys in its initial phase. Its indexes, and its key's
-- claim, were written first (index_create.lua).
-- KEYS: meta hot visits transitions
-- ARGV: id workflow definition data created_at phase slots visit transition key fingerprint priority deadline
--       waits ('1' when the phase waits for a signal or child flows: running with no slots)
--       parent (a child flow's ParentLink as JSON, or '')
--       workflow_version
--       schedule tick
-- Returns {"created"} | {"duplicate"}
if redis.call('EXISTS', KEYS[1]) == 1 then return {'duplicate'} end
redis.call('HSET', KEYS[1], 'workflow', ARGV[2], 'definition', ARGV[3], 'data', ARGV[4], 'created_at', ARGV[5],
  'key', ARGV[10], 'fingerprint', ARGV[11], 'priority', ARGV[12], 'deadline', ARGV[13], 'parent', ARGV[15],
  'workflow_version', ARGV[16], 'schedule', ARGV[17], 'tick', ARGV[18])
local slots = tonumber(ARGV[7])
local state = VISIT_RUNNING
if slots == 0 and ARGV[14] ~= '1' then state = VISIT_COMPLETED end
redis.call('HSET', KEYS[2], F.status, RUNNING, F.seq, '0', F.phase .. '0', ARGV[6], F.slots .. '0', slots, F.state .. '0', state)
if state == VISIT_COMPLETED then redis.call('HSET', KEYS[2], F.finished .. '0', ARGV[5]) end
redis.call('RPUSH', KEYS[3], ARGV[8])
redis.call('RPUSH', KEYS[4], ARGV[9])
return {'created'}
