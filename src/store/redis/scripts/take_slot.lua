-- Takes a slot of a limit shared by every worker, alone: on a Redis
-- Cluster, where the flow's keys are in another hash slot, admission is
-- asked first and the wait is noted by the caller (see slots.lua).
-- KEYS: slots
-- ARGV: now lease_ms limit holder
-- Returns {"taken"} | {"busy", held}
return take_slot('', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], '')
