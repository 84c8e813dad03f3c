-- Redrive: an operator puts a FAILED or CANCELLED job back in its user's
-- queue, at the back, as if new: attempts 0, error and result cleared. It
-- runs again, ends again, and is announced and ready again.
--@include keys, now_ms, touch, job_json, count_queued, tally, lane_list, offer_lane, place
-- ARGV: uid, jid, and, for a job Redis has forgotten (QUEUE_RESULT_TTL_SECONDS),
-- its MongoDB record: data, created (ms), version, status, ordering key, priority,
-- runAt (ms, '' none).
-- Returns {'ok', before_json or '', after_json}, {'conflict', status} or {'missing'}.
local uid, jid = ARGV[1], ARGV[2]
local jk = keys.job(jid)
local t = now_ms()
local owner, status = unpack(redis.call('HMGET', jk, 'uid', 'status'))
local before = ''
if not owner then
  if #ARGV < 6 then return {'missing'} end
  status = ARGV[6]
  if status ~= 'FAILED' and status ~= 'CANCELLED' then return {'conflict', status} end
  -- its version goes on from MongoDB's, so the archiver stores the new state
  redis.call('HSET', jk, 'uid', uid, 'data', ARGV[3], 'created', ARGV[4], 'v', ARGV[5])
  if (ARGV[7] or '') ~= '' then redis.call('HSET', jk, 'k', ARGV[7]) end  -- its lane
  if (ARGV[8] or '0') ~= '0' then redis.call('HSET', jk, 'p', ARGV[8]) end
  if (ARGV[9] or '') ~= '' then redis.call('HSET', jk, 'at', ARGV[9]) end  -- shown, long past
else
  if owner ~= uid then return {'missing'} end
  status = status or 'QUEUED'
  if status ~= 'FAILED' and status ~= 'CANCELLED' then return {'conflict', status} end
  before = job_json(jid)
  redis.call('PERSIST', jk)  -- archived.lua may have set its retention
  redis.call('PERSIST', keys.updates(jid))  -- and its updates'
  redis.call('HDEL', jk, 'error', 'result', 'last_error', 'retry_at', 'started', 'finished',
             'dequeued', 'dropped', 'token')
  redis.call('LREM', keys.ready(uid), 1, jid)  -- a FAILED one not yet dequeued
end
redis.call('HSET', jk, 'status', 'QUEUED', 'attempts', 0)
redis.call('HINCRBY', jk, 'round', 1)  -- fences the leases of earlier runs (see claim)
touch(uid, jid)
-- at the back of its lane (its runAt, long past, no longer matters)
local lane = redis.call('HGET', jk, 'k') or ''
redis.call('HDEL', jk, 'w')
if redis.call('RPUSH', lane_list(uid, lane), jid) == 1 then
  if lane ~= '' then redis.call('SADD', keys.ordering_keys(uid), lane) end
  offer_lane(uid, lane, t)
end
count_queued(uid, 1, t)
tally(t, 'e', 1)
place(uid, t)
return {'ok', before, job_json(jid)}
