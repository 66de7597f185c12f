-- Records the child flows a visit started, once (rules::record_children):
-- only while the flow runs the visit and it has none yet. A visit with no
-- children to wait for completes.
-- KEYS: hot
-- ARGV: seq children_ids_json count at
-- Returns 1 when recorded, else 0.
local hot = KEYS[1]
local st = redis.call('HMGET', hot, F.status, F.seq, F.state .. ARGV[1], F.children .. ARGV[1])
if st[1] ~= RUNNING or st[2] ~= ARGV[1] or st[3] ~= VISIT_RUNNING or st[4] then return 0 end
redis.call('HSET', hot, F.children .. ARGV[1], ARGV[2], F.children_total .. ARGV[1], ARGV[3], F.children_done .. ARGV[1], 0)
if tonumber(ARGV[3]) == 0 then
  redis.call('HSET', hot, F.state .. ARGV[1], VISIT_COMPLETED, F.finished .. ARGV[1], ARGV[4])
end
return 1
