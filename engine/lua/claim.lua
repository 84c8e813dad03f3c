-- Take up to n jobs, one a turn, in rotation order (claim in _lib.lua).
--@include now_ms, defer, claim, next_due_in, done
-- ARGV: n, owner, lease_ms
-- Returns {'ok', next_due_ms, {uid, jid, data, attempts, token}, ...}.
local t = now_ms()
defer(tonumber(ARGV[1]) > 1)  -- the writes a job repeats, made once at the end (done)
local jobs = claim(tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), t)
return done({'ok', next_due_in(t), unpack(jobs)})
