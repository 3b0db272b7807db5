//! The benchmark's input: generated orders as the messages a broker would hand the service,
//! split the way the service receives them (partitions, then fetch-sized batches).

use bytes::Bytes;
use orders_domain::sample::mixed_order;
use orders_domain::{FetchedBatch, Order, RawMessage};

/// Orders and their JSON messages.
pub(crate) struct Dataset {
    pub(crate) orders: Vec<Order>,
    pub(crate) payloads: Vec<Bytes>,
}

impl Dataset {
    /// `n` generated orders with 1, 3 or 10 items (the producer's mix), uids `{prefix}{i}`.
    pub(crate) fn generate(prefix: &str, n: usize) -> anyhow::Result<Self> {
        let orders: Vec<Order> = (0..n as u64).map(|i| mixed_order(prefix, i)).collect();
        let payloads = orders
            .iter()
            .map(|o| serde_json::to_vec(o).map(Bytes::from))
            .collect::<Result<_, _>>()?;
        Ok(Self { orders, payloads })
    }

    /// Rows one order set writes: orders, deliveries and payments one each, plus the items.
    pub(crate) fn rows(orders: &[Order]) -> u64 {
        orders.iter().map(|o| 3 + o.items.len() as u64).sum()
    }
}

/// Indexes of the dataset per stream (partition), then per batch.
pub(crate) type Plan = Vec<Vec<Vec<usize>>>;

/// Deals messages to `streams` partitions in contiguous chunks of `chunk` (as the producer
/// does), then cuts each partition into batches of at most `max_bytes` of payload (as a fetch
/// of `FETCH_MAX_BYTES` does; a batch always holds at least one message).
pub(crate) fn plan(payloads: &[Bytes], streams: usize, chunk: usize, max_bytes: usize) -> Plan {
    let streams = streams.max(1);
    let mut per_stream: Vec<Vec<usize>> = vec![Vec::new(); streams];
    for (i, start) in (0..payloads.len()).step_by(chunk.max(1)).enumerate() {
        let end = (start + chunk).min(payloads.len());
        per_stream[i % streams].extend(start..end);
    }
    per_stream
        .into_iter()
        .map(|indexes| {
            let mut batches = Vec::new();
            let mut current: Vec<usize> = Vec::new();
            let mut bytes = 0;
            for i in indexes {
                let len = payloads[i].len();
                if !current.is_empty() && bytes + len > max_bytes {
                    batches.push(std::mem::take(&mut current));
                    bytes = 0;
                }
                bytes += len;
                current.push(i);
            }
            if !current.is_empty() {
                batches.push(current);
            }
            batches
        })
        .collect()
}

/// One stream's (partition's) batches of the plan as fetched batches, offsets counted from 0;
/// each record's value a copy of its own, as a source's are (the cache keeps it).
pub(crate) fn fetched_batches(
    payloads: &[Bytes],
    partition: usize,
    batches: &[Vec<usize>],
) -> Vec<FetchedBatch> {
    let mut offset = 0i64;
    batches
        .iter()
        .map(|batch| {
            let records: Vec<RawMessage> = batch
                .iter()
                .map(|&i| {
                    let m = RawMessage {
                        offset,
                        value: Some(Bytes::copy_from_slice(&payloads[i])),
                    };
                    offset += 1;
                    m
                })
                .collect();
            FetchedBatch {
                partition: partition as i32,
                records,
                next_offset: offset,
                high_watermark: offset,
            }
        })
        .collect()
}
