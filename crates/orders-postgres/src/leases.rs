//! [`PartitionLeases`] in the tables `consumer_members` and `partition_leases` (migration
//! 0004). Every time is the database's `now()`, so the replicas' clocks never matter.

use std::time::Duration;

use async_trait::async_trait;
use orders_domain::{Membership, PartitionLease, PartitionLeases, RepositoryError};
use tokio::time::timeout;

use crate::error::map_pg;
use crate::repository::PgRepository;

/// This member's leases on a topic's partitions, kept in PostgreSQL through the repository's
/// pool.
#[derive(Debug, Clone)]
pub struct PgLeases {
    repo: PgRepository,
    member_id: String,
}

impl PgLeases {
    /// Leases for the member `member_id`, which must be unique among the replicas (see
    /// [`member_id`]).
    pub fn new(repo: PgRepository, member_id: impl Into<String>) -> Self {
        Self {
            repo,
            member_id: member_id.into(),
        }
    }
}

/// A member id unique across hosts, processes and restarts: `host-pid-random`.
pub fn member_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "orders".into());
    // RandomState is seeded randomly per process: enough to tell restarts apart (pid 1 in
    // every container).
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!(
        "{host}-{}-{:06x}",
        std::process::id(),
        h.finish() & 0xff_ffff
    )
}

/// The channel on which joins and releases are announced (payload: the topic), so that the
/// other members rebalance at once instead of on their next heartbeat.
pub(crate) const LEASES_CHANNEL: &str = "orders_leases";

// A member that joins (its row is new) announces it.
const HEARTBEAT: &str = "
WITH beat AS (
    INSERT INTO consumer_members (topic, member_id, expires_at)
    VALUES ($1, $2, now() + $3::float8 * interval '1 millisecond')
    ON CONFLICT (topic, member_id) DO UPDATE
        SET heartbeat_at = now(), expires_at = EXCLUDED.expires_at
    RETURNING (xmax = 0) AS joined)
SELECT pg_notify('orders_leases', $1) FROM beat WHERE joined";

const ADD_PARTITIONS: &str = "
INSERT INTO partition_leases (topic, partition)
SELECT $1, p FROM unnest($2::int4[]) AS p
ON CONFLICT (topic, partition) DO NOTHING";

const LIVE_MEMBERS: &str = "
SELECT member_id FROM consumer_members WHERE topic = $1 AND expires_at > now() ORDER BY member_id";

const HELD: &str = "
SELECT partition, epoch FROM partition_leases WHERE topic = $1 AND owner = $2 ORDER BY partition";

// Members whose heartbeat lapsed long ago are deleted (their leases were free from the
// moment the heartbeat lapsed; the row only helps an operator see who was there).
const FORGET: &str = "
DELETE FROM consumer_members WHERE topic = $1 AND expires_at < now() - interval '10 minutes'";

// SKIP LOCKED: a lease row locked by an in-flight batch commit (FOR SHARE) is not free yet;
// it is claimed on a later heartbeat, after that commit.
const CLAIM: &str = "
UPDATE partition_leases l SET owner = $2, epoch = l.epoch + 1, granted_at = now()
WHERE (l.topic, l.partition) IN (
    SELECT f.topic, f.partition FROM partition_leases f
    WHERE f.topic = $1
      AND (f.owner IS NULL OR NOT EXISTS (
            SELECT 1 FROM consumer_members m
            WHERE m.topic = f.topic AND m.member_id = f.owner AND m.expires_at > now()))
    ORDER BY f.partition
    LIMIT $3
    FOR UPDATE SKIP LOCKED)
RETURNING l.partition, l.epoch";

const RELEASE: &str = "
WITH released AS (
    UPDATE partition_leases SET owner = NULL, epoch = epoch + 1, granted_at = NULL
    WHERE topic = $1 AND partition = $2 AND owner = $3 AND epoch = $4
    RETURNING 1)
SELECT pg_notify('orders_leases', $1) FROM released";

const RELEASE_ALL: &str = "
WITH released AS (
    UPDATE partition_leases SET owner = NULL, epoch = epoch + 1, granted_at = NULL
    WHERE topic = $1 AND owner = $2
    RETURNING 1)
SELECT pg_notify('orders_leases', $1) FROM (SELECT 1 FROM released LIMIT 1) AS one";

const LEAVE: &str = "DELETE FROM consumer_members WHERE topic = $1 AND member_id = $2";

fn leases(rows: &[tokio_postgres::Row]) -> Vec<PartitionLease> {
    rows.iter()
        .map(|r| PartitionLease {
            partition: r.get(0),
            epoch: r.get(1),
        })
        .collect()
}

#[async_trait]
impl PartitionLeases for PgLeases {
    fn member_id(&self) -> &str {
        &self.member_id
    }

    async fn heartbeat(
        &self,
        topic: &str,
        partitions: &[i32],
        ttl: Duration,
    ) -> Result<Membership, RepositoryError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let me = self.member_id.as_str();
        let client = self.repo.client().await?;
        let work = async {
            // In this order: the member list read last includes this heartbeat.
            let ctx = |e| map_pg("renewing the consumer's membership", e);
            let ttl_ms = ttl_ms as f64;
            client
                .query(HEARTBEAT, &[&topic, &me, &ttl_ms])
                .await
                .map_err(ctx)?;
            client
                .execute(ADD_PARTITIONS, &[&topic, &partitions])
                .await
                .map_err(ctx)?;
            client.execute(FORGET, &[&topic]).await.map_err(ctx)?;
            let members = client.query(LIVE_MEMBERS, &[&topic]).await.map_err(ctx)?;
            let held = client.query(HELD, &[&topic, &me]).await.map_err(ctx)?;
            Ok(Membership {
                members: members.iter().map(|r| r.get(0)).collect(),
                held: leases(&held),
            })
        };
        let result = timeout(self.repo.query_timeout(), work).await;
        self.repo.settle(client, result)
    }

    async fn claim(&self, topic: &str, n: usize) -> Result<Vec<PartitionLease>, RepositoryError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let client = self.repo.client().await?;
        let work = async {
            let rows = client
                .query(CLAIM, &[&topic, &self.member_id, &n])
                .await
                .map_err(|e| map_pg("claiming partition leases", e))?;
            Ok(leases(&rows))
        };
        let result = timeout(self.repo.query_timeout(), work).await;
        self.repo.settle(client, result)
    }

    async fn release(&self, topic: &str, lease: PartitionLease) -> Result<(), RepositoryError> {
        let client = self.repo.client().await?;
        let work = async {
            client
                .query(
                    RELEASE,
                    &[&topic, &lease.partition, &self.member_id, &lease.epoch],
                )
                .await
                .map_err(|e| map_pg("releasing a partition lease", e))?;
            Ok(())
        };
        let result = timeout(self.repo.query_timeout(), work).await;
        self.repo.settle(client, result)
    }

    async fn leave(&self, topic: &str) -> Result<(), RepositoryError> {
        let mut client = self.repo.client().await?;
        let work = async {
            let tx = client
                .transaction()
                .await
                .map_err(|e| map_pg("starting a transaction", e))?;
            tx.query(RELEASE_ALL, &[&topic, &self.member_id])
                .await
                .map_err(|e| map_pg("releasing partition leases", e))?;
            tx.execute(LEAVE, &[&topic, &self.member_id])
                .await
                .map_err(|e| map_pg("leaving the consumer members", e))?;
            tx.commit()
                .await
                .map_err(|e| map_pg("committing the leave", e))
        };
        let result = timeout(self.repo.query_timeout(), work).await;
        self.repo.settle(client, result)
    }
}

/// Who holds a partition's lease, for operators (`orders partitions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOwner {
    /// The member the lease names (`None`: released, or never granted).
    pub owner: Option<String>,
    pub epoch: i64,
    /// When the owner's lease lapses unless it heartbeats again (`None`: the owner left).
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether the owner is alive now, on the database's clock.
    pub alive: bool,
}

impl PgRepository {
    /// Every partition lease of `topic`, with its owner's expiry.
    pub async fn partition_owners(
        &self,
        topic: &str,
    ) -> Result<std::collections::BTreeMap<i32, PartitionOwner>, RepositoryError> {
        let client = self.client().await?;
        let work = async {
            let rows = client
                .query(
                    "SELECT l.partition, l.owner, l.epoch, m.expires_at,
                            coalesce(m.expires_at > now(), false)
                     FROM partition_leases l
                     LEFT JOIN consumer_members m ON m.topic = l.topic AND m.member_id = l.owner
                     WHERE l.topic = $1",
                    &[&topic],
                )
                .await
                .map_err(|e| map_pg("reading partition leases", e))?;
            Ok(rows
                .iter()
                .map(|r| {
                    (
                        r.get(0),
                        PartitionOwner {
                            owner: r.get(1),
                            epoch: r.get(2),
                            expires_at: r.get(3),
                            alive: r.get(4),
                        },
                    )
                })
                .collect())
        };
        let result = timeout(self.query_timeout(), work).await;
        self.settle(client, result)
    }
}
