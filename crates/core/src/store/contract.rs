//! The store contract: one list of cases, run against [`MemoryStore`] and
//! against [`RedisStore`] on a real `redis-server` that each case starts (the
//! two implement the same concurrent semantics twice: Rust under one mutex,
//! and Lua). A missing `redis-server` fails these tests loudly (the test
//! kit's server, as in the end-to-end suite).

use std::time::Duration;

use brig_testkit::RedisServer;

use super::*;
use crate::session::ids::{Owner, SessionId};
use crate::session::record::SessionRecord;

fn redis_store(server: &RedisServer) -> RedisStore {
    RedisStore::new(&server.url(), "contract").unwrap()
}

/// Every case runs once per store.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&super::MemoryStore::new()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    let server = super::RedisServer::start();
                    super::$case(&super::redis_store(&server)).await;
                }
            )*
        }
    };
}

contract!(
    reserve_checks_both_quotas_and_a_ready_record_wins,
    touch_extends_a_record_and_finds_nothing_for_a_missing_one,
    delete_returns_the_record_once,
    an_update_stores_over_a_record_still_there_and_a_deletion_wins,
    an_update_keeps_to_the_records_node_and_a_takeover_waits_for_the_lease,
    listings_are_per_owner_and_sorted,
    records_expire_with_their_ttl,
    a_creation_lock_is_exclusive_and_released_only_by_its_holder,
    a_channel_lease_has_one_holder_who_renews_it,
    running_commands_are_counted_until_finished_or_past_their_deadline,
    a_command_begins_and_ends_with_one_call_each,
    each_spare_is_taken_once_and_marked_claimed,
    values_expire_set_once_tells_the_time_left_and_delete_frees_them,
    charged_values_evict_the_accounts_soonest_to_expire_and_no_one_elses,
    the_identity_is_made_once_and_kept,
    a_suspended_session_keeps_its_owners_place_but_no_capacity_and_no_refresh,
    a_records_own_ttl_wins_over_the_callers,
    bounded_lists_keep_their_last_items_and_expire,
);

const TTL: Duration = Duration::from_secs(600);

fn owner(name: &str) -> Owner {
    Owner::of_principal(name)
}

fn record(owner: &Owner, id: &str, container: &str) -> SessionRecord {
    SessionRecord {
        owner: owner.clone(),
        session_id: id.into(),
        container: (!container.is_empty()).then(|| container.to_string()),
        created_at_ms: now_ms(),
        expires_at_ms: now_ms(),
        options: Default::default(),
        suspended: None,
        ttl_ms: None,
        node: None,
        node_addr: None,
        recreated: None,
    }
}

fn suspension(snapshot_id: Option<&str>) -> Option<crate::session::record::Suspension> {
    Some(crate::session::record::Suspension {
        snapshot_id: snapshot_id.map(String::from),
        since_ms: now_ms(),
        resuming: false,
    })
}

fn sid(id: &str) -> SessionId {
    SessionId::parse(id).unwrap()
}

async fn reserve_checks_both_quotas_and_a_ready_record_wins(store: &dyn SessionStore) {
    let quota = Quota { per_owner: 2, total: 3 };
    let (alice, bob) = (owner("alice"), owner("bob"));
    for id in ["a", "b"] {
        assert_eq!(
            store.reserve(&record(&alice, id, ""), TTL, quota).await.unwrap(),
            Reservation::Reserved
        );
    }
    // Refused, saying when the soonest of the owner's sessions frees a place.
    match store.reserve(&record(&alice, "c", ""), TTL, quota).await.unwrap() {
        Reservation::OwnerQuotaExceeded { frees_in } => {
            assert!(
                frees_in > TTL - Duration::from_secs(10) && frees_in <= TTL,
                "{frees_in:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    // A pending record of the same session is overwritten, not counted twice.
    assert_eq!(
        store.reserve(&record(&alice, "a", ""), TTL, quota).await.unwrap(),
        Reservation::Reserved
    );
    assert_eq!(
        store.reserve(&record(&bob, "a", ""), TTL, quota).await.unwrap(),
        Reservation::Reserved
    );
    assert_eq!(
        store.reserve(&record(&bob, "b", ""), TTL, quota).await.unwrap(),
        Reservation::CapacityExhausted
    );
    // A resume's record needs the record it resumes: a deletion wins.
    let resuming = SessionRecord {
        suspended: suspension(Some("snap")),
        ..record(&alice, "gone", "")
    };
    assert_eq!(store.reserve(&resuming, TTL, quota).await.unwrap(), Reservation::Gone);
    assert_eq!(store.get(&alice, &sid("gone")).await.unwrap(), None);
    let ready = record(&alice, "a", "container-1");
    store.replace(&ready, TTL).await.unwrap();
    match store.reserve(&record(&alice, "a", ""), TTL, quota).await.unwrap() {
        Reservation::Exists(existing) => assert_eq!(existing.container(), Some("container-1")),
        other => panic!("{other:?}"),
    }
}

async fn touch_extends_a_record_and_finds_nothing_for_a_missing_one(store: &dyn SessionStore) {
    let alice = owner("alice");
    assert_eq!(store.touch(&alice, &sid("none"), TTL).await.unwrap(), None);
    store
        .replace(&record(&alice, "s", "c1"), Duration::from_secs(5))
        .await
        .unwrap();
    let before = store.get(&alice, &sid("s")).await.unwrap().unwrap().expires_at_ms;
    let touched = store.touch(&alice, &sid("s"), TTL).await.unwrap().unwrap();
    assert_eq!(touched.container(), Some("c1"));
    assert!(
        touched.expires_at_ms >= before + 590_000,
        "{before} → {}",
        touched.expires_at_ms
    );
    assert_eq!(store.get(&alice, &sid("s")).await.unwrap().unwrap(), touched);
}

async fn delete_returns_the_record_once(store: &dyn SessionStore) {
    let alice = owner("alice");
    store.replace(&record(&alice, "s", "c1"), TTL).await.unwrap();
    let deleted = store.delete(&alice, &sid("s")).await.unwrap().unwrap();
    assert_eq!(deleted.container(), Some("c1"));
    assert_eq!(store.delete(&alice, &sid("s")).await.unwrap(), None);
    assert_eq!(store.get(&alice, &sid("s")).await.unwrap(), None);
    assert!(store.list_all().await.unwrap().is_empty());
}

async fn an_update_stores_over_a_record_still_there_and_a_deletion_wins(store: &dyn SessionStore) {
    let alice = owner("alice");
    store.replace(&record(&alice, "s", ""), TTL).await.unwrap();
    assert!(store.update(&record(&alice, "s", "c1"), TTL).await.unwrap());
    assert_eq!(
        store.get(&alice, &sid("s")).await.unwrap().unwrap().container(),
        Some("c1")
    );
    assert_eq!(store.list_all().await.unwrap().len(), 1);
    // Parked by an update: out of the instance's index, still its owner's.
    let parked = SessionRecord {
        container: None,
        suspended: suspension(Some("snap")),
        ..record(&alice, "s", "")
    };
    assert!(store.update(&parked, TTL).await.unwrap());
    assert!(store.list_all().await.unwrap().is_empty());
    assert_eq!(store.list(&alice).await.unwrap().len(), 1);
    store.delete(&alice, &sid("s")).await.unwrap().unwrap();
    assert!(!store.update(&record(&alice, "s", "c2"), TTL).await.unwrap());
    assert_eq!(store.get(&alice, &sid("s")).await.unwrap(), None);
    assert!(store.list(&alice).await.unwrap().is_empty());
    assert!(store.list_all().await.unwrap().is_empty());
}

async fn an_update_keeps_to_the_records_node_and_a_takeover_waits_for_the_lease(store: &dyn SessionStore) {
    let alice = owner("alice");
    let on = |node: &str, container: &str| SessionRecord {
        node: Some(node.into()),
        ..record(&alice, "s", container)
    };
    let container = || async {
        store
            .get(&alice, &sid("s"))
            .await
            .unwrap()
            .unwrap()
            .container()
            .map(String::from)
    };
    store.replace(&on("n1", "c1"), TTL).await.unwrap();
    // Its node writes; another node's plain update does not.
    assert!(store.update(&on("n1", "c1b"), TTL).await.unwrap());
    assert!(!store.update(&on("n2", "c2"), TTL).await.unwrap());
    assert_eq!(container().await.as_deref(), Some("c1b"));
    // A takeover from n1 waits until n1's lease value is gone.
    store.put_value("lease", "1", Duration::from_millis(300)).await.unwrap();
    let from_n1 = Guard {
        node: Some("n1"),
        unless_value: Some("lease"),
    };
    assert!(!store.update_if(&on("n2", "c2"), TTL, &from_n1).await.unwrap());
    assert_eq!(container().await.as_deref(), Some("c1b"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store.update_if(&on("n2", "c2"), TTL, &from_n1).await.unwrap());
    assert_eq!(container().await.as_deref(), Some("c2"));
    // Taken: n1, back, writes nothing over it; a takeover from n1 finds
    // nothing of n1's.
    assert!(!store.update(&on("n1", "c1c"), TTL).await.unwrap());
    assert!(!store.update_if(&on("n3", "c3"), TTL, &from_n1).await.unwrap());
    assert_eq!(container().await.as_deref(), Some("c2"));
    // Still no record made from nothing.
    store.delete(&alice, &sid("s")).await.unwrap().unwrap();
    assert!(!store.update(&on("n2", "c4"), TTL).await.unwrap());
    assert_eq!(store.get(&alice, &sid("s")).await.unwrap(), None);
}

async fn listings_are_per_owner_and_sorted(store: &dyn SessionStore) {
    let (alice, bob) = (owner("alice"), owner("bob"));
    for id in ["b", "a", "c"] {
        store.replace(&record(&alice, id, "c"), TTL).await.unwrap();
    }
    store.replace(&record(&bob, "z", "c"), TTL).await.unwrap();
    let ids: Vec<String> = store
        .list(&alice)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.session_id)
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(store.list(&bob).await.unwrap().len(), 1);
    assert_eq!(store.list_all().await.unwrap().len(), 4);
}

async fn records_expire_with_their_ttl(store: &dyn SessionStore) {
    let alice = owner("alice");
    store
        .replace(&record(&alice, "short", "c"), Duration::from_millis(50))
        .await
        .unwrap();
    store.replace(&record(&alice, "long", "c"), TTL).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(store.get(&alice, &sid("short")).await.unwrap(), None);
    let live: Vec<String> = store
        .list(&alice)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.session_id)
        .collect();
    assert_eq!(live, ["long"]);
    // An expired session no longer counts against the quota.
    let quota = Quota {
        per_owner: 2,
        total: 10,
    };
    assert_eq!(
        store.reserve(&record(&alice, "new", ""), TTL, quota).await.unwrap(),
        Reservation::Reserved
    );
}

async fn a_creation_lock_is_exclusive_and_released_only_by_its_holder(store: &dyn SessionStore) {
    let (alice, id) = (owner("alice"), sid("s"));
    assert!(store.try_lock(&alice, &id, "t1", TTL).await.unwrap());
    assert!(!store.try_lock(&alice, &id, "t2", TTL).await.unwrap());
    // Another owner's session of the same id has its own lock.
    assert!(store.try_lock(&owner("bob"), &id, "t3", TTL).await.unwrap());
    store.unlock(&alice, &id, "t2").await.unwrap();
    assert!(!store.try_lock(&alice, &id, "t2", TTL).await.unwrap());
    store.unlock(&alice, &id, "t1").await.unwrap();
    assert!(store.try_lock(&alice, &id, "t2", TTL).await.unwrap());
    // Only its holder keeps it longer.
    assert!(!store.extend_lock(&alice, &id, "t1", TTL).await.unwrap());
    assert!(store.extend_lock(&alice, &id, "t2", TTL).await.unwrap());
    assert!(store
        .try_lock(&alice, &sid("kept"), "k", Duration::from_millis(100))
        .await
        .unwrap());
    assert!(store.extend_lock(&alice, &sid("kept"), "k", TTL).await.unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!store.try_lock(&alice, &sid("kept"), "other", TTL).await.unwrap());
    // A crashed holder's lock frees itself.
    assert!(store
        .try_lock(&alice, &sid("x"), "t", Duration::from_millis(50))
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(store.try_lock(&alice, &sid("x"), "u", TTL).await.unwrap());
}

async fn a_channel_lease_has_one_holder_who_renews_it(store: &dyn SessionStore) {
    let short = Duration::from_millis(100);
    assert!(store.lease_channel("c1", "replica-a", short).await.unwrap());
    assert!(!store.lease_channel("c1", "replica-b", short).await.unwrap());
    assert!(store.lease_channel("c2", "replica-b", short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(store.lease_channel("c1", "replica-a", short).await.unwrap(), "renewal");
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(
        !store.lease_channel("c1", "replica-b", short).await.unwrap(),
        "renewed lease lapsed"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        store.lease_channel("c1", "replica-b", short).await.unwrap(),
        "lapsed lease not free"
    );
}

async fn running_commands_are_counted_until_finished_or_past_their_deadline(store: &dyn SessionStore) {
    assert!(!store.command_running("c1").await.unwrap());
    store.command_started("c1", "t1", now_ms() + 60_000).await.unwrap();
    store.command_started("c1", "t2", now_ms() + 60_000).await.unwrap();
    store.command_finished("c1", "t1").await.unwrap();
    assert!(store.command_running("c1").await.unwrap());
    store.command_finished("c1", "t2").await.unwrap();
    assert!(!store.command_running("c1").await.unwrap());
    store.command_started("c2", "t", now_ms() + 50).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !store.command_running("c2").await.unwrap(),
        "a command past its deadline still counts"
    );
}

async fn each_spare_is_taken_once_and_marked_claimed(store: &dyn SessionStore) {
    for spare in ["s1", "s2"] {
        store.pool_add(spare).await.unwrap();
    }
    let mut members = store.pool_members().await.unwrap();
    members.sort();
    assert_eq!(members, ["s1", "s2"]);
    let first = store.pool_take().await.unwrap().unwrap();
    assert!(store.pool_claimed(&first).await.unwrap());
    let second = store.pool_take().await.unwrap().unwrap();
    assert_ne!(first, second);
    assert_eq!(store.pool_take().await.unwrap(), None);
    store.pool_add("s3").await.unwrap();
    assert!(store.pool_remove("s3").await.unwrap());
    assert!(!store.pool_remove("s3").await.unwrap());
    assert!(!store.pool_claimed("s3").await.unwrap());
}

async fn values_expire_set_once_tells_the_time_left_and_delete_frees_them(store: &dyn SessionStore) {
    store.put_value("k", "v", TTL).await.unwrap();
    assert_eq!(store.get_value("k").await.unwrap().as_deref(), Some("v"));
    store.delete_value("k").await.unwrap();
    assert_eq!(store.get_value("k").await.unwrap(), None);
    store.delete_value("k").await.unwrap();
    store.put_value("brief", "v", Duration::from_millis(50)).await.unwrap();
    assert_eq!(store.set_once("once", Duration::from_secs(30)).await.unwrap(), None);
    let left = store.set_once("once", Duration::from_secs(30)).await.unwrap().unwrap();
    assert!(
        left > Duration::from_secs(25) && left <= Duration::from_secs(30),
        "{left:?}"
    );
    store.delete_value("once").await.unwrap();
    assert_eq!(store.set_once("once", Duration::from_secs(30)).await.unwrap(), None);
    // A swap says whether a value was there (expired: not).
    assert!(!store
        .swap_value("swapped", "1", Duration::from_millis(50))
        .await
        .unwrap());
    assert!(store
        .swap_value("swapped", "2", Duration::from_millis(50))
        .await
        .unwrap());
    assert_eq!(store.get_value("swapped").await.unwrap().as_deref(), Some("2"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(store.get_value("brief").await.unwrap(), None);
    assert!(!store.swap_value("swapped", "3", TTL).await.unwrap());
}

async fn charged_values_evict_the_accounts_soonest_to_expire_and_no_one_elses(store: &dyn SessionStore) {
    let kb = |n: usize| "x".repeat(n * 1024);
    let (hour, day) = (Duration::from_secs(3600), Duration::from_secs(86400));
    // 10 KiB per account: a day-long 4 KiB, an hour-long 4 KiB.
    assert_eq!(
        store
            .put_charged("alice", "a-day", &kb(4), day, 10 * 1024)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .put_charged("alice", "a-hour", &kb(4), hour, 10 * 1024)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .put_charged("bob", "b-hour", &kb(8), hour, 10 * 1024)
            .await
            .unwrap(),
        0
    );
    // Replacing a value charges it once.
    assert_eq!(
        store
            .put_charged("alice", "a-hour", &kb(4), hour, 10 * 1024)
            .await
            .unwrap(),
        0
    );
    // 4 more: the value that expires soonest (the hour-long one) makes room.
    assert_eq!(
        store
            .put_charged("alice", "a-new", &kb(4), day, 10 * 1024)
            .await
            .unwrap(),
        1
    );
    let evicted = Some(format!("{EVICTED}alice"));
    assert_eq!(store.get_value("a-hour").await.unwrap(), evicted);
    assert_eq!(store.get_value("a-day").await.unwrap().map(|v| v.len()), Some(4096));
    assert_eq!(
        store.get_value("b-hour").await.unwrap().map(|v| v.len()),
        Some(8192),
        "bob paid for alice"
    );
    // One value over the whole quota is kept, alone.
    assert_eq!(
        store
            .put_charged("alice", "a-huge", &kb(12), day, 10 * 1024)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store.get_value("a-huge").await.unwrap().map(|v| v.len()),
        Some(12 * 1024)
    );
    for gone in ["a-day", "a-new"] {
        assert_eq!(store.get_value(gone).await.unwrap(), evicted, "{gone}");
    }
    // What expired no longer counts.
    store
        .put_charged("carol", "c-brief", &kb(8), Duration::from_millis(50), 10 * 1024)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        store
            .put_charged("carol", "c-next", &kb(8), day, 10 * 1024)
            .await
            .unwrap(),
        0
    );
}

async fn the_identity_is_made_once_and_kept(store: &dyn SessionStore) {
    let first = store.identity().await.unwrap();
    assert_eq!(first.len(), 16, "{first}");
    assert_eq!(store.identity().await.unwrap(), first);
}

async fn a_command_begins_and_ends_with_one_call_each(store: &dyn SessionStore) {
    let alice = owner("alice");
    let deadline_ms = now_ms() + 60_000;
    let start = |token, holder| CommandStart {
        token,
        deadline_ms,
        holder,
        lease: TTL,
        node: None,
    };
    // Without a ready record nothing is done.
    let none = store.begin_command(&alice, &sid("none"), TTL, &start("t0", "a")).await;
    assert_eq!(none.unwrap(), None);
    let quota = Quota { per_owner: 9, total: 9 };
    store.reserve(&record(&alice, "pending", ""), TTL, quota).await.unwrap();
    let pending = store
        .begin_command(&alice, &sid("pending"), TTL * 2, &start("t0", "a"))
        .await;
    assert_eq!(pending.unwrap(), None);
    let pending = store.get(&alice, &sid("pending")).await.unwrap().unwrap();
    assert!(
        pending.expires_at_ms <= now_ms() + TTL.as_millis() as i64,
        "a pending record was refreshed"
    );

    // Ready: refreshed, marked running, leased.
    store
        .replace(&record(&alice, "s", "c1"), Duration::from_secs(5))
        .await
        .unwrap();
    let begun = store
        .begin_command(&alice, &sid("s"), TTL, &start("t1", "replica-a"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(begun.record.container(), Some("c1"));
    assert!(begun.leased);
    assert!(begun.record.expires_at_ms >= now_ms() + 590_000, "{begun:?}");
    // Readers see the refreshed expiry.
    assert_eq!(
        store.get(&alice, &sid("s")).await.unwrap().as_ref(),
        Some(&begun.record)
    );
    let listed = store.list(&alice).await.unwrap();
    let listed = listed.iter().find(|r| r.session_id == "s").unwrap();
    assert_eq!(listed.expires_at_ms, begun.record.expires_at_ms);
    assert!(store.command_running("c1").await.unwrap());
    assert!(!store.command_running("c2").await.unwrap());

    // Another replica's command is marked too, but the lease stays where it is.
    let other = store
        .begin_command(&alice, &sid("s"), TTL, &start("t2", "replica-b"))
        .await
        .unwrap()
        .unwrap();
    assert!(!other.leased);
    assert!(!store.lease_channel("c1", "replica-b", TTL).await.unwrap());

    // Each end forgets its own command only, and refreshes the session.
    let ended = store.end_command(&alice, &sid("s"), TTL, "c1", "t1").await.unwrap();
    assert!(ended.unwrap().expires_at_ms >= begun.record.expires_at_ms);
    assert!(store.command_running("c1").await.unwrap(), "t2 still runs");
    store.end_command(&alice, &sid("s"), TTL, "c1", "t2").await.unwrap();
    assert!(!store.command_running("c1").await.unwrap());

    // A session deleted meanwhile: the end still forgets the command.
    store
        .begin_command(&alice, &sid("s"), TTL, &start("t3", "replica-a"))
        .await
        .unwrap()
        .unwrap();
    store.delete(&alice, &sid("s")).await.unwrap();
    assert_eq!(
        store.end_command(&alice, &sid("s"), TTL, "c1", "t3").await.unwrap(),
        None
    );
    assert!(!store.command_running("c1").await.unwrap());

    // The fence: a session of node n1 begins no command for node n2 (nor for
    // a single host), and one of a single host none for a node.
    let mut on_n1 = record(&alice, "n", "c9");
    on_n1.node = Some("n1".into());
    store.replace(&on_n1, Duration::from_secs(5)).await.unwrap();
    for node in [Some("n2"), None] {
        let refused = store
            .begin_command(
                &alice,
                &sid("n"),
                TTL,
                &CommandStart {
                    node,
                    ..start("t4", "b")
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!((refused.record.node.as_deref(), refused.leased), (Some("n1"), false));
        assert!(!store.command_running("c9").await.unwrap(), "marked for {node:?}");
    }
    let kept = store.get(&alice, &sid("n")).await.unwrap().unwrap();
    assert!(kept.expires_at_ms <= now_ms() + 5_000, "refreshed by another node");
    let alice_ref = &alice;
    let as_n1 = |session: &'static str, token: &'static str| async move {
        let start = CommandStart {
            node: Some("n1"),
            ..start(token, "a")
        };
        store
            .begin_command(alice_ref, &sid(session), TTL, &start)
            .await
            .unwrap()
    };
    let ours = as_n1("n", "t5").await.unwrap();
    assert!(ours.leased && store.command_running("c9").await.unwrap());
    assert_eq!(as_n1("s2", "t6").await, None, "no record");
    store
        .replace(&record(&alice, "s2", "c8"), Duration::from_secs(5))
        .await
        .unwrap();
    let single = as_n1("s2", "t7").await.unwrap();
    assert!(!single.leased && !store.command_running("c8").await.unwrap());
}

async fn a_suspended_session_keeps_its_owners_place_but_no_capacity_and_no_refresh(store: &dyn SessionStore) {
    let quota = Quota { per_owner: 2, total: 2 };
    let (alice, bob) = (owner("alice"), owner("bob"));
    let retention = Duration::from_secs(3600);
    let parked = SessionRecord {
        suspended: suspension(Some("snap-1")),
        ..record(&alice, "s", "")
    };
    store.replace(&parked, retention).await.unwrap();
    // Its owner's: listed, and counted against the owner's quota.
    let listed = store.list(&alice).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].suspended_in(), Some("snap-1"));
    // Not the instance's: no container to reap, no capacity held.
    assert!(store.list_all().await.unwrap().is_empty());
    for id in ["b1", "b2"] {
        let reserved = store.reserve(&record(&bob, id, ""), TTL, quota).await.unwrap();
        assert_eq!(reserved, Reservation::Reserved, "{id}");
    }
    store.delete(&bob, &sid("b2")).await.unwrap();
    let one_each = Quota { per_owner: 1, total: 9 };
    assert!(matches!(
        store.reserve(&record(&alice, "t", ""), TTL, one_each).await.unwrap(),
        Reservation::OwnerQuotaExceeded { .. }
    ));
    // Neither a command nor a touch refreshes it: its expiry is its retention.
    let start = CommandStart {
        token: "t",
        deadline_ms: now_ms() + 60_000,
        holder: "a",
        lease: TTL,
        node: None,
    };
    assert_eq!(store.begin_command(&alice, &sid("s"), TTL, &start).await.unwrap(), None);
    let touched = store
        .touch(&alice, &sid("s"), Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(touched.expires_at_ms > now_ms() + 3_000_000, "{touched:?}");
    // Resuming reserves it again, now against the capacity too (bob holds one of two).
    let resuming = SessionRecord {
        suspended: suspension(Some("snap-1")).map(|s| crate::session::record::Suspension { resuming: true, ..s }),
        ..record(&alice, "s", "")
    };
    assert_eq!(
        store.reserve(&resuming, TTL, quota).await.unwrap(),
        Reservation::Reserved
    );
    assert_eq!(store.list_all().await.unwrap().len(), 2);
    assert_eq!(
        store.reserve(&record(&bob, "b3", ""), TTL, quota).await.unwrap(),
        Reservation::CapacityExhausted
    );
    // A session being suspended still has its container, and takes no command.
    let suspending = SessionRecord {
        suspended: suspension(None),
        ..record(&alice, "s", "c1")
    };
    store.replace(&suspending, TTL).await.unwrap();
    assert!(store
        .list_all()
        .await
        .unwrap()
        .iter()
        .any(|r| r.container() == Some("c1")));
    assert_eq!(store.begin_command(&alice, &sid("s"), TTL, &start).await.unwrap(), None);
}

async fn a_records_own_ttl_wins_over_the_callers(store: &dyn SessionStore) {
    let alice = owner("alice");
    let own = SessionRecord {
        ttl_ms: Some(3_600_000),
        ..record(&alice, "long", "c1")
    };
    store.replace(&own, Duration::from_secs(3600)).await.unwrap();
    let touched = store
        .touch(&alice, &sid("long"), Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(touched.expires_at_ms > now_ms() + 3_500_000, "{touched:?}");
    let start = CommandStart {
        token: "t",
        deadline_ms: now_ms() + 60_000,
        holder: "a",
        lease: TTL,
        node: None,
    };
    let begun = store
        .begin_command(&alice, &sid("long"), Duration::from_secs(5), &start)
        .await
        .unwrap()
        .unwrap();
    assert!(begun.record.expires_at_ms > now_ms() + 3_500_000, "{begun:?}");
    // What readers see, and what the store keeps (the key outlives 5 s).
    let read = store.get(&alice, &sid("long")).await.unwrap().unwrap();
    assert!(read.expires_at_ms > now_ms() + 3_500_000, "{read:?}");
    assert_eq!(store.list(&alice).await.unwrap().len(), 1);
    // Without one, the caller's TTL.
    store.replace(&record(&alice, "short", "c2"), TTL).await.unwrap();
    let touched = store
        .touch(&alice, &sid("short"), Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(touched.expires_at_ms <= now_ms() + 5_000, "{touched:?}");
}

async fn bounded_lists_keep_their_last_items_and_expire(store: &dyn SessionStore) {
    assert!(store.list_items("l").await.unwrap().is_empty());
    for item in ["a", "b", "c", "d"] {
        store.push_bounded("l", item, 3, TTL).await.unwrap();
    }
    assert_eq!(store.list_items("l").await.unwrap(), ["b", "c", "d"]);
    // A value of the same name is another thing.
    store.put_value("l", "v", TTL).await.unwrap();
    assert_eq!(store.list_items("l").await.unwrap(), ["b", "c", "d"]);
    store
        .push_bounded("short", "x", 3, Duration::from_millis(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(store.list_items("short").await.unwrap().is_empty());
}
