-- Change a user's limits (setUserLimits); pausing and resuming move the user.
--@include keys, schedule, park
-- ARGV: uid, then pairs (field, value) to set: concurrency, weight, spm, paused ('1' or '0').
-- Returns {'ok', concurrency, weight, spm, paused}, nil where never set.
-- Only `paused` is honoured by the engine yet: a paused user is never in the
-- rotation, so none of its jobs start (enqueue still works); a running job
-- runs to its end. Resuming puts the user at the back of the rotation if work
-- waits. The other limits are stored for the scheduler of issue 14.
local uid = ARGV[1]
local lk = keys.limits(uid)
for i = 2, #ARGV, 2 do
  redis.call('HSET', lk, ARGV[i], ARGV[i + 1])
end
local paused = redis.call('HGET', lk, 'paused') == '1'
local state = redis.call('GET', keys.state(uid))
if paused and state == 'r' then
  redis.call('LREM', keys.rotation(), 1, uid)
  park(uid)
elseif not paused and state == 'p' then
  redis.call('SREM', keys.paused(), uid)
  schedule(uid)
end
-- a delayed user is parked when its retry falls due, a running one when its job ends
return {'ok', unpack(redis.call('HMGET', lk, 'concurrency', 'weight', 'spm', 'paused'))}
