-- Hand out the user's oldest finished job not yet dequeued, at most once.
--@include keys, now_ms, touch, job_json
-- ARGV: uid. Returns {'ok', job_json} or {'empty'}.
local uid = ARGV[1]
local t = now_ms()
while true do
  local jid = redis.call('LPOP', keys.ready(uid))
  if not jid then return {'empty'} end
  local jk = keys.job(jid)
  if redis.call('EXISTS', jk) == 1 then
    redis.call('HSET', jk, 'dequeued', t)
    touch(uid, jid)
    return {'ok', job_json(jid)}
  end
  -- its record outlived QUEUE_RESULT_TTL_SECONDS in Redis: skip it
end
