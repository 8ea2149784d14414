-- Presence of many users, read at one instant.
-- ARGV[ARG + 1...] user ids (bounded by the caller)
-- Returns {status, last_seen_ms, changed_ms} per user, flattened, in order.
local now = now_ms()
local out = {}
for i = ARG + 1, #ARGV do
  local p = presence_of(ARGV[i], now)
  out[#out + 1] = p[1]
  out[#out + 1] = p[2]
  out[#out + 1] = p[3]
end
return out
