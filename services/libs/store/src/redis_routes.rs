//! Cluster-mode [`SessionRoutes`] on Redis: every edge node sees every device's route, takeovers
//! across nodes are atomic, and the routes of a node that died without saying so are reaped once
//! its heartbeat lapses.
//!
//! # Key layout
//!
//! Every key starts with [`RedisRoutesConfig::key_prefix`] (`tether:` by default), so several
//! deployments or tests can share one Redis. Names are short on purpose: with a million devices
//! every byte of a key or field name is a megabyte.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `r:{pk}/{dn}` | hash | `n` node, `c` conn id (both only while routed), `t` last online at (= the route's `connected_at` while routed), `i` client IP, `f` last offline at |
//! | `h:{node}` | string with a TTL | the node's heartbeat |
//! | `nodes` | hash | node → generation, bumped by every route the node claims and every heartbeat after a lapse |
//!
//! A route hash keeps five small fields, so Redis stores it as a listpack: a routed device costs
//! 176–187 B of Redis memory from 1 k to 100 k devices (27-character node names, 15-character
//! IPs; the `a_routed_device_costs_little_redis_memory` test measures it at 1 k).
//!
//! There is deliberately no per-node set of devices: at scale it cost 71–76 B per device (a
//! hashtable entry plus the member string), which put the layout at 266–274 B, over the 250 B
//! budget of BENCHMARKS.md B1. Instead, when a node's heartbeat has lapsed, the reaper walks the
//! route keys with `SCAN` and clears, one script call per [`RedisRoutesConfig::reap_batch`]
//! keys, the routes whose `n` is a dead node. That is one pass over the keyspace per node death
//! (measured at 100 k devices, one of six nodes dead: 0.56 s of Redis time in calls of under
//! 1 ms, 2.1 s end to end) and one script call of about 60 µs per reaper tick while every node
//! lives. A dead node is forgotten only if its generation has not moved since the pass began,
//! so a route it claimed behind the cursor (a node that was only slow) is found by a later pass.
//!
//! # Ordering: superseded connects
//!
//! The scripts order sessions by `connected_at`. A connect whose `connected_at` is older than
//! the device's current route does not overwrite it: it is *superseded* (a CONNECT that lost a
//! race with a later one on another node). [`RedisRoutes::claim`] says so with
//! [`Claim::Superseded`]; through the [`SessionRoutes`] trait, `connect` then returns the
//! caller's own route as the route "whose session must be kicked", so a caller that kicks what
//! `connect` returns drops the stale session, whichever case it is. Equal times go to the later
//! arrival. `connected_at` comes from the edges' clocks, so this ordering is only as good as
//! their clock sync; a skew shorter than a reconnect never matters.
//!
//! # Scope
//!
//! The scripts touch keys they build from the prefix (heartbeats, the registry), so this adapter
//! needs a standalone Redis (with replicas or Sentinel), not Redis Cluster.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, RedisError, Script};
use tether_model::DeviceKey;

use crate::{Presence, Route, SessionRoutes, StoreError};

/// Routes per claim script call when re-registering: bounds how long one call holds Redis.
const REREGISTER_BATCH: usize = 256;

/// [`SessionRoutes`] on a standalone Redis, shared by every edge node. Each edge node calls
/// [`heartbeat`](RedisRoutes::heartbeat) periodically (a node without one is reaped), and some
/// process calls [`reap_dead_nodes`](RedisRoutes::reap_dead_nodes) periodically.
#[derive(Clone)]
pub struct RedisRoutes {
    conn: ConnectionManager,
    keys: Keys,
    reap_batch: usize,
    scripts: &'static Scripts,
}

/// How [`RedisRoutes`] connects and names its keys.
#[derive(Debug, Clone)]
pub struct RedisRoutesConfig {
    /// Prepended to every key.
    pub key_prefix: String,
    /// How long a command waits for its reply before failing.
    pub response_timeout: Duration,
    /// How long establishing a connection (at startup, or reconnecting) may take.
    pub connection_timeout: Duration,
    /// Route keys the reaper examines per step (`SCAN COUNT` and one script call): bounds how
    /// long one call holds Redis.
    pub reap_batch: usize,
}

/// What [`RedisRoutes::claim`] made of a new session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The new route is the device's current route; the session of `previous`, if any, must be
    /// kicked. Claiming the current route again (a retry) is `Taken { previous: None }`.
    Taken { previous: Option<Route> },
    /// A session with a later `connected_at` holds the device: the claiming session must drop.
    Superseded { current: Route },
}

#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

struct Scripts {
    claim: Script,
    disconnect: Script,
    heartbeat: Script,
    dead_nodes: Script,
    reap: Script,
    forget: Script,
}

const CLAIM: &str = r"
-- ARGV[1]: key prefix; then per route: member ({pk}/{dn}), node, conn id, connected at, client ip.
-- Returns per route: outcome ('0' taken, '1' took over the route that follows, '2' superseded by
-- the route that follows), then that route's node, conn id, connected at, client ip ('' if none).
local prefix = ARGV[1]
local out = {}
for i = 2, #ARGV, 5 do
  local member, node, conn, at, ip = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local key = prefix .. 'r:' .. member
  local cur = redis.call('HMGET', key, 'n', 'c', 't', 'i')
  local same = cur[1] == node and cur[2] == conn
  local outcome = '0'
  if cur[1] and not same then
    if tonumber(cur[3] or '0') > tonumber(at) then outcome = '2' else outcome = '1' end
  end
  if outcome ~= '2' then
    if not same then redis.call('HSET', key, 'n', node, 'c', conn, 't', at, 'i', ip) end
    redis.call('HINCRBY', prefix .. 'nodes', node, 1)
  end
  if outcome == '0' then
    for _, v in ipairs({'0', '', '', '', ''}) do table.insert(out, v) end
  else
    for _, v in ipairs({outcome, cur[1], cur[2] or '', cur[3] or '', cur[4] or ''}) do table.insert(out, v) end
  end
end
return out
";

const DISCONNECT: &str = r"
-- KEYS: route hash. ARGV: node, conn id, at. Returns 1 if the route was current.
local cur = redis.call('HMGET', KEYS[1], 'n', 'c')
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], 'n', 'c')
redis.call('HSET', KEYS[1], 'f', ARGV[3])
return 1
";

const HEARTBEAT: &str = r"
-- KEYS: heartbeat, registry. ARGV: node, ttl ms. Returns 1 if the previous beat was alive.
if redis.call('SET', KEYS[1], '1', 'PX', ARGV[2], 'GET') then return 1 end
-- Back from a lapse (or a Redis restart): a sweep that began before must not forget the node.
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return 0
";

const DEAD_NODES: &str = r"
-- KEYS: registry. ARGV: heartbeat key prefix. Returns node, generation of each node with no beat.
local out = {}
local nodes = redis.call('HGETALL', KEYS[1])
for i = 1, #nodes, 2 do
  if redis.call('EXISTS', ARGV[1] .. nodes[i]) == 0 then
    table.insert(out, nodes[i])
    table.insert(out, nodes[i + 1])
  end
end
return out
";

// Each route is checked and cleared inside one script call, so two reapers sweeping at once
// clear (and return) each route once.
const REAP: &str = r"
-- KEYS: route hashes. ARGV: at, heartbeat key prefix, then the nodes presumed dead.
-- Returns key, node, conn id, connected at, client ip of each route cleared.
local dead = {}
for i = 3, #ARGV do
  if redis.call('EXISTS', ARGV[2] .. ARGV[i]) == 0 then dead[ARGV[i]] = true end
end
local out = {}
for _, key in ipairs(KEYS) do
  local node = redis.call('HGET', key, 'n')
  if node and dead[node] then
    local cur = redis.call('HMGET', key, 'n', 'c', 't', 'i')
    redis.call('HDEL', key, 'n', 'c')
    redis.call('HSET', key, 'f', ARGV[1])
    for _, v in ipairs({key, cur[1], cur[2] or '', cur[3] or '', cur[4] or ''}) do table.insert(out, v) end
  end
end
return out
";

const FORGET: &str = r"
-- KEYS: registry. ARGV: heartbeat key prefix, then node, generation pairs seen when the sweep
-- began. Forgets the nodes still silent and unchanged since; returns them.
local out = {}
for i = 2, #ARGV, 2 do
  local node = ARGV[i]
  if redis.call('EXISTS', ARGV[1] .. node) == 0 and redis.call('HGET', KEYS[1], node) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], node)
    table.insert(out, node)
  end
end
return out
";

fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        claim: Script::new(CLAIM),
        disconnect: Script::new(DISCONNECT),
        heartbeat: Script::new(HEARTBEAT),
        dead_nodes: Script::new(DEAD_NODES),
        reap: Script::new(REAP),
        forget: Script::new(FORGET),
    })
}

// === impl RedisRoutesConfig ===

impl Default for RedisRoutesConfig {
    fn default() -> Self {
        Self {
            key_prefix: "tether:".into(),
            response_timeout: Duration::from_secs(1),
            connection_timeout: Duration::from_secs(1),
            reap_batch: 200,
        }
    }
}

// === impl Claim ===

impl Claim {
    /// The route whose session must be kicked: the previous one, or `own` when superseded.
    pub fn to_kick(self, own: Route) -> Option<Route> {
        match self {
            Claim::Taken { previous } => previous,
            Claim::Superseded { .. } => Some(own),
        }
    }
}

// === impl Keys ===

impl Keys {
    fn route(&self, device: &DeviceKey) -> String {
        format!("{}r:{}", self.prefix, member(device))
    }

    fn route_prefix(&self) -> String {
        format!("{}r:", self.prefix)
    }

    fn heartbeat(&self, node: &str) -> String {
        format!("{}h:{node}", self.prefix)
    }

    fn heartbeat_prefix(&self) -> String {
        format!("{}h:", self.prefix)
    }

    /// A `SCAN MATCH` pattern for every route key.
    fn route_pattern(&self) -> String {
        let mut pattern = String::new();
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern + "r:*"
    }

    fn registry(&self) -> String {
        format!("{}nodes", self.prefix)
    }
}

// === impl RedisRoutes ===

impl RedisRoutes {
    /// Connects to the Redis at `url` and checks that it answers; fails at once (naming the URL,
    /// without its password) when it does not. Later, the connection is re-established by
    /// itself after Redis restarts; commands fail while Redis is away.
    pub async fn connect(url: &str, config: RedisRoutesConfig) -> Result<Self, StoreError> {
        let RedisRoutesConfig { key_prefix, response_timeout, connection_timeout, reap_batch } = config;
        let shown = redact(url);
        let unreachable = |e: RedisError| StoreError::Backend(format!("redis at {shown} unreachable: {e}"));
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Backend(format!("invalid redis url {shown}: {e}")))?;
        // One direct attempt first: the connection manager would retry with backoff, and a
        // misconfigured URL should fail startup at once.
        let probe_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connection_timeout))
            .set_response_timeout(Some(response_timeout));
        let mut probe =
            client.get_multiplexed_async_connection_with_config(&probe_config).await.map_err(unreachable)?;
        redis::cmd("PING").query_async::<()>(&mut probe).await.map_err(unreachable)?;
        drop(probe);

        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connection_timeout))
            .set_response_timeout(Some(response_timeout))
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client, manager_config).await.map_err(unreachable)?;
        Ok(Self { conn, keys: Keys { prefix: key_prefix }, reap_batch: reap_batch.max(1), scripts: scripts() })
    }

    /// Answers whether Redis answers (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        redis::cmd("PING").query_async::<()>(&mut self.conn.clone()).await.map_err(backend)
    }

    /// Records a new session unless a later one holds the device (see [`Claim`]).
    pub async fn claim(&self, device: &DeviceKey, route: Route) -> Result<Claim, StoreError> {
        let mut claims = self.claim_batch(&[(device.clone(), route)]).await?;
        claims.pop().ok_or_else(|| StoreError::Backend("claim script returned nothing".into()))
    }

    /// Adds `node` to the registry the reaper walks. A node that never heartbeats is reaped.
    pub async fn register_node(&self, node: &str) -> Result<(), StoreError> {
        redis::cmd("HINCRBY")
            .arg(self.keys.registry())
            .arg(node)
            .arg(1)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(backend)
    }

    /// Renews `node`'s heartbeat for `ttl` (call it every `ttl / 3` or so) and registers the
    /// node. Returns whether the previous heartbeat was still alive: `false` on the first beat,
    /// after a Redis restart, or after the node was presumed dead (and maybe reaped), when the
    /// node should [`reregister`](Self::reregister) its live sessions.
    pub async fn heartbeat(&self, node: &str, ttl: Duration) -> Result<bool, StoreError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let alive: i64 = self
            .scripts
            .heartbeat
            .key(self.keys.heartbeat(node))
            .key(self.keys.registry())
            .arg(node)
            .arg(ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        Ok(alive == 1)
    }

    /// Clears the routes still held by every registered node whose heartbeat has lapsed,
    /// marking those devices offline at `at`, and forgets the nodes. Returns the cleared routes
    /// (for OFFLINE events). Safe to run on several processes at once: each route is cleared
    /// and returned by one of them only. Costs one `SCAN` of the route keys when a node has
    /// died, one script call when none has.
    pub async fn reap_dead_nodes(&self, at: i64) -> Result<Vec<(DeviceKey, Route)>, StoreError> {
        let mut conn = self.conn.clone();
        let dead: Vec<String> = self
            .scripts
            .dead_nodes
            .key(self.keys.registry())
            .arg(self.keys.heartbeat_prefix())
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        if dead.is_empty() {
            return Ok(Vec::new());
        }
        let dead_nodes: Vec<&String> = dead.iter().step_by(2).collect();
        let route_prefix = self.keys.route_prefix();
        let mut reaped = Vec::new();
        let mut cursor = 0_u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(self.keys.route_pattern())
                .arg("COUNT")
                .arg(self.reap_batch)
                .query_async(&mut conn)
                .await
                .map_err(backend)?;
            if !keys.is_empty() {
                let mut invocation = self.scripts.reap.prepare_invoke();
                invocation.key(&keys).arg(at).arg(self.keys.heartbeat_prefix()).arg(&dead_nodes);
                let cleared: Vec<String> = invocation.invoke_async(&mut conn).await.map_err(backend)?;
                for fields in cleared.chunks_exact(5) {
                    let [key, node, conn_id, connected_at, client_ip] = fields else { unreachable!() };
                    let device = key
                        .strip_prefix(&route_prefix)
                        .ok_or_else(|| StoreError::Backend(format!("reaped a foreign key {key:?}")))
                        .and_then(parse_member)?;
                    reaped.push((device, parse_route(node, conn_id, connected_at, client_ip)?));
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let forgotten: Vec<String> = self
            .scripts
            .forget
            .key(self.keys.registry())
            .arg(self.keys.heartbeat_prefix())
            .arg(&dead)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        for node in forgotten {
            tracing::info!(%node, "dead edge node forgotten");
        }
        Ok(reaped)
    }

    /// Records live sessions again, after a Redis restart lost them or after this node was
    /// presumed dead. Idempotent: a route that is already current is left as it is. Returns the
    /// sessions that must be kicked (a route found in its way, or one of `routes` that a later
    /// session has superseded), as [`SessionRoutes::connect`] would.
    pub async fn reregister(&self, routes: Vec<(DeviceKey, Route)>) -> Result<Vec<(DeviceKey, Route)>, StoreError> {
        let mut kicks = Vec::new();
        for batch in routes.chunks(REREGISTER_BATCH) {
            let claims = self.claim_batch(batch).await?;
            for ((device, own), claim) in batch.iter().zip(claims) {
                if let Some(route) = claim.to_kick(own.clone()) {
                    kicks.push((device.clone(), route));
                }
            }
        }
        Ok(kicks)
    }

    async fn claim_batch(&self, routes: &[(DeviceKey, Route)]) -> Result<Vec<Claim>, StoreError> {
        let mut invocation = self.scripts.claim.arg(&self.keys.prefix);
        for (device, route) in routes {
            let Route { node, conn_id, connected_at, client_ip } = route;
            invocation.arg(member(device)).arg(node).arg(conn_id).arg(connected_at).arg(client_ip);
        }
        let reply: Vec<String> = invocation.invoke_async(&mut self.conn.clone()).await.map_err(backend)?;
        if reply.len() != routes.len() * 5 {
            return Err(StoreError::Backend(format!("claim script returned {} values", reply.len())));
        }
        reply
            .chunks_exact(5)
            .map(|fields| {
                let [outcome, node, conn_id, connected_at, client_ip] = fields else { unreachable!() };
                match outcome.as_str() {
                    "0" => Ok(Claim::Taken { previous: None }),
                    "1" => Ok(Claim::Taken { previous: Some(parse_route(node, conn_id, connected_at, client_ip)?) }),
                    "2" => Ok(Claim::Superseded { current: parse_route(node, conn_id, connected_at, client_ip)? }),
                    other => Err(StoreError::Backend(format!("claim script returned outcome {other}"))),
                }
            })
            .collect()
    }
}

#[async_trait]
impl SessionRoutes for RedisRoutes {
    /// Records a new session; returns the route whose session must be kicked: the one it
    /// replaced, or the new route itself when a later session already holds the device.
    async fn connect(&self, device: &DeviceKey, route: Route) -> Result<Option<Route>, StoreError> {
        let claim = self.claim(device, route.clone()).await?;
        if let Claim::Superseded { current } = &claim {
            tracing::debug!(%device, node = %current.node, conn_id = current.conn_id, "connect superseded by a later session");
        }
        Ok(claim.to_kick(route))
    }

    async fn disconnect(&self, device: &DeviceKey, node: &str, conn_id: u64, at: i64) -> Result<bool, StoreError> {
        let flipped: i64 = self
            .scripts
            .disconnect
            .key(self.keys.route(device))
            .arg(node)
            .arg(conn_id)
            .arg(at)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        Ok(flipped == 1)
    }

    async fn presence(&self, device: &DeviceKey) -> Result<Option<Presence>, StoreError> {
        let fields: [Option<String>; 5] = redis::cmd("HMGET")
            .arg(self.keys.route(device))
            .arg(&["n", "c", "t", "i", "f"])
            .query_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        let [node, conn_id, online_at, client_ip, offline_at] = fields;
        if [&node, &conn_id, &online_at, &client_ip, &offline_at].iter().all(|f| f.is_none()) {
            return Ok(None);
        }
        let last_online_at = online_at.as_deref().map(parse_i64).transpose()?;
        let route = match (node, conn_id) {
            (Some(node), Some(conn_id)) => Some(parse_route(
                &node,
                &conn_id,
                online_at.as_deref().unwrap_or_default(),
                client_ip.as_deref().unwrap_or_default(),
            )?),
            _ => None,
        };
        let last_offline_at = offline_at.as_deref().map(parse_i64).transpose()?;
        Ok(Some(Presence { route, last_online_at, last_offline_at, client_ip }))
    }
}

/// A device as the tail of its route key.
fn member(device: &DeviceKey) -> String {
    format!("{}/{}", device.product_key, device.device_name)
}

fn parse_member(member: &str) -> Result<DeviceKey, StoreError> {
    member
        .split_once('/')
        .and_then(|(pk, dn)| DeviceKey::parse(pk, dn).ok())
        .ok_or_else(|| StoreError::Backend(format!("unreadable device {member:?} in a route key")))
}

fn parse_route(node: &str, conn_id: &str, connected_at: &str, client_ip: &str) -> Result<Route, StoreError> {
    let conn_id = conn_id.parse().map_err(|_| StoreError::Backend(format!("unreadable conn id {conn_id:?}")))?;
    Ok(Route {
        node: node.to_owned(),
        conn_id,
        connected_at: parse_i64(connected_at)?,
        client_ip: client_ip.to_owned(),
    })
}

fn parse_i64(value: &str) -> Result<i64, StoreError> {
    value.parse().map_err(|_| StoreError::Backend(format!("unreadable time {value:?}")))
}

fn backend(error: RedisError) -> StoreError {
    StoreError::Backend(format!("redis: {error}"))
}

/// `url` without the password it may carry, fit for errors and logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => format!("{}://***{}", &url[..scheme_end], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_in_errors() {
        assert_eq!(redact("redis://:secret@10.0.0.1:6379/0"), "redis://***@10.0.0.1:6379/0");
        assert_eq!(redact("redis://user:pw@host"), "redis://***@host");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn the_route_pattern_matches_the_prefix_literally() {
        assert_eq!(Keys { prefix: "tether:".into() }.route_pattern(), "tether:r:*");
        assert_eq!(Keys { prefix: "t[1]*?:".into() }.route_pattern(), r"t\[1\]\*\?:r:*");
    }

    #[test]
    fn members_round_trip_to_device_keys() {
        let device = DeviceKey::parse("a1B2c3D4e5F", "dev-1_a@b.c:d").unwrap();
        assert_eq!(parse_member(&member(&device)).unwrap(), device);
        assert!(parse_member("no-slash").is_err());
    }

    #[test]
    fn a_superseded_claim_kicks_the_claimant() {
        let own = Route { node: "a".into(), conn_id: 1, connected_at: 10, client_ip: String::new() };
        let later = Route { node: "b".into(), conn_id: 7, connected_at: 20, client_ip: String::new() };
        assert_eq!(Claim::Superseded { current: later.clone() }.to_kick(own.clone()), Some(own.clone()));
        assert_eq!(Claim::Taken { previous: Some(later.clone()) }.to_kick(own.clone()), Some(later));
        assert_eq!(Claim::Taken { previous: None }.to_kick(own), None);
    }
}
