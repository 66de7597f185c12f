-- Gathers what admission decides on (rules::admission), in one read.
-- KEYS: hot done
-- ARGV: seq slot index (empty for an enumerate task)
-- Returns JSON: {status, seq, state, enumerated, job_done}
return cjson.encode(admission_facts(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]))
