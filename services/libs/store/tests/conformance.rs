//! The behaviour every [`KvStore`] adapter shares, checked against each of them: [`FjallStore`]
//! (embedded mode) and [`NatsKvStore`] on a real `nats-server -js` (cluster mode). A service
//! written against the trait must see no difference between the two.

// `allow-unwrap-in-tests` covers `#[test]` functions only, not the suite they call.
#![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed check")]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tether_store::{Change, ChangeStream, Entry, Expect, FjallStore, KvStore, NatsKvStore, Revision, StoreError};
use tether_testkit::NatsServer;

/// How long a NATS client may take to reconnect (and its watch to resume) after a restart.
const RECONNECT: Duration = Duration::from_secs(30);

// === the suite ===

/// Every shared check, each on its own keys, against one store.
async fn conformance(store: Arc<dyn KvStore>) {
    create_update_and_conflicts(&*store).await;
    delete_and_recreate(&*store).await;
    a_batch_checks_each_write_on_its_own(&*store).await;
    list_is_in_key_order_and_stays_under_its_prefix(&*store).await;
    keys_keep_every_character_ids_allow(&*store).await;
    list_returns_every_entry_of_a_large_prefix(&*store).await;
    concurrent_updates_have_one_winner(store.clone()).await;
    concurrent_creates_have_one_winner(store).await;
}

async fn create_update_and_conflicts(store: &dyn KvStore) {
    let key = "shadow/cas";
    assert_eq!(store.get(key).await.unwrap(), None);
    let r1 = store.put(key, value("one"), Expect::Absent).await.unwrap();
    assert_ne!(r1, Revision(0));
    assert_eq!(store.get(key).await.unwrap(), Some(entry(key, "one", r1)));
    assert_conflict(store.put(key, value("x"), Expect::Absent).await);

    let r2 = store.put(key, value("two"), Expect::Revision(r1)).await.unwrap();
    assert!(r2 > r1, "{r2:?} after {r1:?}");
    assert_conflict(store.put(key, value("x"), Expect::Revision(r1)).await);
    assert_conflict(store.put(key, value("x"), Expect::Revision(Revision(0))).await);
    assert_eq!(store.get(key).await.unwrap(), Some(entry(key, "two", r2)));

    let r3 = store.put(key, value("three"), Expect::Any).await.unwrap();
    assert!(r3 > r2, "{r3:?} after {r2:?}");
    assert_eq!(store.get(key).await.unwrap(), Some(entry(key, "three", r3)));

    // A revision names nothing on a key that was never written, not even revision 0.
    assert_conflict(store.put("shadow/never", value("x"), Expect::Revision(r3)).await);
    assert_conflict(store.put("shadow/never", value("x"), Expect::Revision(Revision(0))).await);
    assert_eq!(store.get("shadow/never").await.unwrap(), None);
    let any = store.put("shadow/any", value("a"), Expect::Any).await.unwrap();
    assert_eq!(store.get("shadow/any").await.unwrap(), Some(entry("shadow/any", "a", any)));
}

async fn a_batch_checks_each_write_on_its_own(store: &dyn KvStore) {
    let kept = store.put("batch/kept", value("old"), Expect::Absent).await.unwrap();
    let moved = store.put("batch/moved", value("old"), Expect::Absent).await.unwrap();
    let outcomes = store
        .put_many(vec![
            ("batch/new".into(), value("new"), Expect::Absent),
            ("batch/kept".into(), value("lost"), Expect::Absent),
            ("batch/moved".into(), value("new"), Expect::Revision(moved)),
        ])
        .await;
    assert_eq!(outcomes.len(), 3);
    let created = outcomes[0].as_ref().copied().unwrap();
    assert!(matches!(outcomes[1], Err(StoreError::Conflict { .. })), "{:?}", outcomes[1]);
    let updated = outcomes[2].as_ref().copied().unwrap();
    assert!(updated > moved && created != updated, "{created:?} {updated:?}");
    assert_eq!(store.get("batch/new").await.unwrap(), Some(entry("batch/new", "new", created)));
    assert_eq!(store.get("batch/kept").await.unwrap(), Some(entry("batch/kept", "old", kept)));
    assert_eq!(store.get("batch/moved").await.unwrap(), Some(entry("batch/moved", "new", updated)));
    assert!(store.put_many(Vec::new()).await.is_empty());
}

async fn delete_and_recreate(store: &dyn KvStore) {
    let key = "gone/a";
    let r1 = store.put(key, value("one"), Expect::Absent).await.unwrap();
    assert_conflict(store.delete(key, Expect::Absent).await);
    let r2 = store.put(key, value("two"), Expect::Revision(r1)).await.unwrap();
    assert_conflict(store.delete(key, Expect::Revision(r1)).await);
    assert_eq!(store.get(key).await.unwrap(), Some(entry(key, "two", r2)));

    store.delete(key, Expect::Revision(r2)).await.unwrap();
    assert_eq!(store.get(key).await.unwrap(), None);
    assert_eq!(keys(store.list("gone/").await.unwrap()), Vec::<String>::new());
    // Deleting what is not there succeeds unless a revision is expected.
    store.delete(key, Expect::Any).await.unwrap();
    store.delete(key, Expect::Absent).await.unwrap();
    store.delete("gone/never", Expect::Any).await.unwrap();
    assert_conflict(store.delete(key, Expect::Revision(r2)).await);
    assert_conflict(store.put(key, value("x"), Expect::Revision(r2)).await);
    assert_eq!(store.get(key).await.unwrap(), None);

    let r3 = store.put(key, value("three"), Expect::Absent).await.unwrap();
    assert_eq!(store.get(key).await.unwrap(), Some(entry(key, "three", r3)));
    store.delete(key, Expect::Any).await.unwrap();
    assert_eq!(store.get(key).await.unwrap(), None);
}

async fn list_is_in_key_order_and_stays_under_its_prefix(store: &dyn KvStore) {
    let written = [
        "device/pk/b",
        "device/pk2/a",
        "device/pk/x-y_z",
        "device/pk/a",
        "device/pk",
        "device/pk/dev.1",
        "devices/x",
        "device/pk/a@b:c",
        "product/pk",
    ];
    let mut revisions = Vec::new();
    for key in written {
        revisions.push((key, store.put(key, value(key), Expect::Any).await.unwrap()));
    }

    let listed = store.list("device/pk/").await.unwrap();
    assert_eq!(
        keys(listed.clone()),
        ["device/pk/a", "device/pk/a@b:c", "device/pk/b", "device/pk/dev.1", "device/pk/x-y_z"]
    );
    for listed in listed {
        let revision = revisions.iter().find(|(key, _)| *key == listed.key).unwrap().1;
        assert_eq!(listed, entry(&listed.key, &listed.key, revision));
    }
    assert_eq!(
        keys(store.list("device/").await.unwrap()),
        [
            "device/pk",
            "device/pk/a",
            "device/pk/a@b:c",
            "device/pk/b",
            "device/pk/dev.1",
            "device/pk/x-y_z",
            "device/pk2/a"
        ]
    );
    assert_eq!(keys(store.list("product/").await.unwrap()), ["product/pk"]);
    assert_eq!(keys(store.list("nothing/").await.unwrap()), Vec::<String>::new());
    // Callers end prefixes with `/`; one that ends mid-segment is a plain string prefix.
    assert_eq!(
        keys(store.list("device/pk").await.unwrap()),
        [
            "device/pk",
            "device/pk/a",
            "device/pk/a@b:c",
            "device/pk/b",
            "device/pk/dev.1",
            "device/pk/x-y_z",
            "device/pk2/a"
        ]
    );
    let everything = keys(store.list("").await.unwrap());
    assert!(everything.is_sorted() && everything.contains(&"product/pk".to_owned()), "{everything:?}");

    store.delete("device/pk/b", Expect::Any).await.unwrap();
    assert_eq!(
        keys(store.list("device/pk/").await.unwrap()),
        ["device/pk/a", "device/pk/a@b:c", "device/pk/dev.1", "device/pk/x-y_z"]
    );
}

async fn keys_keep_every_character_ids_allow(store: &dyn KvStore) {
    let long_name = "d".repeat(64);
    let written = [
        "tenant/default".to_owned(),
        format!("apikey/{}", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
        "product/Az09_-".to_owned(),
        "device/Az09_-/Az09_-@.:".to_owned(),
        format!("device/Az09_-/{long_name}"),
        "presence/Az09_-/a.b".to_owned(),
        "misc/=%*>$ ü".to_owned(),
    ];
    for key in &written {
        let revision = store.put(key, value(key), Expect::Absent).await.unwrap();
        assert_eq!(store.get(key).await.unwrap(), Some(entry(key, key, revision)));
    }
    assert_eq!(
        keys(store.list("device/Az09_-/").await.unwrap()),
        ["device/Az09_-/Az09_-@.:".to_owned(), format!("device/Az09_-/{long_name}")]
    );
    assert_eq!(keys(store.list("misc/").await.unwrap()), ["misc/=%*>$ ü"]);
}

async fn list_returns_every_entry_of_a_large_prefix(store: &dyn KvStore) {
    let written: Vec<String> = (0..1100).map(|i| format!("bulk/pk/d{i:04}")).collect();
    for key in &written {
        store.put(key, value(key), Expect::Any).await.unwrap();
    }
    let listed = store.list("bulk/pk/").await.unwrap();
    assert_eq!(keys(listed.clone()), written);
    assert!(listed.iter().all(|e| e.value == e.key.as_bytes()));
}

/// Eight writers all expecting the same revision: exactly one wins, the others conflict.
async fn concurrent_updates_have_one_winner(store: Arc<dyn KvStore>) {
    let key = "shadow/contended";
    let base = store.put(key, value("0"), Expect::Absent).await.unwrap();
    let results = race(&store, key, Expect::Revision(base)).await;
    let (winner, revision) = one_winner(&results);
    assert_eq!(store.get(key).await.unwrap(), Some(entry(key, &winner.to_string(), revision)));
}

/// Eight writers creating the same key: exactly one wins, the others conflict.
async fn concurrent_creates_have_one_winner(store: Arc<dyn KvStore>) {
    let key = "shadow/created";
    let results = race(&store, key, Expect::Absent).await;
    let (winner, revision) = one_winner(&results);
    assert_eq!(store.get(key).await.unwrap(), Some(entry(key, &winner.to_string(), revision)));
}

/// Writes kept across closing and opening the store again. `open` must let go of the previous
/// store before it is called again.
async fn reopen_keeps_entries(open: impl AsyncFn() -> Arc<dyn KvStore>) {
    let (a, b) = {
        let store = open().await;
        let a = store.put("device/pk/a", value("one"), Expect::Absent).await.unwrap();
        let a = store.put("device/pk/a", value("two"), Expect::Revision(a)).await.unwrap();
        let b = store.put("device/pk/b", value("b"), Expect::Any).await.unwrap();
        store.put("device/pk/c", value("c"), Expect::Any).await.unwrap();
        store.delete("device/pk/c", Expect::Any).await.unwrap();
        (a, b)
    };
    let store = open().await;
    assert_eq!(store.list("device/pk/").await.unwrap(), [entry("device/pk/a", "two", a), entry("device/pk/b", "b", b)]);
    assert_eq!(store.get("device/pk/c").await.unwrap(), None);
    store.put("device/pk/a", value("three"), Expect::Revision(a)).await.unwrap();
    assert_conflict(store.delete("device/pk/b", Expect::Revision(a)).await);
    store.delete("device/pk/b", Expect::Revision(b)).await.unwrap();
}

// === fjall (embedded) ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_conformance() {
    let dir = tempfile::tempdir().unwrap();
    conformance(Arc::new(FjallStore::open(dir.path()).unwrap())).await;
}

#[tokio::test]
async fn fjall_reopen_keeps_entries() {
    let dir = tempfile::tempdir().unwrap();
    reopen_keeps_entries(async || Arc::new(FjallStore::open(dir.path()).unwrap()) as Arc<dyn KvStore>).await;
}

/// Concurrent writers share fsyncs (group commit): every write that returned is there after a
/// reopen, each with its own revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_concurrent_writes_share_syncs_and_all_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let written = {
        let store: Arc<dyn KvStore> = Arc::new(FjallStore::open(dir.path()).unwrap());
        let writes: Vec<_> = (0..200)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let key = format!("presence/pk/dev{i:03}");
                    let revision = store.put(&key, value(&format!("online {i}")), Expect::Any).await.unwrap();
                    entry(&key, &format!("online {i}"), revision)
                })
            })
            .collect();
        let mut written = Vec::new();
        for write in writes {
            written.push(write.await.unwrap());
        }
        written.sort_by(|a, b| a.key.cmp(&b.key));
        written
    };
    let revisions: std::collections::BTreeSet<_> = written.iter().map(|e| e.revision).collect();
    assert_eq!(revisions.len(), written.len(), "every write has its own revision");
    let store = FjallStore::open(dir.path()).unwrap();
    assert_eq!(store.list("presence/pk/").await.unwrap(), written);
}

#[tokio::test]
async fn fjall_revisions_are_never_reused_after_delete_and_recreate() {
    let dir = tempfile::tempdir().unwrap();
    let revision = {
        let store = FjallStore::open(dir.path()).unwrap();
        let first = store.put("a/1", value("x"), Expect::Absent).await.unwrap();
        store.delete("a/1", Expect::Revision(first)).await.unwrap();
        store.put("a/1", value("y"), Expect::Absent).await.unwrap();
        // A writer still holding the first revision must not win against the new key.
        let stale = store.put("a/1", value("z"), Expect::Revision(first)).await;
        assert!(matches!(stale, Err(StoreError::Conflict { .. })), "{stale:?}");
        first
    };
    // The counter survives a reopen too.
    let store = FjallStore::open(dir.path()).unwrap();
    let next = store.put("b/1", value("x"), Expect::Absent).await.unwrap();
    assert!(next > revision);
}

// === NATS JetStream KV (cluster) ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_conformance() {
    let nats = NatsServer::start().await;
    conformance(Arc::new(NatsKvStore::connect(&nats.url(), "tether", 1).await.unwrap())).await;
}

#[tokio::test]
async fn nats_reopen_keeps_entries() {
    let nats = NatsServer::start().await;
    let url = nats.url();
    reopen_keeps_entries(async || Arc::new(NatsKvStore::connect(&url, "tether", 1).await.unwrap()) as Arc<dyn KvStore>)
        .await;
}

#[tokio::test]
async fn nats_acked_writes_survive_a_server_restart() {
    let mut nats = NatsServer::start().await;
    let store = NatsKvStore::connect(&nats.url(), "tether", 1).await.unwrap();
    let mut changes = store.watch("device/").await.unwrap();
    let mut written = Vec::new();
    for i in 0..20 {
        let key = format!("device/pk/d{i}");
        written.push((key.clone(), store.put(&key, value(&key), Expect::Absent).await.unwrap()));
    }

    nats.kill();
    assert!(store.ping().await.is_err(), "ping answered with the server down");
    nats.restart().await;

    // The client reconnects by itself.
    eventually("the store to answer again", async || store.ping().await.ok()).await;
    for (key, revision) in &written {
        assert_eq!(store.get(key).await.unwrap(), Some(entry(key, key, *revision)));
    }
    let (key, revision) = &written[0];
    let after = store.put(key, value("after"), Expect::Revision(*revision)).await.unwrap();
    assert_conflict(store.put(key, value("x"), Expect::Revision(*revision)).await);

    // The watch reports the interruption, then resumes where it was: every put before the
    // restart, then the one after.
    let mut seen = Vec::new();
    while seen.last() != Some(&(key.clone(), after)) {
        match tokio::time::timeout(RECONNECT, changes.next()).await.expect("watch resumed") {
            Some(Ok(change)) => seen.push((change.key().to_owned(), change.revision())),
            Some(Err(StoreError::Backend(_))) => {}
            other => panic!("watch ended: {other:?}"),
        }
    }
    let mut expected = written.clone();
    expected.push((key.clone(), after));
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn nats_watch_reports_changes_under_its_prefix() {
    let nats = NatsServer::start().await;
    let store = NatsKvStore::connect(&nats.url(), "tether", 1).await.unwrap();
    let mut changes = store.watch("device/pk/").await.unwrap();

    let a = store.put("device/pk/a", value("a"), Expect::Absent).await.unwrap();
    store.put("device/pk2/a", value("other product"), Expect::Absent).await.unwrap();
    store.put("product/pk", value("product"), Expect::Absent).await.unwrap();
    let b = store.put("device/pk/b@x:1", value("b"), Expect::Any).await.unwrap();
    store.delete("device/pk/a", Expect::Revision(a)).await.unwrap();

    let soon = Duration::from_secs(5);
    let mut next = async || tokio::time::timeout(soon, next_change(&mut changes)).await.expect("a change");
    assert_eq!(next().await, Change::Put(entry("device/pk/a", "a", a)));
    assert_eq!(next().await, Change::Put(entry("device/pk/b@x:1", "b", b)));
    let deleted = next().await;
    assert!(
        matches!(&deleted, Change::Delete { key, revision } if key == "device/pk/a" && *revision > b),
        "{deleted:?}"
    );
}

#[tokio::test]
async fn nats_connect_fails_fast_naming_the_url() {
    let url = format!("nats://127.0.0.1:{}", tether_testkit::free_port());
    let started = tokio::time::Instant::now();
    let Err(err) = NatsKvStore::connect(&url, "tether", 1).await else { panic!("connected to nothing") };
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
    assert!(err.to_string().contains(&url), "{err}");
}

// === helpers ===

fn value(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn entry(key: &str, text: &str, revision: Revision) -> Entry {
    Entry { key: key.to_owned(), value: value(text), revision }
}

fn keys(entries: Vec<Entry>) -> Vec<String> {
    entries.into_iter().map(|e| e.key).collect()
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(matches!(result, Err(StoreError::Conflict { .. })), "expected a conflict, got {result:?}");
}

/// Eight concurrent writes of `0`…`7` to `key`, all expecting `expect`.
async fn race(store: &Arc<dyn KvStore>, key: &str, expect: Expect) -> Vec<Result<Revision, StoreError>> {
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let (store, key) = (store.clone(), key.to_owned());
            tokio::spawn(async move { store.put(&key, value(&i.to_string()), expect).await })
        })
        .collect();
    let mut results = Vec::new();
    for writer in writers {
        results.push(writer.await.unwrap());
    }
    results
}

/// The index and revision of the one write that won; every other one must have conflicted.
#[track_caller]
fn one_winner(results: &[Result<Revision, StoreError>]) -> (usize, Revision) {
    let won: Vec<(usize, Revision)> =
        results.iter().enumerate().filter_map(|(i, r)| r.as_ref().ok().map(|r| (i, *r))).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert!(results.iter().all(|r| matches!(r, Ok(_) | Err(StoreError::Conflict { .. }))), "{results:?}");
    won[0]
}

async fn next_change(changes: &mut ChangeStream) -> Change {
    changes.next().await.expect("watch ended").expect("watch failed")
}

/// Polls `check` until it returns `Some`; panics after [`RECONNECT`].
async fn eventually<T>(what: &str, check: impl AsyncFn() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + RECONNECT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
