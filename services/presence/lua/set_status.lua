-- Sets the manual status (ONLINE or AWAY) of a user who is not offline; an
-- offline user stays offline (status is driven by sessions, not by this call).
-- ARGV[ARG + 1] user id  ARGV[ARG + 2] status number
-- Returns {status, last_seen_ms, changed_ms}.
local uid, wanted = ARGV[ARG + 1], tonumber(ARGV[ARG + 2])
local now = now_ms()
local current = status_of(uid)
if current ~= OFFLINE and current ~= wanted then
  redis.call('HSET', state_key(uid), F_STATUS, wanted, F_CHANGED, now)
  emit(uid, wanted, now, now)
end
return presence_of(uid, now)
