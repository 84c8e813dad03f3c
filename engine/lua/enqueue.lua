-- Add a batch of jobs to one user's queue, all or none.
--@include keys, now_ms, int, member, place, count_queued, tally, lane_list, offer_lane, promote_due, signal
-- ARGV: uid, max_pending, idem_ttl_seconds, then per item: jid, data,
-- idempotency key, ordering key, priority, run_at_ms ('' for none/default)
-- Returns {'ok', t, jid1, created1, jid2, created2, ...} or {'full', index0}.
local uid = ARGV[1]
local max_pending = tonumber(ARGV[2])
local idem_ttl = ARGV[3]  -- seconds, as text: passed on to SET
local W = 6  -- arguments per item
local n = (#ARGV - 3) / W
local t = now_ms()

local result = {}
local seen = {}
local new = 0
local pending = tonumber(redis.call('ZSCORE', keys.backlog(), uid) or '0')  -- QUEUED jobs
for i = 0, n - 1 do
  local jid, key = ARGV[4 + i * W], ARGV[6 + i * W]
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
if new == 0 then
  local out = {'ok', t}
  for i = 1, n do out[#out + 1] = result[i]; out[#out + 1] = 0 end
  return out
end

-- the user's jobs whose runAt has come join their lanes before these: lanes
-- are in due order (other due entries wait for the next claim, as ever)
if redis.call('SCARD', keys.scheduled(uid)) > 0 then promote_due(t) end
local out = {'ok', t}
local scheduled = false
for i = 0, n - 1 do
  local o = 4 + i * W
  local jid, data, key = ARGV[o], ARGV[o + 1], ARGV[o + 2]
  local lane, priority, run_at = ARGV[o + 3], ARGV[o + 4], ARGV[o + 5]
  if result[i + 1] then
    out[#out + 1] = result[i + 1]
    out[#out + 1] = 0
  else
    local fields = {'uid', uid, 'data', data, 'created', int(t)}
    if key ~= '' then
      fields[#fields + 1] = 'idem'
      fields[#fields + 1] = key
      redis.call('SET', keys.idempotency(uid, key), jid, 'EX', idem_ttl)
    end
    if lane ~= '' then fields[#fields + 1] = 'k'; fields[#fields + 1] = lane end
    if priority ~= '' and priority ~= '0' then
      fields[#fields + 1] = 'p'; fields[#fields + 1] = priority
    end
    local later = false
    if run_at ~= '' then
      fields[#fields + 1] = 'at'; fields[#fields + 1] = run_at
      later = tonumber(run_at) > t
      if later then fields[#fields + 1] = 'w'; fields[#fields + 1] = 1 end
    end
    redis.call('HSET', keys.job(jid), unpack(fields))
    if later then
      -- waits in the due-time index, not in its lane: it holds back nothing
      redis.call('ZADD', keys.delayed(), run_at, member(uid, jid))
      redis.call('SADD', keys.scheduled(uid), jid)
      redis.call('HINCRBY', keys.counts(), 'scheduled', '1')
      scheduled = true
    elseif redis.call('RPUSH', lane_list(uid, lane), jid) == 1 then
      if lane ~= '' then redis.call('SADD', keys.ordering_keys(uid), lane) end
      offer_lane(uid, lane, t)
    end
    redis.call('RPUSH', keys.archive(), member(uid, jid))  -- its MongoDB record
    out[#out + 1] = jid
    out[#out + 1] = 1
  end
end
count_queued(uid, new, t)
tally(t, 'e', new)
place(uid, t)
-- a blocked worker learns the new due time at its next claim (next_due_in)
if scheduled then signal() end
return out
