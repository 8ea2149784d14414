-- Appends one message to a conversation: dedupe, membership check, next seq,
-- the conversation's message stream and its partition log, all atomically.
-- Every key shares the partition's hash tag, so this is one Cluster slot.
--
-- KEYS[1] seq counter        KEYS[2] dedupe key       KEYS[3] conversation messages stream
-- KEYS[4] partition log      KEYS[5] members set      KEYS[6] conversation meta hash
-- KEYS[7] legacy dedupe key (ambiguous pre-upgrade format: read only, for its 48 h TTL)
-- ARGV[1] sender id          ARGV[2] serialized parley.v1.Message without seq
-- ARGV[3] message id         ARGV[4] server time ms   ARGV[5] dedupe TTL seconds
-- ARGV[6] messages stream max length (approximate)  ARGV[7] exclude session id
-- ARGV[8] traceparent        ARGV[9] conversation id
--
-- Returns {status, seq, message_id, server_time_ms} where status is
-- "ok", "dup" (an earlier send with the same key: its seq is returned),
-- "not_found" or "not_member".

local dup = redis.call('GET', KEYS[2])
if not dup and KEYS[7] then
  dup = redis.call('GET', KEYS[7])
end
if dup then
  local seq, mid, ts = string.match(dup, '^(%d+):([^:]*):(%d+)$')
  return {'dup', seq, mid, ts}
end
if redis.call('EXISTS', KEYS[6]) == 0 then
  return {'not_found', '0', '', '0'}
end
if redis.call('SISMEMBER', KEYS[5], ARGV[1]) == 0 then
  return {'not_member', '0', '', '0'}
end

local seq = redis.call('INCR', KEYS[1])

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
local payload = ARGV[2] .. '\16' .. varint(seq)

redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], seq .. '-0', 'm', payload)
redis.call('XADD', KEYS[4], '*', 'c', ARGV[9], 's', seq, 'm', payload, 'x', ARGV[7], 'tp', ARGV[8])
redis.call('SET', KEYS[2], seq .. ':' .. ARGV[3] .. ':' .. ARGV[4], 'EX', ARGV[5])
return {'ok', tostring(seq), ARGV[3], ARGV[4]}
