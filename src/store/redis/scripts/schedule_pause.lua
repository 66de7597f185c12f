-- Pauses a schedule ('1') or resumes it ('0') with its next tick. A paused
-- schedule (or one with no tick to come) sorts last, at +inf, so that the
-- earliest due schedules are the first of the sorted set.
-- KEYS: schedule schedules
-- ARGV: name paused next
-- Returns -1 when there is no such schedule, 0 when it was so already,
-- 1 when it changed.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HGET', KEYS[1], 'paused') == ARGV[2] then return 0 end
local score = '+inf'
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'paused', '1')
else
  redis.call('HSET', KEYS[1], 'paused', '0', 'next', ARGV[3])
  if ARGV[3] ~= '' then score = ARGV[3] end
end
redis.call('ZADD', KEYS[2], score, ARGV[1])
return 1
