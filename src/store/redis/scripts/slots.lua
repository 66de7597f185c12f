-- Takes a slot of a limit shared by every worker. Slots are a sorted set of
-- holders by the time their lease ends; a take forgets the leases that ran
-- out. Returns {"taken"} | {"busy", held}. `hot` is '' where the flow's
-- keys are in another hash slot: the caller notes the wait itself.
local function take_slot(hot, slots, now, lease, limit, holder, note)
  now = tonumber(now)
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
  local held = redis.call('ZCARD', slots)
  if held >= tonumber(limit) and not redis.call('ZSCORE', slots, holder) then
    if hot ~= '' then redis.call('HSET', hot, F.limit_note, note .. held .. '/' .. limit) end
    return {'busy', tostring(held)}
  end
  redis.call('ZADD', slots, now + tonumber(lease), holder)
  if hot ~= '' then redis.call('HDEL', hot, F.limit_note) end
  return {'taken'}
end
