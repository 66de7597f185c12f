-- Takes a token of a rate shared by every worker (bucket.lua), alone: on
-- a Redis Cluster, where the flow's keys are in another hash slot.
-- KEYS: token
-- ARGV: now_us interval_us burst_us reserve_us
-- Returns {"taken", wait_us} | {"later", wait_us}
return take_token('', KEYS[1], '', ARGV[1], ARGV[2], ARGV[3], ARGV[4], '')
