-- Shared by the conversation scripts. KEYS[1] the record (hash), KEYS[2] the
-- messages (a list of JSON objects, oldest first); one hash tag, one slot.

-- Characters, not bytes: UTF-8 bytes that do not continue a character.
local function chars(text)
  local _, count = string.gsub(text, '[^\128-\191]', '')
  return count
end

-- Keep at most `max_messages` messages and `max_chars` characters by dropping
-- the oldest whole turns (a user message and what follows it up to the next
-- user message); the newest turn always stays, and no message is ever cut.
local function trim_history(max_messages, max_chars)
  local raw = redis.call('LRANGE', KEYS[2], 0, -1)
  local count, roles, sizes, total = #raw, {}, {}, 0
  for i = 1, count do
    local message = cjson.decode(raw[i])
    roles[i] = message.role
    sizes[i] = chars(message.content or '')
    total = total + sizes[i]
  end
  local drop = 0
  while count - drop > max_messages or total > max_chars do
    local next_turn = nil
    for i = drop + 2, count do
      if roles[i] == 'user' then
        next_turn = i
        break
      end
    end
    if not next_turn then break end
    for i = drop + 1, next_turn - 1 do total = total - sizes[i] end
    drop = next_turn - 1
  end
  if drop > 0 then redis.call('LTRIM', KEYS[2], drop, -1) end
end

local function touch(now, ttl)
  redis.call('HSET', KEYS[1], 'updated_at', now)
  redis.call('EXPIRE', KEYS[1], ttl)
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('EXPIRE', KEYS[2], ttl) end
end
