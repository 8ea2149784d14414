-- Creates a conversation if it does not exist: meta hash and member set in
-- one step (same hash tag). Returns 1 if created, 0 if it already existed.
-- KEYS[1] meta hash   KEYS[2] members set
-- ARGV[1] kind  ARGV[2] name  ARGV[3] created_by  ARGV[4] created_at ms  ARGV[5..] members
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'kind', ARGV[1], 'name', ARGV[2], 'created_by', ARGV[3], 'created_at', ARGV[4])
for i = 5, #ARGV do
  redis.call('SADD', KEYS[2], ARGV[i])
end
return 1
