-- Ends a session. If it was the user's last one the user goes offline: at
-- once, or, when the connection was lost, after the grace period (the user is
-- put in the lingering zset and the reaper declares offline when it is due,
-- unless a session comes back first). Unknown sessions (already reaped or
-- never registered) change nothing.
-- ARGV[ARG + 1] user id  ARGV[ARG + 2] session id  ARGV[ARG + 3] "1" if the connection was lost
-- ARGV[ARG + 4] grace ms
-- Returns {status, last_seen_ms, changed_ms}.
local uid, sid, lost, grace = ARGV[ARG + 1], ARGV[ARG + 2], ARGV[ARG + 3] == '1', tonumber(ARGV[ARG + 4])
local now = now_ms()

local existing = redis.call('HGET', KEYS[1], sid)
if existing and parse_session(existing) == uid then
  local left = drop_session(sid, uid)
  if left == 0 and status_of(uid) ~= OFFLINE then
    if lost and grace > 0 then
      redis.call('HSET', state_key(uid), F_LOST_AT, now)
      redis.call('ZADD', KEYS[3], now + grace, uid)
    else
      go_offline(uid, now, now)
    end
  end
end
return presence_of(uid, now)
