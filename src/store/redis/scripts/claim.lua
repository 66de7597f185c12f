-- Claims the dispatch of enumerations in the current running visit, so
-- that engines agree which of them sends each enumerate task.
-- KEYS: hot
-- ARGV: seq phase at lease_ms slot...
-- Returns the slots claimed.
local seq, phase = ARGV[1], ARGV[2]
local at, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local st = redis.call('HMGET', KEYS[1], F.status, F.seq, F.phase .. seq, F.state .. seq)
if st[1] ~= RUNNING or st[2] ~= seq or st[3] ~= phase or st[4] ~= VISIT_RUNNING then return {} end
local claimed = {}
for i = 5, #ARGV do
  local h = seq .. ':' .. ARGV[i]
  local c = redis.call('HMGET', KEYS[1], F.enumerated .. h, F.claimed .. h)
  if c[1] ~= '1' and (not c[2] or at - tonumber(c[2]) >= lease) then
    redis.call('HSET', KEYS[1], F.claimed .. h, ARGV[3])
    table.insert(claimed, tonumber(ARGV[i]))
  end
end
return claimed
