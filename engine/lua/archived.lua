-- The archiver stored version v of a job in MongoDB: drop it from the archive
-- list and, once nothing more will happen to it, let Redis forget it in time.
-- ARGV: uid, jid, v, result_ttl_seconds, finished_retention_seconds
local uid, jid, v = ARGV[1], ARGV[2], ARGV[3]
local jk = jkey(jid)
redis.call('LREM', base .. ':archive', 1, uid .. ':' .. jid)
local cur, status, dequeued = unpack(redis.call('HMGET', jk, 'v', 'status', 'dequeued'))
cur = cur or '0'
-- a later change pushed its own archive entry; that one will expire the record
if cur ~= v then return 0 end
if status == 'CANCELLED' or dequeued then
  redis.call('EXPIRE', jk, math.max(1, tonumber(ARGV[5])))
elseif status == 'COMPLETED' or status == 'FAILED' then
  redis.call('EXPIRE', jk, tonumber(ARGV[4]))
end
return 1
