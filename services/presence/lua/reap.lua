-- One bounded reaper pass, run by every replica: removes the sessions of
-- gateways whose lease expired and declares offline the users left without
-- sessions, then declares
-- offline the lingering users whose grace period is over. Atomic, so when two
-- replicas reap at once each expired session is removed, and each change
-- emitted, by exactly one of them.
-- ARGV[ARG + 1] maximum number of leases and of lingering users handled
-- Returns {sessions reaped, users declared offline, 1 if a batch was full}.
local limit = tonumber(ARGV[ARG + 1])
local now = now_ms()
local reaped, offline = 0, 0

-- Members are gateways (gw<SEP>id: all of its sessions) or, from before
-- gateway leases, single sessions.
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
local function reap_session(sid, expiry)
  local value = redis.call('HGET', KEYS[1], sid)
  reaped = reaped + 1
  if value then
    local uid, _, _, lease = parse_session(value)
    if drop_session(sid, uid) == 0 and status_of(uid) ~= OFFLINE then
      -- Last seen: the last renewal, the last time the session was known alive.
      go_offline(uid, expiry - tonumber(lease), now)
      offline = offline + 1
    end
  end
end
local more = 0
for i = 1, #due, 2 do
  local member, expiry = due[i], tonumber(due[i + 1])
  if string.sub(member, 1, #GATEWAY_MEMBER) == GATEWAY_MEMBER then
    -- A dead gateway: its sessions, a bounded number per pass.
    local set = gateway_sessions_key(string.sub(member, #GATEWAY_MEMBER + 1))
    for _, sid in ipairs(redis.call('SPOP', set, limit)) do
      reap_session(sid, expiry)
    end
    if redis.call('SCARD', set) == 0 then
      redis.call('ZREM', KEYS[2], member)
    else
      more = 1
    end
  else
    reap_session(member, expiry)
    redis.call('ZREM', KEYS[2], member)
  end
end

local lingering = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, limit)
for _, uid in ipairs(lingering) do
  redis.call('ZREM', KEYS[3], uid)
  if redis.call('HLEN', sessions_key(uid)) == 0 and status_of(uid) ~= OFFLINE then
    local lost_at = tonumber(redis.call('HGET', state_key(uid), F_LOST_AT)) or now
    go_offline(uid, lost_at, now)
    offline = offline + 1
  end
end

local full = more
if #due / 2 >= limit or #lingering >= limit then full = 1 end
return {reaped, offline, full}
