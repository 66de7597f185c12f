-- The installation-wide indexes of flows, in one hash slot apart from the
-- flows' own keys (keys.rs). A flow's own keys are the truth: these
-- functions bring the indexes in line with what they said, and each is safe
-- to repeat, so that a crash between a flow's step and its indexes' step is
-- repaired by running the second again (the sweep over unfinished flows
-- does, RedisStore::unfinished_flows).
-- Every index script gets the same KEYS and first ARGV:
-- KEYS: unfinished flows ended feed feed_head keys
-- ARGV: by_status_prefix by_workflow_prefix grace_ms, then its own
local I = {unfinished = KEYS[1], flows = KEYS[2], ended = KEYS[3], feed = KEYS[4], feed_head = KEYS[5],
  keys = KEYS[6]}
local BY_STATUS, BY_WORKFLOW, GRACE = ARGV[1], ARGV[2], tonumber(ARGV[3])
local NOW
do
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- An unfinished flow's entry: its retry count when written, when it was
-- written, and its workflow ("runs|at|workflow").
local function entry_of(id)
  local text = redis.call('HGET', I.unfinished, id)
  if not text then return nil end
  local runs, at, workflow = string.match(text, '^(%d+)|(%d+)|(.*)$')
  if not runs then return {runs = 0, at = 0, workflow = ''} end
  return {runs = tonumber(runs), at = tonumber(at), workflow = workflow}
end

local function write_entry(id, runs, workflow)
  redis.call('HSET', I.unfinished, id, runs .. '|' .. NOW .. '|' .. workflow)
end

-- Written longer ago than any step between a flow's keys and its indexes
-- takes: whoever wrote it is not coming back.
local function abandoned(entry)
  return NOW - entry.at > GRACE
end

local function list_under(id, status)
  for _, s in ipairs(STATUSES) do
    if s ~= status then redis.call('ZREM', BY_STATUS .. s, id) end
  end
  if status then redis.call('ZADD', BY_STATUS .. status, 0, id) end
end

local function list_flow(id, workflow)
  redis.call('ZADD', I.flows, 0, id)
  if workflow ~= '' then redis.call('ZADD', BY_WORKFLOW .. workflow, 0, id) end
end

-- Takes a flow out of every index but the feed of ended flows and `ended`
-- (retention takes it out of those last, once its keys are gone).
local function unlist(id, workflow)
  list_under(id, nil)
  redis.call('ZREM', I.flows, id)
  if workflow ~= '' then redis.call('ZREM', BY_WORKFLOW .. workflow, id) end
  redis.call('HDEL', I.unfinished, id)
end

-- Brings the indexes in line with a flow's keys: `status` ('' when the flow
-- has no keys), how many times it was retried, and when it ended.
local function settle_flow(id, status, runs, ended_at)
  local entry = entry_of(id)
  if status == '' then
    -- A creation that never wrote the flow's keys.
    if entry and abandoned(entry) then
      unlist(id, entry.workflow)
      redis.call('ZREM', I.ended, id)
      redis.call('ZREM', I.feed, id)
    end
    return
  end
  runs = tonumber(runs) or 0
  if ENDED[status] then
    -- A retry under way: its own step will settle the flow.
    if entry and entry.runs > runs and not abandoned(entry) then return end
    list_under(id, status)
    redis.call('ZADD', I.ended, tonumber(ended_at) or NOW, id)
    if not redis.call('ZSCORE', I.feed, id) then
      redis.call('ZADD', I.feed, redis.call('INCR', I.feed_head), id)
    end
    redis.call('HDEL', I.unfinished, id)
  elseif entry and entry.runs == runs then
    -- Only while unfinished, and of the same run: a reading made before
    -- the flow ended or was retried is not applied after.
    list_under(id, status)
    list_flow(id, entry.workflow)
    redis.call('ZREM', I.ended, id)
    redis.call('ZREM', I.feed, id)
  end
end
