-- Hand out the user's oldest finished job not yet dequeued, at most once.
-- ARGV: uid. Returns the job as JSON, or nil.
local uid = ARGV[1]
local t = now_ms()
while true do
  local jid = redis.call('LPOP', ukey(uid, 'ready'))
  if not jid then return nil end
  local jk = jkey(jid)
  if redis.call('EXISTS', jk) == 1 then
    redis.call('HSET', jk, 'dequeued', t)
    touch(uid, jid)
    return job_json(jid)
  end
  -- its record outlived QUEUE_RESULT_TTL_SECONDS in Redis: skip it
end
