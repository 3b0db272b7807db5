//! Operator commands: migrations and rejected messages without SQL.
#![allow(clippy::print_stdout)]

use std::sync::Arc;

use orders_domain::validation::escape_control;
use orders_domain::{OrderRepository, RejectedFilter, RejectedMessage};

use crate::config::{RejectedCommand, Settings};
use crate::startup::connect_database;

pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    connect_database(settings).await?;
    println!("migrations applied to {}", settings.postgres()?.display());
    Ok(())
}

fn excerpt(r: &RejectedMessage) -> String {
    let Some(b) = r.payload.as_deref() else {
        return "(no value)".into();
    };
    let mut text = escape_control(&String::from_utf8_lossy(&b[..b.len().min(80)])).into_owned();
    if b.len() > 80 {
        text.push('…');
    }
    match &r.truncated {
        Some(t) => format!("{text} [excerpt of {} bytes, sha256 {}]", t.size, t.sha256),
        None => text,
    }
}

/// Where each partition of the topic stands: stored next offset, high watermark, lag.
pub async fn partitions(settings: &Settings) -> anyhow::Result<()> {
    use orders_domain::OrderSource;
    let repo = connect_database(settings).await?;
    let kafka = settings.kafka()?;
    let source = orders_kafka::KafkaSource::connect(kafka.clone()).await?;
    let partitions = source.partitions().await?;
    let stored = repo.stored_offsets(&kafka.topic).await?;
    let owners = repo.partition_owners(&kafka.topic).await?;
    println!(
        "{:>9}  {:<32}  {:<24}  {:>14}  {:>14}  {:>10}",
        "partition", "owner", "lease expires", "stored offset", "high watermark", "lag"
    );
    for p in partitions {
        let offset = stored.get(&p).copied();
        let high = source.high_watermark(p).await;
        let show = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let lag = high.map(|h| h - offset.unwrap_or(0));
        let (owner, expires) = match owners.get(&p) {
            Some(o) => match &o.owner {
                Some(name) => (
                    escape_control(name).to_string(),
                    match o.expires_at {
                        Some(t) if o.alive => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                        Some(_) => "lapsed".to_owned(),
                        None => "left".to_owned(),
                    },
                ),
                None => ("-".to_owned(), "-".to_owned()),
            },
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "{p:>9}  {owner:<32}  {expires:<24}  {:>14}  {:>14}  {:>10}",
            show(offset),
            show(high),
            show(lag)
        );
    }
    Ok(())
}

pub async fn rejected(settings: &Settings, cmd: RejectedCommand) -> anyhow::Result<()> {
    let repo = Arc::new(connect_database(settings).await?);
    match cmd {
        RejectedCommand::List {
            reason,
            limit,
            after_id,
        } => {
            let rows = repo
                .rejected(&RejectedFilter {
                    reason,
                    after_id,
                    up_to_id: None,
                    limit,
                })
                .await?;
            let last = rows.last().map(|r| r.id);
            println!(
                "{:>8}  {:<24} {:<16} {:<60} payload",
                "id", "position", "reason", "detail"
            );
            for r in rows {
                let pos = format!(
                    "{}/{}@{}",
                    r.position.topic, r.position.partition, r.position.offset
                );
                let detail: String = r.detail.chars().take(60).collect();
                let detail = escape_control(&detail);
                println!(
                    "{:>8}  {:<24} {:<16} {:<60} {}",
                    r.id,
                    pos,
                    r.reason,
                    detail,
                    excerpt(&r)
                );
            }
            if let Some(last) = last.filter(|_| limit > 0) {
                println!("next page: orders rejected list --after-id {last}");
            }
        }
        RejectedCommand::Counts => {
            let counts = repo.rejected_counts().await?;
            if counts.is_empty() {
                println!("no rejected messages");
            }
            for (reason, n) in counts {
                println!("{reason:<16} {n}");
            }
        }
        RejectedCommand::Replay {
            reason,
            unknown_fields,
        } => {
            let cache = Arc::new(orders_cache::DashCache::new(1));
            let ingest = settings
                .ingest(repo, cache)
                .with_unknown_fields(unknown_fields.unwrap_or(settings.unknown_fields));
            let policy = ingest.unknown_fields();
            let report = ingest.replay(reason).await?;
            println!(
                "replayed {} rejected messages: {} stored as orders, {} duplicates, {} still rejected ({} refused by the database); unknown fields: {policy}",
                report.examined,
                report.stored,
                report.duplicates,
                report.still_rejected,
                report.refused
            );
        }
    }
    Ok(())
}
