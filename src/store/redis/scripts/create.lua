-- Creates a flow in its initial phase, and indexes it. A flow with a key
-- is created only if no kept flow holds the key; the flow that does is
-- returned instead ("existing" when its fingerprint, the workflow and data,
-- is the same; "taken" when not).
-- KEYS: meta hot visits transitions flows by_status(running) by_workflow unfinished keys
-- ARGV: id workflow definition data created_at phase slots visit transition key fingerprint priority deadline
--       waits ('1' when the phase waits for a signal or child flows: running with no slots)
--       parent (a child flow's ParentLink as JSON, or '')
--       workflow_version
--       schedule tick
-- Returns {"created"} | {"existing", id} | {"taken", id} | {"duplicate"}
if redis.call('EXISTS', KEYS[1]) == 1 then return {'duplicate'} end
local key = ARGV[10]
if key ~= '' then
  local held = redis.call('HGET', KEYS[9], key)
  if held then
    local prefix = string.sub(KEYS[1], 1, #KEYS[1] - #ARGV[1])
    local fingerprint = redis.call('HGET', prefix .. held, 'fingerprint')
    if fingerprint then
      if fingerprint == ARGV[11] then return {'existing', held} end
      return {'taken', held}
    end
    -- The flow that held it is gone: the key is free.
  end
  redis.call('HSET', KEYS[9], key, ARGV[1])
end
redis.call('HSET', KEYS[1], 'workflow', ARGV[2], 'definition', ARGV[3], 'data', ARGV[4], 'created_at', ARGV[5],
  'key', key, 'fingerprint', ARGV[11], 'priority', ARGV[12], 'deadline', ARGV[13], 'parent', ARGV[15],
  'workflow_version', ARGV[16], 'schedule', ARGV[17], 'tick', ARGV[18])
local slots = tonumber(ARGV[7])
local state = VISIT_RUNNING
if slots == 0 and ARGV[14] ~= '1' then state = VISIT_COMPLETED end
redis.call('HSET', KEYS[2], F.status, RUNNING, F.seq, '0', F.phase .. '0', ARGV[6], F.slots .. '0', slots, F.state .. '0', state)
if state == VISIT_COMPLETED then redis.call('HSET', KEYS[2], F.finished .. '0', ARGV[5]) end
redis.call('RPUSH', KEYS[3], ARGV[8])
redis.call('RPUSH', KEYS[4], ARGV[9])
redis.call('ZADD', KEYS[5], 0, ARGV[1])
redis.call('ZADD', KEYS[6], 0, ARGV[1])
redis.call('ZADD', KEYS[7], 0, ARGV[1])
redis.call('SADD', KEYS[8], ARGV[1])
return {'created'}
