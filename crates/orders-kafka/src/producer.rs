use chrono::Utc;
use rskafka::client::Client;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;

use crate::config::KafkaConfig;
use crate::error::KafkaError;
use crate::source::{build_client, ensure_topic, topic_partitions};

/// Sends messages to every partition of a topic in batches.
pub struct OrderProducer {
    _client: Client,
    partitions: Vec<PartitionClient>,
    next: usize,
}

impl std::fmt::Debug for OrderProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderProducer")
            .field("partitions", &self.partitions.len())
            .finish()
    }
}

/// Records per produce request: large enough to amortise the round trip.
const PRODUCE_CHUNK: usize = 500;

impl OrderProducer {
    /// Connects and discovers the topic's partitions (creating the topic if configured).
    pub async fn connect(config: &KafkaConfig) -> Result<Self, KafkaError> {
        let client = build_client(config).await?;
        ensure_topic(&client, config).await?;
        let ids = topic_partitions(&client, config)
            .await?
            .ok_or_else(|| KafkaError::UnknownTopic(config.topic.clone()))?;
        let mut partitions = Vec::with_capacity(ids.len());
        for p in ids {
            partitions.push(
                client
                    .partition_client(config.topic.clone(), p, UnknownTopicHandling::Retry)
                    .await
                    .map_err(|source| KafkaError::Request {
                        context: "connecting to a partition",
                        source,
                    })?,
            );
        }
        if partitions.is_empty() {
            return Err(KafkaError::UnknownTopic(config.topic.clone()));
        }
        Ok(Self {
            _client: client,
            partitions,
            next: 0,
        })
    }

    pub fn partition_count(&self) -> usize {
        self.partitions.len()
    }

    /// Sends `values` (a `None` is a tombstone) to one partition, in order; returns their offsets.
    pub async fn send_to(
        &self,
        partition: i32,
        values: Vec<Option<Vec<u8>>>,
    ) -> Result<Vec<i64>, KafkaError> {
        let pc = self
            .partitions
            .iter()
            .find(|p| p.partition() == partition)
            .ok_or_else(|| KafkaError::UnknownTopic(format!("partition {partition}")))?;
        let mut offsets = Vec::with_capacity(values.len());
        let mut values = values.into_iter().peekable();
        while values.peek().is_some() {
            let records: Vec<Record> = values
                .by_ref()
                .take(PRODUCE_CHUNK)
                .map(|value| Record {
                    key: None,
                    value,
                    headers: Default::default(),
                    timestamp: Utc::now(),
                })
                .collect();
            offsets.extend(
                pc.produce(records, Compression::NoCompression)
                    .await
                    .map_err(|source| KafkaError::Request {
                        context: "producing",
                        source,
                    })?,
            );
        }
        Ok(offsets)
    }

    /// Spreads `values` over the partitions in contiguous round-robin chunks; returns
    /// `(partition, offset)` for each value in order.
    pub async fn send(
        &mut self,
        values: Vec<Option<Vec<u8>>>,
    ) -> Result<Vec<(i32, i64)>, KafkaError> {
        let mut out = Vec::with_capacity(values.len());
        let mut values = values.into_iter().peekable();
        while values.peek().is_some() {
            let chunk: Vec<_> = values.by_ref().take(PRODUCE_CHUNK).collect();
            let p = self.partitions[self.next % self.partitions.len()].partition();
            self.next += 1;
            out.extend(self.send_to(p, chunk).await?.into_iter().map(|o| (p, o)));
        }
        Ok(out)
    }
}
