-- Append a batch of events of one attempt, atomically.
-- ARGV: attempt, first_seq, maxlen, events_ttl, final_status ('' unless terminal),
--       tokens_delta, now_ms, then (type, data, content) for each event.
-- Fencing: `attempt` must be the stream's current attempt. Idempotence: a batch
-- that was already applied (a retry after a lost reply) is acknowledged as
-- 'duplicate' and not written again; any other seq but last_seq + 1 is refused.
-- A stream whose job set `idle_cancel_ms` (on_disconnect: cancel_after) and that no
-- edge has reported watching (`seen_at`) for that long is flagged cancelled here.
-- Returns {'ok'|'duplicate', cancel_flag, unwatched_ms} | {'fenced'}
--       | {'seq_conflict', last_seq} | {'not_running', status} | {'missing'}
-- unwatched_ms: for a stream with that policy, how long no edge has reported a
-- viewer (-1 without the policy); the worker counts tokens written unwatched.
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'last_seq', 'status', 'cancel', 'epoch',
                      'idle_cancel_ms', 'seen_at', 'created_at')
if not cur[1] then return {'missing'} end
if cur[1] ~= ARGV[1] then return {'fenced'} end
local last = tonumber(cur[2])
local first = tonumber(ARGV[2])
local n = (#ARGV - 7) / 3
if first <= last then
  if first + n - 1 <= last then return {'duplicate', cur[4] or '0', -1} end
  return {'seq_conflict', last}
end
if cur[3] ~= 'running' then return {'not_running', cur[3]} end
if first ~= last + 1 then return {'seq_conflict', last} end
local unwatched = -1
if cur[6] then
  local seen = math.max(tonumber(cur[7] or '0'), tonumber(cur[8] or '0'))
  unwatched = math.max(tonumber(ARGV[7]) - seen, 0)
  if cur[4] ~= '1' and unwatched > tonumber(cur[6]) then
    redis.call('HSET', KEYS[1], 'cancel', '1', 'cancel_requested_at', ARGV[7],
               'cancel_reason', 'abandoned')
    cur[4] = '1'
  end
end
if tonumber(ARGV[6]) > 0 then redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[6]) end
for i = 0, n - 1 do
  local base = 8 + 3 * i
  if ARGV[5] ~= '' and i == n - 1 then  -- a terminal batch ends with its terminal event
    add_terminal(cur[5], first + i, ARGV[base], ARGV[base + 1], ARGV[5], ARGV[7], ARGV[3],
                 ARGV[4])
  else
    add_event(cur[5], first + i, ARGV[base], ARGV[base + 1], ARGV[3])
    if ARGV[base + 2] ~= '' then redis.call('APPEND', KEYS[3], ARGV[base + 2]) end
  end
end
redis.call('HSET', KEYS[1], 'last_seq', first + n - 1, 'last_append_at', appended_at())
return {'ok', cur[4] or '0', unwatched}
