-- Record one /choose decision atomically, or return the stored answer of an
-- earlier request with the same request_id.
-- KEYS: decision hash, pending zset, stream, request key, arm registry set
-- ARGV: has_request, response, ttl_ms, deadline_ms, decision_id, max_arms (0: no
--       registry), n_shown, the shown arm ids (n_shown of them), n_hash,
--       hash field/values (n_hash of them), then the stream entry's field/values
-- Returns false when recorded, the earlier response, or {'arm_limit'} when a
-- dynamic catalogue would grow past max_arms (then nothing is recorded).
if ARGV[1] == '1' then
  local earlier = redis.call('GET', KEYS[4])
  if earlier then return earlier end
end
local max_arms = tonumber(ARGV[6])
local n_shown = tonumber(ARGV[7])
local at = 8
if max_arms > 0 then
  local new = {}
  for i = at, at + n_shown - 1 do
    if redis.call('SISMEMBER', KEYS[5], ARGV[i]) == 0 then new[#new + 1] = ARGV[i] end
  end
  if #new > 0 then
    if redis.call('SCARD', KEYS[5]) + #new > max_arms then return {'arm_limit'} end
    redis.call('SADD', KEYS[5], unpack(new))
  end
end
at = at + n_shown
local n_hash = tonumber(ARGV[at])
local hash_args = {}
for i = at + 1, at + n_hash do hash_args[#hash_args + 1] = ARGV[i] end
local event_args = {}
for i = at + n_hash + 1, #ARGV do event_args[#event_args + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(hash_args))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
redis.call('XADD', KEYS[3], '*', unpack(event_args))
if ARGV[1] == '1' then
  redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[3])
end
return false
