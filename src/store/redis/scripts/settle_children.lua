-- Records children of a visit that ended (rules::settle_children): the
-- visit completes once every child ended well, and fails with the error
-- given for the first child, in the order given, that did not. Summaries
-- are kept as the JSON text they came as.
-- KEYS: hot
-- ARGV: seq at settled_json ([{index, ended_well, summary (text), error (text)}])
-- Returns "completed" | "failed" | "running" | "stale"
local hot = KEYS[1]
local seq = ARGV[1]
local st = redis.call('HMGET', hot, F.status, F.seq, F.state .. seq, F.children_total .. seq)
if ENDED[st[1]] or st[2] ~= seq or st[3] ~= VISIT_RUNNING or not st[4] then return 'stale' end
local total = tonumber(st[4])
for _, child in ipairs(cjson.decode(ARGV[3])) do
  local at = seq .. ':' .. child.index
  if child.index < total and redis.call('HEXISTS', hot, F.child_ended .. at) == 0 then
    if child.ended_well then
      redis.call('HSET', hot, F.child_ended .. at, '1', F.child_summary .. at, child.summary)
      redis.call('HINCRBY', hot, F.children_done .. seq, 1)
    else
      redis.call('HSET', hot, F.child_ended .. at, '0',
        F.state .. seq, VISIT_FAILED, F.finished .. seq, ARGV[2], F.visit_error .. seq, child.error)
      return 'failed'
    end
  end
end
if tonumber(redis.call('HGET', hot, F.children_done .. seq)) >= total then
  redis.call('HSET', hot, F.state .. seq, VISIT_COMPLETED, F.finished .. seq, ARGV[2])
  return 'completed'
end
return 'running'
