-- Start a generation attempt.
-- ARGV: epoch, owner, now_ms, model, stream_id, maxlen, meta_ttl
-- Returns {'ok', attempt, cancel_flag} | {'finished', status} | {'missing'}
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if is_terminal(status) then return {'finished', status} end
local attempt = start_epoch(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
return {'ok', attempt, redis.call('HGET', KEYS[1], 'cancel') or '0'}
