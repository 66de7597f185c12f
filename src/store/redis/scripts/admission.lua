-- What admission decides on (rules::admission), read in one step; for the
-- scripts that admit a task.
-- The same for many jobs of one visit's handler at once: the facts they
-- share, and whether each job is done. An empty index stands for the
-- enumerate task, whose work is never a job's.
local function admission_facts_of_jobs(hot, done, seq, slot, indices)
  local h = seq .. ':' .. slot
  local st = redis.call('HMGET', hot, F.status, F.seq, F.queued .. h, F.enumerated .. h, F.total .. h)
  if not st[1] then return {}, {} end
  local jobs_done = {}
  for i, index in ipairs(indices) do
    if index == '' then
      jobs_done[i] = false
    else
      local at = tonumber(index)
      -- A job outside the recorded enumeration is not this visit's to run.
      if st[4] ~= '1' or at >= tonumber(st[5] or '0') then
        jobs_done[i] = true
      else
        jobs_done[i] = redis.call('GETBIT', done, at) == 1
      end
    end
  end
  return {
    status = st[1],
    seq = tonumber(st[2]),
    state = redis.call('HGET', hot, F.state .. st[2]) or nil,
    enumerated = st[3] == '1',
    job_done = false,
  }, jobs_done
end

local function admission_facts(hot, done, seq, slot, index)
  local facts, jobs_done = admission_facts_of_jobs(hot, done, seq, slot, {index})
  if facts.status then facts.job_done = jobs_done[1] end
  return facts
end

-- Whether admission lets the task run (rules::admission's Run), from its
-- facts: the flow runs the task's visit, and the task's work is not done.
local function admits(facts, seq, is_job)
  return facts.status == RUNNING and facts.seq == tonumber(seq)
    and facts.state == VISIT_RUNNING and not facts.job_done
    and (is_job or not facts.enumerated)
end
