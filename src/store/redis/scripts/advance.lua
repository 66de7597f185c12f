-- Moves a follower's cursor forward, if the holder still holds its lease.
-- KEYS: subscriber
-- ARGV: holder position
-- Returns 1 when the holder holds the lease, 0 when another took it.
if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], 'position') or '0') then
  redis.call('HSET', KEYS[1], 'position', ARGV[2])
end
return 1
