-- Takes or keeps the lease of a follower of the feed of ended flows, unless
-- another holder's lease runs. A follower seen for the first time starts
-- at the end of the feed.
-- KEYS: subscriber feed_head
-- ARGV: holder now lease_ms
-- Returns the follower's cursor, or -1 when another holder has the lease.
local s = redis.call('HMGET', KEYS[1], 'holder', 'until', 'position')
local now = tonumber(ARGV[2])
if s[1] and s[1] ~= ARGV[1] and tonumber(s[2] or '0') > now then return -1 end
local position = s[3]
if not position then
  position = redis.call('GET', KEYS[2]) or '0'
  redis.call('HSET', KEYS[1], 'position', position)
end
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'until', now + tonumber(ARGV[3]))
return tonumber(position)
