-- The versions of a workflow: the hash `P:workflow:NAME` keeps `latest`,
-- and per version N its definition (`def:N`), the digest of its canonical
-- JSON (`sum:N`) and when it was registered (`at:N`). `P:workflows` keeps
-- each name's latest definition, where a release that keeps no versions
-- reads and replaces it: a definition there that is not the name's latest
-- version was registered by such a release, and counts as the version
-- after the last one kept.

-- The number of a workflow's latest version (0: none), and the
-- definition registered without a version when that is the latest.
local function latest_version(workflows, versions, name)
  local latest = tonumber(redis.call('HGET', versions, 'latest') or '0')
  local unversioned = redis.call('HGET', workflows, name)
  if unversioned and (latest == 0 or redis.call('HGET', versions, 'def:' .. latest) ~= unversioned) then
    return latest + 1, unversioned
  end
  return latest, nil
end
