-- An edge is delivering this stream to someone: record when (for on_disconnect).
-- ARGV: now_ms. Never creates a record for a stream that is gone.
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'seen_at', ARGV[1]) end
return 0
