-- Cancel a user's QUEUED jobs (purgeQueue), lane by lane (the default lane
-- first), then those waiting for their runAt, up to a batch: the caller calls
-- again while some are left, so no call blocks Redis long.
--@include keys, now_ms, member, touch, count_queued, lane_list, offer_lane, replace, bounds_at, watched, job_update
-- ARGV: uid, batch, then the bounds (bounds_at). Returns {'ok', cancelled, left}.
local uid, budget = ARGV[1], tonumber(ARGV[2])
local t = now_ms()
local done = 0
local function cancel(jid)
  redis.call('HSET', keys.job(jid), 'status', 'CANCELLED', 'finished', t)
  redis.call('ZREM', keys.delayed(), member(uid, jid))  -- a retry's back-off, a runAt
  touch(uid, jid)
  if watched(jid) then job_update(uid, jid, 'CANCELLED', bounds_at(3)) end
  done = done + 1
end
local lanes = {''}
for _, key in ipairs(redis.call('SMEMBERS', keys.ordering_keys(uid))) do lanes[#lanes + 1] = key end
for _, lane in ipairs(lanes) do
  if done >= budget then break end
  local list = lane_list(uid, lane)
  local jids = redis.call('LRANGE', list, 0, budget - done - 1)
  if #jids > 0 then
    for _, jid in ipairs(jids) do cancel(jid) end
    redis.call('LTRIM', list, #jids, -1)
    redis.call('ZREM', keys.lanes(uid), lane)
    if redis.call('LLEN', list) == 0 then
      if lane ~= '' then redis.call('SREM', keys.ordering_keys(uid), lane) end
    else
      offer_lane(uid, lane, t)
    end
  end
end
if done < budget then
  for _, jid in ipairs(redis.call('SRANDMEMBER', keys.scheduled(uid), budget - done)) do
    redis.call('SREM', keys.scheduled(uid), jid)
    redis.call('HINCRBY', keys.counts(), 'scheduled', -1)
    redis.call('HDEL', keys.job(jid), 'w')
    cancel(jid)
  end
end
count_queued(uid, -done, t)
replace(uid, t)
return {'ok', done, tonumber(redis.call('ZSCORE', keys.backlog(), uid) or '0')}
