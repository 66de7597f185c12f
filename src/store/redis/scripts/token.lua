-- Takes a token of a rate shared by every worker (bucket.lua), for a task
-- admission let run, if its flow still runs the task's visit (checked in
-- the same step).
-- KEYS: hot token
-- ARGV: seq now_us interval_us burst_us reserve_us note
-- Returns {"taken", wait_us} | {"later", wait_us} | {"moved"}
local hot = KEYS[1]
local st = redis.call('HMGET', hot, F.status, F.seq)
if st[1] ~= RUNNING or st[2] ~= ARGV[1] then return {'moved'} end
if redis.call('HGET', hot, F.state .. ARGV[1]) ~= VISIT_RUNNING then return {'moved'} end
return take_token(hot, KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
