-- Add a batch of jobs to one user's queue, all or none.
--@include keys, now_ms, member, schedule, count_queued, tally
-- ARGV: uid, max_pending, idem_ttl_seconds, then per item: jid, data, idempotency key ('' for none)
-- Returns {'ok', t, jid1, created1, jid2, created2, ...} or {'full', index0}.
local uid = ARGV[1]
local max_pending = tonumber(ARGV[2])
local idem_ttl = tonumber(ARGV[3])
local n = (#ARGV - 3) / 3
local t = now_ms()

local result = {}
local seen = {}
local new = 0
local pending = redis.call('LLEN', keys.pending(uid))
for i = 0, n - 1 do
  local jid, key = ARGV[4 + i * 3], ARGV[6 + i * 3]
  local existing = nil
  if key ~= '' then
    existing = seen[key] or redis.call('GET', keys.idempotency(uid, key))
  end
  if existing then
    result[i + 1] = existing
  else
    new = new + 1
    if pending + new > max_pending then return {'full', i} end
    result[i + 1] = false
    if key ~= '' then seen[key] = jid end
  end
end

local out = {'ok', t}
for i = 0, n - 1 do
  local jid, data, key = ARGV[4 + i * 3], ARGV[5 + i * 3], ARGV[6 + i * 3]
  if result[i + 1] then
    out[#out + 1] = result[i + 1]
    out[#out + 1] = 0
  else
    local fields = {'uid', uid, 'data', data, 'created', t}
    if key ~= '' then
      fields[#fields + 1] = 'idem'
      fields[#fields + 1] = key
      redis.call('SET', keys.idempotency(uid, key), jid, 'EX', idem_ttl)
    end
    redis.call('HSET', keys.job(jid), unpack(fields))
    redis.call('RPUSH', keys.pending(uid), jid)
    redis.call('RPUSH', keys.archive(), member(uid, jid))  -- its MongoDB record
    out[#out + 1] = jid
    out[#out + 1] = 1
  end
end
if new > 0 then
  count_queued(uid, new, t)
  tally(t, 'e', new)
end
if new > 0 and not redis.call('GET', keys.state(uid)) then
  schedule(uid)
end
return out
