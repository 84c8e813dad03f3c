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
--   PROMOTE_BATCH, RECLAIM_BATCH, PRIORITY_MAX, BUCKET_MS, THROUGHPUT_KEEP_SECONDS,
--   UPDATES_KEEP, ARCHIVE_WINDOW;
--   and USER_CONCURRENCY, the setting QUEUE_USER_CONCURRENCY (see source()).
-- Settings come as arguments (see bounds_at).
--
-- Every script answers {status, ...}; engine/queue.py (REPLIES) says what
-- each status means.

--@helper now_ms
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

--@helper int
-- An integer as Redis takes it: text. Redis writes a number passed to
-- redis.call with '%.17g' (and Lua's tostring or `..` with '%.14g'): about
-- twice the work of '%d'. Each value is written once a script run.
local int_text = {}
local function int(n)
  local s = int_text[n]
  if not s then
    s = string.format('%d', n)
    int_text[n] = s
  end
  return s
end

--@helper member
-- A running or changed job in the shard's leases and archive: `uid:jid`.
local function member(uid, jid) return uid .. ':' .. jid end

--@helper bucket
--@include keys, int
-- The shard's throughput bucket of time t (ms): a hash of the 10 s starting at
-- bucket * BUCKET_MS. Fields: e enqueued, c completed, f failed; q0 the
-- shard's QUEUED count before the bucket's first change, dq the change since
-- (so q0 + dq after its last; see queued_change). Each field's first write sets the hash to expire
-- THROUGHPUT_KEEP_SECONDS later: a few EXPIREs a bucket, not one a job.
local bucket_of = {}
local function bucket(t)
  local bk = bucket_of[t]
  if not bk then
    bk = keys.throughput(int(math.floor(t / BUCKET_MS)))
    bucket_of[t] = bk
  end
  return bk
end

--@helper deferred
-- Writes the hot scripts (claim, finish, finish_many) make once, at their
-- end, instead of once a job: entries of the archive list, the queued count
-- and the throughput bucket's fields, users' states, the rotation's changes
-- at both ends, the leases taken and dropped. Off (`deferred` is nil) unless the script called defer();
-- it must then end with `return done(reply)` (engine/scripts.py refuses it
-- otherwise). Redis runs a script atomically, so nobody else sees when within
-- it a write was made; the script's own reads of these keys go through the
-- helpers (state_of, rotation_pop, rotation_waits), which see the writes.
-- state: uid -> its state ('' idle) as it will be written; known: uid -> as
-- stored now, when known (no write when the two agree). The rotation is
-- head (taken from Redis, not yet used, or pushed to the front), then what
-- Redis holds (none if rotation_empty), then tail. No script reads the
-- leases it takes or drops (reclaim and heartbeat do not defer).
-- A variable, not a function: helpers read it a dozen times a job, and a
-- call costs Redis far more than reading an upvalue (bench/RESULTS.md).
local deferred = nil

--@helper defer
--@include deferred
-- batch: the script handles many jobs (leases too are deferred: one ZADD,
-- one ZREM; for one job that would only cost two tables).
local function defer(batch)
  if deferred then return end  -- already
  deferred = {batch = batch, archive = {}, queued = 0, counts = {}, state = {}, known = {}, head = {}, tail = {},
           rotation_empty = false, leases = {}, t = 0}
end

--@helper done
--@include keys, deferred, queued_change, tally, flush_offer
-- The deferred writes made; returns the script's reply. (With `deferred` off,
-- queued_change and tally write at once.)
local function done(reply)
  local w = deferred
  if not w then return reply end
  flush_offer()
  deferred = nil
  if #w.archive > 0 then redis.call('RPUSH', keys.archive(), unpack(w.archive)) end
  if w.queued ~= 0 then queued_change(w.queued, w.t) end
  for field, n in pairs(w.counts) do tally(w.t, field, n) end
  local set, gone = {}, {}
  for uid, state in pairs(w.state) do
    if w.known[uid] ~= state then
      if state == '' then
        gone[#gone + 1] = keys.state(uid)
      else
        set[#set + 1], set[#set + 2] = keys.state(uid), state
      end
    end
  end
  if #set > 0 then redis.call('MSET', unpack(set)) end
  if #gone > 0 then redis.call('DEL', unpack(gone)) end
  if #w.head > 0 then  -- LPUSH puts its last argument first
    local front = {}
    for i = #w.head, 1, -1 do front[#front + 1] = w.head[i] end
    redis.call('LPUSH', keys.rotation(), unpack(front))
  end
  if #w.tail > 0 then redis.call('RPUSH', keys.rotation(), unpack(w.tail)) end
  -- w.leases: the leases dropped (uid:jid), then taken (deadline, uid:jid); a job
  -- retried at once may start again in the same script: dropped first
  local gone, taken = w.leases.gone, w.leases.taken
  if gone then redis.call('ZREM', keys.leases(), unpack(gone)) end
  if taken then redis.call('ZADD', keys.leases(), unpack(taken)) end
  return reply
end

--@helper state_of
--@include keys, deferred
-- A user's state ('r', 'd', 'a', 'p'; nil: idle), as this script left it.
local function state_of(uid)
  local w = deferred
  if w and w.state[uid] then
    local state = w.state[uid]
    return state ~= '' and state or nil
  end
  local state = redis.call('GET', keys.state(uid))
  if w then w.known[uid] = state or '' end
  return state or nil
end

--@helper set_state
--@include keys, deferred
-- Store a user's state (nil: idle). was: the state stored now, when the
-- caller knows it ('x', a user just taken out of the rotation, does not
-- say): it spares a deferred write that would change nothing.
local function set_state(uid, state, was)
  local w = deferred
  if w then
    if was and was ~= 'x' and w.known[uid] == nil and w.state[uid] == nil then
      w.known[uid] = was
    end
    w.state[uid] = state or ''
  elseif state then
    redis.call('SET', keys.state(uid), state)
  else
    redis.call('DEL', keys.state(uid))
  end
end

--@helper rotation_push
--@include keys, deferred
-- A user joins the rotation: at its back, or (front) its front.
local function rotation_push(uid, front)
  local w = deferred
  if front and w then
    table.insert(w.head, 1, uid)
  elseif front then
    redis.call('LPUSH', keys.rotation(), uid)
  elseif w then
    w.tail[#w.tail + 1] = uid
  else
    redis.call('RPUSH', keys.rotation(), uid)
  end
end

--@helper rotation_pop
--@include keys, int, deferred
-- The user at the front of the rotation, taken out of it; nil: none.
-- more: how many more the caller will take at most (it takes them from Redis
-- in one call when it defers; the ones left over go back at the end).
local function rotation_pop(more)
  local w = deferred
  if not w then return redis.call('LPOP', keys.rotation()) or nil end
  if #w.head == 0 and not w.rotation_empty then
    if (more or 1) > 1 then  -- LPOP with a count answers a list
      local got = redis.call('LPOP', keys.rotation(), int(more))
      if got then w.head = got else w.rotation_empty = true end
    else
      local uid = redis.call('LPOP', keys.rotation())
      if uid then return uid end
      w.rotation_empty = true
    end
  end
  if #w.head > 0 then return table.remove(w.head, 1) end
  return table.remove(w.tail, 1)
end

--@helper rotation_waits
--@include keys, deferred
-- Someone is in the rotation.
local function rotation_waits()
  local w = deferred
  if w and (#w.head > 0 or #w.tail > 0) then return true end
  if w and w.rotation_empty then return false end
  return redis.call('LLEN', keys.rotation()) > 0
end

--@helper tally
--@include bucket, int, deferred
-- n jobs enqueued ('e'), completed ('c') or failed ('f') at time t.
local function tally(t, field, n)
  local w = deferred
  if w then
    w.counts[field], w.t = (w.counts[field] or 0) + n, t
    return
  end
  local bk = bucket(t)
  if redis.call('HINCRBY', bk, field, int(n)) == n then
    redis.call('EXPIRE', bk, int(THROUGHPUT_KEEP_SECONDS))
  end
end

--@helper queued_change
--@include keys, bucket, int, deferred
-- n more (or, negative, fewer) QUEUED jobs in the shard at time t: its count
-- and the bucket's queued depth (deferred to done() when the script defers).
-- The bucket's q0 is after - dq whenever it is written, so writing it again
-- (dq back at n) writes the same value: one call a change, not two.
local function queued_change(n, t)
  local w = deferred
  if w then
    w.queued, w.t = w.queued + n, t
    return
  end
  local after = redis.call('HINCRBY', keys.counts(), 'queued', int(n))
  local bk = bucket(t)
  local dq = redis.call('HINCRBY', bk, 'dq', int(n))
  if dq == n then  -- the bucket's first change (or its sum back at n)
    redis.call('HSET', bk, 'q0', int(after - dq))
    redis.call('EXPIRE', bk, int(THROUGHPUT_KEEP_SECONDS))
  end
end

--@helper count_queued
--@include keys, int, queued_change
-- n more (or, negative, fewer) QUEUED jobs of uid: the user's score in the
-- backlog set (gone at 0), and the shard's count and bucket (queued_change).
-- Maintenance recounts all of these (recount.lua) should one ever drift.
local function count_queued(uid, n, t)
  if n == 0 then return end
  if tonumber(redis.call('ZINCRBY', keys.backlog(), int(n), uid)) <= 0 then
    redis.call('ZREM', keys.backlog(), uid)
  end
  queued_change(n, t)
end

--@helper signal
--@include keys
-- Wake a worker blocked on this shard. Tokens are capped: a worker only
-- blocks after a claim found nothing, so one token per waiting worker is enough.
local function signal()
  if redis.call('LLEN', keys.signal()) < SIGNAL_TOKENS then
    redis.call('LPUSH', keys.signal(), '1')
  end
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
-- Someone has subscribed to the job's updates (watch.lua set `sub`). Only such
-- a job's updates are recorded: a cursor comes from a subscription, so nobody
-- can ask to replay what came before the first one, and a job nobody follows
-- costs no stream (a stream takes about 4.7 KB however small its entries).
local function watched(jid)
  return redis.call('HEXISTS', keys.job(jid), 'sub') == 1
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

--@helper expire_job
--@include keys
-- Let Redis forget a job `seconds` from now: its hash and its updates.
local function expire_job(jid, seconds)
  redis.call('EXPIRE', keys.job(jid), seconds)
  redis.call('EXPIRE', keys.updates(jid), seconds)
end

--@helper to_archive
--@include keys, member, deferred
-- List a change of the job for the archiver (its MongoDB record).
local function to_archive(uid, jid)
  local w = deferred
  if w then
    w.archive[#w.archive + 1] = member(uid, jid)
  else
    redis.call('RPUSH', keys.archive(), member(uid, jid))
  end
end

--@helper touch
--@include keys, to_archive
-- Mark a change MongoDB should see: bump the record's version, queue it for the archiver.
local function touch(uid, jid)
  redis.call('HINCRBY', keys.job(jid), 'v', 1)
  to_archive(uid, jid)
end

--@helper holds_lease
--@include keys
-- The job runs under this token: its worker's lease was not lost meanwhile.
-- Also returns the job's lane (its ordering key, '' for the default one).
local function holds_lease(jid, token)
  local held, status, lane = unpack(redis.call('HMGET', keys.job(jid), 'token', 'status', 'k'))
  return held == token and status == 'PROCESSING', lane or ''
end

--@helper drop_lease
--@include keys, member, deferred
local function drop_lease(uid, jid)
  local w = deferred
  if w and w.batch then
    local gone = w.leases.gone or {}
    gone[#gone + 1], w.leases.gone = member(uid, jid), gone
  else
    redis.call('ZREM', keys.leases(), member(uid, jid))
  end
end

--@helper lane_list
--@include keys
-- The list of a user's lane: '' is the default lane (no ordering key).
local function lane_list(uid, lane)
  if lane == '' then return keys.pending(uid) end
  return keys.lane(uid, lane)
end

--@helper flush_offer
--@include keys, int, deferred
-- The lane free_lane held back, freed and offered now (uid: only if it is
-- that user's): before anything reads the user's running or startable lanes.
local function flush_offer(uid)
  local w = deferred
  local held = w and w.held_uid
  if not held or (uid and uid ~= held) then return end
  w.held_uid = nil
  redis.call('HDEL', keys.busy(held), w.held_lane)
  redis.call('ZADD', keys.lanes(held), int(w.held_score), w.held_lane)
end

--@helper offer_lane
--@include keys, lane_list, int, flush_offer
-- The lane's head may start now, unless the lane runs, is empty, or its head
-- waits for a retry's back-off (the due-time index brings it back): then the
-- lane goes into the user's startable lanes, ranked by the head's priority
-- (higher first), then its due time (earlier first): (PRIORITY_MAX - priority) * 1e13
-- + due ms, exact in a double. free: the caller knows the lane does not run.
-- hold (free_lane): the script's deferred writes (deferred), where the
-- offer is held back instead of made; the head's fields start_job reads are
-- read along, as the claim that follows mostly starts that very job
-- (w.head_jid; w.head_job, the fields as read). Returns true when offered.
local function offer_lane(uid, lane, t, free, hold)
  if not free then
    flush_offer(uid)  -- a lane held back (free_lane) runs no more
    if redis.call('HEXISTS', keys.busy(uid), lane) == 1 then return false end
  end
  local jid = redis.call('LINDEX', lane_list(uid, lane), '0')
  if not jid then return false end
  local p, at, retry_at, created
  if hold then
    local f = redis.call('HMGET', keys.job(jid), 'p', 'at', 'retry_at', 'created',
                         'attempts', 'v', 'data', 'round', 'progress', 'pmsg', 'sub')
    p, at, retry_at, created = f[1], f[2], f[3], f[4]
    hold.head_jid, hold.head_job = jid, f
  else
    p, at, retry_at, created = unpack(redis.call('HMGET', keys.job(jid), 'p', 'at', 'retry_at', 'created'))
  end
  local due = tonumber(retry_at or at or created or t)
  if retry_at and due > t then return false end
  local score = (PRIORITY_MAX - tonumber(p or 0)) * 1e13 + due
  if hold then
    hold.held_uid, hold.held_lane, hold.held_score = uid, lane, score
  else
    redis.call('ZADD', keys.lanes(uid), int(score), lane)
  end
  return true
end

--@helper free_lane
--@include keys, deferred, offer_lane
-- A job of the lane stopped running: the lane is free again, and offered
-- (offer_lane). Returns true when offered. In a script that defers for one
-- job, both writes are held back (w.held_*) for the claim that follows:
-- when the user's turn comes and no startable lane of it ranks before this
-- one, the claim takes the lane at once (claim) instead of adding it to
-- the startable lanes and popping it again, and its running mark is simply
-- overwritten; otherwise flush_offer makes both writes, before anything
-- reads those keys (and done() at the latest).
local function free_lane(uid, lane, t)
  local w = deferred
  local hold = w and not w.batch and not w.held_uid and w
  if not hold then redis.call('HDEL', keys.busy(uid), lane) end
  local offered = offer_lane(uid, lane, t, true, hold)
  if hold and not offered then redis.call('HDEL', keys.busy(uid), lane) end
  return offered
end

--@helper park
--@include keys, set_state
-- A paused user's place (state p): out of the rotation, its work waiting.
-- was: as set_state's.
local function park(uid, was)
  set_state(uid, 'p', was)
  redis.call('SADD', keys.paused(), uid)
end

--@helper user_limits
--@include keys
-- What place() and a claim read of a user's limits hash, in one call, read
-- once a script run: a finish and the claim after it often place the same
-- user. The table is the cache: claim, the one script that writes the hash
-- after reading it, changes both. While no user of the shard has limits of
-- its own (the `limited` set is empty: the usual case), nobody's hash is read.
-- own: the user may have limits of its own (false: the defaults, never changed).
-- Every user of a shard without limits shares one table of the defaults
-- (claim changes a table only under a start rate or a weight).
local limits_read = {}
local shard_limited = nil
local defaults = nil
local function user_limits(uid)
  local lim = limits_read[uid]
  if lim then return lim end
  if shard_limited == nil then shard_limited = redis.call('EXISTS', keys.limited()) == 1 end
  local c, spm, paused, nxt, credit, weight
  if shard_limited then
    c, spm, paused, nxt, credit, weight = unpack(redis.call('HMGET', keys.limits(uid),
      'concurrency', 'spm', 'paused', 'next', 'credit', 'weight'))
  elseif defaults then
    return defaults
  end
  lim = {concurrency = tonumber(c or USER_CONCURRENCY), spm = tonumber(spm or 0),
         paused = paused == '1', next = tonumber(nxt or 0), credit = tonumber(credit or 0),
         weight = tonumber(weight or 1), own = shard_limited}
  if not shard_limited then defaults = lim end
  limits_read[uid] = lim
  return lim
end

--@helper place
--@include keys, int, signal, park, user_limits, state_of, set_state, rotation_push, deferred, flush_offer
-- Put a user where it belongs now, from wherever it was (docs/architecture.md,
-- "Scheduling"): exactly one of
--   r  in the rotation: a lane may start and a slot of its concurrency is free;
--   p  paused, with such a lane;
--   d  waiting for a due time: its start rate (its own entry `uid` in the
--      due-time index) or, nothing running, its jobs' runAt or retry back-off;
--   a  busy: something runs and nothing more may start;
--   idle (no state): nothing queued, nothing running.
-- A user found in the rotation stays there (its turn re-checks). A weighted
-- user with turns left in its visit (credit) goes back to the front.
-- o (optional) says what the caller knows, to spare reads on the hot path:
--   state    the user's state ('x': just taken out of the rotation)
--   lim      its limits (user_limits)
--   ran      a job of it just stopped running (so, at concurrency 1, it was busy)
--   started  a job of it just started
--   offered  one of its lanes was just offered
--   quiet    the caller claims right after and signals only if work is left over
--   front    a released job's user gets its turn back
local function place(uid, t, o)
  o = o or {}
  local lim = o.lim or user_limits(uid)
  local state = o.state
  if state == nil then
    -- at concurrency 1 a user whose job ran cannot have been in the rotation
    state = (o.ran and lim.concurrency == 1) and 'a' or state_of(uid)
  end
  if state == 'r' then return end
  -- at concurrency 1 a start leaves one running; a finish none, unless limits
  -- of its own changed the concurrency while more ran (then count them). (A
  -- QUEUE_USER_CONCURRENCY lowered to 1 while users ran more is taken at its
  -- word too: until those jobs end, one more of theirs may start.)
  local running
  if o.started and lim.concurrency == 1 then
    running = 1
  elseif o.ran and lim.concurrency == 1 and not lim.own then
    running = 0
  else
    flush_offer(uid)
    running = redis.call('HLEN', keys.busy(uid))
  end
  if running < lim.concurrency and not o.offered then flush_offer(uid) end
  local startable = running < lim.concurrency
                    and (o.offered or redis.call('ZCARD', keys.lanes(uid)) > 0)
  local new
  if startable and lim.paused then
    new = 'p'
  elseif startable and lim.spm > 0 and lim.next > t then
    new = 'd'
  elseif startable then
    new = 'r'
  elseif running > 0 then
    new = 'a'
  elseif redis.call('ZSCORE', keys.backlog(), uid) then
    new = 'd'  -- its jobs' entries in the due-time index bring it back
  end
  if state == 'p' and new ~= 'p' then redis.call('SREM', keys.paused(), uid) end
  local w = deferred
  if w and (state == 'd' or (new == 'd' and startable)) then w.due_first = nil end  -- next_due_in reads it again
  if state == 'd' then redis.call('ZREM', keys.delayed(), uid) end
  -- the shard's count of users waiting for a due time (usersWaiting leaves them out)
  if (state == 'd') ~= (new == 'd') then
    redis.call('HINCRBY', keys.counts(), 'dwell', new == 'd' and '1' or '-1')
  end
  if new == 'r' then
    set_state(uid, 'r', state)
    rotation_push(uid, o.front or lim.credit > 0)
    if not o.quiet then signal() end
  elseif new == 'p' then
    park(uid, state)
  elseif new == 'd' and startable then
    set_state(uid, 'd', state)
    redis.call('ZADD', keys.delayed(), int(math.ceil(lim.next)), uid)
  elseif new then
    if new ~= state then set_state(uid, new, state) end
  elseif state then
    set_state(uid, nil, state)
  end
end

--@helper replace
--@include keys, place, state_of, deferred, flush_offer
-- place() for a user whose lanes or limits changed behind its turn (cancel,
-- purge, limits): one left in the rotation that may not start now leaves it.
local function replace(uid, t, force)
  local state = state_of(uid)
  flush_offer(uid)
  if state == 'r' and (force or redis.call('ZCARD', keys.lanes(uid)) == 0) then
    redis.call('LREM', keys.rotation(), 1, uid)
    local w = deferred
    for _, list in ipairs(w and {w.head, w.tail} or {}) do
      for i, queued in ipairs(list) do
        if queued == uid then table.remove(list, i) break end
      end
    end
    state = 'x'
  end
  place(uid, t, {state = state})
end

--@helper bounds_at
-- What Redis keeps of finished jobs (CONTRACT §10), one group of arguments
-- from ARGV[i] on, in the order of Bounds.args() in engine/queue.py.
-- The caps Redis only passes on (keep, shard_keep) stay text.
local function bounds_at(i)
  return {
    keep = ARGV[i],                      -- events in the user's own stream
    ready = tonumber(ARGV[i + 1]),       -- finished jobs waiting for dequeue
    retention = math.max(1, tonumber(ARGV[i + 2])),  -- s, after they leave `ready`
    shard_keep = ARGV[i + 3],            -- entries in the shard-wide stream
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
--@include keys, int, drop_lease, cap_ready, job_table, tally, to_archive, record_update, free_lane, place
-- Record a terminal outcome once: ready for dequeue, one event, archived; the
-- job's lane is free again, its next job may start, the user goes where it now belongs.
-- One entry of the shard's stream serves both `processed` and jobUpdates: for
-- a watched job it names the job (i) and its terminal update's cursor (x) in
-- the job's stream.
-- The user's stream holds the job; the shard's stream, read by every API
-- process, copies only small bodies (graph/live/events.py fetches the others
-- from the user's stream), so it holds at most shard_keep x inline bytes of them.
-- job: the job's hash as job_table reads it, when the caller has it (the
-- event's body is that table with this change applied: no second read).
local function finish_terminal(uid, jid, status, field, value, t, bounds, quiet, job)
  local jk = keys.job(jid)
  job = job or job_table(jid)
  local lane = job.k or ''
  -- the change, on the hash and on the table alike (as Redis stores numbers: text)
  job.status, job[field], job.finished = status, value, int(t)
  job.v, job.token = int(tonumber(job.v) + 1), nil  -- v: touch(), inline
  -- the token emptied rather than deleted: one command (no lease matches '')
  redis.call('HSET', jk, 'status', status, field, value, 'finished', job.finished, 'v', job.v,
             'token', '')
  drop_lease(uid, jid)
  tally(t, status == 'COMPLETED' and 'c' or 'f', 1)
  cap_ready(uid, bounds, redis.call('RPUSH', keys.ready(uid), jid))  -- RPUSH: the new length
  to_archive(uid, jid)  -- the rest of touch()
  local body = cjson.encode(job)
  local cursor = redis.call('XADD', keys.user_events(uid), 'MAXLEN', '~', bounds.keep, '*',
                            'j', body)
  local entry = {'u', uid, 'c', cursor}
  if job.sub then  -- followed by jobUpdates: its terminal update
    job.data = nil  -- as in update_json: the job's stream keeps no copy of the request
    local update = record_update(jid, status, cjson.encode(job))
    entry[#entry + 1], entry[#entry + 2], entry[#entry + 3], entry[#entry + 4] = 'i', jid, 'x', update
  end
  if #body <= bounds.inline then
    entry[#entry + 1], entry[#entry + 2] = 'j', body
  end
  redis.call('XADD', keys.shard_events(), 'MAXLEN', '~', bounds.shard_keep, '*', unpack(entry))
  place(uid, t, {quiet = quiet, ran = true, offered = free_lane(uid, lane, t)})
  return cursor
end

--@helper attempt_failed
--@include keys, int, member, job_table, finish_terminal, drop_lease, count_queued, lane_list, free_lane, place, watched, job_update, deferred
-- An attempt failed (error, timeout or lost lease): retry after a back-off,
-- the job staying at the head of its lane (which starts nothing else
-- meanwhile: its entry in the due-time index offers the lane again when the
-- back-off is over), or fail it for good. Returns 'failed' or 'retry'.
-- job: as for finish_terminal. max_attempts, retry_base_ms: numbers or their
-- text (the finish scripts pass their arguments on, read only here).
local function attempt_failed(uid, jid, err, t, max_attempts, retry_base_ms, bounds, quiet, job)
  local jk = keys.job(jid)
  job = job or job_table(jid)
  local attempts, lane = tonumber(job.attempts), job.k or ''
  if attempts >= tonumber(max_attempts) then
    finish_terminal(uid, jid, 'FAILED', 'error', err, t, bounds, quiet, job)
    return 'failed'
  end
  local delay = math.floor(tonumber(retry_base_ms) * 2 ^ (attempts - 1))
  redis.call('HSET', jk, 'status', 'QUEUED', 'last_error', err, 'retry_at', int(t + delay),
             'token', '', 'v', int(tonumber(job.v) + 1))
  drop_lease(uid, jid)
  redis.call('LPUSH', lane_list(uid, lane), jid)
  if lane ~= '' then redis.call('SADD', keys.ordering_keys(uid), lane) end
  count_queued(uid, 1, t)
  if watched(jid) then job_update(uid, jid, 'RETRYING', bounds) end
  local offered = false
  if delay > 0 then
    local w = deferred
    if w then w.due_first = nil end  -- next_due_in reads the index again
    redis.call('HDEL', keys.busy(uid), lane)
    redis.call('ZADD', keys.delayed(), int(t + delay), member(uid, jid))
  else
    offered = free_lane(uid, lane, t)
  end
  place(uid, t, {quiet = quiet, ran = true, offered = offered})
  return 'retry'
end

--@helper promote_due
--@include keys, int, lane_list, offer_lane, place, deferred
-- The due-time index's entries whose time has come, PROMOTE_BATCH at a time
-- (the rest at the next claim): a runAt job joins the back of its lane; a
-- retry's back-off is over, so its lane may start again; a user's start rate
-- allows a start again. Each user then goes where it now belongs.
-- A script that defers looks at the index's first entry first: when nothing
-- is due (the usual case) that entry is also what next_due_in answers from,
-- unless the script changes the index meanwhile (due_first: see place).
local function promote_due(t)
  local w = deferred
  if w then
    local first = redis.call('ZRANGE', keys.delayed(), '0', '0', 'WITHSCORES')
    if #first == 0 or tonumber(first[2]) > t then
      w.due_first = first
      return
    end
  end
  local due = redis.call('ZRANGEBYSCORE', keys.delayed(), '-inf', int(t), 'LIMIT', '0',
                         int(PROMOTE_BATCH))
  for _, m in ipairs(due) do
    redis.call('ZREM', keys.delayed(), m)
    local sep = string.find(m, ':', 1, true)
    if not sep then
      place(m, t)
    else
      local uid, jid = string.sub(m, 1, sep - 1), string.sub(m, sep + 1)
      local jk = keys.job(jid)
      local owner, status, waiting, k = unpack(redis.call('HMGET', jk, 'uid', 'status', 'w', 'k'))
      if owner == uid and (status or 'QUEUED') == 'QUEUED' then
        local lane = k or ''
        if waiting then
          redis.call('HDEL', jk, 'w')
          redis.call('SREM', keys.scheduled(uid), jid)
          redis.call('HINCRBY', keys.counts(), 'scheduled', '-1')
          if redis.call('RPUSH', lane_list(uid, lane), jid) == 1 then
            if lane ~= '' then redis.call('SADD', keys.ordering_keys(uid), lane) end
            offer_lane(uid, lane, t)
          end
        else
          offer_lane(uid, lane, t)
        end
        place(uid, t)
      end
    end
  end
end

--@helper start_job
--@include keys, int, member, deferred, count_queued, job_update
-- Start one job under a lease: its attempt counted, its lane marked running,
-- no progress yet (that was an earlier attempt's), and jobUpdates hears
-- STARTED if someone follows the job (`sub`). One read (none when
-- offer_lane read it in this script: w.head_jid), one write of its hash.
-- Returns {uid, jid, data, attempts, token}, what a worker gets.
local function start_job(uid, jid, lane, owner, lease_ms, t)
  local jk = keys.job(jid)
  local w = deferred
  local attempts, v, data, round, progress, pmsg, sub
  if w and w.head_jid == jid then
    attempts, v, data, round, progress, pmsg, sub = unpack(w.head_job, 5, 11)
    w.head_jid, w.head_job = nil, nil
  else
    attempts, v, data, round, progress, pmsg, sub = unpack(redis.call('HMGET', jk,
      'attempts', 'v', 'data', 'round', 'progress', 'pmsg', 'sub'))
  end
  attempts = tonumber(attempts or 0) + 1
  -- a redriven job (retry.lua) counts attempts from 0 again: its round
  -- keeps a lease of an earlier run from matching this one
  local n = int(attempts)
  local token = owner .. ':' .. n .. (round and ('.' .. round) or '')
  redis.call('HSET', jk, 'status', 'PROCESSING', 'started', int(t), 'token', token,
             'attempts', n, 'v', int(tonumber(v or 0) + 1))
  if progress or pmsg then redis.call('HDEL', jk, 'progress', 'pmsg') end
  if w and w.batch then
    local taken = w.leases.taken or {}
    taken[#taken + 1], taken[#taken + 2] = int(t + lease_ms), member(uid, jid)
    w.leases.taken = taken
  else
    redis.call('ZADD', keys.leases(), int(t + lease_ms), member(uid, jid))
  end
  redis.call('HSET', keys.busy(uid), lane, jid)
  count_queued(uid, -1, t)
  if sub then job_update(uid, jid, 'STARTED') end
  return {uid, jid, data, attempts, token}
end

--@helper claim
--@include keys, promote_due, lane_list, start_job, place, user_limits, rotation_pop, flush_offer, deferred
-- Take up to n jobs: at each turn, the user at the front of the rotation
-- starts the head of its best startable lane (highest priority, then earliest
-- due), then goes where it now belongs: the back of the rotation, or the
-- front while a weighted user has turns left of its visit (weight w: w turns
-- a visit), the due-time index under a start rate, or busy.
-- Returns {uid, jid, data, attempts, token} per job.
local function claim(n, owner, lease_ms, t)
  promote_due(t)
  local w = deferred
  local held = w and not w.batch  -- a lane may be held back (free_lane)
  local out = {}
  while #out < n do
    local uid = rotation_pop(n - #out)
    if not uid then break end
    local best
    if held and w.held_uid == uid then
      -- the lane free_lane held back for this user, when it is the lane ZPOPMIN
      -- would pop: none of its startable lanes ranks before it (a tie goes the
      -- general way: Redis orders equal scores by name)
      local first = redis.call('ZRANGE', keys.lanes(uid), '0', '0', 'WITHSCORES')
      if #first == 0 or (first[1] ~= w.held_lane and tonumber(first[2]) > w.held_score) then
        w.held_uid, best = nil, {w.held_lane}
      else
        flush_offer(uid)
      end
    end
    best = best or redis.call('ZPOPMIN', keys.lanes(uid))
    local lim = user_limits(uid)
    if best[1] then
      local lane = best[1]
      local list = lane_list(uid, lane)
      local jid = redis.call('LPOP', list)
      if lane ~= '' and redis.call('LLEN', list) == 0 then
        redis.call('SREM', keys.ordering_keys(uid), lane)
      end
      out[#out + 1] = start_job(uid, jid, lane, owner, lease_ms, t)
      if lim.spm > 0 then  -- starts at least 60 s / spm apart: at most spm in any 60 s
        lim.next = t + 60000 / lim.spm
        redis.call('HSET', keys.limits(uid), 'next', lim.next)
      end
      if lim.weight > 1 then
        if lim.credit <= 0 then lim.credit = lim.weight end  -- a new visit
        lim.credit = lim.credit - 1
        redis.call('HSET', keys.limits(uid), 'credit', lim.credit)
      end
    end
    place(uid, t, {state = 'x', lim = lim, quiet = true, started = best[1] ~= nil})
  end
  return out
end

--@helper next_due_in
--@include keys, deferred
-- Milliseconds until the due-time index's next entry falls due, or -1 when none waits.
-- (Its first entry as promote_due read it, when the script has not changed the index since.)
local function next_due_in(t)
  local w = deferred
  local first = w and w.due_first or redis.call('ZRANGE', keys.delayed(), '0', '0', 'WITHSCORES')
  if #first == 0 then return -1 end
  return math.max(0, math.ceil(tonumber(first[2]) - t))
end

--@helper record_outcome
--@include job_table, record_progress, finish_terminal, attempt_failed
-- One attempt's outcome (finish.lua, and each of finish_many.lua's), if its
-- lease still holds: first the progress report it still held (report '':
-- none; message nil: none), then the outcome ('ok' or 'error', with value
-- its result or error). Returns the verdict: 'completed', 'retry', 'failed',
-- or 'stale' (the lease was lost: nothing was recorded).
-- The job is read once: the lease check (as holds_lease) and the event's body.
local function record_outcome(uid, jid, token, outcome, value, report, message, t,
                              max_attempts, retry_base_ms, bounds, quiet)
  local job = job_table(jid)
  if job.token ~= token or job.status ~= 'PROCESSING' then return 'stale' end
  if report ~= '' then  -- recorded before the outcome, in the same step
    record_progress(uid, jid, report, message, bounds)
    job.progress, job.pmsg = report, message
  end
  if outcome == 'ok' then
    finish_terminal(uid, jid, 'COMPLETED', 'result', value, t, bounds, quiet, job)
    return 'completed'
  end
  return attempt_failed(uid, jid, value, t, max_attempts, retry_base_ms, bounds, quiet, job)
end
