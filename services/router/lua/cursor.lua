-- Raises a member's delivered or read position, never lowers it, never past
-- the conversation's last seq. A read position also raises delivered, and is
-- recorded as a "read" event on the partition log (the durable unread count).
-- Every field name and event kind comes from parley.keys (ARGV), none is written here.
-- KEYS[1] cursors hash  KEYS[2] members set  KEYS[3] seq counter  KEYS[4] partition log
-- ARGV[1] cursors hash field of the position to raise   ARGV[2] "1" if it is the read position
-- ARGV[3] seq   ARGV[4] cursors hash field of the user's delivered position
-- ARGV[5] user id   ARGV[6] conversation id
-- ARGV[7..10] log entry field names: kind, conversation, users, seq   ARGV[11] event kind "read"
-- Returns {status, position, advanced}: status "ok" or "not_member".
local field, is_read, user = ARGV[1], ARGV[2] == '1', ARGV[5]
if redis.call('SISMEMBER', KEYS[2], user) == 0 then
  return {'not_member', 0, 0}
end
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
local want = math.min(tonumber(ARGV[3]), last)
local old = tonumber(redis.call('HGET', KEYS[1], field) or '0')
if is_read then
  local dfield = ARGV[4]
  local dold = tonumber(redis.call('HGET', KEYS[1], dfield) or '0')
  if want > dold then redis.call('HSET', KEYS[1], dfield, want) end
end
if want > old then
  redis.call('HSET', KEYS[1], field, want)
  if is_read then
    redis.call('XADD', KEYS[4], '*', ARGV[7], ARGV[11], ARGV[8], ARGV[6], ARGV[9], user, ARGV[10], want)
  end
  return {'ok', want, 1}
end
return {'ok', old, 0}
