-- The archiver stored these versions of jobs in MongoDB: drop them from the
-- archive list and, once nothing more will happen to a job, let Redis forget
-- it in time.
--@include keys, member, expire_job
-- ARGV: result_ttl_seconds, finished_retention_seconds, then triples (uid, jid, v)
-- Returns {'ok'}.
local result_ttl, retention = tonumber(ARGV[1]), math.max(1, tonumber(ARGV[2]))
local drop, any = {}, false
for i = 3, #ARGV, 3 do
  local uid, jid, v = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local jk = keys.job(jid)
  local cur, status, dequeued, dropped = unpack(redis.call('HMGET', jk, 'v', 'status', 'dequeued', 'dropped'))
  -- A later change is listed after these entries: leave them all, the next pass
  -- stores that version and drops them then. So any number of archivers (one per
  -- API process) may mark the same batch: none removes a newer change's entry.
  if (cur or '0') == v then
    drop[member(uid, jid)], any = true, true
    -- dropped: it left the ready list unread (QUEUE_MAX_READY, cap_ready in _lib.lua)
    if status == 'CANCELLED' or dequeued or dropped then
      expire_job(jid, retention)
    elseif status == 'COMPLETED' or status == 'FAILED' then
      expire_job(jid, result_ttl)
    end
  end
end
if not any then return {'ok'} end
-- Every entry of those jobs is their stored version or older: drop the ones
-- among the first ARCHIVE_WINDOW entries, where a pass reads. One walk of that
-- window for the whole batch (one LPOS per job walked it once per job: 4-8 ms
-- of Redis, every other client waiting, for a batch of 200 with a backlog).
-- Only the head up to the last entry dropped is rewritten, in its order. One
-- further back is read by a later pass, which stores the same version again
-- (a no-op) and drops it.
local archive = keys.archive()
local head = redis.call('LRANGE', archive, 0, ARCHIVE_WINDOW - 1)
local last = 0
for i = 1, #head do
  if drop[head[i]] then last = i end
end
if last == 0 then return {'ok'} end
local keep = {}
for i = last, 1, -1 do  -- reversed: LPUSH puts each argument before the one pushed before it
  if not drop[head[i]] then keep[#keep + 1] = head[i] end
end
redis.call('LTRIM', archive, last, -1)
for i = 1, #keep, 1000 do
  redis.call('LPUSH', archive, unpack(keep, i, math.min(i + 999, #keep)))
end
return {'ok'}
