//! Throwaway databases and the two storage baselines: naive per-row inserts and binary COPY.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::try_join_all;
use orders_domain::{Order, Text};
use orders_postgres::PgConfig;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls};

use crate::data::Plan;

/// A database of its own for one measurement, dropped by [`BenchDb::drop_now`].
pub(crate) struct BenchDb {
    pub(crate) config: PgConfig,
    admin: PgConfig,
}

fn pg(config: &PgConfig) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host(&config.host)
        .port(config.port)
        .user(&config.user)
        .password(config.password.expose())
        .dbname(&config.dbname)
        .application_name("orders-bench")
        .connect_timeout(config.connect_timeout);
    c
}

/// A plain connection; its driver task runs until the client is dropped.
pub(crate) async fn client(config: &PgConfig) -> anyhow::Result<Client> {
    let (client, conn) = pg(config)
        .connect(NoTls)
        .await
        .with_context(|| format!("connecting to {}", config.display()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

impl BenchDb {
    /// Creates `orders_bench_<random>` on the server `admin` points at, with the service's schema.
    pub(crate) async fn create(admin: &PgConfig) -> anyhow::Result<Self> {
        let name = format!("orders_bench_{}", uuid::Uuid::new_v4().simple());
        client(admin)
            .await
            .context("PostgreSQL not reachable (just db-up starts one)")?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("creating database {name}"))?;
        let config = PgConfig {
            dbname: name,
            ..admin.clone()
        };
        // The service's own migrations, so every baseline writes to the same tables.
        orders_postgres::PgRepository::connect(&config)
            .await?
            .close();
        Ok(Self {
            config,
            admin: admin.clone(),
        })
    }

    pub(crate) async fn drop_now(self) -> anyhow::Result<()> {
        client(&self.admin)
            .await?
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.config.dbname
            ))
            .await
            .with_context(|| format!("dropping {}", self.config.dbname))
    }
}

/// One transaction per order, one INSERT per row, prepared statements: what a simple service
/// does. `streams` connections write in parallel.
pub(crate) async fn naive(
    config: &PgConfig,
    orders: &[Order],
    streams: usize,
) -> anyhow::Result<Duration> {
    let chunk = orders.len().div_ceil(streams.max(1)).max(1);
    let mut clients = Vec::new();
    for _ in 0..streams.max(1) {
        clients.push(client(config).await?);
    }
    let started = Instant::now();
    try_join_all(
        clients
            .iter_mut()
            .zip(orders.chunks(chunk))
            .map(|(c, part)| naive_stream(c, part)),
    )
    .await?;
    Ok(started.elapsed())
}

async fn naive_stream(client: &mut Client, orders: &[Order]) -> anyhow::Result<()> {
    let ins_order = client
        .prepare(
            "INSERT INTO orders (order_uid, track_number, entry, locale, internal_signature,
                customer_id, delivery_service, shardkey, sm_id, date_created, oof_shard,
                source_topic, source_partition, source_offset)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .await?;
    let ins_delivery = client
        .prepare(
            "INSERT INTO deliveries (order_uid, name, phone, zip, city, address, region, email)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await?;
    let ins_payment = client
        .prepare(
            "INSERT INTO payments (order_uid, transaction, request_id, currency, provider, amount,
                payment_dt, bank, delivery_cost, goods_total, custom_fee)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .await?;
    let ins_item = client
        .prepare(
            "INSERT INTO items (order_uid, position, chrt_id, track_number, price, rid, name,
                sale, size, total_price, nm_id, brand, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .await?;
    for (n, o) in orders.iter().enumerate() {
        let tx = client.transaction().await?;
        let offset = n as i64;
        tx.execute(&ins_order, &order_row(o, &order_texts(o), &0, &offset))
            .await?;
        tx.execute(&ins_delivery, &delivery_row(&delivery_texts(o)))
            .await?;
        tx.execute(&ins_payment, &payment_row(o, &payment_texts(o)))
            .await?;
        for (i, it) in o.items.iter().enumerate() {
            let pos = i as i32;
            tx.execute(&ins_item, &item_row(&item_texts(o, it), &pos, it))
                .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

const TOPIC: &str = "bench";

/// The text fields of a row as `&str`, which tokio-postgres encodes (the model's `Text` has no
/// `ToSql`); the row functions below borrow them.
fn strs<const N: usize>(fields: [&Text; N]) -> [&str; N] {
    fields.map(Text::as_str)
}

fn order_texts(o: &Order) -> [&str; 9] {
    strs([
        &o.order_uid,
        &o.track_number,
        &o.entry,
        &o.locale,
        &o.internal_signature,
        &o.customer_id,
        &o.delivery_service,
        &o.shardkey,
        &o.oof_shard,
    ])
}

fn order_row<'a>(
    o: &'a Order,
    s: &'a [&'a str; 9],
    partition: &'a i32,
    offset: &'a i64,
) -> [&'a (dyn ToSql + Sync); 14] {
    [
        &s[0],
        &s[1],
        &s[2],
        &s[3],
        &s[4],
        &s[5],
        &s[6],
        &s[7],
        &o.sm_id,
        &o.date_created,
        &s[8],
        &TOPIC,
        partition,
        offset,
    ]
}

fn delivery_texts(o: &Order) -> [&str; 8] {
    let d = &o.delivery;
    strs([
        &o.order_uid,
        &d.name,
        &d.phone,
        &d.zip,
        &d.city,
        &d.address,
        &d.region,
        &d.email,
    ])
}

fn delivery_row<'a>(s: &'a [&'a str; 8]) -> [&'a (dyn ToSql + Sync); 8] {
    [&s[0], &s[1], &s[2], &s[3], &s[4], &s[5], &s[6], &s[7]]
}

fn payment_texts(o: &Order) -> [&str; 6] {
    let p = &o.payment;
    strs([
        &o.order_uid,
        &p.transaction,
        &p.request_id,
        &p.currency,
        &p.provider,
        &p.bank,
    ])
}

fn payment_row<'a>(o: &'a Order, s: &'a [&'a str; 6]) -> [&'a (dyn ToSql + Sync); 11] {
    let p = &o.payment;
    [
        &s[0],
        &s[1],
        &s[2],
        &s[3],
        &s[4],
        &p.amount,
        &p.payment_dt,
        &s[5],
        &p.delivery_cost,
        &p.goods_total,
        &p.custom_fee,
    ]
}

fn item_texts<'a>(o: &'a Order, it: &'a orders_domain::Item) -> [&'a str; 6] {
    strs([
        &o.order_uid,
        &it.track_number,
        &it.rid,
        &it.name,
        &it.size,
        &it.brand,
    ])
}

fn item_row<'a>(
    s: &'a [&'a str; 6],
    pos: &'a i32,
    it: &'a orders_domain::Item,
) -> [&'a (dyn ToSql + Sync); 13] {
    [
        &s[0],
        pos,
        &it.chrt_id,
        &s[1],
        &it.price,
        &s[2],
        &s[3],
        &it.sale,
        &s[4],
        &it.total_price,
        &it.nm_id,
        &s[5],
        &it.status,
    ]
}

/// Binary `COPY` of the same rows into the same tables, one transaction per batch of the
/// plan, one connection per stream: about what PostgreSQL can take. The orders are decoded
/// already, so this is the storage cost alone.
pub(crate) async fn copy(
    config: &PgConfig,
    orders: &[Order],
    plan: &Plan,
) -> anyhow::Result<Duration> {
    let mut clients = Vec::new();
    for _ in plan {
        clients.push(client(config).await?);
    }
    let started = Instant::now();
    try_join_all(
        clients
            .iter_mut()
            .zip(plan.iter().enumerate())
            .map(|(c, (partition, batches))| copy_stream(c, orders, partition as i32, batches)),
    )
    .await?;
    Ok(started.elapsed())
}

async fn copy_stream(
    client: &mut Client,
    orders: &[Order],
    partition: i32,
    batches: &[Vec<usize>],
) -> anyhow::Result<()> {
    use Type as T;
    const ORDER_TYPES: [Type; 14] = [
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::INT8,
        T::TIMESTAMPTZ,
        T::TEXT,
        T::TEXT,
        T::INT4,
        T::INT8,
    ];
    const PAYMENT_TYPES: [Type; 11] = [
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::INT8,
        T::INT8,
        T::TEXT,
        T::INT8,
        T::INT8,
        T::INT8,
    ];
    const ITEM_TYPES: [Type; 13] = [
        T::TEXT,
        T::INT4,
        T::INT8,
        T::TEXT,
        T::INT8,
        T::TEXT,
        T::TEXT,
        T::INT4,
        T::TEXT,
        T::INT8,
        T::INT8,
        T::TEXT,
        T::INT4,
    ];
    async fn writer<'t>(
        tx: &tokio_postgres::Transaction<'_>,
        sql: &str,
        types: &'t [Type],
    ) -> anyhow::Result<ChunkedCopy<'t>> {
        ChunkedCopy::new(tx.copy_in(sql).await?, types)
    }

    let mut offset = 0i64;
    for batch in batches {
        let tx = client.transaction().await?;
        let mut w = writer(
            &tx,
            "COPY orders (order_uid, track_number, entry, locale, internal_signature,
                customer_id, delivery_service, shardkey, sm_id, date_created, oof_shard,
                source_topic, source_partition, source_offset) FROM STDIN (FORMAT binary)",
            &ORDER_TYPES,
        )
        .await?;
        for &i in batch {
            let o = &orders[i];
            w.write(&order_row(o, &order_texts(o), &partition, &offset))
                .await?;
            offset += 1;
        }
        w.finish().await?;

        let mut w = writer(
            &tx,
            "COPY deliveries (order_uid, name, phone, zip, city, address, region, email)
             FROM STDIN (FORMAT binary)",
            &[T::TEXT; 8],
        )
        .await?;
        for &i in batch {
            w.write(&delivery_row(&delivery_texts(&orders[i]))).await?;
        }
        w.finish().await?;

        let mut w = writer(
            &tx,
            "COPY payments (order_uid, transaction, request_id, currency, provider, amount,
                payment_dt, bank, delivery_cost, goods_total, custom_fee)
             FROM STDIN (FORMAT binary)",
            &PAYMENT_TYPES,
        )
        .await?;
        for &i in batch {
            let o = &orders[i];
            w.write(&payment_row(o, &payment_texts(o))).await?;
        }
        w.finish().await?;

        let mut w = writer(
            &tx,
            "COPY items (order_uid, position, chrt_id, track_number, price, rid, name, sale,
                size, total_price, nm_id, brand, status) FROM STDIN (FORMAT binary)",
            &ITEM_TYPES,
        )
        .await?;
        for &i in batch {
            let o = &orders[i];
            for (pos, it) in o.items.iter().enumerate() {
                let pos = pos as i32;
                w.write(&item_row(&item_texts(o, it), &pos, it)).await?;
            }
        }
        w.finish().await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Binary COPY rows encoded as tokio-postgres's `BinaryCopyInWriter` does (each field by its
/// `ToSql`), but handed to the connection 256 KiB at a time instead of every 4 KiB: the
/// limit the sink path is compared with should be COPY at its cheapest for PostgreSQL too
/// (small messages cost the server about a tenth more per row).
struct ChunkedCopy<'t> {
    sink: std::pin::Pin<Box<tokio_postgres::CopyInSink<bytes::Bytes>>>,
    buf: bytes::BytesMut,
    types: &'t [Type],
}

impl<'t> ChunkedCopy<'t> {
    const CHUNK: usize = 256 * 1024;

    fn new(
        sink: tokio_postgres::CopyInSink<bytes::Bytes>,
        types: &'t [Type],
    ) -> anyhow::Result<Self> {
        use bytes::BufMut;
        let mut buf = bytes::BytesMut::with_capacity(Self::CHUNK + 4096);
        buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        buf.put_i32(0);
        buf.put_i32(0);
        Ok(Self {
            sink: Box::pin(sink),
            buf,
            types,
        })
    }

    async fn write(&mut self, row: &[&(dyn ToSql + Sync)]) -> anyhow::Result<()> {
        use bytes::BufMut;
        use futures::SinkExt;
        anyhow::ensure!(
            row.len() == self.types.len(),
            "row and types differ in length"
        );
        self.buf.put_i16(i16::try_from(row.len())?);
        for (value, ty) in row.iter().zip(self.types) {
            let at = self.buf.len();
            self.buf.put_i32(0);
            let len = match value
                .to_sql_checked(ty, &mut self.buf)
                .map_err(|e| anyhow::anyhow!("encoding a COPY field: {e}"))?
            {
                IsNull::Yes => -1,
                IsNull::No => i32::try_from(self.buf.len() - at - 4)?,
            };
            self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        if self.buf.len() >= Self::CHUNK {
            let chunk = self.buf.split().freeze();
            self.sink.send(chunk).await?;
        }
        Ok(())
    }

    async fn finish(mut self) -> anyhow::Result<u64> {
        use bytes::BufMut;
        use futures::SinkExt;
        self.buf.put_i16(-1);
        let rest = self.buf.split().freeze();
        self.sink.send(rest).await?;
        Ok(self.sink.as_mut().finish().await?)
    }
}

/// Stores `count` generated orders (uids `{prefix}{i}`, the benchmark's item mix) by binary
/// COPY over 3 connections, generated a chunk at a time so that a million orders never sit in
/// memory at once. Quick enough to give the warm-up section a million orders to read.
pub(crate) async fn copy_generated(
    config: &PgConfig,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Duration> {
    const CHUNK: usize = 30_000;
    const BATCH: usize = 2_500;
    const STREAMS: usize = 3;
    let mut took = Duration::ZERO;
    for start in (0..count).step_by(CHUNK) {
        let end = (start + CHUNK).min(count);
        let orders: Vec<Order> = (start as u64..end as u64)
            .map(|i| orders_domain::sample::mixed_order(prefix, i))
            .collect();
        let mut plan: Plan = vec![Vec::new(); STREAMS];
        for (b, first) in (0..orders.len()).step_by(BATCH).enumerate() {
            plan[b % STREAMS].push((first..(first + BATCH).min(orders.len())).collect());
        }
        plan.retain(|stream| !stream.is_empty());
        took += copy(config, &orders, &plan).await?;
    }
    Ok(took)
}

/// Lets the server settle before a measurement: a checkpoint (so the previous variant's WAL is
/// not flushed during this one) and no autovacuum worker running (they would work on the
/// previous variant's tables during this one), waiting at most 60 s for the latter.
pub(crate) async fn settle(admin: &PgConfig) -> anyhow::Result<()> {
    let sql = client(admin).await?;
    if let Err(e) = sql.batch_execute("CHECKPOINT").await {
        // Needs superuser or pg_checkpoint; the figures are noisier without it.
        tracing::warn!(error = %e, "cannot CHECKPOINT before a measurement");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let workers: i64 = sql
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'",
                &[],
            )
            .await?
            .get(0);
        if workers == 0 {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            tracing::warn!(
                workers,
                "autovacuum still running after 60 s; measuring anyway"
            );
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
