-- A running attempt's progress report: stored on the job and, if someone
-- follows the job (watched), sent as a PROGRESS update; only if the report's
-- lease token still holds the job. A report of a worker presumed dead (its
-- lease expired and was reclaimed) is discarded, as its result would be.
-- (An attempt's last report rides with its outcome instead: finish.lua.)
--@include bounds_at, holds_lease, record_progress
-- ARGV: uid, jid, token, value (0..1, as text), has_message ('1'/'0'), message,
--       then the bounds (bounds_at). Returns {'ok', cursor} ('' when the job
--       is not watched: stored, no update) or {'stale'}.
local uid, jid, token = ARGV[1], ARGV[2], ARGV[3]
if not holds_lease(jid, token) then return {'stale'} end
local message = ARGV[5] == '1' and ARGV[6] or nil
return {'ok', record_progress(uid, jid, ARGV[4], message, bounds_at(7))}
