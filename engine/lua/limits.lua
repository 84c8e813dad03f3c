-- Change a user's limits (setUserLimits); they apply from the next start on.
--@include keys, now_ms, replace
-- ARGV: uid, then pairs (field, value) to set: concurrency, weight, spm, paused ('1' or '0').
-- Returns {'ok', concurrency, weight, spm, paused}, nil where never set.
-- A paused user is never in the rotation, so none of its jobs start (enqueue
-- still works); a running job runs to its end. Resuming, or a higher
-- concurrency, puts the user back in the rotation if a lane may start; a
-- lower one takes it out while it runs as many as it may.
local uid = ARGV[1]
local lk = keys.limits(uid)
redis.call('SADD', keys.limited(), uid)  -- scripts read its limits from now on (user_limits)
for i = 2, #ARGV, 2 do
  redis.call('HSET', lk, ARGV[i], ARGV[i + 1])
end
local paused = redis.call('HGET', lk, 'paused') == '1'
local conc = tonumber(redis.call('HGET', lk, 'concurrency') or USER_CONCURRENCY)
replace(uid, now_ms(), paused or redis.call('HLEN', keys.busy(uid)) >= conc)
return {'ok', unpack(redis.call('HMGET', lk, 'concurrency', 'weight', 'spm', 'paused'))}
