-- Enqueue a job unless the queue is full: the check and the add in one step
-- (an XLEN then an XADD let concurrent requests overshoot the limit).
-- KEYS[1]: tw:jobs. ARGV: max_queue_length, job_json.
-- Returns the entry id, or false when the queue is full.
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', 'job', ARGV[2])
