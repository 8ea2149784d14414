-- Creates a conversation if it does not exist: meta hash, member set, and a
-- "conversation" event on the partition log (for the history writer's durable
-- copy), in one step (same hash tag). Returns 1 if created, 0 if it existed.
-- KEYS[1] meta hash   KEYS[2] members set   KEYS[3] partition log
-- ARGV[1] kind  ARGV[2] name  ARGV[3] created_by  ARGV[4] created_at ms
-- ARGV[5] conversation id  ARGV[6] serialized parley.v1.Conversation  ARGV[7..] members
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'kind', ARGV[1], 'name', ARGV[2], 'created_by', ARGV[3], 'created_at', ARGV[4])
for i = 7, #ARGV do
  redis.call('SADD', KEYS[2], ARGV[i])
end
redis.call('XADD', KEYS[3], '*', 'k', 'conversation', 'c', ARGV[5], 'm', ARGV[6])
return 1
