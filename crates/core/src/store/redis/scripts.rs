//! The Lua scripts, each hashed once per process: `Script::new` computes the
//! SHA-1 that `EVALSHA` sends, so building one per call re-hashed it every time.

use std::sync::LazyLock;

use redis::Script;

/// Lua shared by several scripts below, each rule written once: prepended to
/// a script's body by [`with`].
///
/// `refresh(record)`: pushes a session's expiry by its own TTL (`ttl_ms` in
/// the record, else the caller's) (KEYS: session, owner index, instance
/// index; ARGV: ttl ms, now + ttl ms, session id, "owner:session id"). The
/// record's JSON is not rewritten: its expiry is the owner index's score.
const REFRESH: &str = r#"
local function refresh(record)
  local ttl = tonumber(ARGV[1])
  if type(record) == 'table' and type(record.ttl_ms) == 'number' then ttl = record.ttl_ms end
  local expiry = tonumber(ARGV[2]) - tonumber(ARGV[1]) + ttl
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('ZADD', KEYS[2], expiry, ARGV[3])
  redis.call('ZADD', KEYS[3], expiry, ARGV[4])
end
"#;

/// `mark_running(key, token, deadline ms, now ms)`: a command runs in a
/// container until its deadline (`running:<container>`, a sorted set by
/// deadline); the key lives a minute past the latest deadline, its TTL only
/// ever lengthened.
const MARK_RUNNING: &str = r#"
local function mark_running(key, token, deadline, now)
  redis.call('ZADD', key, deadline, token)
  local keep = math.max(tonumber(deadline) - tonumber(now), 0) + 60000
  if redis.call('PTTL', key) < keep then redis.call('PEXPIRE', key, keep) end
end
"#;

/// `take_lease(key, holder, ms)`: sets the lease to `holder` for `ms` if it
/// is free or already `holder`'s; 1 if so, else 0.
const TAKE_LEASE: &str = r#"
local function take_lease(key, holder, ms)
  local current = redis.call('GET', key)
  if current and current ~= holder then return 0 end
  redis.call('SET', key, holder, 'PX', ms)
  return 1
end
"#;

/// A script of the shared `parts`, then `body`.
fn with(parts: &[&str], body: &str) -> Script {
    Script::new(&[parts.concat().as_str(), body].concat())
}

/// Reserve atomically: a ready record (a container, not suspended) wins;
/// else (none, a pending one, a suspended one being resumed) both quotas are checked
/// against the live members of the owner and instance indexes (expired members
/// dropped first) and the record is stored and indexed.
/// KEYS: session, owner index, instance index.
/// ARGV: record json, ttl ms, now ms, expires ms, session id, "owner:session id",
/// per-owner quota, total quota, "1" for a resume (stored only over a record).
/// Returns {status, existing json, its expiry ms} (status 2: {2, the soonest
/// expiry in ms of the owner's sessions}; status 4: a resume with no record).
pub(super) static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = redis.call('GET', KEYS[1])
if not current and ARGV[9] == '1' then return {4, '', ''} end
if current then
  local ok, record = pcall(cjson.decode, current)
  if ok and type(record) == 'table' and record.container_id ~= '' and record.suspended == nil then
    local expiry = redis.call('ZSCORE', KEYS[2], ARGV[5]) or tostring(tonumber(ARGV[3]) + redis.call('PTTL', KEYS[1]))
    return {1, current, expiry}
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
if not redis.call('ZSCORE', KEYS[2], ARGV[5]) and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[7]) then
  local soonest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {2, soonest[2] or '', ''}
end
if not redis.call('ZSCORE', KEYS[3], ARGV[6]) and redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[8]) then
  return {3, '', ''}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[6])
return {0, '', ''}
"#,
    )
});

/// Update a record that is still there: stores and indexes it only if the
/// session has a record (a deletion meanwhile wins); a parked one leaves the
/// instance's index. KEYS: session, owner index, instance index. ARGV: record
/// json, ttl ms, expires ms, session id, "owner:session id", "1" if parked.
/// Returns 1 if stored, else 0.
pub(super) static UPDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local node = cjson.decode(current)['node']
if type(node) ~= 'string' then node = '' end
if node ~= ARGV[7] then return 0 end
if KEYS[4] and redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
if ARGV[6] == '1' then
  redis.call('ZREM', KEYS[3], ARGV[5])
else
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[5])
end
return 1
"#,
    )
});

/// SPOP KEYS[1]; marks what it took as claimed (ARGV[1] .. id) for ARGV[2] ms.
pub(super) static POOL_TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local spare = redis.call('SPOP', KEYS[1])
if spare then redis.call('SET', ARGV[1] .. spare, '1', 'PX', ARGV[2]) end
return spare
"#,
    )
});

/// Sets KEYS[1] to ARGV[1] for ARGV[2] ms if it is free or already ARGV[1]'s.
pub(super) static LEASE: LazyLock<Script> =
    LazyLock::new(|| with(&[TAKE_LEASE], "return take_lease(KEYS[1], ARGV[1], ARGV[2])"));

/// Marks command ARGV[1] running in KEYS[1] (`running:<container>`) until
/// ARGV[2] ms; ARGV[3] is now.
pub(super) static MARK: LazyLock<Script> = LazyLock::new(|| {
    with(
        &[MARK_RUNNING],
        "mark_running(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) return 1",
    )
});

/// Pushes a session's expiry: the key's TTL and its index scores (the
/// record's JSON is not rewritten: its expiry is the owner index's score).
/// KEYS: session, owner index, instance index. ARGV: ttl ms, new expiry ms,
/// session id, "owner:session id". Returns the record's JSON, or nil. When a
/// command ends, first KEYS[4] (`running:<container>`) forgets ARGV[5]. A
/// suspended session's record is returned untouched: its expiry is its
/// retention (`SUSPENDED_RETENTION_SECONDS`), and it holds no capacity.
pub(super) static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    with(
        &[REFRESH],
        r#"
if KEYS[4] then redis.call('ZREM', KEYS[4], ARGV[5]) end
local json = redis.call('GET', KEYS[1])
if not json then return false end
local ok, record = pcall(cjson.decode, json)
if ok and type(record) == 'table' and record.suspended ~= nil and record.container_id == '' then
  return json
end
refresh(record)
return json
"#,
    )
});

/// A command begins in a ready session, in one step: the session is
/// refreshed as by TOUCH, the command is marked running in the record's
/// container (`running:<container>`) and `holder` takes or renews the
/// container's channel lease (`lease:<container>`) if no one else holds it.
/// The container's keys are derived here from the record, as the caller does
/// not know it yet (a standalone Redis; not for Redis Cluster). KEYS:
/// session, owner index, instance index. ARGV: ttl ms, new expiry ms, session
/// id, "owner:session id", key prefix, token, deadline ms, holder, lease ms,
/// now ms. Returns nil without a ready record (pending, suspending or
/// suspended: nothing done), else {json, 1 if leased else 0}.
pub(super) static BEGIN_COMMAND: LazyLock<Script> = LazyLock::new(|| {
    with(
        &[REFRESH, MARK_RUNNING, TAKE_LEASE],
        r#"
local json = redis.call('GET', KEYS[1])
if not json then return false end
local ok, record = pcall(cjson.decode, json)
if not ok or type(record) ~= 'table' or type(record.container_id) ~= 'string' or record.container_id == ''
  or record.suspended ~= nil then
  return false
end
-- Another node's session (the fence): nothing refreshed, marked or leased.
if (record.node or '') ~= ARGV[11] then return {json, 2} end
refresh(record)
mark_running(ARGV[5] .. 'running:' .. record.container_id, ARGV[6], ARGV[7], ARGV[10])
return {json, take_lease(ARGV[5] .. 'lease:' .. record.container_id, ARGV[8], ARGV[9])}
"#,
    )
});

/// Sets KEYS[1]'s TTL to ARGV[2] ms only if it still holds ARGV[1]; 1 if so.
pub(super) static EXTEND_LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"#,
    )
});

/// Deletes KEYS[1] only if it still holds ARGV[1].
pub(super) static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});

/// Stores a value charged to an account, evicting the account's values that
/// expire soonest until it fits (see `SessionStore::put_charged`).
/// KEYS: value, account index (zset: value key → expiry ms), sizes (hash),
/// total. ARGV: value, ttl ms, now ms, quota, the evicted marker. Returns how
/// many values were evicted.
pub(super) static PUT_CHARGED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local total = tonumber(redis.call('GET', KEYS[4]) or '0')
local now, quota, size = tonumber(ARGV[3]), tonumber(ARGV[4]), #ARGV[1]
local function forget(k)
  total = total - tonumber(redis.call('HGET', KEYS[3], k) or '0')
  redis.call('HDEL', KEYS[3], k)
  redis.call('ZREM', KEYS[2], k)
end
for _, k in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do forget(k) end
if redis.call('ZSCORE', KEYS[2], KEYS[1]) then forget(KEYS[1]) end
local evicted = 0
while total + size > quota do
  local first = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not first then break end
  forget(first)
  redis.call('SET', first, ARGV[5], 'XX', 'KEEPTTL')
  evicted = evicted + 1
end
if total < 0 then total = 0 end
local expiry = now + tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], expiry, KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], size)
total = total + size
redis.call('SET', KEYS[4], total)
local last = tonumber(redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')[2])
local keep = math.max(last - now, 1)
for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], keep) end
return evicted
"#,
    )
});
