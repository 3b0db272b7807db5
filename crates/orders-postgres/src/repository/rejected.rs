//! The rejected messages, for the operator commands and replay.

use std::collections::BTreeMap;

use bytes::Bytes;
use deadpool_postgres::Object;
use orders_domain::{
    PayloadDigest, Position, RejectReason, RejectedFilter, RejectedMessage, RepositoryError, Text,
};

use crate::error::map_pg;

pub(super) async fn rejected(
    client: &Object,
    filter: &RejectedFilter,
) -> Result<Vec<RejectedMessage>, RepositoryError> {
    let reason = filter.reason.map(RejectReason::as_str);
    let after = filter.after_id.unwrap_or(0);
    let up_to = filter.up_to_id.unwrap_or(i64::MAX);
    let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "SELECT id, topic, partition, \"offset\", reason, detail, payload, received_at,
                    payload_size, payload_sha256
             FROM rejected_messages
             WHERE ($1::text IS NULL OR reason = $1) AND id > $2 AND id <= $4
             ORDER BY id LIMIT $3",
            &[&reason, &after, &limit, &up_to],
        )
        .await
        .map_err(|e| map_pg("reading rejected messages", e))?;
    Ok(rows
        .iter()
        .map(|r| RejectedMessage {
            id: r.get(0),
            position: Position {
                topic: Text::from(r.get::<_, &str>(1)),
                partition: r.get(2),
                offset: r.get(3),
            },
            reason: r.get(4),
            detail: r.get(5),
            payload: r.get::<_, Option<Vec<u8>>>(6).map(Bytes::from),
            received_at: r.get(7),
            truncated: match (r.get(8), r.get(9)) {
                (Some(size), Some(sha256)) => Some(PayloadDigest { size, sha256 }),
                _ => None,
            },
        })
        .collect())
}

pub(super) async fn last_rejected_id(client: &Object) -> Result<Option<i64>, RepositoryError> {
    client
        .query_one("SELECT max(id) FROM rejected_messages", &[])
        .await
        .map(|r| r.get(0))
        .map_err(|e| map_pg("reading the last rejected id", e))
}

pub(super) async fn rejected_counts(
    client: &Object,
) -> Result<BTreeMap<String, i64>, RepositoryError> {
    let rows = client
        .query(
            "SELECT reason, count(*) FROM rejected_messages GROUP BY reason",
            &[],
        )
        .await
        .map_err(|e| map_pg("counting rejected messages", e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
