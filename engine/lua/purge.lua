-- Cancel a user's QUEUED jobs (purgeQueue), the oldest first, up to a batch:
-- the caller calls again while some are left, so no call blocks Redis long.
--@include keys, now_ms, touch, count_queued, bounds_at, watched, job_update
-- ARGV: uid, batch, then the bounds (bounds_at). Returns {'ok', cancelled, left}.
local uid, batch = ARGV[1], tonumber(ARGV[2])
local pending = keys.pending(uid)
local t = now_ms()
local jids = redis.call('LRANGE', pending, 0, batch - 1)
for _, jid in ipairs(jids) do
  redis.call('HSET', keys.job(jid), 'status', 'CANCELLED', 'finished', t)
  touch(uid, jid)
  if watched(jid) then job_update(uid, jid, 'CANCELLED', bounds_at(3)) end
end
redis.call('LTRIM', pending, #jids, -1)
count_queued(uid, -#jids, t)
local left = redis.call('LLEN', pending)
if left == 0 then
  -- nothing waits: out of whichever place it waited in (a running user stays running)
  local state = redis.call('GET', keys.state(uid))
  if state == 'r' then
    redis.call('LREM', keys.rotation(), 1, uid)
  elseif state == 'd' then
    redis.call('ZREM', keys.delayed(), uid)
  elseif state == 'p' then
    redis.call('SREM', keys.paused(), uid)
  end
  if state ~= 'a' then redis.call('DEL', keys.state(uid)) end
end
return {'ok', #jids, left}
