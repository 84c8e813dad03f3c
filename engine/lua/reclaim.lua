-- Jobs whose lease expired (their worker died or hung): the attempt counts,
-- and the job is retried at the head of its user's queue or failed.
--@include keys, now_ms, bounds_at, attempt_failed, drop_lease
-- ARGV: max_attempts, retry_base_ms, then the bounds (bounds_at).
-- Returns {'ok', n}: how many expired leases it handled (at most RECLAIM_BATCH;
-- the worker's maintenance calls again within seconds).
local t = now_ms()
local bounds = bounds_at(3)
local expired = redis.call('ZRANGEBYSCORE', keys.leases(), '-inf', t, 'LIMIT', 0, RECLAIM_BATCH)
for _, member in ipairs(expired) do
  local sep = string.find(member, ':', 1, true)
  local uid, jid = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
  if redis.call('HGET', keys.job(jid), 'status') == 'PROCESSING' then
    attempt_failed(uid, jid, 'lease expired: the worker running it was lost',
                   t, tonumber(ARGV[1]), tonumber(ARGV[2]), bounds)
  else
    drop_lease(uid, jid)
  end
end
return {'ok', #expired}
