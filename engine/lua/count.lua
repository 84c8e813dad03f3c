-- Count in a window that the first count starts: failed logins, a user's
-- enqueues in a minute. KEYS[1] is the counter itself (engine/keys.py,
-- login_throttle and enqueue_rate), not a shard's base key.
-- ARGV: by, window_seconds. Returns {'ok', count}. A negative `by` takes counts
-- back, unless the window has ended meanwhile (no key: nothing to take back).
-- (EXPIRE ... NX would do without a script, but needs Redis 7; the embedded
-- server is 6.2.)
if tonumber(ARGV[1]) < 0 and redis.call('EXISTS', KEYS[1]) == 0 then return {'ok', 0} end
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return {'ok', n}
