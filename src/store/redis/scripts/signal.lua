-- A signal sent to a flow (rules::apply_signal): it completes the visit
-- that waits for it, or is kept for the phase that will; an id seen before
-- changes nothing; a flow that ended refuses it.
-- KEYS: hot signals signal_ids
-- ARGV: id signal_json at, then the phases that wait for this signal
-- Returns {"unknown"} | {"ended", status} | {"duplicate"} | {"consumed"} | {"kept"}
local hot = KEYS[1]
local st = redis.call('HMGET', hot, F.status, F.seq)
if not st[1] then return {'unknown'} end
if ENDED[st[1]] then return {'ended', st[1]} end
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then return {'duplicate'} end
if st[1] == RUNNING then
  local seq = st[2]
  local visit = redis.call('HMGET', hot, F.state .. seq, F.phase .. seq)
  if visit[1] == VISIT_RUNNING then
    for i = 4, #ARGV do
      if ARGV[i] == visit[2] then
        redis.call('HSET', hot, F.state .. seq, VISIT_COMPLETED, F.finished .. seq, ARGV[3], F.signal .. seq, ARGV[2])
        return {'consumed'}
      end
    end
  end
end
redis.call('RPUSH', KEYS[2], ARGV[2])
return {'kept'}
