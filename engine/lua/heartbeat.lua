-- Push the leases of a worker's running jobs forward.
-- ARGV: lease_ms, then pairs of (uid:jid, token). Returns the members whose lease was lost.
local t = now_ms()
local lease_ms = tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV, 2 do
  local member, token = ARGV[i], ARGV[i + 1]
  local jid = string.sub(member, string.find(member, ':', 1, true) + 1)
  if redis.call('HGET', jkey(jid), 'token') == token then
    redis.call('ZADD', base .. ':leases', 'XX', t + lease_ms, member)
  else
    lost[#lost + 1] = member
  end
end
return lost
