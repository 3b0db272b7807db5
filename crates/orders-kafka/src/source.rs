use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use orders_domain::{FetchedBatch, OrderSource, RawMessage, SourceError, StartOffset};
use rskafka::BackoffConfig;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use tokio::sync::Mutex;

use crate::config::KafkaConfig;
use crate::error::{KafkaError, map_rs};

/// One topic of a Kafka cluster, read partition by partition.
pub struct KafkaSource {
    client: Client,
    config: KafkaConfig,
    partitions: Mutex<HashMap<i32, Arc<PartitionClient>>>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

pub(crate) async fn build_client(config: &KafkaConfig) -> Result<Client, KafkaError> {
    ClientBuilder::new(config.brokers.clone())
        .client_id("orders")
        .backoff_config(BackoffConfig {
            deadline: Some(config.request_deadline),
            ..BackoffConfig::default()
        })
        .build()
        .await
        .map_err(|source| KafkaError::Connect {
            brokers: config.brokers.join(","),
            source,
        })
}

impl KafkaSource {
    /// Connects to the cluster. Does not require the topic to exist yet.
    pub async fn connect(config: KafkaConfig) -> Result<Self, KafkaError> {
        let client = build_client(&config).await?;
        Ok(Self {
            client,
            config,
            partitions: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Creates the topic when it is missing and creation is configured; a missing topic is
    /// [`KafkaError::UnknownTopic`] otherwise.
    pub async fn ensure_topic(&self) -> Result<(), KafkaError> {
        ensure_topic(&self.client, &self.config).await
    }

    async fn partition(&self, partition: i32) -> Result<Arc<PartitionClient>, SourceError> {
        let mut map = self.partitions.lock().await;
        if let Some(pc) = map.get(&partition) {
            return Ok(pc.clone());
        }
        let pc = self
            .client
            .partition_client(
                self.config.topic.clone(),
                partition,
                UnknownTopicHandling::Retry,
            )
            .await
            .map_err(|e| map_rs("connecting to a partition", partition, -1, e))?;
        let pc = Arc::new(pc);
        map.insert(partition, pc.clone());
        Ok(pc)
    }
}

/// The partition ids of `topic`, or `None` when the cluster has no such topic.
pub(crate) async fn topic_partitions(
    client: &Client,
    topic: &str,
) -> Result<Option<Vec<i32>>, KafkaError> {
    let topics = client
        .list_topics()
        .await
        .map_err(|source| KafkaError::Request {
            context: "listing topics",
            source,
        })?;
    Ok(topics
        .into_iter()
        .find(|t| t.name == topic)
        .map(|t| t.partitions.into_iter().collect()))
}

pub(crate) async fn ensure_topic(client: &Client, config: &KafkaConfig) -> Result<(), KafkaError> {
    if topic_partitions(client, &config.topic).await?.is_some() {
        return Ok(());
    }
    let Some(partitions) = config.create_topic_partitions else {
        return Err(KafkaError::UnknownTopic(config.topic.clone()));
    };
    let controller = client
        .controller_client()
        .map_err(|source| KafkaError::Request {
            context: "reaching the controller",
            source,
        })?;
    match controller
        .create_topic(config.topic.clone(), partitions, 1, 5_000)
        .await
    {
        Ok(()) => {
            tracing::info!(topic = %config.topic, partitions, "created topic");
            Ok(())
        }
        // Someone else created it in between: fine.
        Err(rskafka::client::error::Error::ServerError {
            protocol_error: rskafka::client::error::ProtocolError::TopicAlreadyExists,
            ..
        }) => Ok(()),
        Err(source) => Err(KafkaError::Request {
            context: "creating the topic",
            source,
        }),
    }
}

#[async_trait]
impl OrderSource for KafkaSource {
    fn topic(&self) -> &str {
        &self.config.topic
    }

    async fn partitions(&self) -> Result<Vec<i32>, SourceError> {
        let topics = self
            .client
            .list_topics()
            .await
            .map_err(|e| SourceError::unavailable("listing topics", e))?;
        match topics.into_iter().find(|t| t.name == self.config.topic) {
            Some(t) => Ok(t.partitions.into_iter().collect()),
            None => Err(SourceError::UnknownTopic(self.config.topic.clone())),
        }
    }

    async fn start_offset(
        &self,
        partition: i32,
        stored: Option<i64>,
    ) -> Result<StartOffset, SourceError> {
        let pc = self.partition(partition).await?;
        let earliest = pc
            .get_offset(OffsetAt::Earliest)
            .await
            .map_err(|e| map_rs("reading the earliest offset", partition, -1, e))?;
        let Some(stored) = stored else {
            return Ok(StartOffset::Earliest(earliest));
        };
        if stored < earliest {
            return Ok(StartOffset::Reset { stored, earliest });
        }
        let latest = pc
            .get_offset(OffsetAt::Latest)
            .await
            .map_err(|e| map_rs("reading the latest offset", partition, -1, e))?;
        if stored > latest {
            return Ok(StartOffset::Reset { stored, earliest });
        }
        Ok(StartOffset::Stored(stored))
    }

    async fn fetch(&self, partition: i32, offset: i64) -> Result<FetchedBatch, SourceError> {
        let pc = self.partition(partition).await?;
        let max_wait = i32::try_from(self.config.fetch_max_wait.as_millis()).unwrap_or(i32::MAX);
        let (records, high_watermark) = pc
            .fetch_records(offset, 1..self.config.fetch_max_bytes.max(1024), max_wait)
            .await
            .map_err(|e| map_rs("fetching records", partition, offset, e))?;
        let mut next_offset = offset;
        let records = records
            .into_iter()
            // A compressed batch can start before the requested offset.
            .filter(|r| r.offset >= offset)
            .map(|r| {
                next_offset = next_offset.max(r.offset + 1);
                RawMessage {
                    offset: r.offset,
                    value: r.record.value.map(Bytes::from),
                }
            })
            .collect();
        Ok(FetchedBatch {
            partition,
            records,
            next_offset,
            high_watermark,
        })
    }
}
