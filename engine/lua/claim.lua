-- Take up to n jobs, each the oldest of a different user, in rotation order.
-- ARGV: n, owner, lease_ms
-- Returns {next_due_ms, {uid, jid, data, attempts, token}, ...}.
local t = now_ms()
local jobs = claim(tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), t)
return {next_due_in(t), unpack(jobs)}
