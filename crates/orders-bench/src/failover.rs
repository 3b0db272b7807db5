//! Section 6 (replicas): how long partitions go without a consumer when replicas come and go.
//! Two replica processes (this binary's hidden `replica` command: the real `Application`)
//! share a topic that receives a steady trickle of orders; each time is from the event to
//! the first commit by the new owner on every partition that changed hands, read from the
//! lease and offset tables. The baseline is the configured lease: a crash cannot be noticed
//! sooner than the lease lapses.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use orders_app::Settings;
use orders_kafka::{KafkaConfig, OrderProducer};
use serde::Serialize;
use tokio_postgres::Client;

use crate::db::{self, BenchDb};
use crate::stats::median;

const PARTITIONS: i32 = 4;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct FailoverResults {
    pub(crate) partitions: i32,
    pub(crate) lease_ttl_secs: u64,
    pub(crate) heartbeat_secs: f64,
    /// Seconds from starting a second replica (its boot included) to the even split, each
    /// partition it took committed by it.
    pub(crate) join_secs: Vec<f64>,
    /// Seconds from SIGTERM to every partition of the stopped replica committed by the other.
    pub(crate) sigterm_secs: Vec<f64>,
    /// Seconds from kill -9 to the same.
    pub(crate) kill_secs: Vec<f64>,
}

impl FailoverResults {
    pub(crate) fn join(&self) -> f64 {
        median(&self.join_secs)
    }
    pub(crate) fn sigterm(&self) -> f64 {
        median(&self.sigterm_secs)
    }
    pub(crate) fn kill(&self) -> f64 {
        median(&self.kill_secs)
    }
}

/// A replica process, killed when dropped.
struct Replica(Child);

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Replica {
    fn start(settings: &Settings, db: &str, topic: &str, ttl: u64) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let pg = settings.postgres()?;
        let child = Command::new(exe)
            .arg("replica")
            .env("DB_HOST", &pg.host)
            .env("DB_PORT", pg.port.to_string())
            .env("DB_USER", &pg.user)
            .env("DB_PASSWORD", pg.password.expose())
            .env("DB_NAME", db)
            .env("KAFKA_BROKER", &settings.kafka_broker)
            .env("KAFKA_TOPIC", topic)
            .env("HTTP_HOST", "127.0.0.1")
            .env("HTTP_PORT", "0")
            .env("LEASE_TTL_SECS", ttl.to_string())
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting a replica")?;
        Ok(Self(child))
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.0.id().to_string()])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill -{sig} failed");
        Ok(())
    }
}

/// Per partition: the live owner, when it was granted the lease, and whether it has
/// committed since.
async fn owners(sql: &Client, topic: &str) -> anyhow::Result<Vec<(i32, String, bool)>> {
    Ok(sql
        .query(
            "SELECT l.partition, l.owner, coalesce(o.updated_at > l.granted_at, false)
             FROM partition_leases l
             JOIN consumer_members m ON m.topic = l.topic AND m.member_id = l.owner
             LEFT JOIN consumer_offsets o ON o.topic = l.topic AND o.partition = l.partition
             WHERE l.topic = $1 AND m.expires_at > now()
             ORDER BY l.partition",
            &[&topic],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Waits until the live owners are `members` members splitting the partitions evenly, every
/// partition committed by its owner since its grant; returns the owners' names.
async fn settled(
    sql: &Client,
    topic: &str,
    members: usize,
    limit: Duration,
) -> anyhow::Result<Vec<String>> {
    let started = Instant::now();
    loop {
        let o = owners(sql, topic).await?;
        let mut names: Vec<String> = o.iter().map(|(_, n, _)| n.clone()).collect();
        names.sort();
        names.dedup();
        let (p, m) = (PARTITIONS.unsigned_abs() as usize, members.max(1));
        let even = names.iter().all(|n| {
            let k = o.iter().filter(|(_, owner, _)| owner == n).count();
            k == p / m || k == p.div_ceil(m)
        });
        if o.len() == PARTITIONS as usize
            && names.len() == members
            && even
            && o.iter().all(|(_, _, c)| *c)
        {
            return Ok(names);
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "replicas did not settle within {limit:?}: {o:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) async fn run(
    base: &Settings,
    admin: &orders_postgres::PgConfig,
    rounds: usize,
) -> anyhow::Result<FailoverResults> {
    let ttl = base.lease_ttl_secs;
    let topic = format!(
        "bench-failover-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let kafka = KafkaConfig {
        topic: topic.clone(),
        create_topic_partitions: Some(PARTITIONS),
        ..base.kafka()?
    };
    let producer = OrderProducer::connect(&kafka)
        .await
        .context("Kafka broker not reachable (just broker-up)")?;
    let db = BenchDb::create(admin).await?;
    orders_postgres::PgRepository::connect(&db.config).await?;
    let sql = db::client(&db.config).await?;

    // A steady trickle on every partition, so that a new owner commits as soon as it runs.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let trickle = tokio::spawn(async move {
        let mut n = 0u64;
        while !*stop_rx.borrow() {
            for p in 0..PARTITIONS {
                let order = orders_domain::sample::generated_order("failover-", n, 1);
                n += 1;
                producer
                    .send_to(p, vec![Some(serde_json::to_vec(&order)?)])
                    .await?;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = stop_rx.changed() => {}
            }
        }
        anyhow::Ok(n)
    });

    let limit = Duration::from_secs(ttl * 4 + 60);
    let dbname = db.config.dbname.clone();
    let mut results = FailoverResults {
        partitions: PARTITIONS,
        lease_ttl_secs: ttl,
        heartbeat_secs: ttl as f64 / 5.0,
        join_secs: Vec::new(),
        sigterm_secs: Vec::new(),
        kill_secs: Vec::new(),
    };
    let mut first = Replica::start(base, &dbname, &topic, ttl)?;
    settled(&sql, &topic, 1, limit).await?;
    for round in 0..rounds {
        tracing::info!(round, "replicas: a second replica joins");
        let t = Instant::now();
        let second = Replica::start(base, &dbname, &topic, ttl)?;
        settled(&sql, &topic, 2, limit).await?;
        results.join_secs.push(t.elapsed().as_secs_f64());

        tracing::info!(round, "replicas: SIGTERM");
        let t = Instant::now();
        second.signal("TERM")?;
        settled(&sql, &topic, 1, limit).await?;
        results.sigterm_secs.push(t.elapsed().as_secs_f64());
        drop(second);

        tracing::info!(round, "replicas: kill -9");
        let second = Replica::start(base, &dbname, &topic, ttl)?;
        settled(&sql, &topic, 2, limit).await?;
        let t = Instant::now();
        first.signal("KILL")?;
        settled(&sql, &topic, 1, limit).await?;
        results.kill_secs.push(t.elapsed().as_secs_f64());
        // The survivor is the one that goes on alone into the next round.
        first = second;
    }
    drop(first);
    let _ = stop_tx.send(true);
    trickle.await??;
    drop(sql);
    db.drop_now().await?;
    Ok(results)
}
