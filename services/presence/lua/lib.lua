-- Shared by every presence script (prepended to each one when it is loaded).
--
-- Calling convention of all presence scripts:
--   KEYS[1] session index (hash)    KEYS[2] lease expiries (zset)
--   KEYS[3] lingering users (zset)  KEYS[4] change stream   KEYS[5] stats (hash)
--   ARGV[1] key base "<prefix>:{presence}:" for the per-user keys, which
--           share the hash tag of KEYS (one Cluster slot)
--   ARGV[2] change stream max length (approximate)
--   ARGV[3..13] names from parley.keys (PRESENCE_SCRIPT_NAMES): key suffixes,
--           hash and stream fields; no name is written in the scripts
--   ARGV[ARG + 1 ...] the script's own arguments
--
-- The clock is Redis TIME: every replica reads the same clock, so leases do
-- not depend on the presence hosts' clocks agreeing.

-- parley.v1.PresenceStatus numbers
local ONLINE, OFFLINE, AWAY = 1, 2, 3
local SEP = '\31'
local BASE = ARGV[1]
local STATE, SESSIONS, GATEWAY_SESSIONS = ARGV[3], ARGV[4], ARGV[5]
local F_STATUS, F_LAST_SEEN, F_CHANGED, F_LOST_AT = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local F_PRESENCE = ARGV[10]
local GATEWAY_MEMBER = ARGV[11] .. SEP
local STAT_ONLINE, STAT_TO = ARGV[12], ARGV[13]
local ARG = 13

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function state_key(uid) return BASE .. STATE .. uid end
local function sessions_key(uid) return BASE .. SESSIONS .. uid end
-- A gateway's live sessions (set), and its member in the lease zset: sessions
-- live by their gateway's lease, so a gateway renews one entry, not one per session.
local function gateway_sessions_key(gateway) return BASE .. GATEWAY_SESSIONS .. gateway end
local function gateway_member(gateway) return GATEWAY_MEMBER .. gateway end

-- index value: user, device, gateway, lease ms
local function parse_session(value)
  return string.match(value, '^([^\31]*)\31([^\31]*)\31([^\31]*)\31(%d+)$')
end

-- protobuf encoding of parley.v1.Presence, so a change entry is ready to push
-- to clients without decoding. Numbers stay below 2^53, exact in Lua doubles.
local function varint(n)
  local out = {}
  repeat
    local b = n % 128
    n = math.floor(n / 128)
    if n > 0 then b = b + 128 end
    out[#out + 1] = string.char(b)
  until n == 0
  return table.concat(out)
end

-- google.protobuf.Timestamp as a length-delimited field with the given tag byte.
local function timestamp_field(tag, ms)
  local seconds = math.floor(ms / 1000)
  local nanos = (ms % 1000) * 1000000
  local body = ''
  if seconds > 0 then body = '\8' .. varint(seconds) end
  if nanos > 0 then body = body .. '\16' .. varint(nanos) end
  return string.char(tag) .. varint(#body) .. body
end

local function encode_presence(uid, status, last_seen_ms, changed_ms)
  -- field 1 user_id (tag 10), 2 status (16), 3 last_seen (26), 4 changed_at (34)
  local out = '\10' .. varint(#uid) .. uid .. '\16' .. varint(status)
  if last_seen_ms > 0 then out = out .. timestamp_field(26, last_seen_ms) end
  if changed_ms > 0 then out = out .. timestamp_field(34, changed_ms) end
  return out
end

-- Cluster-wide counters for metrics (KEYS[5], same hash tag): transitions
-- by new status (STAT_TO .. n) and users not offline (STAT_ONLINE).
local function count(field, by)
  redis.call('HINCRBY', KEYS[5], field, by)
end

local function emit(uid, status, last_seen_ms, changed_ms)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*',
    F_PRESENCE, encode_presence(uid, status, last_seen_ms, changed_ms))
  count(STAT_TO .. status, 1)
end

-- Stored status of a user; OFFLINE when never seen.
local function status_of(uid)
  local st = redis.call('HGET', state_key(uid), F_STATUS)
  if st then return tonumber(st) end
  return OFFLINE
end

-- {status, last_seen_ms, changed_ms} as reported to callers: an online user
-- was last seen now; a user never seen has zeros (unset timestamps).
local function presence_of(uid, now)
  local v = redis.call('HMGET', state_key(uid), F_STATUS, F_LAST_SEEN, F_CHANGED)
  if not v[1] then return {OFFLINE, 0, 0} end
  local st = tonumber(v[1])
  if st == OFFLINE then return {st, tonumber(v[2]) or 0, tonumber(v[3]) or 0} end
  return {st, now, tonumber(v[3]) or 0}
end

-- The user gained a session (already recorded).
local function on_session_added(uid, now)
  local sk = state_key(uid)
  if redis.call('ZREM', KEYS[3], uid) == 1 then
    -- Back within the grace period of a lost connection: the user never
    -- stopped being online, so there is nothing to change or broadcast.
    redis.call('HDEL', sk, F_LOST_AT)
  end
  if status_of(uid) == OFFLINE then
    redis.call('HSET', sk, F_STATUS, ONLINE, F_LAST_SEEN, now, F_CHANGED, now)
    count(STAT_ONLINE, 1)
    emit(uid, ONLINE, now, now)
  end
end

-- Declares the user offline (callers check that they are not already).
local function go_offline(uid, last_seen_ms, now)
  redis.call('ZREM', KEYS[3], uid)
  redis.call('HSET', state_key(uid), F_STATUS, OFFLINE, F_LAST_SEEN, last_seen_ms, F_CHANGED, now)
  redis.call('HDEL', state_key(uid), F_LOST_AT)
  count(STAT_ONLINE, -1)
  emit(uid, OFFLINE, last_seen_ms, now)
end

-- Removes one session from the index, its gateway's sessions, the leases and
-- its user's sessions; returns the number of sessions the user has left.
local function drop_session(sid, uid)
  local value = redis.call('HGET', KEYS[1], sid)
  if value then
    local _, _, gateway = parse_session(value)
    if gateway then redis.call('SREM', gateway_sessions_key(gateway), sid) end
  end
  redis.call('HDEL', KEYS[1], sid)
  redis.call('ZREM', KEYS[2], sid)  -- a lease of its own (registered before gateway leases)
  local sk = sessions_key(uid)
  redis.call('HDEL', sk, sid)
  return redis.call('HLEN', sk)
end

