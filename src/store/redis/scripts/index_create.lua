-- The first step of creating a flow: indexes it as unfinished and running
-- before its keys exist, so that a crash before they do leaves an entry the
-- sweep forgets (index.lua), never a flow no sweep finds. A flow with a key
-- claims the key first.
-- ARGV (after index.lua's): id workflow key replace
--   replace: a holder of the key the caller found to have no flow
-- Returns {"claimed"} | {"held", id} (the caller looks at that flow) |
-- {"busy", id} (that flow's creation may still be under way)
local id, workflow, key, replace = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if key ~= '' then
  local held = redis.call('HGET', I.keys, key)
  if held and held ~= id then
    if held ~= replace then return {'held', held} end
    local entry = entry_of(held)
    if entry and not abandoned(entry) then return {'busy', held} end
    if entry then unlist(held, entry.workflow) end
  end
  redis.call('HSET', I.keys, key, id)
end
write_entry(id, 0, workflow)
list_under(id, RUNNING)
list_flow(id, workflow)
return {'claimed'}
