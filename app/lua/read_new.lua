-- Deliver new stream entries to a consumer, only while it holds the stream's lease.
-- KEYS: stream, lease (owner) key
-- ARGV: consumer (= lease holder), group, count
-- Returns 0 when another worker holds the lease, else the XREADGROUP reply.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
return redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[1], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
