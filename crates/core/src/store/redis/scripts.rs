//! The Lua scripts, each hashed once per process: `Script::new` computes the
//! SHA-1 that `EVALSHA` sends, so building one per call re-hashed it every time.

use std::sync::LazyLock;

use redis::Script;

/// Reserve atomically: a ready record wins; else both quotas are checked
/// against the live members of the owner and instance indexes (expired members
/// dropped first) and the record is stored and indexed.
/// KEYS: session, owner index, instance index.
/// ARGV: record json, ttl ms, now ms, expires ms, session id, "owner:session id",
/// per-owner quota, total quota. Returns {status, existing json} (status 2:
/// {2, the soonest expiry in ms of the owner's sessions}).
pub(super) static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, record = pcall(cjson.decode, current)
  if ok and type(record) == 'table' and record.container_id ~= '' then return {1, current} end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
if not redis.call('ZSCORE', KEYS[2], ARGV[5]) and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[7]) then
  local soonest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {2, soonest[2] or ''}
end
if not redis.call('ZSCORE', KEYS[3], ARGV[6]) and redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[8]) then
  return {3, ''}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[6])
return {0, ''}
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
pub(super) static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#,
    )
});

/// Compare-and-set of a session record with its TTL and index scores.
/// KEYS: session, owner index, instance index. ARGV: expected json, new json,
/// ttl ms, new expiry ms, session id, "owner:session id". 1 if swapped.
pub(super) static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[6])
return 1
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
