"""The Lua scripts of the Redis live-leg registry (engine/admission/live_redis.py).

Each runs atomically in Redis (no other command runs between its reads and writes), which is
what makes a claim's "fewer than the limit? then count it" one step across every node. Every
script's ``ARGV[1]`` is the key prefix ``callbridge:{<prefix>}:``; the keys below it:

    leg:<leg id>          hash: node, org, bridge, number (bridge and number '' for a leg
                          counted against its organization only), call (its provider call,
                          ``<provider>:<provider's call id>``, '' if not known here)
    call:<provider call>  the leg id of that call, while its claim lives (then for as long as
                          ``ended:<leg id>``): how a provider webhook naming only its call finds
                          the leg, and so its owner (engine/cluster/); never a node of its own
    org:<org id>          set of leg ids        number:<E.164>     set of leg ids
    bridge:<bridge id>    set of leg ids        node:<node>:legs   set of the node's leg ids
    node:<node>:alive     present while the node lives (a TTL the node keeps refreshing);
                          its value is the base URL other nodes reach the node's HTTP API on
    nodes                 set of the nodes that have registered
    ended:<leg id>        the node that held a leg when it ended, kept for as long as a node
                          keeps ended legs (engine/cluster: a command on an ended leg is
                          answered by that node, as on one node)
    room-claim:<what>     the node making a room that has no leg yet (``bridge:<id>``, a
                          bridge's conference; ``queue:<org>:<name>``), for 30 s: the other
                          nodes send the room's first calls there (engine/cluster/owners_redis.py)

The claim's node is also the leg's owner (engine/cluster/owners.py): the node that holds the
leg in memory and carries out its commands.

The scripts build these names from the prefix rather than take them as KEYS: the braces make
the prefix the hash tag, so on a Redis Cluster every key of one deployment is in one slot.
"""

from __future__ import annotations

_PRELUDE = """
local P = ARGV[1]
local function alive(node)
  return redis.call('EXISTS', P .. 'node:' .. node .. ':alive') == 1
end
-- The claim goes, and its call's key with it, or (ended_ms) kept as long as ended:<leg>.
local function drop(leg, ended_ms)
  local key = P .. 'leg:' .. leg
  local held = redis.call('HMGET', key, 'node', 'org', 'bridge', 'number', 'call')
  if not held[1] then return 0 end
  redis.call('SREM', P .. 'node:' .. held[1] .. ':legs', leg)
  redis.call('SREM', P .. 'org:' .. held[2], leg)
  if held[3] ~= '' then redis.call('SREM', P .. 'bridge:' .. held[3], leg) end
  if held[4] ~= '' then redis.call('SREM', P .. 'number:' .. held[4], leg) end
  local call = held[5]
  if call and call ~= '' and redis.call('GET', P .. 'call:' .. call) == leg then
    if ended_ms then
      redis.call('PEXPIRE', P .. 'call:' .. call, ended_ms)
    else
      redis.call('DEL', P .. 'call:' .. call)
    end
  end
  redis.call('DEL', key)
  return 1
end
local function put(leg, node, org, bridge, number, call)
  local known = redis.call('HGET', P .. 'leg:' .. leg, 'call')
  if call == '' and known then call = known end  -- a hold that does not name it keeps it
  drop(leg)  -- a leg another node held moves here whole
  redis.call('HSET', P .. 'leg:' .. leg, 'node', node, 'org', org, 'bridge', bridge,
             'number', number, 'call', call)
  if call ~= '' then redis.call('SET', P .. 'call:' .. call, leg) end
  redis.call('SADD', P .. 'node:' .. node .. ':legs', leg)
  redis.call('SADD', P .. 'org:' .. org, leg)
  if bridge ~= '' then redis.call('SADD', P .. 'bridge:' .. bridge, leg) end
  if number ~= '' then redis.call('SADD', P .. 'number:' .. number, leg) end
end
"""

# ARGV: prefix, node, leg, org, bridge, number, channels, max_legs, call ('' if none).
# -1: the node is not alive (it must register first); 0: counted (or counted already);
# 1: the number has its channels_count; 2: the organization has its max_legs; 3: the call is
# a live leg's on another node (a duplicate of its first webhook, taken there at the same time;
# on this node the adapter's own lock and map see it, and a leg whose first event failed is
# released before its provider's retry, engine/runtime CallRuntime.unbind).
CLAIM = (
    _PRELUDE
    + """
local node, leg, org, bridge, number = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if not alive(node) then return -1 end
if redis.call('EXISTS', P .. 'leg:' .. leg) == 1 then return 0 end
if ARGV[9] ~= '' then
  local known = redis.call('GET', P .. 'call:' .. ARGV[9])
  if known and known ~= leg then
    local holder = redis.call('HGET', P .. 'leg:' .. known, 'node')
    if holder and holder ~= node then return 3 end
  end
end
if number ~= '' and redis.call('SCARD', P .. 'number:' .. number) >= tonumber(ARGV[7]) then
  return 1
end
if redis.call('SCARD', P .. 'org:' .. org) >= tonumber(ARGV[8]) then return 2 end
put(leg, node, org, bridge, number, ARGV[9])
return 0
"""
)

# ARGV: prefix, node, ttl_ms, url, ended_ms, holds, then `holds` groups of (leg, org, bridge,
# number, call), then `ends`, then `ends` legs that ended, then the other legs to release. With
# ttl_ms > 0 the node (re)registers: alive for ttl_ms under its url, listed in `nodes`.
# Without, a node that is not alive gets -1 and nothing changes (it registers with every leg
# it holds, then writes again). Held legs are counted and owned by this node from now on, but
# when (re)registering a leg another live node holds is not taken back (that node took it over
# while this one was gone: the list of such legs is returned instead of 0); released legs are
# dropped whoever held them, and an ended one is remembered as this node's for ended_ms (its
# call's key too). 0 when done (the lost legs, possibly none, when registering).
WRITE = (
    _PRELUDE
    + """
local node, ttl, ended_ms = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[5])
if ttl > 0 then
  redis.call('SET', P .. 'node:' .. node .. ':alive', ARGV[4], 'PX', ttl)
  redis.call('SADD', P .. 'nodes', node)
elseif not alive(node) then
  return -1
end
local i, lost = 7, {}
for _ = 1, tonumber(ARGV[6]) do
  local holder = redis.call('HGET', P .. 'leg:' .. ARGV[i], 'node')
  if ttl > 0 and holder and holder ~= node and alive(holder) then
    lost[#lost + 1] = ARGV[i]  -- taken over while this node was gone: fenced, not taken back
  else
    put(ARGV[i], node, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
    redis.call('DEL', P .. 'ended:' .. ARGV[i])
  end
  i = i + 5
end
local ends = tonumber(ARGV[i])
for j = i + 1, i + ends do
  drop(ARGV[j], ended_ms)
  redis.call('SET', P .. 'ended:' .. ARGV[j], node, 'PX', ended_ms)
end
for j = i + ends + 1, #ARGV do drop(ARGV[j]) end
if ttl > 0 then return lost end
return 0
"""
)

# ARGV: prefix, node. Moves every claim of each registered node whose liveness key has expired
# to ``node`` (the sweeping node: the first to sweep after the expiry takes them all, so a dead
# node's legs go to one node, whole), and forgets the expired node; the legs taken.
TAKE_OVER = (
    _PRELUDE
    + """
local me, taken = ARGV[2], {}
for _, node in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  if node ~= me and not alive(node) then
    for _, leg in ipairs(redis.call('SMEMBERS', P .. 'node:' .. node .. ':legs')) do
      if redis.call('HGET', P .. 'leg:' .. leg, 'node') == node then
        redis.call('HSET', P .. 'leg:' .. leg, 'node', me)
        redis.call('SADD', P .. 'node:' .. me .. ':legs', leg)
        taken[#taken + 1] = leg
      end
    end
    redis.call('DEL', P .. 'node:' .. node .. ':legs')
    redis.call('SREM', P .. 'nodes', node)
  end
end
return taken
"""
)
