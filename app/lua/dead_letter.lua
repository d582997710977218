-- Move poisoned stream entries to the experiment's dead letters, atomically
-- with their acknowledgement, so that an entry is never both lost and kept.
-- KEYS: stream, dead-letter stream, dead decisions zset, dead-letter counter
-- ARGV: consumer group, then per entry: entry id, field count n, n field/value
--       pairs, the id of the decision it kills ('' for none), that id's expiry ms
-- A dead letter keeps its entry's id: an entry dead-lettered again after a
-- redelivery is refused by XADD (the id is not above the top) and not counted.
-- Returns the number of entries newly moved.
local moved = 0
local i = 2
while i <= #ARGV do
  local id = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  local fields = {}
  for j = i + 2, i + 1 + 2 * n do fields[#fields + 1] = ARGV[j] end
  i = i + 2 + 2 * n
  local decision, expiry = ARGV[i], ARGV[i + 1]
  i = i + 2
  local added = redis.pcall('XADD', KEYS[2], id, unpack(fields))
  if type(added) ~= 'table' or not added.err then moved = moved + 1 end
  if decision ~= '' then redis.call('ZADD', KEYS[3], expiry, decision) end
  redis.call('XACK', KEYS[1], ARGV[1], id)
  redis.call('XDEL', KEYS[1], id)
end
if moved > 0 then redis.call('INCRBY', KEYS[4], moved) end
return moved
