-- The first step of retrying an ended flow: it is unfinished again, for
-- the retry `runs`, before its keys say so, so that no crash leaves a
-- running flow that no sweep finds.
-- ARGV (after index.lua's): id runs workflow
write_entry(ARGV[4], ARGV[5], ARGV[6])
return 1
