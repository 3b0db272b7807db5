#![allow(clippy::unwrap_used, clippy::print_stdout)]
//! Several real `orders` processes on one topic and one database (issue 11): partitions split
//! evenly through leases, orders reach every replica's cache, and every order is stored
//! exactly once through replicas joining, stopping, crashing and pausing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{Service, start_binary_with};
use orders_app::Settings;
use orders_kafka::{KafkaConfig, KafkaSource, OrderProducer};

/// Short leases so that failover happens within the test's patience.
const LEASE_TTL_SECS: u64 = 2;

/// What the README promises: an order committed by one replica is in the others' caches
/// within this.
const CACHE_SYNC_BOUND: Duration = Duration::from_secs(1);

struct Replica {
    port: u16,
    service: Service,
}

impl Replica {
    fn start(settings: &Settings) -> Self {
        Self::start_with_lease(settings, LEASE_TTL_SECS)
    }

    fn start_with_lease(settings: &Settings, ttl_secs: u64) -> Self {
        let port = common::free_port();
        let ttl = ttl_secs.to_string();
        let service = start_binary_with(settings, port, &[("LEASE_TTL_SECS", &ttl)]);
        Self { port, service }
    }

    fn pid(&self) -> u32 {
        self.service.0.id()
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    /// SIGTERM, then waits for the process to exit (it releases its leases first).
    fn stop(mut self) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.service.0.try_wait().unwrap() {
                assert!(status.success(), "graceful stop exits 0, got {status}");
                return;
            }
            assert!(Instant::now() < deadline, "no exit within 20 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    async fn get(&self, path: &str) -> Option<reqwest::Response> {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()
    }

    async fn json(&self, path: &str) -> Option<serde_json::Value> {
        self.get(path).await?.json().await.ok()
    }

    /// Partitions this replica says it owns (`/readyz`).
    async fn owned(&self) -> Option<BTreeSet<i64>> {
        let r = self.json("/readyz").await?;
        Some(
            r["consumer"]["partitions"]
                .as_array()?
                .iter()
                .filter_map(|p| p["partition"].as_i64())
                .collect(),
        )
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in /metrics"))
    }
}

async fn topic_of(partitions: i32) -> (Settings, OrderProducer) {
    let topic = format!(
        "test-replicas-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let settings = common::test_settings(Some(&topic)).await;
    orders_postgres::PgRepository::connect(&settings.postgres().unwrap())
        .await
        .unwrap();
    let kafka = KafkaConfig {
        create_topic_partitions: Some(partitions),
        ..settings.kafka().unwrap()
    };
    let producer = OrderProducer::connect(&kafka).await.unwrap_or_else(|e| {
        panic!(
            "Kafka broker not reachable at {} ({e}); start it with `just broker-up`",
            settings.kafka_broker
        )
    });
    (settings, producer)
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Owner of each partition whose owner is alive, from the lease table.
async fn live_owners(sql: &tokio_postgres::Client, topic: &str) -> BTreeMap<i32, String> {
    sql.query(
        "SELECT l.partition, l.owner FROM partition_leases l
         JOIN consumer_members m ON m.topic = l.topic AND m.member_id = l.owner
         WHERE l.topic = $1 AND m.expires_at > now()",
        &[&topic],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Each replica's owned partitions, when all of them answer and together they own every one
/// of `0..partitions` exactly once.
async fn even_split(replicas: &[&Replica], partitions: i64) -> Option<Vec<BTreeSet<i64>>> {
    let mut all = Vec::new();
    for r in replicas {
        all.push(r.owned().await?);
    }
    let mut union = BTreeSet::new();
    let total: usize = all.iter().map(BTreeSet::len).sum();
    for s in &all {
        union.extend(s.iter().copied());
    }
    let n = replicas.len() as i64;
    let fair = all.iter().all(|s| {
        let len = s.len() as i64;
        len == partitions / n || len == partitions / n + i64::from(partitions % n != 0)
    });
    (total as i64 == partitions && union == (0..partitions).collect() && fair).then_some(all)
}

#[tokio::test]
async fn three_replicas_split_six_partitions_and_serve_each_others_orders_from_memory() {
    let (settings, producer) = topic_of(6).await;
    let sql = orders_postgres::testing::sql_client(&settings.postgres().unwrap()).await;
    // The default lease: nothing here needs a fast failover, and a loaded machine must not
    // make a replica miss its heartbeats.
    let replicas: Vec<Replica> = (0..3)
        .map(|_| Replica::start_with_lease(&settings, 5))
        .collect();
    let refs: Vec<&Replica> = replicas.iter().collect();

    let deadline = Instant::now() + Duration::from_secs(60);
    let split = loop {
        if let Some(split) = even_split(&refs, 6).await {
            break split;
        }
        assert!(
            Instant::now() < deadline,
            "3 replicas do not split 6 partitions within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(split.iter().all(|s| s.len() == 2), "{split:?}");
    // The lease table agrees: three live owners, two partitions each.
    let owners = live_owners(&sql, &settings.kafka_topic).await;
    assert_eq!(owners.len(), 6, "{owners:?}");
    let mut per_owner: BTreeMap<&String, usize> = BTreeMap::new();
    for o in owners.values() {
        *per_owner.entry(o).or_default() += 1;
    }
    assert_eq!(per_owner.values().copied().collect::<Vec<_>>(), [2, 2, 2]);

    // An order on partition 0 is stored by its owner; another replica serves it from memory.
    let owner = split.iter().position(|s| s.contains(&0)).unwrap();
    let other = &replicas[(owner + 1) % 3];
    let order = orders_domain::sample::generated_order("fresh-", 1, 2);
    producer
        .send_to(0, vec![Some(serde_json::to_vec(&order).unwrap())])
        .await
        .unwrap();
    wait_for("the order is stored", Duration::from_secs(30), || async {
        let n: i64 = sql
            .query_one(
                "SELECT count(*) FROM orders WHERE order_uid = 'fresh-1'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n == 1
    })
    .await;
    tokio::time::sleep(CACHE_SYNC_BOUND).await;
    let before = other.json("/cache/stats").await.unwrap();
    let got = other.get("/order/fresh-1").await.unwrap();
    assert_eq!(got.status(), 200);
    let served: orders_domain::Order = got.json().await.unwrap();
    assert_eq!(served, order);
    let after = other.json("/cache/stats").await.unwrap();
    assert_eq!(
        after["hits"].as_u64().unwrap(),
        before["hits"].as_u64().unwrap() + 1,
        "served from the cache: {before} -> {after}"
    );
    assert_eq!(after["misses"], before["misses"], "no read-through");
}

/// Sends `count` orders `chaos-N` round-robin over `partitions`, in rounds, pausing between
/// rounds so that ingestion runs while replicas come and go.
async fn produce(producer: OrderProducer, partitions: i32, count: u64, rounds: u64) {
    let per_round = count / rounds;
    for round in 0..rounds {
        let mut by_partition: Vec<Vec<Option<Vec<u8>>>> = vec![Vec::new(); partitions as usize];
        for i in 0..per_round {
            let n = round * per_round + i;
            let order = orders_domain::sample::generated_order("chaos-", n, 1);
            by_partition[(n % partitions as u64) as usize]
                .push(Some(serde_json::to_vec(&order).unwrap()));
        }
        for (p, values) in by_partition.into_iter().enumerate() {
            producer.send_to(p as i32, values).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

#[tokio::test]
async fn thirty_thousand_orders_stored_exactly_once_through_joins_stops_crashes_and_pauses() {
    const ORDERS: u64 = 30_000;
    const PARTITIONS: i32 = 6;
    let (settings, producer) = topic_of(PARTITIONS).await;
    let topic = settings.kafka_topic.clone();
    let sql = orders_postgres::testing::sql_client(&settings.postgres().unwrap()).await;
    // Every offset update that moves backwards is recorded here.
    sql.batch_execute(
        "CREATE TABLE offset_regressions (partition int, old bigint, new bigint);
         CREATE FUNCTION record_regression() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.next_offset < OLD.next_offset THEN
                 INSERT INTO offset_regressions VALUES (NEW.partition, OLD.next_offset, NEW.next_offset);
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER offsets_never_move_back BEFORE UPDATE ON consumer_offsets
             FOR EACH ROW EXECUTE FUNCTION record_regression();",
    )
    .await
    .unwrap();

    let sending = tokio::spawn(produce(producer, PARTITIONS, ORDERS, 30));
    let stored = || async {
        sql.query_one("SELECT count(*) FROM orders", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let progress = |at: i64| {
        let stored = &stored;
        async move {
            wait_for(
                &format!("{at} orders stored"),
                Duration::from_secs(120),
                || async { stored().await >= at },
            )
            .await;
        }
    };

    let a = Replica::start(&settings);
    progress(1_000).await;
    let b = Replica::start(&settings); // 1: join
    progress(4_000).await;
    let c = Replica::start(&settings); // 2: join
    progress(8_000).await;
    a.stop(); // 3: SIGTERM
    // It left at once: its member row is gone and none of its leases is held any more.
    let members: i64 = sql
        .query_one(
            "SELECT count(*) FROM consumer_members WHERE topic = $1",
            &[&topic],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(members, 2, "the stopped replica left the members");
    let orphans: i64 = sql
        .query_one(
            "SELECT count(*) FROM partition_leases l WHERE l.topic = $1 AND l.owner IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM consumer_members m
                             WHERE m.topic = l.topic AND m.member_id = l.owner)",
            &[&topic],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(orphans, 0, "the stopped replica's leases were released");
    progress(12_000).await;
    b.signal("KILL"); // 4: kill -9
    drop(b);
    let d = Replica::start(&settings); // 5: join
    progress(16_000).await;
    // 6: paused past its lease, then resumed: its partitions went to d meanwhile.
    c.signal("STOP");
    tokio::time::sleep(Duration::from_secs(LEASE_TTL_SECS * 2 + 1)).await;
    c.signal("CONT");
    progress(20_000).await;
    let e = Replica::start(&settings); // 7: join
    sending.await.unwrap();

    let kafka = KafkaSource::connect(settings.kafka().unwrap())
        .await
        .unwrap();
    let mut watermarks = BTreeMap::new();
    for p in 0..PARTITIONS {
        watermarks.insert(p, kafka.high_watermark(p).await.unwrap());
    }
    assert_eq!(watermarks.values().sum::<i64>(), ORDERS as i64);
    let repo = orders_postgres::PgRepository::connect(&settings.postgres().unwrap())
        .await
        .unwrap();
    use orders_domain::OrderRepository;
    wait_for(
        "every partition's stored offset at its high watermark",
        Duration::from_secs(180),
        || async { repo.stored_offsets(&topic).await.unwrap() == watermarks },
    )
    .await;

    let count = |q: &'static str| {
        let sql = &sql;
        async move { sql.query_one(q, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM orders").await, ORDERS as i64);
    assert_eq!(
        count("SELECT count(*) FROM orders WHERE order_uid LIKE 'chaos-%'").await,
        ORDERS as i64
    );
    assert_eq!(
        count("SELECT count(*) FROM items").await,
        ORDERS as i64,
        "one item per order, none twice"
    );
    assert_eq!(
        count("SELECT count(*) FROM rejected_messages").await,
        0,
        "no spurious rejection (a re-read never records a duplicate)"
    );
    assert_eq!(
        count("SELECT count(*) FROM offset_regressions").await,
        0,
        "no stored offset ever moved backwards"
    );

    // The paused replica found its leases gone when it woke, and gave them up.
    assert!(
        c.metric("orders_consumer_lease_changes_total{change=\"lost\"}")
            .await
            >= 1.0
    );
    // The three live replicas end with two partitions each.
    let live = [&c, &d, &e];
    wait_for(
        "the 3 live replicas own 2 each",
        Duration::from_secs(30),
        || async { even_split(&live, PARTITIONS.into()).await.is_some() },
    )
    .await;
}
