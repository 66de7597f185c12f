-- The current visit's handlers whose jobs a redrive carried and that were
-- never confirmed queued, for recovery to queue them.
-- KEYS: hot
-- Returns {seq, phase, slot...}, or {} when the visit is not running.
local hot = KEYS[1]
local st = redis.call('HMGET', hot, F.status, F.seq)
if st[1] ~= RUNNING then return {} end
local seq = st[2]
local visit = redis.call('HMGET', hot, F.state .. seq, F.slots .. seq, F.phase .. seq)
if visit[1] ~= VISIT_RUNNING then return {} end
local reply = {seq, visit[3]}
for slot = 0, tonumber(visit[2] or '0') - 1 do
  local h = seq .. ':' .. slot
  local flags = redis.call('HMGET', hot, F.redriven .. h, F.queued .. h)
  if flags[1] == '1' and flags[2] ~= '1' then table.insert(reply, tostring(slot)) end
end
return reply
