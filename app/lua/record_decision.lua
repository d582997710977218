-- Record one /choose decision atomically, or return the stored answer of an
-- earlier request with the same request_id.
-- KEYS: decision hash, pending zset, stream, request key
-- ARGV: has_request, response, ttl_ms, deadline_ms, decision_id, n_hash,
--       hash field/values (n_hash of them), then the stream entry's field/values
if ARGV[1] == '1' then
  local earlier = redis.call('GET', KEYS[4])
  if earlier then return earlier end
end
local n_hash = tonumber(ARGV[6])
local hash_args = {}
for i = 7, 6 + n_hash do hash_args[#hash_args + 1] = ARGV[i] end
local event_args = {}
for i = 7 + n_hash, #ARGV do event_args[#event_args + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(hash_args))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
redis.call('XADD', KEYS[3], '*', unpack(event_args))
if ARGV[1] == '1' then
  redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[3])
end
return false
