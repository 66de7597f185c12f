-- Takes a token of a rate shared by every worker. The bucket is one
-- number: when its next token is due (GCRA), in microseconds; it expires
-- once the bucket is full again. A token not due yet is reserved, up to
-- reserve_us ahead: the task sleeps until then. `hot` is '' where the
-- flow's keys are in another hash slot: the caller notes the wait itself.
-- Returns {"taken", wait_us} | {"later", wait_us}
local function take_token(hot, token, seq, now, interval, burst, reserve, note_text)
  now, interval, burst, reserve = tonumber(now), tonumber(interval), tonumber(burst), tonumber(reserve)
  local due = tonumber(redis.call('GET', token) or now)
  if due < now then due = now end
  local wait = due - now - burst
  if wait < 0 then wait = 0 end
  local function note()
    if hot == '' then return end
    local until_ms = math.floor((now + wait) / 1000)
    redis.call('HSET', hot, F.limit_note, seq .. '|' .. string.format('%d', until_ms) .. '|' .. note_text)
  end
  if wait > reserve then
    note()
    return {'later', string.format('%d', wait - reserve)}
  end
  local next_due = due + interval
  redis.call('SET', token, string.format('%d', next_due), 'PX', math.floor((next_due - now) / 1000) + 1000)
  if wait > 0 then note() elseif hot ~= '' then redis.call('HDEL', hot, F.limit_note) end
  return {'taken', string.format('%d', wait)}
end
