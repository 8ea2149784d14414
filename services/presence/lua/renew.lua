-- Renews the leases of a batch of one gateway's sessions, each by its own
-- lease length. A session whose lease ran out but that no reaper removed yet
-- is renewed too: nobody was told it had gone.
-- ARGV[3] gateway id  ARGV[4...] session ids (bounded by the caller)
-- Returns the ids that are not live sessions of this gateway (reaped, never
-- registered, or registered by another gateway): the gateway re-registers them.
local gateway = ARGV[3]
local now = now_ms()
local expired = {}
if #ARGV < 4 then return expired end

local values = redis.call('HMGET', KEYS[1], unpack(ARGV, 4))
local zadd = {}
for i, value in ipairs(values) do
  local sid = ARGV[i + 3]
  local ok = false
  if value then
    local _, _, gw, lease = parse_session(value)
    if gw == gateway then
      zadd[#zadd + 1] = now + tonumber(lease)
      zadd[#zadd + 1] = sid
      ok = true
    end
  end
  if not ok then expired[#expired + 1] = sid end
end
if #zadd > 0 then
  redis.call('ZADD', KEYS[2], 'XX', unpack(zadd))
end
return expired
