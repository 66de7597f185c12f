-- Takes a slot of a limit shared by every worker, for a task admission let
-- run, if its flow still runs the task's visit (checked in the same step).
-- KEYS: hot slots
-- ARGV: seq now lease_ms limit holder note
-- Returns {"taken"} | {"busy", held} | {"moved"}
local hot = KEYS[1]
local st = redis.call('HMGET', hot, F.status, F.seq)
if st[1] ~= RUNNING or st[2] ~= ARGV[1] then return {'moved'} end
if redis.call('HGET', hot, F.state .. ARGV[1]) ~= VISIT_RUNNING then return {'moved'} end
return take_slot(hot, KEYS[2], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
