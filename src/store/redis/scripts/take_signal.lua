-- Gives the visit `seq`, if it still waits, the first signal named `name`
-- that came before it began (rules::take_pending_signal).
-- KEYS: hot signals
-- ARGV: seq name at
-- Returns 1 when a signal completed the visit, else 0.
local hot = KEYS[1]
local st = redis.call('HMGET', hot, F.status, F.seq, F.state .. ARGV[1])
if st[1] ~= RUNNING or st[2] ~= ARGV[1] or st[3] ~= VISIT_RUNNING then return 0 end
for _, item in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  if cjson.decode(item).name == ARGV[2] then
    redis.call('LREM', KEYS[2], 1, item)
    redis.call('HSET', hot, F.state .. ARGV[1], VISIT_COMPLETED, F.finished .. ARGV[1], ARGV[3], F.signal .. ARGV[1], item)
    return 1
  end
end
return 0
