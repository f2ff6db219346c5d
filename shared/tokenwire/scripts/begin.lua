-- Start a generation attempt for the job entry ARGV[8].
-- ARGV: epoch, owner, now_ms, model, stream_id, maxlen, meta_ttl, job_entry, mode,
--       max_attempts, recreate, events_ttl, dead_data, then field/value pairs
--       that recreate the meta hash (used only when recreate = '1').
-- mode 'continue' keeps the epoch and its text when an earlier attempt wrote some;
-- an earlier attempt that wrote nothing but `start` is always continued, so its
-- clients see no reset. Otherwise a new epoch replaces the old one.
-- Returns {'ok', attempt, cancel_flag, epoch, last_seq, text, tokens}
--       | {'finished', status} | {'missing'} | {'other_job', entry}
--       | {'dead', attempts}: the job used up its attempts; the stream now ends
--         with the `error` event in ARGV[13].
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  if ARGV[11] ~= '1' then return {'missing'} end
  -- Redis lost the stream (an empty restart): the worker still holds the job.
  for i = 14, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  redis.call('HSET', KEYS[1], 'status', 'queued', 'attempt', 0, 'last_seq', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[7])
  status = 'queued'
end
if is_terminal(status) then return {'finished', status} end
-- A job enqueued twice (a client retry whose first reply was lost) runs once.
local owner_job = redis.call('HGET', KEYS[1], 'job_entry')
if owner_job and owner_job ~= ARGV[8] then return {'other_job', owner_job} end
redis.call('HSET', KEYS[1], 'job_entry', ARGV[8])
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'epoch', 'last_seq', 'cancel', 'tokens')
local attempts = tonumber(cur[1] or '0')
if attempts >= tonumber(ARGV[10]) then
  local epoch, last = cur[2], tonumber(cur[3] or '0')
  if not epoch then
    epoch, last = ARGV[1], 1
    start_epoch(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
  end
  add_terminal(epoch, last + 1, 'error', ARGV[13], 'error', ARGV[3], ARGV[6], ARGV[12])
  return {'dead', attempts}
end
local last = tonumber(cur[3] or '0')
if status == 'running' and cur[2] and (last <= 1 or ARGV[9] == 'continue')
    and redis.call('EXISTS', KEYS[3]) == 1 then
  local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
  redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'attempt_started_at', ARGV[3])
  return {'ok', attempt, cur[4] or '0', cur[2], last, redis.call('GET', KEYS[3]),
          cur[5] or '0'}
end
local attempt = start_epoch(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
return {'ok', attempt, cur[4] or '0', ARGV[1], 1, '', '0'}
