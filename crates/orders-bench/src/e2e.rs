//! Section 2 (end to end): orders on the broker, the service started, time until every offset
//! is committed; beside it the broker's raw fetch rate of the same topic in the same run.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::future::try_join_all;
use orders_app::{Application, Settings};
use orders_domain::OrderSource;
use orders_kafka::{KafkaConfig, KafkaSource, OrderProducer};
use serde::Serialize;

use crate::db::{self, BenchDb};
use crate::stats::CpuSplit;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct E2eResults {
    pub(crate) orders: u64,
    pub(crate) partitions: usize,
    pub(crate) produce_secs: f64,
    /// Fetching every record of the topic with the service's fetch settings, no decoding.
    pub(crate) raw_fetch_secs: f64,
    pub(crate) raw_fetches: u64,
    /// From `Application::build` until the stored offsets reach the end of every partition.
    pub(crate) service_secs: f64,
    /// CPU seconds of the broker, the database and the service during the raw fetch.
    pub(crate) raw_fetch_cpu: CpuSplit,
    /// The same during the service's run.
    pub(crate) service_cpu: CpuSplit,
}

impl E2eResults {
    pub(crate) fn raw_fetch_rate(&self) -> f64 {
        self.orders as f64 / self.raw_fetch_secs
    }
    pub(crate) fn service_rate(&self) -> f64 {
        self.orders as f64 / self.service_secs
    }
    pub(crate) fn records_per_fetch(&self) -> f64 {
        self.orders as f64 / self.raw_fetches as f64
    }
}

pub(crate) async fn run(
    base: &Settings,
    admin: &orders_postgres::PgConfig,
    payloads: &[Bytes],
    limit: Duration,
) -> anyhow::Result<E2eResults> {
    let topic = format!(
        "bench-e2e-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let kafka = KafkaConfig {
        topic: topic.clone(),
        create_topic_partitions: Some(base.kafka_partitions),
        ..base.kafka()?
    };
    tracing::info!(%topic, orders = payloads.len(), "end to end: producing");
    let mut producer = OrderProducer::connect(&kafka).await.with_context(|| {
        format!(
            "Kafka broker not reachable at {} (just broker-up)",
            base.kafka_broker
        )
    })?;
    let started = Instant::now();
    for chunk in payloads.chunks(10_000) {
        producer
            .send(chunk.iter().map(|p| Some(p.to_vec())).collect())
            .await?;
    }
    let produce_secs = started.elapsed().as_secs_f64();

    tracing::info!("end to end: broker raw fetch");
    let source = KafkaSource::connect(kafka.clone()).await?;
    let partitions = source.partitions().await?;
    let cpu = CpuSplit::now();
    let started = Instant::now();
    let per_partition = try_join_all(partitions.iter().map(|&p| {
        let source = &source;
        async move {
            let (mut offset, mut records, mut fetches) = (0i64, 0u64, 0u64);
            loop {
                let batch = source.fetch(p, offset).await?;
                fetches += 1;
                records += batch.records.len() as u64;
                offset = batch.next_offset;
                if offset >= batch.high_watermark {
                    return anyhow::Ok((records, fetches));
                }
            }
        }
    }))
    .await?;
    let raw_fetch_secs = started.elapsed().as_secs_f64();
    let raw_fetch_cpu = CpuSplit::now().since(cpu);
    let fetched: u64 = per_partition.iter().map(|r| r.0).sum();
    anyhow::ensure!(
        fetched == payloads.len() as u64,
        "raw fetch read {fetched} of {} records",
        payloads.len()
    );

    tracing::info!("end to end: the service");
    let db = BenchDb::create(admin).await?;
    let sql = db::client(&db.config).await?;
    let settings = Settings {
        db_name: db.config.dbname.clone(),
        kafka_topic: topic.clone(),
        create_topic: false,
        consume: true,
        http_host: "127.0.0.1".into(),
        http_port: 0,
        ..base.clone()
    };
    let want = payloads.len() as i64;
    let cpu = CpuSplit::now();
    let started = Instant::now();
    let app = Application::build(settings).await?;
    let shutdown = app.shutdown_handle();
    let task = tokio::spawn(app.run_until_stopped());
    loop {
        let done: i64 = sql
            .query_one(
                "SELECT coalesce(sum(next_offset), 0)::int8 FROM consumer_offsets WHERE topic = $1",
                &[&topic],
            )
            .await?
            .get(0);
        if done >= want {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "end to end: {done} of {want} committed after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let service_secs = started.elapsed().as_secs_f64();
    let service_cpu = CpuSplit::now().since(cpu);
    shutdown.shutdown();
    task.await??;
    let stored: i64 = sql
        .query_one("SELECT count(*) FROM orders", &[])
        .await?
        .get(0);
    anyhow::ensure!(stored == want, "end to end stored {stored} of {want}");
    drop(sql);
    db.drop_now().await?;
    Ok(E2eResults {
        orders: want as u64,
        partitions: partitions.len(),
        produce_secs,
        raw_fetch_secs,
        raw_fetches: per_partition.iter().map(|r| r.1).sum(),
        service_secs,
        raw_fetch_cpu,
        service_cpu,
    })
}
