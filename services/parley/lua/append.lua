-- Appends a batch of messages of one log partition, each one atomically:
-- dedupe, membership check, next seq, the conversation's message stream and
-- the partition log. Every key of a batch shares the partition's hash tag,
-- so the batch is one Cluster slot and one round trip, however many
-- messages (and conversations) it holds. Messages are independent: one
-- refused (not a member) does not affect the others.
--
-- ARGV[1] dedupe TTL seconds   ARGV[2] message stream max length (approximate)
-- ARGV[3..7] field names (parley.keys): conversation, seq, message, exclude session, traceparent
-- Then, per message i (0-based), KEYS[7i+1 .. 7i+7]:
--   seq counter, dedupe key, conversation messages stream, partition log,
--   members set, conversation meta hash, legacy dedupe key (read only, for its 48 h TTL)
-- and ARGV[8+8i .. 15+8i]:
--   sender id, serialized parley.v1.Message without seq, message id,
--   server time ms, exclude session id, traceparent, conversation id,
--   deadline (unix ms; 0 = none)
--
-- Returns per message {status, seq, message_id, server_time_ms} (flattened),
-- status "ok", "dup" (an earlier send with the same key: its seq),
-- "not_found", "not_member" or "expired": the deadline had passed by Redis'
-- clock when the script ran (e.g. the request sat in a stalled connection),
-- so nothing was stored and the caller, who has given up, retries it.

local ttl, maxlen = ARGV[1], ARGV[2]
local F_CONV, F_SEQ, F_MSG, F_EXCLUDE, F_TRACE = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]

-- protobuf varint of field 2 (seq): tag 0x10 then base-128 little-endian groups.
-- Appending a field to a serialized message is valid protobuf (fields merge).
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

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local out = {}
local count = #KEYS / 7
for i = 0, count - 1 do
  local k, a = 7 * i, 7 + 8 * i
  local sender, draft, mid, ts = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local deadline = tonumber(ARGV[a + 8])
  local dup = redis.call('GET', KEYS[k + 2]) or redis.call('GET', KEYS[k + 7])
  if dup then
    local seq, dmid, dts = string.match(dup, '^(%d+):([^:]*):(%d+)$')
    out[#out + 1] = 'dup'; out[#out + 1] = seq; out[#out + 1] = dmid; out[#out + 1] = dts
  elseif deadline > 0 and now > deadline then
    out[#out + 1] = 'expired'; out[#out + 1] = '0'; out[#out + 1] = ''; out[#out + 1] = '0'
  elseif redis.call('EXISTS', KEYS[k + 6]) == 0 then
    out[#out + 1] = 'not_found'; out[#out + 1] = '0'; out[#out + 1] = ''; out[#out + 1] = '0'
  elseif redis.call('SISMEMBER', KEYS[k + 5], sender) == 0 then
    out[#out + 1] = 'not_member'; out[#out + 1] = '0'; out[#out + 1] = ''; out[#out + 1] = '0'
  else
    local seq = redis.call('INCR', KEYS[k + 1])
    local payload = draft .. '\16' .. varint(seq)
    redis.call('XADD', KEYS[k + 3], 'MAXLEN', '~', maxlen, seq .. '-0', F_MSG, payload)
    redis.call('XADD', KEYS[k + 4], '*', F_CONV, ARGV[a + 7], F_SEQ, seq, F_MSG, payload,
      F_EXCLUDE, ARGV[a + 5], F_TRACE, ARGV[a + 6])
    redis.call('SET', KEYS[k + 2], seq .. ':' .. mid .. ':' .. ts, 'EX', ttl)
    out[#out + 1] = 'ok'; out[#out + 1] = tostring(seq); out[#out + 1] = mid; out[#out + 1] = ts
  end
end
return out
