-- Removes flows that ended before a cutoff, with every key kept about them.
-- The keys of a flow are named from its id here, so this script assumes
-- one Redis, not a cluster.
-- KEYS: ended flows keys feed
-- ARGV: prefix cutoff limit
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local base = ARGV[1] .. ':flow:' .. id
  local hot = base .. ':hot'
  local workflow = redis.call('HGET', base, 'workflow')
  local key = redis.call('HGET', base, 'key')
  if key and key ~= '' and redis.call('HGET', KEYS[3], key) == id then
    redis.call('HDEL', KEYS[3], key)
  end
  local status = redis.call('HGET', hot, F.status)
  local last = tonumber(redis.call('HGET', hot, F.seq) or '-1')
  for seq = 0, last do
    local slots = tonumber(redis.call('HGET', hot, F.slots .. seq) or '0')
    for slot = 0, slots - 1 do
      local h = ':' .. seq .. ':' .. slot
      redis.call('DEL', base .. ':done' .. h, base .. ':out' .. h, base .. ':jobs' .. h)
    end
  end
  redis.call('DEL', base, hot, base .. ':visits', base .. ':transitions', base .. ':parked', base .. ':commands',
    base .. ':signals', base .. ':signal_ids')
  redis.call('ZREM', KEYS[2], id)
  if status then redis.call('ZREM', ARGV[1] .. ':flows:status:' .. status, id) end
  if workflow then redis.call('ZREM', ARGV[1] .. ':flows:workflow:' .. workflow, id) end
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[4], id)
end
return #ids
