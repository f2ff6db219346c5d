-- End a conversation's turn, exactly once: the first call for the active turn
-- appends its answer (a cancelled one as delivered, marked so; an error and an
-- abandoned turn append nothing) and frees the conversation; any later call,
-- from another worker or edge, finds another turn active (or none): 'stale'.
-- ARGV: stream_id, outcome ('done' | 'cancelled' | 'error' | 'abandoned': the
--   turn's stream was never created, so its user message is taken back too),
--   content, finish_reason, now_ms, max_messages, max_chars, ttl_seconds
-- Returns 'ok' | 'stale' | 'missing'
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
local turn = redis.call('HMGET', KEYS[1], 'active', 'active_message', 'active_user_message')
if turn[1] ~= ARGV[1] then return 'stale' end
local outcome = ARGV[2]
if outcome == 'abandoned' then
  local last = redis.call('LINDEX', KEYS[2], -1)
  if last and turn[3] and turn[3] ~= '' and cjson.decode(last).id == turn[3] then
    redis.call('RPOP', KEYS[2])
  end
elseif outcome == 'done' or outcome == 'cancelled' then
  redis.call('RPUSH', KEYS[2], cjson.encode({
    id = turn[2], role = 'assistant', content = ARGV[3], created_at = tonumber(ARGV[5]),
    stream_id = ARGV[1], status = outcome, finish_reason = ARGV[4]}))
end
redis.call('HDEL', KEYS[1], 'active', 'active_message', 'active_since', 'active_user_message')
redis.call('HSET', KEYS[1], 'last_stream', ARGV[1])
trim_history(tonumber(ARGV[6]), tonumber(ARGV[7]))
touch(ARGV[5], ARGV[8])
return 'ok'
