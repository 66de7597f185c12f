-- Retention's index steps around the removal of flows' keys: first
-- `unlist` (the listings and the flow's idempotency key), then, once the
-- keys are gone, `drop` (the list of ended flows and the feed). A crash
-- between them is repaired by the next run, which finds the flows in
-- `ended` still.
-- ARGV (after index.lua's): 'unlist', then per flow: id workflow key
--                         | 'drop', then ids
if ARGV[4] == 'unlist' then
  for i = 5, #ARGV, 3 do
    local id, workflow, key = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    unlist(id, workflow)
    if key ~= '' and redis.call('HGET', I.keys, key) == id then redis.call('HDEL', I.keys, key) end
  end
else
  for i = 5, #ARGV do
    redis.call('ZREM', I.ended, ARGV[i])
    redis.call('ZREM', I.feed, ARGV[i])
  end
end
return 1
