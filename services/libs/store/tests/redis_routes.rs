//! `RedisRoutes` against a real `redis-server`: the `SessionRoutes` contract it shares with
//! `LocalRoutes`, takeover across nodes, superseded connects, the dead-node reaper, a Redis
//! restart, and the memory a device costs.

// clippy.toml allows unwrap in tests, but not in the shared helpers of a test crate.
#![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tether_model::DeviceKey;
use tether_store::{Claim, FjallStore, KvStore, LocalRoutes, RedisRoutes, RedisRoutesConfig, Route, SessionRoutes};
use tether_testkit::RedisServer;

fn device(name: &str) -> DeviceKey {
    DeviceKey::parse("a1B2c3D4e5F", name).unwrap()
}

fn route(node: &str, conn_id: u64, connected_at: i64, client_ip: &str) -> Route {
    Route { node: node.into(), conn_id, connected_at, client_ip: client_ip.into() }
}

async fn redis_routes(redis: &RedisServer) -> RedisRoutes {
    RedisRoutes::connect(&redis.url(), RedisRoutesConfig::default()).await.unwrap()
}

async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// Polls `condition` until it holds, failing the test after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "{what} did not happen within {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The behaviour every `SessionRoutes` adapter shares.
async fn session_routes_contract(routes: &dyn SessionRoutes) {
    let dev = device("contract-1");
    assert_eq!(routes.presence(&dev).await.unwrap(), None, "an unseen device has no presence");
    assert!(!routes.disconnect(&dev, "n1", 1, 5).await.unwrap(), "an unseen device cannot go offline");

    let first = route("n1", 1, 10, "10.0.0.1");
    assert_eq!(routes.connect(&dev, first.clone()).await.unwrap(), None);
    let presence = routes.presence(&dev).await.unwrap().unwrap();
    assert_eq!(presence.route, Some(first.clone()));
    assert_eq!((presence.last_online_at, presence.last_offline_at), (Some(10), None));
    assert_eq!(presence.client_ip.as_deref(), Some("10.0.0.1"));

    let second = route("n1", 2, 20, "10.0.0.2");
    assert_eq!(
        routes.connect(&dev, second.clone()).await.unwrap(),
        Some(first),
        "connect returns the route it replaced"
    );

    assert!(!routes.disconnect(&dev, "n1", 1, 21).await.unwrap(), "the replaced session's disconnect is stale");
    let presence = routes.presence(&dev).await.unwrap().unwrap();
    assert!(presence.is_online());
    assert_eq!(presence.route, Some(second));
    assert_eq!(presence.last_offline_at, None);

    assert!(routes.disconnect(&dev, "n1", 2, 30).await.unwrap(), "the current session's disconnect flips offline");
    let presence = routes.presence(&dev).await.unwrap().unwrap();
    assert!(!presence.is_online());
    assert_eq!((presence.last_online_at, presence.last_offline_at), (Some(20), Some(30)));
    assert_eq!(presence.client_ip.as_deref(), Some("10.0.0.2"), "the last client IP outlives the session");
    assert!(!routes.disconnect(&dev, "n1", 2, 31).await.unwrap(), "a session ends once");

    let third = route("n2", 1, 40, "10.0.0.3");
    assert_eq!(routes.connect(&dev, third.clone()).await.unwrap(), None, "an offline device has no route to kick");
    let presence = routes.presence(&dev).await.unwrap().unwrap();
    assert_eq!(presence.route, Some(third));
    assert_eq!((presence.last_online_at, presence.last_offline_at), (Some(40), Some(30)));
}

#[tokio::test]
async fn local_routes_keep_the_session_routes_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn KvStore> = Arc::new(FjallStore::open(dir.path()).unwrap());
    let routes = LocalRoutes::open(store, 0).await.unwrap();
    session_routes_contract(&routes).await;
    routes.close().await;
}

#[tokio::test]
async fn redis_routes_keep_the_session_routes_contract() {
    let redis = RedisServer::start().await;
    session_routes_contract(&redis_routes(&redis).await).await;
}

#[tokio::test]
async fn deployments_with_different_prefixes_share_one_redis() {
    let redis = RedisServer::start().await;
    let config = |prefix: &str| RedisRoutesConfig { key_prefix: prefix.into(), ..RedisRoutesConfig::default() };
    let a = RedisRoutes::connect(&redis.url(), config("a:")).await.unwrap();
    let b = RedisRoutes::connect(&redis.url(), config("b:")).await.unwrap();
    session_routes_contract(&a).await;
    session_routes_contract(&b).await;
    assert_eq!(b.presence(&device("only-in-a")).await.unwrap(), None);
}

#[tokio::test]
async fn startup_fails_at_once_naming_the_url() {
    let port = tether_testkit::free_port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let Err(error) = RedisRoutes::connect(&url, RedisRoutesConfig::default()).await else {
        panic!("connected to a port nobody listens on");
    };
    let message = error.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(!message.contains("hunter2"), "the password leaked: {message}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_connect_on_another_node_takes_the_device_over() {
    let redis = RedisServer::start().await;
    let routes = redis_routes(&redis).await;
    let dev = device("lamp-1");
    let on_a = route("edge-a", 7, 100, "10.1.0.1");
    let on_b = route("edge-b", 3, 200, "10.2.0.1");

    routes.connect(&dev, on_a.clone()).await.unwrap();
    assert_eq!(routes.connect(&dev, on_b.clone()).await.unwrap(), Some(on_a), "B kicks A's session");
    assert!(!routes.disconnect(&dev, "edge-a", 7, 201).await.unwrap(), "A's late disconnect is stale");

    let presence = routes.presence(&dev).await.unwrap().unwrap();
    assert_eq!(presence.route, Some(on_b));
    assert_eq!(presence.last_offline_at, None, "the device never went offline");
}

#[tokio::test]
async fn a_stale_connect_is_superseded_and_told_to_drop() {
    let redis = RedisServer::start().await;
    let routes = redis_routes(&redis).await;
    let dev = device("lamp-2");
    let later = route("edge-b", 3, 200, "10.2.0.1");
    let stale = route("edge-a", 7, 150, "10.1.0.1");

    routes.connect(&dev, later.clone()).await.unwrap();
    assert_eq!(routes.claim(&dev, stale.clone()).await.unwrap(), Claim::Superseded { current: later.clone() });
    assert_eq!(routes.connect(&dev, stale.clone()).await.unwrap(), Some(stale), "the stale session kicks itself");

    let presence = routes.presence(&dev).await.unwrap().unwrap();
    assert_eq!(presence.route, Some(later.clone()), "the later route stays");
    assert_eq!((presence.last_online_at, presence.client_ip.as_deref()), (Some(200), Some("10.2.0.1")));
    assert!(!routes.disconnect(&dev, "edge-a", 7, 210).await.unwrap());
    assert_eq!(routes.claim(&dev, later).await.unwrap(), Claim::Taken { previous: None }, "claiming again is a no-op");
}

#[tokio::test]
async fn the_reaper_takes_a_silent_nodes_devices_offline_once() {
    let redis = RedisServer::start().await;
    let mut conn = raw(&redis).await;
    let config = RedisRoutesConfig { reap_batch: 8, ..RedisRoutesConfig::default() };
    let routes = RedisRoutes::connect(&redis.url(), config.clone()).await.unwrap();
    let other_reaper = RedisRoutes::connect(&redis.url(), config).await.unwrap();

    assert!(!routes.heartbeat("edge-a", Duration::from_secs(1)).await.unwrap(), "a first beat finds none");
    assert!(!routes.heartbeat("edge-b", Duration::from_secs(60)).await.unwrap());
    routes.register_node("edge-idle").await.unwrap();
    let mut on_a = BTreeMap::new();
    for i in 0..100 {
        let dev = device(&format!("a-{i}"));
        routes.connect(&dev, route("edge-a", i, 1_000 + i as i64, "10.1.0.1")).await.unwrap();
        on_a.insert(dev.to_string(), route("edge-a", i, 1_000 + i as i64, "10.1.0.1"));
    }
    let on_b = [device("b-0"), device("b-1")];
    for (i, dev) in on_b.iter().enumerate() {
        routes.connect(dev, route("edge-b", i as u64, 1_000, "10.2.0.1")).await.unwrap();
    }
    // a-0 moved to B before A died: A no longer owns it.
    routes.connect(&device("a-0"), route("edge-b", 99, 5_000, "10.2.0.9")).await.unwrap();
    on_a.remove("a1B2c3D4e5F/a-0");

    assert_eq!(routes.reap_dead_nodes(6_000).await.unwrap(), vec![], "live nodes are not reaped");

    eventually(Duration::from_secs(10), "edge-a's heartbeat expiry", || {
        let mut conn = conn.clone();
        async move { !redis::cmd("EXISTS").arg("tether:h:edge-a").query_async::<bool>(&mut conn).await.unwrap() }
    })
    .await;
    let at = 9_000;
    let (one, two) = tokio::join!(routes.reap_dead_nodes(at), other_reaper.reap_dead_nodes(at));
    let (one, two) = (one.unwrap(), two.unwrap());
    let reaped: Vec<_> = one.iter().chain(&two).map(|(dev, route)| (dev.to_string(), route.clone())).collect();
    assert_eq!(
        reaped.len(),
        99,
        "each of A's devices is reaped once (first reaper {}, second {})",
        one.len(),
        two.len()
    );
    assert_eq!(reaped.into_iter().collect::<BTreeMap<_, _>>(), on_a, "exactly A's routes are reaped");

    for name in on_a.keys() {
        let (pk, dn) = name.split_once('/').unwrap();
        let presence = routes.presence(&DeviceKey::parse(pk, dn).unwrap()).await.unwrap().unwrap();
        assert!(!presence.is_online(), "{name} is offline");
        assert_eq!(presence.last_offline_at, Some(at));
    }
    for dev in on_b.iter().chain([&device("a-0")]) {
        assert!(routes.presence(dev).await.unwrap().unwrap().is_online(), "{dev} on B stays online");
    }
    let nodes: BTreeSet<String> = redis::cmd("HKEYS").arg("tether:nodes").query_async(&mut conn).await.unwrap();
    assert_eq!(nodes, BTreeSet::from(["edge-b".to_owned()]), "dead and idle nodes are forgotten");
    assert_eq!(routes.reap_dead_nodes(at + 1).await.unwrap(), vec![], "nothing is reaped twice");
    assert!(!routes.heartbeat("edge-a", Duration::from_secs(1)).await.unwrap(), "A learns it was presumed dead");
}

#[tokio::test]
async fn a_node_that_beats_again_in_time_keeps_its_devices() {
    let redis = RedisServer::start().await;
    let mut conn = raw(&redis).await;
    let routes = redis_routes(&redis).await;
    let dev = device("slow-1");
    routes.heartbeat("edge-slow", Duration::from_millis(200)).await.unwrap();
    routes.connect(&dev, route("edge-slow", 1, 100, "10.3.0.1")).await.unwrap();
    eventually(Duration::from_secs(10), "edge-slow's heartbeat expiry", || {
        let mut conn = conn.clone();
        async move { !redis::cmd("EXISTS").arg("tether:h:edge-slow").query_async::<bool>(&mut conn).await.unwrap() }
    })
    .await;

    assert!(!routes.heartbeat("edge-slow", Duration::from_secs(30)).await.unwrap(), "the node learns of its lapse");
    assert_eq!(routes.reap_dead_nodes(500).await.unwrap(), vec![]);
    assert!(routes.presence(&dev).await.unwrap().unwrap().is_online());
    let nodes: Vec<String> = redis::cmd("HKEYS").arg("tether:nodes").query_async(&mut conn).await.unwrap();
    assert_eq!(nodes, ["edge-slow"], "the node stays registered");
}

#[tokio::test]
async fn routes_come_back_after_a_redis_restart() {
    let mut redis = RedisServer::start().await;
    let routes = redis_routes(&redis).await;
    let live: Vec<(DeviceKey, Route)> =
        (0..3).map(|i| (device(&format!("r-{i}")), route("edge-a", i, 100 + i as i64, "10.1.0.1"))).collect();
    for (dev, route) in &live {
        routes.connect(dev, route.clone()).await.unwrap();
    }
    assert!(!routes.heartbeat("edge-a", Duration::from_secs(30)).await.unwrap());
    assert!(routes.heartbeat("edge-a", Duration::from_secs(30)).await.unwrap());

    redis.kill();
    let outage = tokio::time::timeout(Duration::from_secs(15), routes.presence(&live[0].0)).await;
    assert!(matches!(outage, Ok(Err(_))), "a call during the outage fails in time: {outage:?}");

    redis.restart().await;
    // The first calls may still see the broken connection; none may panic.
    let _ = routes.presence(&live[0].0).await;
    eventually(Duration::from_secs(15), "reconnection", || async { routes.ping().await.is_ok() }).await;

    assert_eq!(routes.presence(&live[0].0).await.unwrap(), None, "the restarted redis is empty");
    assert!(!routes.heartbeat("edge-a", Duration::from_secs(30)).await.unwrap(), "the edge learns its routes are gone");
    assert_eq!(routes.reregister(live.clone()).await.unwrap(), vec![], "nothing stands in the way");
    assert_eq!(routes.reregister(live.clone()).await.unwrap(), vec![], "re-registering is idempotent");
    for (dev, route) in &live {
        let presence = routes.presence(dev).await.unwrap().unwrap();
        assert_eq!(presence.route.as_ref(), Some(route));
    }
    let (dev, old) = &live[0];
    let newer = route("edge-b", 1, 500, "10.2.0.1");
    assert_eq!(routes.connect(dev, newer.clone()).await.unwrap(), Some(old.clone()), "connect works again");
    assert!(!routes.disconnect(dev, "edge-a", 0, 501).await.unwrap());
    // A re-registration that lost the device since is told to drop its session.
    assert_eq!(routes.reregister(vec![live[0].clone()]).await.unwrap(), vec![live[0].clone()]);
    assert_eq!(routes.presence(dev).await.unwrap().unwrap().route, Some(newer));
}

#[tokio::test]
async fn a_routed_device_costs_little_redis_memory() {
    const DEVICES: u64 = 1_000;
    let redis = RedisServer::start().await;
    let routes = redis_routes(&redis).await;
    let mut conn = raw(&redis).await;
    let node = "tether-edge-7d9f8c6b5-x2x4z";
    let at = 1_763_900_000_000_i64;
    // Warm up: scripts, the node's set and the registry exist before the measurement.
    routes.connect(&device("warm-up"), route(node, 1, at, "192.168.100.200")).await.unwrap();

    let before = used_memory(&mut conn).await;
    for i in 0..DEVICES {
        let dev = device(&format!("device-{i:06}"));
        routes.connect(&dev, route(node, 1_000_000 + i, at + i as i64, "192.168.100.200")).await.unwrap();
    }
    let after = used_memory(&mut conn).await;
    let per_device = (after - before) / DEVICES as i64;
    let route_key: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg("tether:r:a1B2c3D4e5F/device-000001")
        .query_async(&mut conn)
        .await
        .unwrap();
    println!(
        "redis memory per routed device: {per_device} B (used_memory delta over {DEVICES}); \
         MEMORY USAGE of one route hash: {route_key} B"
    );
    assert!(per_device < 400, "{per_device} B per device: the key layout has grown");
}

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    let info: redis::InfoDict = redis::cmd("INFO").arg("memory").query_async(conn).await.unwrap();
    info.get("used_memory").unwrap()
}
