-- Open a delivery connection (SSE or WebSocket) on a stream of an API key.
-- KEYS: the key's record, its connections (one hash tag).
-- ARGV: now_ms, connection_id, lease_ms. Edges refresh the leases of the
-- connections they hold; those of an edge that died expire by themselves.
-- Returns {'ok'} | {'unlimited'} (nothing counted) | {code, retry_after_ms}
local max = redis.call('HGET', KEYS[1], 'max_connections')
if not max then return {'unlimited'} end
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(max) then
  return {'max_connections_exceeded', 1000}
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {'ok'}
