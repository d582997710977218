-- Deliver up to COUNT new entries of a stream to a consumer, only while it holds
-- the stream's lease: the lease check and the read in one round trip.
-- KEYS: lease key, stream
-- ARGV: holder, consumer group, consumer, count
-- Returns 0 when the holder does not hold the lease (nothing is delivered), else
-- the new entries as XREADGROUP gives them for the one stream (an empty list if none).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4],
                         'STREAMS', KEYS[2], '>')
if not reply then return {} end
return reply[1][2]
