-- Gives a follower's lease back, if the holder holds it.
-- KEYS: subscriber
-- ARGV: holder
if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'holder', 'until')
end
return 1
