-- A jobUpdates subscription starts: mark the job watched, so its updates
-- are recorded from now on (see `watched`), and answer its state and the
-- cursor of its newest update, both as of this moment.
--@include keys, job_json
-- ARGV: uid, jid. Returns {'ok', job_json, cursor or ''} or {'missing'}
-- (no such job of the user's in Redis).
local uid, jid = ARGV[1], ARGV[2]
local jk = keys.job(jid)
if redis.call('HGET', jk, 'uid') ~= uid then return {'missing'} end
redis.call('HSET', jk, 'sub', 1)
local last = redis.call('XREVRANGE', keys.updates(jid), '+', '-', 'COUNT', 1)
return {'ok', job_json(jid), last[1] and last[1][1] or ''}
