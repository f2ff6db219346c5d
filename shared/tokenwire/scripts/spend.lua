-- Count tokens a worker generated for an API key (tokens_per_minute).
-- KEYS[1]: the key's token counter. ARGV: tokens, window_ms.
-- The window starts with its first token and the counter expires with it.
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return total
