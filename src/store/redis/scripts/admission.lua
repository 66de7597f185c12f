-- What admission decides on (rules::admission), read in one step; for the
-- scripts that admit a task.
local function admission_facts(hot, done, seq, slot, index)
  local h = seq .. ':' .. slot
  local st = redis.call('HMGET', hot, F.status, F.seq, F.queued .. h, F.enumerated .. h, F.total .. h)
  if not st[1] then return {} end
  local job_done = false
  if index ~= '' then
    local at = tonumber(index)
    -- A job outside the recorded enumeration is not this visit's to run.
    if st[4] ~= '1' or at >= tonumber(st[5] or '0') then
      job_done = true
    else
      job_done = redis.call('GETBIT', done, at) == 1
    end
  end
  return {
    status = st[1],
    seq = tonumber(st[2]),
    state = redis.call('HGET', hot, F.state .. st[2]) or nil,
    enumerated = st[3] == '1',
    job_done = job_done,
  }
end

-- Whether admission lets the task run (rules::admission's Run), from its
-- facts: the flow runs the task's visit, and the task's work is not done.
local function admits(facts, seq, is_job)
  return facts.status == RUNNING and facts.seq == tonumber(seq)
    and facts.state == VISIT_RUNNING and not facts.job_done
    and (is_job or not facts.enumerated)
end
