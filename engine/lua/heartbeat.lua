-- Push the leases of a worker's running jobs forward.
--@include keys, now_ms, holds_lease
-- ARGV: lease_ms, then pairs of (uid:jid, token).
-- Returns {'ok', member...}: the members whose lease was lost.
local t = now_ms()
local lease_ms = tonumber(ARGV[1])
local out = {'ok'}
for i = 2, #ARGV, 2 do
  local member, token = ARGV[i], ARGV[i + 1]
  local jid = string.sub(member, string.find(member, ':', 1, true) + 1)
  if holds_lease(jid, token) then
    redis.call('ZADD', keys.leases(), 'XX', t + lease_ms, member)
  else
    out[#out + 1] = member
  end
end
return out
