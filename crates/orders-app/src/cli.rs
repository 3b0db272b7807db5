//! Operator commands: migrations and rejected messages without SQL.
#![allow(clippy::print_stdout)]

use std::sync::Arc;

use orders_domain::{IngestService, OrderRepository, RejectedFilter};

use crate::config::{RejectedCommand, Settings};
use crate::startup::connect_database;

pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    connect_database(settings).await?;
    println!("migrations applied to {}", settings.postgres().display());
    Ok(())
}

fn excerpt(payload: Option<&[u8]>) -> String {
    match payload {
        None => "(no value)".into(),
        Some(b) => {
            let text =
                String::from_utf8_lossy(&b[..b.len().min(80)]).replace(['\n', '\r', '\t'], " ");
            if b.len() > 80 {
                format!("{text}…")
            } else {
                text
            }
        }
    }
}

pub async fn rejected(settings: &Settings, cmd: RejectedCommand) -> anyhow::Result<()> {
    let repo = Arc::new(connect_database(settings).await?);
    match cmd {
        RejectedCommand::List { reason, limit } => {
            let rows = repo
                .rejected(&RejectedFilter {
                    reason,
                    after_id: None,
                    up_to_id: None,
                    limit,
                })
                .await?;
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
                println!(
                    "{:>8}  {:<24} {:<16} {:<60} {}",
                    r.id,
                    pos,
                    r.reason,
                    detail,
                    excerpt(r.payload.as_deref())
                );
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
        RejectedCommand::Replay { reason } => {
            let cache = Arc::new(orders_cache::DashCache::new(1));
            let ingest =
                IngestService::new(repo, cache).with_max_message_bytes(settings.max_message_bytes);
            let report = ingest.replay(reason).await?;
            println!(
                "replayed {} rejected messages: {} stored as orders, {} duplicates, {} still rejected",
                report.examined, report.stored, report.duplicates, report.still_rejected
            );
        }
    }
    Ok(())
}
