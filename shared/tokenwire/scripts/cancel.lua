-- Cancel a stream; idempotent.
-- ARGV: epoch, now_ms, stream_id, maxlen, meta_ttl, events_ttl, done_data, tenant
-- A non-empty tenant finds only that tenant's stream: another's is 'missing'.
-- Queued: ended right here (start + done "cancelled"); the worker that later takes
-- the job finds it finished. Running: flagged; the owning worker is told on
-- tw:cancel and also sees the flag in its next append's reply.
-- Returns {'cancelled', key_id} | {'cancelling'} | {final status} | {'missing'}
local status, owner = unpack(redis.call('HMGET', KEYS[1], 'status', 'tenant'))
if not status or (ARGV[8] ~= '' and owner ~= ARGV[8]) then return {'missing'} end
if is_terminal(status) then return {status} end
redis.call('HSET', KEYS[1], 'cancel', '1', 'cancel_requested_at', ARGV[2])
if status == 'queued' then
  local model = redis.call('HGET', KEYS[1], 'model') or ''
  start_epoch(ARGV[1], 'edge', ARGV[2], model, ARGV[3], ARGV[4], ARGV[5])
  add_terminal(ARGV[1], 2, 'done', ARGV[7], 'cancelled', ARGV[2], ARGV[4], ARGV[6])
  return {'cancelled', redis.call('HGET', KEYS[1], 'key_id') or ''}
end
return {'cancelling'}
