-- Record one /choose decision atomically, or return the stored answer of an
-- earlier request with the same request_id.
-- KEYS: decision hash, pending zset, stream, request key, arm registry set,
--       request fingerprint key
-- ARGV: has_request, response, ttl_ms, deadline_ms, decision_id, max_arms (0: no
--       registry), shown arm ids joined by ',', default reward, reward min,
--       reward max, features, config version (its rewards are learned under its
--       settings), decision record (JSON), item features of the shown arms and of
--       every candidate (both empty: not an item model), the request's fingerprint
-- Returns false when recorded; {'earlier', response, fingerprint} for an earlier
-- request with the same request_id (fingerprint '' if it was stored by a release
-- that kept none); or {'arm_limit'} when a dynamic catalogue would grow past
-- max_arms (then nothing is recorded).
if ARGV[1] == '1' then
  local earlier = redis.call('GET', KEYS[4])
  if earlier then return {'earlier', earlier, redis.call('GET', KEYS[6]) or ''} end
end
local max_arms = tonumber(ARGV[6])
if max_arms > 0 then
  local new = {}
  for arm in string.gmatch(ARGV[7], '[^,]+') do
    if redis.call('SISMEMBER', KEYS[5], arm) == 0 then new[#new + 1] = arm end
  end
  if #new > 0 then
    if redis.call('SCARD', KEYS[5]) + #new > max_arms then return {'arm_limit'} end
    redis.call('SADD', KEYS[5], unpack(new))
  end
end
redis.call('HSET', KEYS[1], 'arms', ARGV[7], 'dl', ARGV[4], 'def', ARGV[8], 'lo', ARGV[9],
           'hi', ARGV[10], 'x', ARGV[11], 'c', ARGV[12])
local items = ARGV[14] or ''
if items ~= '' then redis.call('HSET', KEYS[1], 'z', items) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
if items ~= '' then
  redis.call('XADD', KEYS[3], '*', 't', 'decision', 'd', ARGV[13], 'x', ARGV[11], 'z', items,
             'zc', ARGV[15] or '')
else
  redis.call('XADD', KEYS[3], '*', 't', 'decision', 'd', ARGV[13], 'x', ARGV[11])
end
if ARGV[1] == '1' then
  redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[3])
  redis.call('SET', KEYS[6], ARGV[16], 'PX', ARGV[3])
end
return false
