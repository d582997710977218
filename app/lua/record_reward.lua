-- Check a reward against its decision and append it to the stream, atomically,
-- so that a reward and the closing of its window can never both count.
-- KEYS: decision hash, stream
-- ARGV: decision_id, arm, reward (canonical string), now_ms
-- Returns {status} or {status, detail...}; status is one of
-- accepted, duplicate, conflict, window_closed, unknown_decision, arm_not_shown,
-- out_of_range (then followed by the decision's min and max).
local f = redis.call('HMGET', KEYS[1], 'arms', 'dl', 'closed', 'r:' .. ARGV[2], 'lo', 'hi', 'x',
                     'c')
if not f[1] then return {'unknown_decision'} end
local slot = nil
local i = 0
for arm in string.gmatch(f[1], '[^,]+') do
  if arm == ARGV[2] then slot = i break end
  i = i + 1
end
if not slot then return {'arm_not_shown'} end
local reward = tonumber(ARGV[3])
if reward < tonumber(f[5]) or reward > tonumber(f[6]) then return {'out_of_range', f[5], f[6]} end
if f[4] then
  if f[4] == ARGV[3] then return {'duplicate'} end
  return {'conflict', f[4]}
end
local kind = 'explicit'
if f[3] == '1' or tonumber(ARGV[4]) > tonumber(f[2]) then kind = 'late' end
redis.call('XADD', KEYS[2], '*', 't', 'reward', 'id', ARGV[1], 'arm', ARGV[2], 'r', ARGV[3],
           'kind', kind, 'ts', ARGV[4], 'slot', slot, 'x', f[7] or '', 'c', f[8])
if kind == 'late' then return {'window_closed'} end
redis.call('HSET', KEYS[1], 'r:' .. ARGV[2], ARGV[3])
return {'accepted'}
