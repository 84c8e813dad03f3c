-- The archiver stored these versions of jobs in MongoDB: drop them from the
-- archive list and, once nothing more will happen to a job, let Redis forget
-- it in time.
--@include keys, member, expire_job
-- ARGV: result_ttl_seconds, finished_retention_seconds, then triples (uid, jid, v)
-- Returns {'ok'}.
local result_ttl, retention = tonumber(ARGV[1]), math.max(1, tonumber(ARGV[2]))
for i = 3, #ARGV, 3 do
  local uid, jid, v = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local jk = keys.job(jid)
  local cur, status, dequeued, dropped = unpack(redis.call('HMGET', jk, 'v', 'status', 'dequeued', 'dropped'))
  -- A later change is listed after these entries: leave them all, the next pass
  -- stores that version and drops them then. So any number of archivers (one per
  -- API process) may mark the same batch: none removes a newer change's entry.
  if (cur or '0') == v then
    -- every entry of the job is this version or older: drop those near the
    -- head, where a pass reads (LREM 0 would scan the whole list for each
    -- job, a cost growing with the backlog). One further back is read by a
    -- later pass, which stores the same version again (a no-op) and drops it.
    local m = member(uid, jid)
    local near = redis.call('LPOS', keys.archive(), m, 'COUNT', 0, 'MAXLEN', ARCHIVE_WINDOW)
    if #near > 0 then redis.call('LREM', keys.archive(), #near, m) end
    -- dropped: it left the ready list unread (QUEUE_MAX_READY, cap_ready in _lib.lua)
    if status == 'CANCELLED' or dequeued or dropped then
      expire_job(jid, retention)
    elseif status == 'COMPLETED' or status == 'FAILED' then
      expire_job(jid, result_ttl)
    end
  end
end
return {'ok'}
