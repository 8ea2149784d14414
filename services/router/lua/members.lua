-- Adds or removes members of an existing conversation and records the change
-- as a "join" or "leave" event on the partition log, atomically.
-- KEYS[1] members set   KEYS[2] partition log
-- ARGV[1] "join" or "leave"   ARGV[2] conversation id   ARGV[3..] users
-- Returns the users that actually changed.
local changed = {}
for i = 3, #ARGV do
  local n
  if ARGV[1] == 'join' then
    n = redis.call('SADD', KEYS[1], ARGV[i])
  else
    n = redis.call('SREM', KEYS[1], ARGV[i])
  end
  if n == 1 then changed[#changed + 1] = ARGV[i] end
end
if #changed > 0 then
  redis.call('XADD', KEYS[2], '*', 'k', ARGV[1], 'c', ARGV[2], 'u', table.concat(changed, ','))
end
return changed
