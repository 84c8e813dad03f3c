-- Self-healing counters: recount the shard's QUEUED jobs (scheduled ones, and
-- users waiting for a due time, too), its backlog set and
-- each user's running lanes from the lists, sets and leases themselves, and
-- correct what drifted (a bug, a restored backup, a hand edit). A running-lanes
-- hash that says more than the leases would wedge its user (the bug that
-- wedged Hatchet and BullMQ tenants): it is rebuilt from the leases and the
-- user put where it belongs. Every user with waiting or running work is in the
-- rotation, the due-time index, paused, leased or in the backlog set
-- (docs/architecture.md), so no key is scanned: the walk is as long as the
-- shard's busy users.
--@include keys, now_ms, lane_list, offer_lane, replace
-- Returns {'ok', corrections}.
local t = now_ms()
local users, scored, leased = {}, {}, {}
local function user_of(m)
  local sep = string.find(m, ':', 1, true)
  return sep and string.sub(m, 1, sep - 1) or m, sep and string.sub(m, sep + 1)
end
for _, uid in ipairs(redis.call('LRANGE', keys.rotation(), 0, -1)) do users[uid] = true end
for _, m in ipairs(redis.call('ZRANGE', keys.delayed(), 0, -1)) do users[user_of(m)] = true end
for _, uid in ipairs(redis.call('SMEMBERS', keys.paused())) do users[uid] = true end
for _, m in ipairs(redis.call('ZRANGE', keys.leases(), 0, -1)) do
  local uid, jid = user_of(m)
  users[uid] = true
  leased[uid] = leased[uid] or {}
  if redis.call('HGET', keys.job(jid), 'status') == 'PROCESSING' then
    leased[uid][redis.call('HGET', keys.job(jid), 'k') or ''] = jid
  end
end
local old = redis.call('ZRANGE', keys.backlog(), 0, -1, 'WITHSCORES')
for i = 1, #old, 2 do
  users[old[i]] = true
  scored[old[i]] = tonumber(old[i + 1])
end
local fixed, queued, scheduled, dwell = 0, 0, 0, 0
-- limits of its own the shard's `limited` set misses (stored before the set
-- existed): healed first, since placing users below reads limits by it
for uid in pairs(users) do
  if redis.call('EXISTS', keys.limits(uid)) == 1 and redis.call('SADD', keys.limited(), uid) == 1 then
    fixed = fixed + 1
  end
end
for uid in pairs(users) do
  local lanes = {''}
  for _, key in ipairs(redis.call('SMEMBERS', keys.ordering_keys(uid))) do lanes[#lanes + 1] = key end
  local n = redis.call('SCARD', keys.scheduled(uid))
  scheduled = scheduled + n
  for _, lane in ipairs(lanes) do n = n + redis.call('LLEN', lane_list(uid, lane)) end
  queued = queued + n
  if n > 0 and scored[uid] ~= n then
    redis.call('ZADD', keys.backlog(), n, uid)
    fixed = fixed + 1
  elseif n == 0 and scored[uid] then
    redis.call('ZREM', keys.backlog(), uid)
    fixed = fixed + 1
  end
  -- the running lanes: exactly those of the user's leases
  local want, drift = leased[uid] or {}, false
  local have = redis.call('HGETALL', keys.busy(uid))
  local seen = 0
  for i = 1, #have, 2 do
    if want[have[i]] ~= have[i + 1] then drift = true end
    seen = seen + 1
  end
  for _ in pairs(want) do seen = seen - 1 end
  if drift or seen ~= 0 then
    redis.call('DEL', keys.busy(uid))
    for lane, jid in pairs(want) do redis.call('HSET', keys.busy(uid), lane, jid) end
    for _, lane in ipairs(lanes) do offer_lane(uid, lane, t) end
    replace(uid, t, true)
    fixed = fixed + 1
  end
  if redis.call('GET', keys.state(uid)) == 'd' then dwell = dwell + 1 end
end
for field, value in pairs({queued = queued, scheduled = scheduled, dwell = dwell}) do
  if tonumber(redis.call('HGET', keys.counts(), field) or '0') ~= value then
    redis.call('HSET', keys.counts(), field, value)
    fixed = fixed + 1
  end
end
return {'ok', fixed}
