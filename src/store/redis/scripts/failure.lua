-- Records a failure: the first one fails the visit
-- (rules::failure_fails_visit); each job's counts as failed.
-- KEYS: hot
-- ARGV: seq slot is_job error at
-- Returns JSON: {status, seq, state}
local hot = KEYS[1]
local seq = ARGV[1]
local status = redis.call('HGET', hot, F.status)
if not status or redis.call('HEXISTS', hot, F.state .. seq) == 0 then return cjson.encode({}) end
if ARGV[3] == '1' and ARGV[2] ~= '' then redis.call('HINCRBY', hot, F.failed .. seq .. ':' .. ARGV[2], 1) end
if failure_fails_visit(redis.call('HGET', hot, F.state .. seq)) then
  redis.call('HSET', hot, F.state .. seq, VISIT_FAILED, F.finished .. seq, ARGV[5], F.visit_error .. seq, ARGV[4])
end
return cjson.encode({status = status, seq = tonumber(redis.call('HGET', hot, F.seq)), state = redis.call('HGET', hot, F.state .. seq)})
