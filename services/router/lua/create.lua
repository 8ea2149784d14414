-- Creates a conversation if it does not exist: meta hash, member set, and a
-- "conversation" event on the partition log (for the history writer's durable
-- copy), in one step (same hash tag). Returns 1 if created, 0 if it existed.
-- Every field name and event kind comes from parley.keys (ARGV), none is written here.
-- KEYS[1] meta hash   KEYS[2] members set   KEYS[3] partition log
-- ARGV[1..4] meta hash field names: kind, name, created_by, created_at
-- ARGV[5..7] log entry field names: kind, conversation, message   ARGV[8] event kind "conversation"
-- ARGV[9] kind  ARGV[10] name  ARGV[11] created_by  ARGV[12] created_at ms
-- ARGV[13] conversation id  ARGV[14] serialized parley.v1.Conversation  ARGV[15..] members
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[9], ARGV[2], ARGV[10], ARGV[3], ARGV[11], ARGV[4], ARGV[12])
for i = 15, #ARGV do
  redis.call('SADD', KEYS[2], ARGV[i])
end
redis.call('XADD', KEYS[3], '*', ARGV[5], ARGV[8], ARGV[6], ARGV[13], ARGV[7], ARGV[14])
return 1
