-- Create a conversation unless it exists.
-- ARGV: tenant, conversation_id, now_ms, key_id, system, ttl_seconds
-- Returns 'created' | 'exists'
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
redis.call('HSET', KEYS[1], 'tenant', ARGV[1], 'id', ARGV[2], 'created_at', ARGV[3],
           'key_id', ARGV[4], 'system', ARGV[5])
touch(ARGV[3], ARGV[6])
return 'created'
