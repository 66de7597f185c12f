-- Takes a slot of a limit shared by every worker. Slots are a sorted set of
-- holders by the time their lease ends; a take forgets the leases that ran
-- out. Returns {"taken"} | {"busy", held}.
local function take_slot(hot, slots, now, lease, limit, holder, note)
  now = tonumber(now)
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
  local held = redis.call('ZCARD', slots)
  if held >= tonumber(limit) and not redis.call('ZSCORE', slots, holder) then
    redis.call('HSET', hot, F.limit_note, note .. held .. '/' .. limit)
    return {'busy', tostring(held)}
  end
  redis.call('ZADD', slots, now + tonumber(lease), holder)
  redis.call('HDEL', hot, F.limit_note)
  return {'taken'}
end
