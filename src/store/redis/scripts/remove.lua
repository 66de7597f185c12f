-- Removes one ended flow's keys, if it is still ended before the cutoff
-- (a retry meanwhile keeps it). Its indexes are taken care of before and
-- after (index_remove.lua). The names of its keys are made from the
-- flow's own (they share its hash tag).
-- KEYS: meta hot
-- ARGV: cutoff
-- Returns 1 when the flow is gone, 0 when it was kept.
local base, hot = KEYS[1], KEYS[2]
if redis.call('EXISTS', base) == 0 then
  redis.call('DEL', hot)
  return 1
end
local st = redis.call('HMGET', hot, F.status, F.ended_at, F.seq)
if st[1] and not (ENDED[st[1]] and tonumber(st[2] or '0') < tonumber(ARGV[1])) then return 0 end
for seq = 0, tonumber(st[3] or '-1') do
  local slots = tonumber(redis.call('HGET', hot, F.slots .. seq) or '0')
  for slot = 0, slots - 1 do
    local h = ':' .. seq .. ':' .. slot
    redis.call('DEL', base .. ':done' .. h, base .. ':out' .. h, base .. ':jobs' .. h)
  end
end
redis.call('DEL', base, hot, base .. ':visits', base .. ':transitions', base .. ':parked', base .. ':commands',
  base .. ':signals', base .. ':signal_ids')
return 1
