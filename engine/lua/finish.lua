-- Record one attempt's outcome, then claim more work in the same round trip.
--@include now_ms, defer, bounds_at, record_outcome, claim, rotation_waits, signal, next_due_in, done
-- ARGV: uid, jid, token, outcome ('ok' | 'error'), value (result or error),
--       max_attempts, retry_base_ms, claim_n, owner, lease_ms, then the bounds
--       (bounds_at, 5 of them), then the attempt's last progress report not
--       yet written ('' none, or value, has_message '1'/'0', message)
-- Returns {verdict, next_due_ms, claimed jobs...}; the verdict (the status) is
-- 'completed', 'retry', 'failed' or 'stale' (the lease was lost: nothing was
-- recorded). Jobs are claimed whatever the verdict.
local uid, jid, token, outcome, value = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local max_attempts, retry_base_ms = ARGV[6], ARGV[7]  -- read on a failure only
local claim_n, owner, lease_ms = tonumber(ARGV[8]), ARGV[9], tonumber(ARGV[10])
local bounds = bounds_at(11)
local t = now_ms()
defer()  -- the writes a job repeats, made once at the end (done)
local verdict = record_outcome(uid, jid, token, outcome, value, ARGV[16],
                               ARGV[17] == '1' and ARGV[18] or nil, t,
                               max_attempts, retry_base_ms, bounds, claim_n > 0)
local jobs = claim(claim_n, owner, lease_ms, t)
-- users left in the rotation after our own claim: wake another worker for them
if rotation_waits() then signal() end
return done({verdict, next_due_in(t), unpack(jobs)})
