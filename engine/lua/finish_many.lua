-- The worker's group commit: record several attempts' outcomes, then claim more
-- work, in one round trip. Each outcome is recorded exactly as finish.lua
-- records one (record_outcome: its own lease check, so a stale one is left
-- out and the others are not), in the order given; then claim_n jobs are
-- claimed, one a turn from the rotation as claim_n single claims would be.
-- The clock (TIME), the due-time promotion, next_due_in and the rotation's
-- wake-up check are paid once per call instead of once per job.
--@include now_ms, defer, bounds_at, record_outcome, claim, rotation_waits, signal, next_due_in, done
-- ARGV: max_attempts, retry_base_ms, claim_n, owner, lease_ms, then the bounds
--       (bounds_at, 5 of them), then 8 values per outcome: uid, jid, token,
--       outcome ('ok' | 'error'), value (result or error), and the attempt's
--       last progress report not yet written (value or '' for none,
--       has_message '1'/'0', message)
-- Returns {'ok', next_due_ms, {verdict per outcome, in order}, claimed jobs...}
-- with verdicts as finish.lua's; jobs are claimed whatever the verdicts.
local max_attempts, retry_base_ms = ARGV[1], ARGV[2]  -- read on a failure only
local claim_n, owner, lease_ms = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local bounds = bounds_at(6)
local t = now_ms()
-- the writes a job repeats, made once at the end (done); a batch (more than
-- one outcome and the claim after it) defers its leases too
defer(claim_n + (#ARGV - 10) / 8 > 2)
local quiet = claim_n > 0
local verdicts = {}
for i = 11, #ARGV, 8 do
  verdicts[#verdicts + 1] = record_outcome(
    ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5],
    ARGV[i + 6] == '1' and ARGV[i + 7] or nil, t, max_attempts, retry_base_ms, bounds, quiet)
end
local jobs = claim(claim_n, owner, lease_ms, t)
-- users left in the rotation after our own claims: wake another worker for them
if rotation_waits() then signal() end
return done({'ok', next_due_in(t), verdicts, unpack(jobs)})
