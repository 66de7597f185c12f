-- Sends a flow back to the phase that failed, as a new visit, if it is
-- still as the rules saw it (a compare-and-set on status and visit). The
-- carried handlers keep their jobs, done bits and outputs (copied to the
-- new visit), and are marked redriven and not queued: until their jobs
-- are confirmed queued, recovery hands them out again. The flow is
-- unfinished again in the indexes before this (index_reopen.lua), and
-- listed as running after.
-- KEYS: hot visits transitions
--       then per carried slot: done_old out_old jobs_old done_new out_new jobs_new
-- ARGV: runs expected_status expected_seq failed_seq phase new_seq slots at visit transition
--       waits, then the carried slots
-- Returns 1 when applied, 0 when the flow moved meanwhile.
local hot = KEYS[1]
local st = redis.call('HMGET', hot, F.status, F.seq, F.runs)
if st[1] ~= ARGV[2] or st[2] ~= ARGV[3] or tonumber(st[3] or '0') + 1 ~= tonumber(ARGV[1]) then return 0 end
local failed, seq, at = ARGV[4], ARGV[6], ARGV[8]
local slots = tonumber(ARGV[7])
redis.call('HSET', hot, F.status, RUNNING, F.runs, ARGV[1], F.seq, seq, F.phase .. seq, ARGV[5], F.slots .. seq, slots, F.state .. seq, VISIT_RUNNING)
if slots == 0 and ARGV[11] ~= '1' then redis.call('HSET', hot, F.state .. seq, VISIT_COMPLETED, F.finished .. seq, at) end
redis.call('HDEL', hot, F.ended_at, F.error)
redis.call('RPUSH', KEYS[2], ARGV[9])
redis.call('RPUSH', KEYS[3], ARGV[10])
for i = 12, #ARGV do
  local slot = ARGV[i]
  local base = 3 + (i - 12) * 6
  local o, h = failed .. ':' .. slot, seq .. ':' .. slot
  local old = redis.call('HMGET', hot, F.enumerated .. o, F.total .. o, F.version .. o)
  if old[1] == '1' then
    for k = 1, 3 do
      if redis.call('EXISTS', KEYS[base + k]) == 1 then
        redis.call('COPY', KEYS[base + k], KEYS[base + 3 + k], 'REPLACE')
      end
    end
    local done = redis.call('BITCOUNT', KEYS[base + 4])
    redis.call('HSET', hot, F.enumerated .. h, '1', F.total .. h, old[2], F.done .. h, done,
      F.version .. h, old[3], F.started .. h, at, F.redriven .. h, '1')
    if done >= tonumber(old[2]) then redis.call('HSET', hot, F.handler_finished .. h, at) end
  end
end
settle(hot, seq, at)
return 1
