//! Where each partition stands: its stored next offset and the mark of its last record.

use std::collections::BTreeMap;

use deadpool_postgres::Object;
use orders_domain::{RecordMark, RepositoryError};

use crate::error::map_pg;

pub(super) async fn stored_offsets(
    client: &Object,
    topic: &str,
) -> Result<BTreeMap<i32, i64>, RepositoryError> {
    let rows = client
        .query(
            "SELECT partition, next_offset FROM consumer_offsets WHERE topic = $1",
            &[&topic],
        )
        .await
        .map_err(|e| map_pg("reading consumer offsets", e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub(super) async fn offset_marks(
    client: &Object,
    topic: &str,
) -> Result<BTreeMap<i32, RecordMark>, RepositoryError> {
    let rows = client
        .query(
            "SELECT partition, mark_offset, mark_digest FROM consumer_offsets
                 WHERE topic = $1 AND mark_offset IS NOT NULL AND mark_digest IS NOT NULL",
            &[&topic],
        )
        .await
        .map_err(|e| map_pg("reading offset marks", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                RecordMark {
                    offset: r.get(1),
                    digest: r.get(2),
                },
            )
        })
        .collect())
}
