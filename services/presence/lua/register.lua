-- Registers (or re-registers) a session and returns its user's presence.
-- ARGV[ARG + 1] user id  ARGV[ARG + 2] device id  ARGV[ARG + 3] session id  ARGV[ARG + 4] gateway id
-- ARGV[ARG + 5] lease ms (the gateway's lease is set to it)
-- Returns {'ok', status, last_seen_ms, changed_ms} or {'conflict'} when the
-- session id is registered to another user.
local uid, device, sid, gateway, lease = ARGV[ARG + 1], ARGV[ARG + 2], ARGV[ARG + 3], ARGV[ARG + 4], tonumber(ARGV[ARG + 5])
local now = now_ms()

local existing = redis.call('HGET', KEYS[1], sid)
if existing and parse_session(existing) ~= uid then
  return {'conflict'}
end
if existing then
  local _, _, old_gateway = parse_session(existing)
  if old_gateway and old_gateway ~= gateway then redis.call('SREM', gateway_sessions_key(old_gateway), sid) end
end
redis.call('HSET', KEYS[1], sid, uid .. SEP .. device .. SEP .. gateway .. SEP .. lease)
redis.call('SADD', gateway_sessions_key(gateway), sid)
-- The session lives by its gateway's lease (renewed once per interval for all of them).
redis.call('ZADD', KEYS[2], now + lease, gateway_member(gateway))
redis.call('HSET', sessions_key(uid), sid, device)
on_session_added(uid, now)

local p = presence_of(uid, now)
return {'ok', p[1], p[2], p[3]}
