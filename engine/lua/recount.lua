-- Self-healing counters: recount the shard's QUEUED jobs and its backlog set from the lists and leases themselves, and correct what
-- drifted (a bug, a restored backup, a hand edit). Every user with waiting
-- work is in the rotation, delayed, paused or running (docs/architecture.md),
-- so no key is scanned: the walk is as long as the shard's busy users.
--@include keys
-- Returns {'ok', corrections}.
local users, scored = {}, {}
for _, uid in ipairs(redis.call('LRANGE', keys.rotation(), 0, -1)) do users[uid] = true end
for _, uid in ipairs(redis.call('ZRANGE', keys.delayed(), 0, -1)) do users[uid] = true end
for _, uid in ipairs(redis.call('SMEMBERS', keys.paused())) do users[uid] = true end
for _, m in ipairs(redis.call('ZRANGE', keys.leases(), 0, -1)) do
  users[string.sub(m, 1, string.find(m, ':', 1, true) - 1)] = true
end
local old = redis.call('ZRANGE', keys.backlog(), 0, -1, 'WITHSCORES')
for i = 1, #old, 2 do
  users[old[i]] = true
  scored[old[i]] = tonumber(old[i + 1])
end
local fixed, queued = 0, 0
for uid in pairs(users) do
  local n = redis.call('LLEN', keys.pending(uid))
  queued = queued + n
  if n > 0 and scored[uid] ~= n then
    redis.call('ZADD', keys.backlog(), n, uid)
    fixed = fixed + 1
  elseif n == 0 and scored[uid] then
    redis.call('ZREM', keys.backlog(), uid)
    fixed = fixed + 1
  end
end
if tonumber(redis.call('HGET', keys.counts(), 'queued') or '0') ~= queued then
  redis.call('HSET', keys.counts(), 'queued', queued)
  fixed = fixed + 1
end
return {'ok', fixed}
