-- Acquires or renews a partition lease for one owner.
-- KEYS[1] lease key   ARGV[1] owner id   ARGV[2] lease ms
-- Returns 1 when the caller holds the lease afterwards, 0 otherwise.
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
