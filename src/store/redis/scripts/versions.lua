-- Versions of registered workflows, read in one step.
-- KEYS: workflows
-- ARGV: prefix (of the `P:workflow:NAME` keys) which name
--   which: 'latest' (of `name`, or of every workflow when `name` is ''),
--   'all' (of `name`, oldest first), or a version number (of `name`)
-- Returns a flat list: name, version, definition, at ('' when unknown), ...
local which = ARGV[2]
local reply = {}
local function add(name, versions, n, latest, unversioned)
  local definition, at
  if unversioned and n == latest then
    definition, at = unversioned, ''
  else
    definition = redis.call('HGET', versions, 'def:' .. n)
    at = redis.call('HGET', versions, 'at:' .. n) or ''
  end
  if definition then
    table.insert(reply, name)
    table.insert(reply, tostring(n))
    table.insert(reply, definition)
    table.insert(reply, at)
  end
end
local function versions_of(name)
  local versions = ARGV[1] .. name
  local latest, unversioned = latest_version(KEYS[1], versions, name)
  if which == 'latest' then
    if latest > 0 then add(name, versions, latest, latest, unversioned) end
  elseif which == 'all' then
    for n = 1, latest do add(name, versions, n, latest, unversioned) end
  else
    local n = tonumber(which)
    if n and n >= 1 and n <= latest then add(name, versions, n, latest, unversioned) end
  end
end
if ARGV[3] == '' then
  for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do versions_of(name) end
else
  versions_of(ARGV[3])
end
return reply
