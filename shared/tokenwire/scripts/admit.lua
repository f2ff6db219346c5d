-- Admit a new stream (or another request that costs, such as a new
-- conversation) for an API key: every limit checked and counted in one step, so
-- concurrent creations on any number of edges cannot overshoot.
-- KEYS: the key's record, running, requests, tokens, connections (one hash tag).
-- ARGV: now_ms, member (the stream id), running_lease_ms, runs ('1': the member
-- takes a running slot; '0': it counts as a request only)
-- Returns {'ok'} | {'revoked'} | {code, retry_after_ms}. A refusal counts nothing.
local now = tonumber(ARGV[1])
local limit = redis.call('HMGET', KEYS[1], 'sha256', 'max_running', 'requests_per_minute',
                         'tokens_per_minute')
if not limit[1] then return {'revoked'} end
if limit[4] then
  -- Tokens are counted by the workers as they generate (spend.lua), per window.
  if tonumber(redis.call('GET', KEYS[4]) or '0') >= tonumber(limit[4]) then
    return {'tokens_per_minute_exceeded', math.max(redis.call('PTTL', KEYS[4]), 1000)}
  end
end
if limit[3] then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 60000)
  if redis.call('ZCARD', KEYS[3]) >= tonumber(limit[3]) then
    local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return {'requests_per_minute_exceeded', math.max(tonumber(oldest[2]) + 60000 - now, 1000)}
  end
end
local runs = ARGV[4] == '1' and limit[2]
if runs then
  -- A slot expires by itself (a crash leaked it); workers refresh those they run.
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= tonumber(limit[2]) then
    return {'max_running_exceeded', 2000}
  end
end
if limit[3] then
  redis.call('ZADD', KEYS[3], now, ARGV[2])
  redis.call('PEXPIRE', KEYS[3], 60000)
end
if runs then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return {'ok'}
