-- Cancel a QUEUED job (also one waiting for its runAt or a retry): it is never processed.
--@include keys, now_ms, member, touch, job_json, count_queued, lane_list, offer_lane, replace, bounds_at, watched, job_update
-- ARGV: uid, jid, then the bounds (bounds_at). Returns {'ok', job_json}, {'conflict', status} or {'missing'}.
local uid, jid = ARGV[1], ARGV[2]
local jk = keys.job(jid)
local owner, status, waiting, k = unpack(redis.call('HMGET', jk, 'uid', 'status', 'w', 'k'))
if owner ~= uid then return {'missing'} end
status = status or 'QUEUED'
if status ~= 'QUEUED' then return {'conflict', status} end
local t = now_ms()
local lane = k or ''
if waiting then
  -- its runAt is ahead: it is in the due-time index only
  redis.call('ZREM', keys.delayed(), member(uid, jid))
  redis.call('SREM', keys.scheduled(uid), jid)
  redis.call('HINCRBY', keys.counts(), 'scheduled', -1)
  redis.call('HDEL', jk, 'w')
else
  local list = lane_list(uid, lane)
  local was_head = redis.call('LINDEX', list, 0) == jid
  redis.call('LREM', list, 1, jid)
  if was_head then
    -- the job waiting for its retry is gone: the lane's next job need not wait
    redis.call('ZREM', keys.delayed(), member(uid, jid))
    redis.call('ZREM', keys.lanes(uid), lane)
    offer_lane(uid, lane, t)
  end
  if lane ~= '' and redis.call('LLEN', list) == 0 then
    redis.call('SREM', keys.ordering_keys(uid), lane)
  end
end
redis.call('HSET', jk, 'status', 'CANCELLED', 'finished', t)
touch(uid, jid)
count_queued(uid, -1, t)
if watched(jid) then job_update(uid, jid, 'CANCELLED', bounds_at(3)) end
replace(uid, t)
return {'ok', job_json(jid)}
