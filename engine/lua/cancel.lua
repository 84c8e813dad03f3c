-- Cancel a QUEUED job (also one waiting for a retry): it is never processed.
--@include keys, now_ms, touch, schedule, job_json, count_queued, bounds_at, watched, job_update
-- ARGV: uid, jid, then the bounds (bounds_at). Returns {'ok', job_json}, {'conflict', status} or {'missing'}.
local uid, jid = ARGV[1], ARGV[2]
local jk = keys.job(jid)
local owner, status = unpack(redis.call('HMGET', jk, 'uid', 'status'))
if owner ~= uid then return {'missing'} end
status = status or 'QUEUED'
if status ~= 'QUEUED' then return {'conflict', status} end
local pending = keys.pending(uid)
local was_head = redis.call('LINDEX', pending, 0) == jid
redis.call('LREM', pending, 1, jid)
local t = now_ms()
redis.call('HSET', jk, 'status', 'CANCELLED', 'finished', t)
touch(uid, jid)
count_queued(uid, -1, t)
if watched(jid) then job_update(uid, jid, 'CANCELLED', bounds_at(3)) end
local state = redis.call('GET', keys.state(uid))
local left = redis.call('LLEN', pending)
if state == 'r' and left == 0 then
  redis.call('LREM', keys.rotation(), 1, uid)
  redis.call('DEL', keys.state(uid))
elseif state == 'p' and left == 0 then
  redis.call('SREM', keys.paused(), uid)
  redis.call('DEL', keys.state(uid))
elseif state == 'd' and was_head then
  -- the job waiting for its retry is gone: the user's next job need not wait
  redis.call('ZREM', keys.delayed(), uid)
  schedule(uid)
end
return {'ok', job_json(jid)}
