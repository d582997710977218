-- Close the reward window of the given decisions: every shown arm that has no
-- reward yet gets the experiment's default reward, appended to the stream.
-- KEYS: pending zset, stream, then one decision hash per decision id
-- ARGV: now_ms, then the decision ids (same order as their hashes)
-- Returns the number of default rewards appended.
local appended = 0
for i = 2, #ARGV do
  local h = KEYS[i + 1]
  local f = redis.call('HMGET', h, 'arms', 'closed', 'def', 'x', 'c', 'z')
  if f[1] and f[2] ~= '1' then
    local slot = 0
    for arm in string.gmatch(f[1], '[^,]+') do
      if redis.call('HEXISTS', h, 'r:' .. arm) == 0 then
        if f[6] then  -- an item model's decision: the shown items' features go along
          redis.call('XADD', KEYS[2], '*', 't', 'reward', 'id', ARGV[i], 'arm', arm, 'r', f[3],
                     'kind', 'default', 'ts', ARGV[1], 'slot', slot, 'x', f[4], 'c', f[5],
                     'z', f[6])
        else
          redis.call('XADD', KEYS[2], '*', 't', 'reward', 'id', ARGV[i], 'arm', arm, 'r', f[3],
                     'kind', 'default', 'ts', ARGV[1], 'slot', slot, 'x', f[4], 'c', f[5])
        end
        appended = appended + 1
      end
      slot = slot + 1
    end
    redis.call('HSET', h, 'closed', '1')
    -- the features are only needed to learn; a late reward is logged, never learned
    redis.call('HDEL', h, 'x', 'z')
  end
  redis.call('ZREM', KEYS[1], ARGV[i])
end
return appended
