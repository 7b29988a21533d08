"""The Lua scripts of the Valkey store: each write is one atomic script, one round trip.

Every script touches only the keys of one device (one hash tag, so one cluster slot) plus the
fleet-wide keys it names (the registry, the removed set, the fleet's byte count). Numbers stay
below 2^53, where Lua's doubles are exact: minutes, nanoseconds within a minute, 32-bit limbs of
upload times. The engine's own integers (HINCRBY, INCRBY) are exact int64. See
``docs/scale-out.md`` for the key layout.
"""

from __future__ import annotations

# Every script declares itself (Valkey 7+, Redis 7+): a write script is then refused before it
# starts when the engine cannot take writes (out of memory, an AOF it cannot write, a replica),
# never part-way.
SHEBANG = "#!lua"


# Shared by the two write scripts: the device's fields are read at once (``h``, ``cost``
# first: nil for an unknown device), and an idempotency key already used is a repeat (same
# fingerprint, or ``*``: a key migrated from a snapshot that kept no fingerprint, which matches
# any event, as in the memory store) or a conflict. KEYS[1] the device hash, KEYS[3] the key's
# string; ARGV[1] the key's list entry ("" without a key), ARGV[2] the fingerprint.
def _check(*fields: str) -> str:
    names = ", ".join(f"'{field}'" for field in ("cost", *fields))
    return f"""{SHEBANG}
local h = redis.call('HMGET', KEYS[1], {names})
if not h[1] then return {{'unknown'}} end
if ARGV[1] ~= '' then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    if seen == ARGV[2] or seen == '*' then return {{'repeat'}} end
    return {{'conflict'}}
  end
end
local set = {{}}
"""


# Budget check for ``extra`` bytes (a local) and the key's own cost, then the key remembered
# (the oldest beyond a device's count forgotten, its cost given back; a key whose string expired
# is still in the list: moved to its end, not counted twice). KEYS[4] the key list,
# KEYS[5] the fleet's byte count; ARGV[3] per-device budget, ARGV[4] fleet budget, ARGV[5] the
# key's expiry (s), ARGV[6] how many keys a device keeps, ARGV[7] the keys' name prefix,
# ARGV[8] the key's cost, ARGV[9] a key's cost beyond the characters of its list entry.
_BUDGET_AND_KEY = """
if ARGV[1] ~= '' then extra = extra + tonumber(ARGV[8]) end
local cost = tonumber(h[1])
if extra > 0 then
  if cost + extra > tonumber(ARGV[3]) then return {'device_budget', tostring(cost)} end
  local used = tonumber(redis.call('GET', KEYS[5]) or '0')
  if used + extra > tonumber(ARGV[4]) then return {'fleet_budget', tostring(used)} end
end
if ARGV[1] ~= '' then
  redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[5])
  if redis.call('LREM', KEYS[4], 0, ARGV[1]) > 0 then  -- its string had expired: one entry
    extra = extra - #ARGV[1] - tonumber(ARGV[9])
  end
  redis.call('RPUSH', KEYS[4], ARGV[1])
  if redis.call('LLEN', KEYS[4]) > tonumber(ARGV[6]) then
    local oldest = redis.call('LPOP', KEYS[4])
    redis.call('DEL', ARGV[7] .. oldest)
    extra = extra - #oldest - tonumber(ARGV[9])
  end
end
"""

# The fields changed (``set``, name/value pairs) in one HSET; the cost in exact integers.
_SETTLE = """
if #set > 0 then redis.call('HSET', KEYS[1], unpack(set)) end
if extra ~= 0 then
  redis.call('HINCRBY', KEYS[1], 'cost', extra)
  redis.call('INCRBY', KEYS[5], extra)
end
"""

# A heartbeat. KEYS: 1 device hash, 2 chunk, 3 key string, 4 key list, 5 fleet bytes, 6 chunk
# set, 7 last-seen index. ARGV 1-9 as above; 10 minute, 11 chunk index, 12 bit in the chunk,
# 13 sent_at's minute, 14 its nanoseconds within the minute, 15 a partial chunk's cost, 16 a
# full one's, 17 bits a chunk holds, 18 the device id, 19 sent_at in Unix seconds, 20 when it
# was received (ns, "" if not known), 21 sent_at (ns). Returns
# {'ok', 1 if the minute was new else 0}, or a refusal. h: cost, f, l, fm, fr, lm, lr, rx (the
# latest arrival is kept, as in memory: an arrival stamped earlier does not replace it).
HEARTBEAT = (
    _check("f", "l", "fm", "fr", "lm", "lr", "rx")
    + """
local new_chunk = redis.call('EXISTS', KEYS[2]) == 0
local extra = 0
if new_chunk then extra = tonumber(ARGV[15]) end
"""
    + _BUDGET_AND_KEY
    + """
local minute = tonumber(ARGV[10])
local new = 0
if redis.call('SETBIT', KEYS[2], ARGV[12], 1) == 0 then
  new = 1
  if new_chunk then redis.call('SADD', KEYS[6], ARGV[11]) end
  redis.call('HINCRBY', KEYS[1], 'n', 1)
  if not h[2] or minute < tonumber(h[2]) then set[#set + 1] = 'f'; set[#set + 1] = ARGV[10] end
  if not h[3] or minute > tonumber(h[3]) then set[#set + 1] = 'l'; set[#set + 1] = ARGV[10] end
  if not new_chunk and redis.call('BITCOUNT', KEYS[2]) == tonumber(ARGV[17]) then
    -- written again at its exact size: grown bit by bit, the string holds twice the room
    redis.call('SET', KEYS[2], redis.call('GET', KEYS[2]))
    redis.call('HINCRBY', KEYS[1], 'full', 1)
    extra = extra - tonumber(ARGV[15]) + tonumber(ARGV[16])
  end
end
local at_m, at_r = tonumber(ARGV[13]), tonumber(ARGV[14])
if not h[4] or at_m < tonumber(h[4]) or (at_m == tonumber(h[4]) and at_r < tonumber(h[5])) then
  set[#set + 1] = 'fm'; set[#set + 1] = ARGV[13]; set[#set + 1] = 'fr'; set[#set + 1] = ARGV[14]
end
if not h[6] or at_m > tonumber(h[6]) or (at_m == tonumber(h[6]) and at_r > tonumber(h[7])) then
  set[#set + 1] = 'lm'; set[#set + 1] = ARGV[13]; set[#set + 1] = 'lr'; set[#set + 1] = ARGV[14]
end
redis.call('ZADD', KEYS[7], 'GT', ARGV[19], ARGV[18])
if ARGV[20] ~= '' and (not h[8] or tonumber(ARGV[20]) >= tonumber(h[8])) then
  set[#set + 1] = 'rx'; set[#set + 1] = ARGV[20]; set[#set + 1] = 'rs'; set[#set + 1] = ARGV[21]
end
"""
    + _SETTLE
    + "return {'ok', new}\n"
)

# An upload. KEYS: 1 device hash, 2 uploads (sorted set), 3 key string, 4 key list, 5 fleet
# bytes. ARGV 1-9 as above; 10 minute, 11 upload time (decimal text), 12 its high 31 bits,
# 13 its low 32 bits, 14 an upload's cost. Returns {'ok', 1} or a refusal. h: cost, seq,
# mnh, mnl, mxh, mxl.
UPLOAD = (
    _check("seq", "mnh", "mnl", "mxh", "mxl")
    + "local extra = tonumber(ARGV[14])\n"
    + _BUDGET_AND_KEY
    + """
local seq = tonumber(h[2] or '0') + 1
set[#set + 1] = 'seq'; set[#set + 1] = tostring(seq)
redis.call('ZADD', KEYS[2], ARGV[10], seq .. ':' .. ARGV[11])
redis.call('HINCRBY', KEYS[1], 'uc', 1)
redis.call('HINCRBY', KEYS[1], 'uh', ARGV[12])
redis.call('HINCRBY', KEYS[1], 'ul', ARGV[13])
local hi, lo = tonumber(ARGV[12]), tonumber(ARGV[13])
if not h[3] or hi < tonumber(h[3]) or (hi == tonumber(h[3]) and lo < tonumber(h[4])) then
  set[#set + 1] = 'mnh'; set[#set + 1] = ARGV[12]; set[#set + 1] = 'mnl'; set[#set + 1] = ARGV[13]
end
if not h[5] or hi > tonumber(h[5]) or (hi == tonumber(h[5]) and lo > tonumber(h[6])) then
  set[#set + 1] = 'mxh'; set[#set + 1] = ARGV[12]; set[#set + 1] = 'mxl'; set[#set + 1] = ARGV[13]
end
"""
    + _SETTLE
    + "return {'ok', 1}\n"
)

# A registration. KEYS: 1 device hash, 2 registry, 3 removed set. ARGV: 1 id, 2 most devices
# (0: no limit: a devices file at start). Returns 1 (new), 0 (there already) or {'full', n}.
REGISTER = (
    SHEBANG
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local count = redis.call('ZCARD', KEYS[2])
if tonumber(ARGV[2]) > 0 and count >= tonumber(ARGV[2]) then return {'full', count} end
redis.call('HSET', KEYS[1], 'cost', 0)
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
"""
)

# Shared by the two profile scripts: the device's profile set to ARGV[1] ("": none, the field
# removed), then 1 returned.
_SET_PROFILE = """
if ARGV[1] == '' then
  redis.call('HDEL', KEYS[1], 'pf')
else
  redis.call('HSET', KEYS[1], 'pf', ARGV[1])
end
return 1
"""

# A device's profile. KEYS: 1 device hash. ARGV: 1 the profile's JSON ("" for none). Returns 1,
# or 0 for an unknown device.
PROFILE = (
    SHEBANG
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
"""
    + _SET_PROFILE
)

# A device's profile from the devices file. KEYS: 1 device hash. ARGV: 1 the profile's JSON
# ("": none, the field removed), 2 the file's mark.
# Returns 1 when set, 0 for an unknown device or one whose profile the API set (its JSON does not
# begin with the file's mark).
FILE_PROFILE = (
    SHEBANG
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local current = redis.call('HGET', KEYS[1], 'pf')
if current == ARGV[1] or (not current and ARGV[1] == '') then return 0 end
if current and string.sub(current, 1, #ARGV[2]) ~= ARGV[2] then return 0 end
"""
    + _SET_PROFILE
)

# A lease held by one process at a time. KEYS: 1 the lease. ARGV: 1 the holder, 2 its life in
# ms. Taken when free, kept (its life renewed) by its holder; returns 1 if ARGV[1] holds it.
LEASE = (
    SHEBANG
    + """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
)

# A maintenance window added. KEYS: 1 the windows' hash. ARGV: 1 its id, 2 its JSON, 3 the most
# windows kept. Returns 1, or {'full', count}.
ADD_WINDOW = (
    SHEBANG
    + """
local count = redis.call('HLEN', KEYS[1])
if count >= tonumber(ARGV[3]) then return {'full', count} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
)

# A removal. KEYS: 1 device hash, 2 chunk set, 3 uploads, 4 key list, 5 fleet bytes,
# 6 registry, 7 removed set, 8 last-seen index. ARGV: 1 id, 2 the chunks' name prefix, 3 the
# keys' name prefix. Returns 1, or 0 for an unknown device.
REMOVE = (
    SHEBANG
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local cost = tonumber(redis.call('HGET', KEYS[1], 'cost') or '0')
for _, index in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('DEL', ARGV[2] .. index)
end
for _, key in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do
  redis.call('DEL', ARGV[3] .. key)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('ZREM', KEYS[8], ARGV[1])
redis.call('SADD', KEYS[7], ARGV[1])
redis.call('DECRBY', KEYS[5], cost)
return 1
"""
)
