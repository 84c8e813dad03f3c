-- Hand a running job back untouched (graceful shutdown): it goes back to the
-- head of its user's queue, the attempt not counted, and its user to the front
-- (or to the paused place, if the user was paused meanwhile).
--@include keys, now_ms, holds_lease, drop_lease, signal, count_queued, is_paused, park
-- ARGV: uid, jid, token. Returns {'ok'} when handed back, {'stale'} when the
-- lease was already lost.
local uid, jid, token = ARGV[1], ARGV[2], ARGV[3]
if not holds_lease(jid, token) then return {'stale'} end
local jk = keys.job(jid)
redis.call('HINCRBY', jk, 'attempts', -1)
redis.call('HSET', jk, 'status', 'QUEUED')
redis.call('HDEL', jk, 'token', 'started')
redis.call('HINCRBY', jk, 'v', 1)
drop_lease(uid, jid)
redis.call('LPUSH', keys.pending(uid), jid)
count_queued(uid, 1, now_ms())
if is_paused(uid) then
  park(uid)
else
  redis.call('SET', keys.state(uid), 'r')
  redis.call('LPUSH', keys.rotation(), uid)
  signal()
end
return {'ok'}
