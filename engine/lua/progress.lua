-- A running attempt's progress report: stored on the job and, if someone
-- follows the job (watched), sent as a PROGRESS update; only if the report's
-- lease token still holds the job. A report of a worker presumed dead (its
-- lease expired and was reclaimed) is discarded, as its result would be.
--@include keys, bounds_at, holds_lease, watched, job_update
-- ARGV: uid, jid, token, value (0..1, as text), has_message ('1'/'0'), message,
--       then the bounds (bounds_at). Returns {'ok', cursor} ('' when the job
--       is not watched: stored, no update) or {'stale'}.
local uid, jid, token = ARGV[1], ARGV[2], ARGV[3]
if not holds_lease(jid, token) then return {'stale'} end
local jk = keys.job(jid)
if ARGV[5] == '1' then
  redis.call('HSET', jk, 'progress', ARGV[4], 'pmsg', ARGV[6])
else
  redis.call('HSET', jk, 'progress', ARGV[4])
  redis.call('HDEL', jk, 'pmsg')
end
if not watched(jid) then return {'ok', ''} end
return {'ok', job_update(uid, jid, 'PROGRESS', bounds_at(7))}
