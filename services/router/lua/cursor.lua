-- Raises a member's delivered or read position, never lowers it, never past
-- the conversation's last seq. A read position also raises delivered, and is
-- recorded as a "read" event on the partition log (the durable unread count).
-- KEYS[1] cursors hash  KEYS[2] members set  KEYS[3] seq counter  KEYS[4] partition log
-- ARGV[1] user id  ARGV[2] "d" or "r"  ARGV[3] seq  ARGV[4] conversation id
-- Returns {status, position, advanced}: status "ok" or "not_member".
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then
  return {'not_member', 0, 0}
end
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
local want = math.min(tonumber(ARGV[3]), last)
local field = ARGV[2] .. ':' .. ARGV[1]
local old = tonumber(redis.call('HGET', KEYS[1], field) or '0')
if ARGV[2] == 'r' then
  local dfield = 'd:' .. ARGV[1]
  local dold = tonumber(redis.call('HGET', KEYS[1], dfield) or '0')
  if want > dold then redis.call('HSET', KEYS[1], dfield, want) end
end
if want > old then
  redis.call('HSET', KEYS[1], field, want)
  if ARGV[2] == 'r' then
    redis.call('XADD', KEYS[4], '*', 'k', 'read', 'c', ARGV[4], 'u', ARGV[1], 's', want)
  end
  return {'ok', want, 1}
end
return {'ok', old, 0}
