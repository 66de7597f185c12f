-- Gathers what admission decides on (rules::admission), in one read, for
-- the tasks of one visit's handler that arrive together.
-- KEYS: hot done
-- ARGV: seq slot, then each task's job index (empty for an enumerate task)
-- Returns JSON: {status, seq, state, enumerated, done}, where done has a
-- character per task, in order: '1' for a job already done.
local indices = {}
for i = 3, #ARGV do indices[#indices + 1] = ARGV[i] end
local facts, jobs_done = admission_facts_of_jobs(KEYS[1], KEYS[2], ARGV[1], ARGV[2], indices)
local flags = {}
for i, job_done in ipairs(jobs_done) do flags[i] = job_done and '1' or '0' end
facts.done = table.concat(flags)
return cjson.encode(facts)
