-- Begin a turn: one generation at a time per conversation. The user's message
-- is appended, the history trimmed, and the turn's stream named as active, in
-- one step, so two edges racing for the same conversation cannot both begin.
-- ARGV: tenant, conversation_id, now_ms, create ('1': create it when missing),
--   key_id, stream_id, assistant_message_id, user_message (JSON; '' for none),
--   truncate_from (a message id: it and all after it go first; ''),
--   regenerate ('1': trailing assistant messages go first), max_messages,
--   max_chars, ttl_seconds
-- Returns {'ok', message...} (the history the turn answers)
--       | {'missing'} | {'busy', active_stream_id, active_since} | {'unknown_message'}
--       | {'nothing_to_regenerate'} (regenerate, and no message of the user to answer)
-- Every refusal comes before the first write: a refused turn changes nothing.
local exists = redis.call('EXISTS', KEYS[1]) == 1
if not exists and ARGV[4] ~= '1' then return {'missing'} end
local active = redis.call('HMGET', KEYS[1], 'active', 'active_since')
if active[1] and active[1] ~= '' then return {'busy', active[1], active[2] or '0'} end
if ARGV[10] == '1' then
  local raw = redis.call('LRANGE', KEYS[2], 0, -1)
  local last = #raw
  while last > 0 and cjson.decode(raw[last]).role == 'assistant' do last = last - 1 end
  if last == 0 then return {'nothing_to_regenerate'} end
end
if ARGV[9] ~= '' then
  local raw = redis.call('LRANGE', KEYS[2], 0, -1)
  local found = nil
  for i = 1, #raw do
    if cjson.decode(raw[i]).id == ARGV[9] then
      found = i
      break
    end
  end
  if not found then return {'unknown_message'} end
  if found == 1 then redis.call('DEL', KEYS[2]) else redis.call('LTRIM', KEYS[2], 0, found - 2) end
end
if not exists then
  redis.call('HSET', KEYS[1], 'tenant', ARGV[1], 'id', ARGV[2], 'created_at', ARGV[3],
             'key_id', ARGV[5], 'system', '')
end
if ARGV[10] == '1' then
  while true do
    local last = redis.call('LINDEX', KEYS[2], -1)
    if not last or cjson.decode(last).role ~= 'assistant' then break end
    redis.call('RPOP', KEYS[2])
  end
end
local user_message_id = ''
if ARGV[8] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[8])
  user_message_id = cjson.decode(ARGV[8]).id
end
trim_history(tonumber(ARGV[11]), tonumber(ARGV[12]))
redis.call('HSET', KEYS[1], 'active', ARGV[6], 'active_message', ARGV[7], 'active_since', ARGV[3],
           'active_user_message', user_message_id)
touch(ARGV[3], ARGV[13])
local history = redis.call('LRANGE', KEYS[2], 0, -1)
table.insert(history, 1, 'ok')
return history
