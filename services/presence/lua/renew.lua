-- Renews one gateway's lease: every session it registered stays live. Work
-- per call does not grow with the gateway's sessions; the optional session
-- ids are only checked (a gateway re-registers those that are not its live
-- sessions, e.g. a registration that failed).
-- ARGV[ARG + 1] gateway id  ARGV[ARG + 2] lease ms  ARGV[ARG + 3...] session ids to check (bounded by the caller)
-- Returns {known, expired ids...}: known is 1 when the gateway held a live
-- lease before this call; 0 means its lease had expired (its sessions may be
-- reaped) or it had none, and it must register its sessions again.
local gateway, lease = ARGV[ARG + 1], tonumber(ARGV[ARG + 2])
local now = now_ms()
local member = gateway_member(gateway)
-- Known only if its lease had not expired: once expired, a reaper may already
-- have removed some of its sessions, so the gateway registers them all again.
local known = 0
local expiry = redis.call('ZSCORE', KEYS[2], member)
if expiry and tonumber(expiry) >= now then known = 1 end
if expiry or redis.call('SCARD', gateway_sessions_key(gateway)) > 0 then
  redis.call('ZADD', KEYS[2], now + lease, member)
end

local out = {known}
if #ARGV < ARG + 3 then return out end
local values = redis.call('HMGET', KEYS[1], unpack(ARGV, ARG + 3))
for i, value in ipairs(values) do
  local ok = false
  if value then
    local _, _, gw = parse_session(value)
    ok = gw == gateway
  end
  if not ok then out[#out + 1] = ARGV[i + ARG + 2] end
end
return out
