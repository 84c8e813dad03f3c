-- Shared helpers. Each section starts with `--@helper NAME` and, when it
-- calls other helpers, an `--@include` line naming them. A script names the
-- helpers it calls in its own `--@include` line; engine/scripts.py puts
-- those (and theirs) in front of it, and refuses a script or helper whose
-- include line and calls differ.
--
-- Also in front of every script, written by engine/scripts.py:
-- - `keys` (when included): the key names of engine/keys.py as functions of
--   KEYS[1], the shard's base key, e.g. "q:{s0}". Every key a script touches
--   starts with it, so one script touches one hash slot (Redis Cluster ready).
-- - the constants of engine/scripts.py (CONSTANTS): SIGNAL_TOKENS,
--   PROMOTE_BATCH, RECLAIM_BATCH, BUCKET_MS, THROUGHPUT_KEEP_SECONDS.
-- Settings come as arguments (see bounds_at).
--
-- Every script answers {status, ...}; engine/queue.py (REPLIES) says what
-- each status means.

--@helper now_ms
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

--@helper member
-- A running or changed job in the shard's leases and archive: `uid:jid`.
local function member(uid, jid) return uid .. ':' .. jid end

--@helper bucket
--@include keys
-- The shard's throughput bucket of time t (ms): a hash of the 10 s starting at
-- bucket * BUCKET_MS. Fields: e enqueued, c completed, f failed; q0 and q the
-- shard's QUEUED count before the bucket's first change and after its last
-- (see count_queued). Each field's first write sets the hash to expire
-- THROUGHPUT_KEEP_SECONDS later: a few EXPIREs a bucket, not one a job.
local function bucket(t)
  return keys.throughput(math.floor(t / BUCKET_MS))
end

--@helper tally
--@include bucket
-- n jobs enqueued ('e'), completed ('c') or failed ('f') at time t.
local function tally(t, field, n)
  local bk = bucket(t)
  if redis.call('HINCRBY', bk, field, n) == n then
    redis.call('EXPIRE', bk, THROUGHPUT_KEEP_SECONDS)
  end
end

--@helper count_queued
--@include keys, bucket
-- n more (or, negative, fewer) QUEUED jobs of uid: the shard's count, the
-- user's score in the backlog set (gone at 0), the bucket's queued depth.
-- Maintenance recounts all of these (recount.lua) should one ever drift.
local function count_queued(uid, n, t)
  if n == 0 then return end
  local after = redis.call('HINCRBY', keys.counts(), 'queued', n)
  local bk = bucket(t)
  if redis.call('HSETNX', bk, 'q0', after - n) == 1 then
    redis.call('EXPIRE', bk, THROUGHPUT_KEEP_SECONDS)
  end
  redis.call('HSET', bk, 'q', after)
  if tonumber(redis.call('ZINCRBY', keys.backlog(), n, uid)) <= 0 then
    redis.call('ZREM', keys.backlog(), uid)
  end
end

--@helper signal
--@include keys
-- Wake a worker blocked on this shard. Tokens are capped: a worker only
-- blocks after a claim found nothing, so one token per waiting worker is enough.
local function signal()
  redis.call('LPUSH', keys.signal(), '1')
  redis.call('LTRIM', keys.signal(), 0, SIGNAL_TOKENS - 1)
end

--@helper job_table
--@include keys
-- A queued job's hash holds only uid, data and created (memory per waiting
-- job); the other fields start at these defaults and are written on change.
local function job_table(jid)
  local flat = redis.call('HGETALL', keys.job(jid))
  local t = {id = jid, status = 'QUEUED', attempts = '0', v = '0'}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

--@helper job_json
--@include job_table
local function job_json(jid)
  return cjson.encode(job_table(jid))
end

--@helper update_json
--@include job_table
-- The job as a non-terminal update carries it: without its request data (the
-- API takes that from the job itself) or lease token, so a job that reports
-- progress often costs little memory however large its payload.
local function update_json(jid)
  local t = job_table(jid)
  t.data, t.token = nil, nil
  return cjson.encode(t)
end

--@helper record_update
--@include keys
-- Append an update to the job's own stream, which jobUpdates replays (CONTRACT
-- §8); the entry's id is the update's cursor. The stream expires with the job
-- (expire_job), so it outlives the finish by QUEUE_FINISHED_RETENTION_SECONDS at least.
local function record_update(jid, kind, body)
  return redis.call('XADD', keys.updates(jid), 'MAXLEN', '~', UPDATES_KEEP, '*',
                    'k', kind, 'j', body)
end

--@helper watched
--@include keys
-- Someone has subscribed to the job's updates (watch.lua set `w`). Only such
-- a job's updates are recorded: a cursor comes from a subscription, so nobody
-- can ask to replay what came before the first one, and a job nobody follows
-- costs no stream (a stream takes about 4.7 KB however small its entries).
local function watched(jid)
  return redis.call('HEXISTS', keys.job(jid), 'w') == 1
end

--@helper job_update
--@include keys, update_json, record_update
-- An update that does not finish the job (STARTED, PROGRESS, RETRYING) or a
-- cancel: recorded in the job's stream and noted in the shard's stream, where
-- the API's readers find it. With the bounds (bounds_at), the note is capped
-- and carries the body when it is small (as a finish's entry does);
-- without (a start: claim has no bounds) it holds ids only, the readers read
-- the body from the job's stream (only for jobs someone listens to), and the
-- cap is left to the next capped XADD, which every start is followed by (its
-- finish, retry or reclaim).
local function job_update(uid, jid, kind, bounds)
  local body = update_json(jid)
  local cursor = record_update(jid, kind, body)
  if not bounds then
    redis.call('XADD', keys.shard_events(), '*', 'u', uid, 'i', jid, 'c', cursor, 'k', kind)
  elseif #body <= bounds.inline then
    redis.call('XADD', keys.shard_events(), 'MAXLEN', '~', bounds.shard_keep, '*',
               'u', uid, 'i', jid, 'c', cursor, 'k', kind, 'j', body)
  else
    redis.call('XADD', keys.shard_events(), 'MAXLEN', '~', bounds.shard_keep, '*',
               'u', uid, 'i', jid, 'c', cursor, 'k', kind)
  end
  return cursor
end

--@helper record_progress
--@include keys, watched, job_update
-- A progress report of the attempt that holds the job (the caller checked
-- the lease): stored on the job and, if someone follows it, sent as a
-- PROGRESS update. value is text (0..1); message nil: none. Returns the
-- update's cursor, '' when the job is not watched.
local function record_progress(uid, jid, value, message, bounds)
  local jk = keys.job(jid)
  if message then
    redis.call('HSET', jk, 'progress', value, 'pmsg', message)
  else
    redis.call('HSET', jk, 'progress', value)
    redis.call('HDEL', jk, 'pmsg')
  end
  if not watched(jid) then return '' end
  return job_update(uid, jid, 'PROGRESS', bounds)
end

--@helper attempt_started
--@include keys, watched, job_update
-- A new attempt starts without progress, and jobUpdates hears STARTED.
local function attempt_started(uid, jid)
  redis.call('HDEL', keys.job(jid), 'progress', 'pmsg')
  if watched(jid) then job_update(uid, jid, 'STARTED') end
end

--@helper expire_job
--@include keys
-- Let Redis forget a job `seconds` from now: its hash and its updates.
local function expire_job(jid, seconds)
  redis.call('EXPIRE', keys.job(jid), seconds)
  redis.call('EXPIRE', keys.updates(jid), seconds)
end

--@helper touch
--@include keys, member
-- Mark a change MongoDB should see: bump the record's version, queue it for the archiver.
local function touch(uid, jid)
  redis.call('HINCRBY', keys.job(jid), 'v', 1)
  redis.call('RPUSH', keys.archive(), member(uid, jid))
end

--@helper holds_lease
--@include keys
-- The job runs under this token: its worker's lease was not lost meanwhile.
local function holds_lease(jid, token)
  local held, status = unpack(redis.call('HMGET', keys.job(jid), 'token', 'status'))
  return held == token and status == 'PROCESSING'
end

--@helper drop_lease
--@include keys, member
local function drop_lease(uid, jid)
  redis.call('ZREM', keys.leases(), member(uid, jid))
end

--@helper park
--@include keys
-- A paused user's place (state p): out of the rotation, its work waiting.
local function park(uid)
  redis.call('SET', keys.state(uid), 'p')
  redis.call('SADD', keys.paused(), uid)
end

--@helper is_paused
--@include keys
local function is_paused(uid)
  return redis.call('HGET', keys.limits(uid), 'paused') == '1'
end

--@helper schedule
--@include keys, signal, is_paused, park
-- A user with nothing running goes to the back of the rotation if work waits
-- (or, paused, to the paused place: setUserLimits puts it back on resume).
-- quiet: the caller claims right after and signals only if work is left over.
local function schedule(uid, quiet)
  if redis.call('LLEN', keys.pending(uid)) > 0 then
    if is_paused(uid) then
      park(uid)
      return
    end
    redis.call('SET', keys.state(uid), 'r')
    redis.call('RPUSH', keys.rotation(), uid)
    if not quiet then signal() end
  else
    redis.call('DEL', keys.state(uid))
  end
end

--@helper bounds_at
-- What Redis keeps of finished jobs (CONTRACT §10), one group of arguments
-- from ARGV[i] on, in the order of Bounds.args() in engine/queue.py.
local function bounds_at(i)
  return {
    keep = tonumber(ARGV[i]),            -- events in the user's own stream
    ready = tonumber(ARGV[i + 1]),       -- finished jobs waiting for dequeue
    retention = math.max(1, tonumber(ARGV[i + 2])),  -- s, after they leave `ready`
    shard_keep = tonumber(ARGV[i + 3]),  -- entries in the shard-wide stream
    inline = tonumber(ARGV[i + 4]),      -- largest body copied into it, bytes
  }
end

--@helper cap_ready
--@include keys, expire_job
-- At most bounds.ready jobs wait for dequeue: the oldest drop out of the
-- dequeue order. Redis then forgets them as it does dequeued ones (once
-- archived, after the retention; see archived.lua), so the ready cap bounds
-- memory and not only the list; `job` and `jobs` find them in MongoDB.
local function cap_ready(uid, bounds, length)
  local rk = keys.ready(uid)
  local over = length - bounds.ready
  if over <= 0 then return end
  for _, jid in ipairs(redis.call('LRANGE', rk, 0, over - 1)) do
    local jk = keys.job(jid)
    local ttl = redis.call('TTL', jk)
    if ttl ~= -2 then  -- still there: archived.lua gives it the retention from now on
      redis.call('HSET', jk, 'dropped', 1)
    end
    if ttl > bounds.retention then  -- archived already, kept for QUEUE_RESULT_TTL_SECONDS
      expire_job(jid, bounds.retention)
    end
  end
  redis.call('LTRIM', rk, over, -1)
end

--@helper finish_terminal
--@include keys, drop_lease, cap_ready, touch, job_table, schedule, tally, record_update
-- Record a terminal outcome once: ready for dequeue, one event, archived.
-- One entry of the shard's stream serves both `processed` and jobUpdates: for
-- a watched job it names the job (i) and its terminal update's cursor (x) in
-- the job's stream.
-- The user's stream holds the job; the shard's stream, read by every API
-- process, copies only small bodies (graph/live/events.py fetches the others
-- from the user's stream), so it holds at most shard_keep x inline bytes of them.
local function finish_terminal(uid, jid, status, field, value, t, bounds, quiet)
  local jk = keys.job(jid)
  redis.call('HSET', jk, 'status', status, field, value, 'finished', t)
  redis.call('HDEL', jk, 'token')
  drop_lease(uid, jid)
  tally(t, status == 'COMPLETED' and 'c' or 'f', 1)
  cap_ready(uid, bounds, redis.call('RPUSH', keys.ready(uid), jid))  -- RPUSH: the new length
  touch(uid, jid)
  local job = job_table(jid)
  local body = cjson.encode(job)
  local cursor = redis.call('XADD', keys.user_events(uid), 'MAXLEN', '~', bounds.keep, '*',
                            'j', body)
  local entry = {'u', uid, 'c', cursor}
  if job.w then  -- followed by jobUpdates: its terminal update
    job.data = nil  -- as in update_json: the job's stream keeps no copy of the request
    local update = record_update(jid, status, cjson.encode(job))
    entry[#entry + 1], entry[#entry + 2], entry[#entry + 3], entry[#entry + 4] = 'i', jid, 'x', update
  end
  if #body <= bounds.inline then
    entry[#entry + 1], entry[#entry + 2] = 'j', body
  end
  redis.call('XADD', keys.shard_events(), 'MAXLEN', '~', bounds.shard_keep, '*', unpack(entry))
  schedule(uid, quiet)
  return cursor
end

--@helper attempt_failed
--@include keys, finish_terminal, drop_lease, schedule, count_queued, watched, job_update
-- An attempt failed (error, timeout or lost lease): retry after a back-off,
-- the job staying at the head of its user's queue, or fail it for good.
-- Returns 'failed' or 'retry'.
local function attempt_failed(uid, jid, err, t, max_attempts, retry_base_ms, bounds, quiet)
  local jk = keys.job(jid)
  local attempts = tonumber(redis.call('HGET', jk, 'attempts') or '0')
  if attempts >= max_attempts then
    finish_terminal(uid, jid, 'FAILED', 'error', err, t, bounds, quiet)
    return 'failed'
  end
  local delay = math.floor(retry_base_ms * 2 ^ (attempts - 1))
  redis.call('HSET', jk, 'status', 'QUEUED', 'last_error', err, 'retry_at', t + delay)
  redis.call('HDEL', jk, 'token')
  redis.call('HINCRBY', jk, 'v', 1)
  drop_lease(uid, jid)
  redis.call('LPUSH', keys.pending(uid), jid)
  count_queued(uid, 1, t)
  if watched(jid) then job_update(uid, jid, 'RETRYING', bounds) end
  if delay <= 0 then
    schedule(uid, quiet)
  else
    redis.call('SET', keys.state(uid), 'd')
    redis.call('ZADD', keys.delayed(), t + delay, uid)
  end
  return 'retry'
end

--@helper promote_due
--@include keys, schedule
-- Users whose retry back-off is over rejoin the rotation, PROMOTE_BATCH at a
-- time (the rest at the next claim).
local function promote_due(t)
  local due = redis.call('ZRANGEBYSCORE', keys.delayed(), '-inf', t, 'LIMIT', 0, PROMOTE_BATCH)
  for _, uid in ipairs(due) do
    redis.call('ZREM', keys.delayed(), uid)
    schedule(uid)
  end
end

--@helper start_job
--@include keys, member, count_queued, attempt_started
-- Start uid's job jid, just taken from its queue: a new attempt under a new
-- lease token. Returns {uid, jid, data, attempts, token}.
local function start_job(uid, jid, owner, lease_ms, t)
  local jk = keys.job(jid)
  local attempts = redis.call('HINCRBY', jk, 'attempts', 1)
  local data, round = unpack(redis.call('HMGET', jk, 'data', 'round'))
  -- a redriven job (retry.lua) counts attempts from 0 again: its round
  -- keeps a lease of an earlier run from matching this one
  local token = owner .. ':' .. attempts .. (round and ('.' .. round) or '')
  redis.call('HSET', jk, 'status', 'PROCESSING', 'started', t, 'token', token)
  redis.call('HINCRBY', jk, 'v', 1)
  redis.call('SET', keys.state(uid), 'a')
  redis.call('ZADD', keys.leases(), t + lease_ms, member(uid, jid))
  count_queued(uid, -1, t)
  attempt_started(uid, jid)
  return {uid, jid, data, attempts, token}
end

--@helper claim
--@include keys, promote_due, start_job
-- Take up to n jobs: the head job of each user at the front of the rotation.
-- Returns {uid, jid, data, attempts, token} per job.
local function claim(n, owner, lease_ms, t)
  promote_due(t)
  local out = {}
  while #out < n do
    local uid = redis.call('LPOP', keys.rotation())
    if not uid then break end
    local jid = redis.call('LPOP', keys.pending(uid))
    if jid then
      out[#out + 1] = start_job(uid, jid, owner, lease_ms, t)
    else
      redis.call('DEL', keys.state(uid))
    end
  end
  return out
end

--@helper next_due_in
--@include keys
-- Milliseconds until the next retry falls due, or -1 when none waits.
local function next_due_in(t)
  local first = redis.call('ZRANGE', keys.delayed(), 0, 0, 'WITHSCORES')
  if #first == 0 then return -1 end
  return math.max(0, tonumber(first[2]) - t)
end
