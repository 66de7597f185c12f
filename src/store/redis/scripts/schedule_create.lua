-- Stores a new schedule, unless one of that name is kept.
-- KEYS: schedule schedules
-- ARGV: name spec next created_at
-- Returns 1 when it was stored, 0 when one of that name is kept.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'spec', ARGV[2], 'paused', '0', 'next', ARGV[3], 'created_at', ARGV[4])
local score = ARGV[3]
if score == '' then score = '+inf' end
redis.call('ZADD', KEYS[2], score, ARGV[1])
return 1
