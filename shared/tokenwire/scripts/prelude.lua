-- Shared by every per-stream script. Keys, in this order, always:
--   KEYS[1] meta hash, KEYS[2] event stream, KEYS[3] text, KEYS[4] live channel.
-- All four share the stream id's hash tag, hence one Cluster slot.

-- When this call's events were appended, on Redis' clock (TIME, in microseconds),
-- read once per call: every edge measures delivery lag against the same clock,
-- whatever the clocks of the worker and edge hosts say (``redis_clock.py``).
local appended_at_us = nil
local function appended_at()
  if not appended_at_us then
    local now = redis.call('TIME')
    appended_at_us = now[1] .. string.format('%06d', tonumber(now[2]))
  end
  return appended_at_us
end

-- An event: its entry (fields e: epoch, t: type, d: data, a: appended at) and its
-- live message, `<epoch>.<seq>@<appended at> <type> <data>` (``Event.from_live_message``).
local function add_event(epoch, seq, etype, data, maxlen)
  local at = appended_at()
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, seq .. '-0',
             'e', epoch, 't', etype, 'd', data, 'a', at)
  redis.call('SPUBLISH', KEYS[4], epoch .. '.' .. seq .. '@' .. at .. ' ' .. etype .. ' ' .. data)
end

-- The terminal event: the stream's status and final data are set with it, and its
-- events expire `events_ttl` seconds later (the meta hash and text stay longer).
local function add_terminal(epoch, seq, etype, data, status, now, maxlen, events_ttl)
  add_event(epoch, seq, etype, data, maxlen)
  redis.call('HSET', KEYS[1], 'last_seq', seq, 'status', status, 'finished_at', now,
             'final', data)
  redis.call('EXPIRE', KEYS[2], events_ttl)
end

local function is_terminal(status)
  return status == 'done' or status == 'error' or status == 'cancelled'
end

-- A new incarnation of the stream: new epoch, next attempt (the fencing token),
-- the old epoch's events and text replaced, and its `start` event as seq 1.
local function start_epoch(epoch, owner, now, model, stream_id, maxlen, ttl)
  local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
  redis.call('DEL', KEYS[2])
  redis.call('SET', KEYS[3], '')
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'epoch_attempt', attempt, 'last_seq', 1,
             'status', 'running', 'owner', owner, 'model', model, 'tokens', 0,
             'attempt_started_at', now)
  redis.call('HSETNX', KEYS[1], 'started_at', now)
  local data = cjson.encode({stream_id = stream_id, model = model, epoch = epoch,
                             attempt = attempt})
  add_event(epoch, 1, 'start', data, maxlen)
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
  return attempt
end
