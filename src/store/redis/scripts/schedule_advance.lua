-- Moves a running schedule's next tick from ARGV[2] to ARGV[3], recording
-- what the tick did, if its next tick is still ARGV[2]: the compare-and-set
-- that lets one engine of many record each tick.
-- KEYS: schedule schedules
-- ARGV: name tick next flow skip
-- Returns 1 when it moved, 0 when not.
local s = redis.call('HMGET', KEYS[1], 'paused', 'next')
if not s[2] or s[1] == '1' or s[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'next', ARGV[3], 'last_tick', ARGV[2], 'last_skip', ARGV[5])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'last_flow', ARGV[4]) end
local score = ARGV[3]
if score == '' then score = '+inf' end
redis.call('ZADD', KEYS[2], score, ARGV[1])
return 1
