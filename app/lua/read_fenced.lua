-- Deliver up to COUNT new entries of a stream to a consumer, only while it holds
-- the stream's lease: the lease check and the read in one round trip.
-- KEYS: lease key, stream
-- ARGV: holder, consumer group, consumer, count
-- Returns 0 when the holder does not hold the lease (nothing is delivered); else
-- the new entries as XREADGROUP gives them for the one stream; or, if there are
-- none, the id of the last entry delivered to the group (a string): the worker
-- waits for entries after it, which are exactly the ones not delivered yet.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4],
                         'STREAMS', KEYS[2], '>')
if reply then return reply[1][2] end
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[2])) do
  local fields = {}
  for i = 1, #group, 2 do fields[group[i]] = group[i + 1] end
  if fields['name'] == ARGV[2] then return fields['last-delivered-id'] end
end
return {}
