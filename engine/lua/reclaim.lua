-- Jobs whose lease expired (their worker died or hung): the attempt counts,
-- and the job is retried at the head of its user's queue or failed.
-- ARGV: max_attempts, retry_base_ms, then the bounds (bounds_at). Returns how many were reclaimed.
local t = now_ms()
local bounds = bounds_at(3)
local expired = redis.call('ZRANGEBYSCORE', base .. ':leases', '-inf', t, 'LIMIT', 0, 100)
for _, member in ipairs(expired) do
  local sep = string.find(member, ':', 1, true)
  local uid, jid = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
  if redis.call('HGET', jkey(jid), 'status') == 'PROCESSING' then
    attempt_failed(uid, jid, 'lease expired: the worker running it was lost',
                   t, tonumber(ARGV[1]), tonumber(ARGV[2]), bounds)
  else
    redis.call('ZREM', base .. ':leases', member)
  end
end
return #expired
