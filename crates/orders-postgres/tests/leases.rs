#![allow(clippy::unwrap_used)]
//! Partition leases on a real PostgreSQL: fair claims, expiry, release, and the lease epoch
//! fencing a batch (issue 11, item 2).

use std::time::Duration;

use orders_domain::{
    OrderRepository, PartitionLease, PartitionLeases, PartitionOffset, RepositoryError, StoreBatch,
    fair_share,
};
use orders_postgres::testing::{create_test_database, sql_client};
use orders_postgres::{PgLeases, PgRepository};

const TOPIC: &str = "leased";
const TTL: Duration = Duration::from_secs(30);

async fn setup() -> (PgRepository, tokio_postgres::Client) {
    let cfg = create_test_database().await;
    let repo = PgRepository::connect(&cfg).await.unwrap();
    (repo, sql_client(&cfg).await)
}

fn partitions(held: &[PartitionLease]) -> Vec<i32> {
    held.iter().map(|l| l.partition).collect()
}

/// A batch of no orders that moves `partition`'s offset from `expected` to `next` under
/// the lease `epoch`.
fn offset_batch(partition: i32, expected: Option<i64>, next: i64, epoch: i64) -> StoreBatch {
    StoreBatch {
        topic: TOPIC.into(),
        offsets: vec![PartitionOffset {
            partition,
            next_offset: next,
            expected,
            mark: None,
            lease_epoch: Some(epoch),
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn members_split_the_partitions_and_never_share_one() {
    let (repo, _sql) = setup().await;
    let a = PgLeases::new(repo.clone(), "a");
    let b = PgLeases::new(repo.clone(), "b");
    let all: Vec<i32> = (0..5).collect();
    a.heartbeat(TOPIC, &all, TTL).await.unwrap();
    let view = b.heartbeat(TOPIC, &all, TTL).await.unwrap();
    assert_eq!(view.members, ["a", "b"]);
    assert_eq!(fair_share(&view.members, "a", 5), 3);
    assert_eq!(fair_share(&view.members, "b", 5), 2);

    let got_a = a.claim(TOPIC, 3).await.unwrap();
    // b asks for more than is free: it gets only what a does not hold.
    let got_b = b.claim(TOPIC, 5).await.unwrap();
    assert_eq!(partitions(&got_a), [0, 1, 2]);
    assert_eq!(partitions(&got_b), [3, 4]);
    assert!(got_a.iter().chain(&got_b).all(|l| l.epoch == 1));
    assert_eq!(
        a.heartbeat(TOPIC, &all, TTL).await.unwrap().held,
        got_a,
        "a heartbeat reports the leases held"
    );

    // Released: the epoch moves on, and the other member can claim it.
    a.release(TOPIC, got_a[2]).await.unwrap();
    let moved = b.claim(TOPIC, 1).await.unwrap();
    assert_eq!(
        moved,
        [PartitionLease {
            partition: 2,
            epoch: 3
        }]
    );
    // Releasing a lease no longer held changes nothing.
    a.release(TOPIC, got_a[2]).await.unwrap();
    assert_eq!(
        partitions(&b.heartbeat(TOPIC, &all, TTL).await.unwrap().held),
        [2, 3, 4]
    );

    // Leaving releases everything and drops the member from the live list.
    b.leave(TOPIC).await.unwrap();
    let view = a.heartbeat(TOPIC, &all, TTL).await.unwrap();
    assert_eq!(view.members, ["a"]);
    assert_eq!(partitions(&a.claim(TOPIC, 5).await.unwrap()), [2, 3, 4]);
}

#[tokio::test]
async fn a_lapsed_member_loses_its_leases_and_its_commits() {
    let (repo, sql) = setup().await;
    let a = PgLeases::new(repo.clone(), "a");
    let b = PgLeases::new(repo.clone(), "b");
    a.heartbeat(TOPIC, &[0], Duration::from_millis(300))
        .await
        .unwrap();
    let lease_a = a.claim(TOPIC, 1).await.unwrap()[0];
    repo.store_batch(&offset_batch(0, None, 10, lease_a.epoch))
        .await
        .unwrap();

    // While a is alive, b cannot take its lease.
    b.heartbeat(TOPIC, &[0], TTL).await.unwrap();
    assert!(b.claim(TOPIC, 1).await.unwrap().is_empty());

    // a stops heartbeating (paused, cut off): its lease lapses and b takes it over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let view = b.heartbeat(TOPIC, &[0], TTL).await.unwrap();
    assert_eq!(view.members, ["b"], "a is no longer alive");
    let lease_b = b.claim(TOPIC, 1).await.unwrap()[0];
    assert!(lease_b.epoch > lease_a.epoch);

    // a wakes up and commits the batch it was working on: refused, nothing kept, even though
    // the offset it expects is still the stored one.
    let mut late = offset_batch(0, Some(10), 20, lease_a.epoch);
    late.rejections = vec![orders_domain::Rejection::new(
        orders_domain::Position {
            topic: TOPIC.into(),
            partition: 0,
            offset: 10,
        },
        orders_domain::RejectReason::NotJson,
        "late",
        Some(bytes::Bytes::from_static(b"x")),
    )];
    let err = repo.store_batch(&late).await.unwrap_err();
    assert!(
        matches!(err, RepositoryError::LeaseLost { partition: 0, epoch, .. } if epoch == lease_a.epoch),
        "{err:?}"
    );
    let rejected: i64 = sql
        .query_one("SELECT count(*) FROM rejected_messages", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rejected, 0, "nothing of the fenced batch is kept");
    assert_eq!(repo.stored_offsets(TOPIC).await.unwrap()[&0], 10);

    // a's next heartbeat shows it holds nothing; b commits under its lease.
    assert!(a.heartbeat(TOPIC, &[0], TTL).await.unwrap().held.is_empty());
    repo.store_batch(&offset_batch(0, Some(10), 20, lease_b.epoch))
        .await
        .unwrap();
    assert_eq!(repo.stored_offsets(TOPIC).await.unwrap()[&0], 20);
}

#[tokio::test]
async fn a_lease_is_not_claimed_while_a_commit_under_it_is_in_flight() {
    let (repo, mut sql) = setup().await;
    let a = PgLeases::new(repo.clone(), "a");
    let b = PgLeases::new(repo.clone(), "b");
    a.heartbeat(TOPIC, &[0], Duration::from_millis(300))
        .await
        .unwrap();
    let lease_a = a.claim(TOPIC, 1).await.unwrap()[0];
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.heartbeat(TOPIC, &[0], TTL).await.unwrap();

    // A batch transaction of a's holds the lease row (what the offsets statement takes).
    let tx = sql.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM partition_leases WHERE topic = $1 AND partition = 0 AND epoch = $2 FOR SHARE",
        &[&TOPIC, &lease_a.epoch],
    )
    .await
    .unwrap();
    assert!(
        b.claim(TOPIC, 1).await.unwrap().is_empty(),
        "a lease whose commit is in flight is not free yet"
    );
    tx.commit().await.unwrap();
    assert_eq!(partitions(&b.claim(TOPIC, 1).await.unwrap()), [0]);
}

#[tokio::test]
async fn a_partition_added_to_the_topic_becomes_claimable() {
    let (repo, _sql) = setup().await;
    let a = PgLeases::new(repo.clone(), "a");
    a.heartbeat(TOPIC, &[0, 1], TTL).await.unwrap();
    assert_eq!(partitions(&a.claim(TOPIC, 5).await.unwrap()), [0, 1]);
    // The topic grew (seen by the consumer's next partition discovery).
    let view = a.heartbeat(TOPIC, &[0, 1, 2], TTL).await.unwrap();
    assert_eq!(fair_share(&view.members, "a", 3), 3);
    assert_eq!(partitions(&a.claim(TOPIC, 1).await.unwrap()), [2]);
}

#[tokio::test]
async fn joins_releases_and_other_replicas_commits_are_announced() {
    use orders_postgres::{Announcement, CommitListener};
    let cfg = create_test_database().await;
    let repo = PgRepository::connect(&cfg).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(CommitListener::new(cfg.clone(), "me").run(tx, shutdown));
    // The listener connects in the background: announce until it hears the first one.
    let a = PgLeases::new(repo.clone(), "a");
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            a.leave(TOPIC).await.unwrap();
            a.heartbeat(TOPIC, &[0], TTL).await.unwrap();
            if let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
            {
                break got;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        first,
        Announcement::Leases {
            topic: TOPIC.into()
        }
    );
    while tokio::time::timeout(Duration::from_millis(300), rx.recv())
        .await
        .is_ok()
    {}

    // A renewal is not news; a release is.
    a.heartbeat(TOPIC, &[0], TTL).await.unwrap();
    let lease = a.claim(TOPIC, 1).await.unwrap()[0];
    a.release(TOPIC, lease).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert_eq!(
        got,
        Some(Announcement::Leases {
            topic: TOPIC.into()
        })
    );

    // Orders committed under another origin are announced; this listener's own are not.
    let order = |uid: &str| {
        let order = orders_domain::sample::generated_order(uid, 1, 1);
        orders_domain::AcceptedOrder {
            payload: order.to_json_bytes().unwrap(),
            position: orders_domain::Position {
                topic: TOPIC.into(),
                partition: 0,
                offset: 0,
            },
            order,
        }
    };
    let mine = repo.clone().announce_commits("me");
    let theirs = repo.clone().announce_commits("them");
    for (r, uid) in [(&mine, "mine-"), (&theirs, "theirs-")] {
        r.store_batch(&StoreBatch {
            topic: TOPIC.into(),
            orders: vec![order(uid)],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert_eq!(got, Some(Announcement::Orders(vec!["theirs-1".into()])));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err(),
        "nothing else announced"
    );
}
