-- Deletes a consumer of a log's consumer group, but only if it has no pending
-- entries: checked and done atomically, so no unacknowledged entry can be
-- dropped from the group's pending list (which would skip its message).
--
-- KEYS[1] partition log    ARGV[1] group    ARGV[2] consumer
-- Returns 1 if deleted, 0 if it still has pending entries.

local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
