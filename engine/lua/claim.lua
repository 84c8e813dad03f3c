-- Take up to n jobs, one a turn, in rotation order (claim in _lib.lua).
--@include now_ms, claim, next_due_in
-- ARGV: n, owner, lease_ms
-- Returns {'ok', next_due_ms, {uid, jid, data, attempts, token}, ...}.
local t = now_ms()
local jobs = claim(tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), t)
return {'ok', next_due_in(t), unpack(jobs)}
