-- Enqueue a job unless its partition is full: the check and the add in one step
-- (an XLEN then an XADD let concurrent requests overshoot the limit), and wake
-- the idle workers (a broadcast: PUBLISH names no key, so any node may send it).
-- KEYS[1]: the partition's job stream. ARGV: max_length, job_json, wake_channel,
-- partition. Returns the entry id, or false when the partition is full.
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
local entry = redis.call('XADD', KEYS[1], '*', 'job', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return entry
