-- Admission and a slot in one step, for a task of a handler with a shared
-- limit: the facts admission decides on and, when they let the task run,
-- a slot taken in the same step (see slots.lua).
-- KEYS: hot done slots
-- ARGV: seq slot index now lease_ms limit holder note
-- Returns JSON: the facts, and `slot` ("taken" | "busy") and `held` when
-- a slot was asked for.
local facts = admission_facts(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
if admits(facts, ARGV[1], ARGV[3] ~= '') then
  local taken = take_slot(KEYS[1], KEYS[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
  facts.slot = taken[1]
  facts.held = tonumber(taken[2])
end
return cjson.encode(facts)
