-- Hand a running job back untouched (graceful shutdown): it goes back to the
-- head of its lane, the attempt not counted, and its user to the front of the
-- rotation (or wherever it now belongs: paused, say).
--@include keys, now_ms, holds_lease, drop_lease, count_queued, lane_list, offer_lane, place
-- ARGV: uid, jid, token. Returns {'ok'} when handed back, {'stale'} when the
-- lease was already lost.
local uid, jid, token = ARGV[1], ARGV[2], ARGV[3]
local held, lane = holds_lease(jid, token)
if not held then return {'stale'} end
local t = now_ms()
local jk = keys.job(jid)
redis.call('HINCRBY', jk, 'attempts', -1)
redis.call('HSET', jk, 'status', 'QUEUED')
redis.call('HDEL', jk, 'token', 'started')
redis.call('HINCRBY', jk, 'v', 1)
drop_lease(uid, jid)
redis.call('HDEL', keys.busy(uid), lane)
redis.call('LPUSH', lane_list(uid, lane), jid)
if lane ~= '' then redis.call('SADD', keys.ordering_keys(uid), lane) end
count_queued(uid, 1, t)
place(uid, t, {front = true, offered = offer_lane(uid, lane, t, true)})
return {'ok'}
