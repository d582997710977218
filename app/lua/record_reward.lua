-- Check a reward against its decision and append it to the stream, atomically,
-- so that a reward and the closing of its window can never both count.
-- KEYS: decision hash, stream
-- ARGV: decision_id, arm, reward (canonical string), now_ms
-- Returns {status} or {status, detail...}; status is one of
-- accepted, duplicate, conflict (then the reward recorded), window_closed (appended
-- as late), late_duplicate (the same late reward was already appended: nothing is),
-- late_conflict (then the late reward appended earlier; nothing is appended),
-- unknown_decision, arm_not_shown, out_of_range (then the decision's min and max).
-- Rewards are compared as numbers, so '-0.0' and '0' are one reward.
local f = redis.call('HMGET', KEYS[1], 'arms', 'dl', 'closed', 'r:' .. ARGV[2], 'lo', 'hi', 'x',
                     'c', 'l:' .. ARGV[2], 'z')
if not f[1] then return {'unknown_decision'} end
local slot = nil
local i = 0
-- arm ids never contain ',' (the API's ArmId pattern and the config's name rule)
for arm in string.gmatch(f[1], '[^,]+') do
  if arm == ARGV[2] then slot = i break end
  i = i + 1
end
if not slot then return {'arm_not_shown'} end
local reward = tonumber(ARGV[3])
if reward < tonumber(f[5]) or reward > tonumber(f[6]) then return {'out_of_range', f[5], f[6]} end
if f[4] then
  if tonumber(f[4]) == reward then return {'duplicate'} end
  return {'conflict', f[4]}
end
local kind = 'explicit'
if f[3] == '1' or tonumber(ARGV[4]) > tonumber(f[2]) then kind = 'late' end
if kind == 'late' and f[9] then
  -- the log keeps one late reward per impression: append no second one
  if tonumber(f[9]) == reward then return {'late_duplicate'} end
  return {'late_conflict', f[9]}
end
if f[10] then  -- an item model's decision: the shown items' features go along
  redis.call('XADD', KEYS[2], '*', 't', 'reward', 'id', ARGV[1], 'arm', ARGV[2], 'r', ARGV[3],
             'kind', kind, 'ts', ARGV[4], 'slot', slot, 'x', f[7] or '', 'c', f[8], 'z', f[10])
else
  redis.call('XADD', KEYS[2], '*', 't', 'reward', 'id', ARGV[1], 'arm', ARGV[2], 'r', ARGV[3],
             'kind', kind, 'ts', ARGV[4], 'slot', slot, 'x', f[7] or '', 'c', f[8])
end
if kind == 'late' then
  redis.call('HSET', KEYS[1], 'l:' .. ARGV[2], ARGV[3])
  return {'window_closed'}
end
redis.call('HSET', KEYS[1], 'r:' .. ARGV[2], ARGV[3])
return {'accepted'}
