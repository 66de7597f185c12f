-- Takes a token of a rate shared by every worker, for a task admission let
-- run, if its flow still runs the task's visit (checked in the same step).
-- The bucket is one number: when its next token is due (GCRA), in
-- microseconds; it expires once the bucket is full again. A token not due
-- yet is reserved, up to reserve_us ahead: the task sleeps until then.
-- KEYS: hot token
-- ARGV: seq now_us interval_us burst_us reserve_us note
-- Returns {"taken", wait_us} | {"later", wait_us} | {"moved"}
local hot = KEYS[1]
local st = redis.call('HMGET', hot, F.status, F.seq)
if st[1] ~= RUNNING or st[2] ~= ARGV[1] then return {'moved'} end
if redis.call('HGET', hot, F.state .. ARGV[1]) ~= VISIT_RUNNING then return {'moved'} end
local now = tonumber(ARGV[2])
local interval = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local reserve = tonumber(ARGV[5])
local due = tonumber(redis.call('GET', KEYS[2]) or now)
if due < now then due = now end
local wait = due - now - burst
if wait < 0 then wait = 0 end
local function note()
  local until_ms = math.floor((now + wait) / 1000)
  redis.call('HSET', hot, F.limit_note, ARGV[1] .. '|' .. string.format('%d', until_ms) .. '|' .. ARGV[6])
end
if wait > reserve then
  note()
  return {'later', string.format('%d', wait - reserve)}
end
local next_due = due + interval
redis.call('SET', KEYS[2], string.format('%d', next_due), 'PX', math.floor((next_due - now) / 1000) + 1000)
if wait > 0 then note() else redis.call('HDEL', hot, F.limit_note) end
return {'taken', string.format('%d', wait)}
