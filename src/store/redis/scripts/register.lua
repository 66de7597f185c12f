-- Registers a definition as the next version of its workflow, unless it
-- is the same as the latest version (the same digest): then nothing is
-- added.
-- KEYS: workflows versions
-- ARGV: name definition digest at
-- Returns {version, 1, at, ''} when it made a version; {version, 0, at or '',
-- definition} when the latest was the same (its own definition).
local latest, unversioned = latest_version(KEYS[1], KEYS[2], ARGV[1])
if unversioned then
  -- Kept under the number it counts as, so that numbers never move.
  redis.call('HSET', KEYS[2], 'latest', tostring(latest), 'def:' .. latest, unversioned)
end
if latest > 0 then
  local digest = redis.call('HGET', KEYS[2], 'sum:' .. latest)
  local definition = redis.call('HGET', KEYS[2], 'def:' .. latest)
  local same
  if digest then
    same = digest == ARGV[3]
  else
    same = definition == ARGV[2]
  end
  if same then return {latest, 0, redis.call('HGET', KEYS[2], 'at:' .. latest) or '', definition} end
end
latest = latest + 1
redis.call('HSET', KEYS[2], 'latest', tostring(latest), 'def:' .. latest, ARGV[2],
  'sum:' .. latest, ARGV[3], 'at:' .. latest, ARGV[4])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {latest, 1, ARGV[4], ''}
