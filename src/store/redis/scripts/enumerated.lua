-- Records a handler's enumeration for a visit: the first one recorded is
-- the visit's, its jobs kept so that a repeat queues those, not its own.
-- KEYS: hot jobs
-- ARGV: seq phase slot version total at jobs
-- Returns JSON: {status, seq, state, queue = nothing|given|recorded, jobs}
local hot = KEYS[1]
local seq, slot = ARGV[1], ARGV[3]
local h = seq .. ':' .. slot
local st = redis.call('HMGET', hot, F.status, F.seq, F.phase .. seq, F.state .. seq, F.enumerated .. h, F.queued .. h)
if not st[1] then return cjson.encode({}) end
local reply = {status = st[1], seq = tonumber(st[2]), state = st[4] or nil, queue = 'nothing'}
if ENDED[st[1]] or st[2] ~= seq or st[3] ~= ARGV[2] or st[4] ~= VISIT_RUNNING then
  return cjson.encode(reply)
end
if st[5] == '1' then
  if st[6] ~= '1' then
    -- Recorded before, never confirmed queued: the worker that made it
    -- died in between, so this caller queues the recorded jobs.
    reply.queue = 'recorded'
    reply.jobs = redis.call('GET', KEYS[2]) or '[]'
  end
  return cjson.encode(reply)
end
redis.call('HSET', hot, F.enumerated .. h, '1', F.total .. h, ARGV[5], F.version .. h, ARGV[4], F.started .. h, ARGV[6])
redis.call('SET', KEYS[2], ARGV[7])
local done = tonumber(redis.call('HGET', hot, F.done .. h) or '0')
if done >= tonumber(ARGV[5]) then redis.call('HSET', hot, F.handler_finished .. h, ARGV[6]) end
reply.state = settle(hot, seq, ARGV[6])
reply.queue = 'given'
return cjson.encode(reply)
