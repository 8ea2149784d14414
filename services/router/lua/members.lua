-- Adds or removes members of an existing conversation and records the change
-- as a "join" or "leave" event on the partition log, atomically.
-- Every field name and event kind comes from parley.keys (ARGV), none is written here.
-- KEYS[1] members set   KEYS[2] partition log
-- ARGV[1] "1" to add, "0" to remove   ARGV[2] event kind ("join" or "leave")
-- ARGV[3..5] log entry field names: kind, conversation, users
-- ARGV[6] conversation id   ARGV[7..] users
-- Returns the users that actually changed.
local add = ARGV[1] == '1'
local changed = {}
for i = 7, #ARGV do
  local n
  if add then
    n = redis.call('SADD', KEYS[1], ARGV[i])
  else
    n = redis.call('SREM', KEYS[1], ARGV[i])
  end
  if n == 1 then changed[#changed + 1] = ARGV[i] end
end
if #changed > 0 then
  redis.call('XADD', KEYS[2], '*', ARGV[3], ARGV[2], ARGV[4], ARGV[6], ARGV[5], table.concat(changed, ','))
end
return changed
