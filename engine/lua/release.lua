-- Hand a running job back untouched (graceful shutdown): it goes back to the
-- head of its user's queue, the attempt not counted, and its user to the front.
-- ARGV: uid, jid, token. Returns 1 when handed back, 0 when the lease was already lost.
local uid, jid, token = ARGV[1], ARGV[2], ARGV[3]
local jk = jkey(jid)
if redis.call('HGET', jk, 'token') ~= token or redis.call('HGET', jk, 'status') ~= 'PROCESSING' then
  return 0
end
redis.call('HINCRBY', jk, 'attempts', -1)
redis.call('HSET', jk, 'status', 'QUEUED')
redis.call('HDEL', jk, 'token', 'started')
redis.call('HINCRBY', jk, 'v', 1)
redis.call('ZREM', base .. ':leases', uid .. ':' .. jid)
redis.call('LPUSH', ukey(uid, 'pending'), jid)
redis.call('SET', ukey(uid, 'state'), 'r')
redis.call('LPUSH', base .. ':rot', uid)
signal()
return 1
