use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use orders_domain::{FetchedBatch, OrderSource, RawMessage, RecordMark, SourceError, StartOffset};
use orders_security::{TlsFiles, Verify, client_config};
use rskafka::BackoffConfig;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};

use crate::config::{KafkaConfig, SaslMechanism};
use crate::error::{
    FetchFailed, KafkaError, TimedOut, UndecodableBatch, connect_error, map_rs, timeout_error,
};

/// One topic of a Kafka cluster, read partition by partition.
///
/// Every broker call runs under a timeout ([`KafkaConfig::call_timeout`]): rskafka has none, so a
/// half-open connection would otherwise stall its caller forever. After a timeout (or any other
/// failure of a partition call) the partition's cached client is dropped, so the next call
/// connects afresh; after a timeout of a cluster-wide call the whole client is rebuilt.
pub struct KafkaSource {
    client: std::sync::Mutex<Arc<Client>>,
    config: KafkaConfig,
    /// Locked only to look up or insert, never across an `.await`: a partition whose leader is
    /// slow to connect must not hold up the others.
    partitions: std::sync::Mutex<HashMap<i32, Arc<PartitionClient>>>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

pub(crate) async fn build_client(config: &KafkaConfig) -> Result<Client, KafkaError> {
    let mut builder = ClientBuilder::new(config.brokers.clone())
        .client_id("orders")
        .backoff_config(BackoffConfig {
            deadline: Some(config.request_deadline),
            ..BackoffConfig::default()
        });
    let security = &config.security;
    if security.protocol.tls() {
        // Kafka clients verify the broker's certificate and host name by default.
        let files = TlsFiles {
            ca: security.ca_location.clone(),
            ca_setting: "KAFKA_SSL_CA_LOCATION",
            ..TlsFiles::default()
        };
        builder = builder.tls_config(Arc::new(client_config(Verify::ChainAndHost, &files)?));
    }
    if let Some(sasl) = &security.sasl {
        let credentials =
            Credentials::new(sasl.username.clone(), sasl.password.expose().to_owned());
        builder = builder.sasl_config(match sasl.mechanism {
            SaslMechanism::Plain => SaslConfig::Plain(credentials),
            SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
            SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
        });
    }
    match tokio::time::timeout(config.call_timeout(), builder.build()).await {
        Ok(built) => built.map_err(|e| connect_error(config, &e)),
        Err(_) => Err(timeout_error(config)),
    }
}

/// Runs one broker call under `limit`; a call that does not answer in time is `Unavailable`.
async fn timed<T>(
    limit: Duration,
    context: &'static str,
    partition: i32,
    offset: i64,
    call: impl Future<Output = Result<T, rskafka::client::error::Error>>,
) -> Result<T, SourceError> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r.map_err(|e| map_rs(context, partition, offset, e)),
        Err(_) => Err(SourceError::unavailable(
            context,
            TimedOut {
                partition,
                after: limit,
            },
        )),
    }
}

impl KafkaSource {
    /// Connects to the cluster. Does not require the topic to exist yet.
    pub async fn connect(config: KafkaConfig) -> Result<Self, KafkaError> {
        let client = build_client(&config).await?;
        Ok(Self {
            client: std::sync::Mutex::new(Arc::new(client)),
            config,
            partitions: std::sync::Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Creates the topic when it is missing and creation is configured; a missing topic is
    /// [`KafkaError::UnknownTopic`] otherwise.
    pub async fn ensure_topic(&self) -> Result<(), KafkaError> {
        ensure_topic(&self.client(), &self.config).await
    }

    fn client(&self) -> Arc<Client> {
        self.client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the client after a cluster-wide call on it timed out: its cached connection
    /// (used for metadata) may be half-open, and rskafka only drops it on an I/O error.
    async fn rebuild_client(&self, stale: &Arc<Client>) {
        match build_client(&self.config).await {
            Ok(client) => {
                let mut current = self
                    .client
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                // Someone else may have rebuilt it meanwhile; keep theirs.
                if Arc::ptr_eq(&current, stale) {
                    *current = Arc::new(client);
                    tracing::info!("reconnected to the Kafka cluster after a timeout");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot reconnect to the Kafka cluster"),
        }
    }

    async fn partition(&self, partition: i32) -> Result<Arc<PartitionClient>, SourceError> {
        let cached = self
            .partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&partition)
            .cloned();
        if let Some(pc) = cached {
            return Ok(pc);
        }
        // Connect without any lock held: another partition's loop is never waiting on this one.
        let client = self.client();
        let connect = client.partition_client(
            self.config.topic.clone(),
            partition,
            UnknownTopicHandling::Retry,
        );
        let pc = match timed(
            self.config.call_timeout(),
            "connecting to a partition",
            partition,
            -1,
            connect,
        )
        .await
        {
            Ok(pc) => Arc::new(pc),
            Err(e) => {
                if is_timeout(&e) {
                    self.rebuild_client(&client).await;
                }
                return Err(e);
            }
        };
        self.partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(partition, pc.clone());
        Ok(pc)
    }

    /// Drops the cached client of `partition` (if it is still `pc`) so that the next call
    /// connects again: after a timeout the connection may be half-open, and rskafka would keep
    /// using it.
    fn forget(&self, partition: i32, pc: &Arc<PartitionClient>) {
        let mut map = self
            .partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.get(&partition).is_some_and(|c| Arc::ptr_eq(c, pc)) {
            map.remove(&partition);
        }
    }

    /// Runs a call on `partition`'s client; on failure (other than an offset out of range) the
    /// client is dropped, so the retry reconnects.
    async fn on_partition<T, F, Fut>(
        &self,
        partition: i32,
        offset: i64,
        context: &'static str,
        call: F,
    ) -> Result<T, SourceError>
    where
        F: FnOnce(Arc<PartitionClient>) -> Fut,
        Fut: Future<Output = Result<T, rskafka::client::error::Error>>,
    {
        let pc = self.partition(partition).await?;
        let limit = self.config.call_timeout();
        let result = timed(limit, context, partition, offset, call(pc.clone())).await;
        if let Err(e) = &result
            && !matches!(e, SourceError::OffsetOutOfRange { .. })
        {
            self.forget(partition, &pc);
        }
        result
    }

    /// The high watermark read on its own (for the lag of a partition whose fetches fail, and
    /// for operators); `None` when the broker does not answer.
    pub async fn high_watermark(&self, partition: i32) -> Option<i64> {
        self.on_partition(
            partition,
            -1,
            "reading the high watermark",
            |pc| async move { pc.get_offset(OffsetAt::Latest).await },
        )
        .await
        .ok()
    }
}

fn is_timeout(e: &SourceError) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.is::<TimedOut>())
}

/// The partition ids of `topic`, or `None` when the cluster has no such topic.
pub(crate) async fn topic_partitions(
    client: &Client,
    config: &KafkaConfig,
) -> Result<Option<Vec<i32>>, KafkaError> {
    let topic = &config.topic;
    let topics = tokio::time::timeout(config.call_timeout(), client.list_topics())
        .await
        .map_err(|_| timeout_error(config))?
        .map_err(|source| KafkaError::Request {
            context: "listing topics",
            source,
        })?;
    Ok(topics
        .into_iter()
        .find(|t| &t.name == topic)
        .map(|t| t.partitions.into_iter().collect()))
}

pub(crate) async fn ensure_topic(client: &Client, config: &KafkaConfig) -> Result<(), KafkaError> {
    if topic_partitions(client, config).await?.is_some() {
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
    let create = controller.create_topic(config.topic.clone(), partitions, 1, 5_000);
    let created = tokio::time::timeout(config.call_timeout(), create)
        .await
        .map_err(|_| timeout_error(config))?;
    match created {
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
        let client = self.client();
        let listed = tokio::time::timeout(self.config.call_timeout(), client.list_topics()).await;
        let topics = match listed {
            Ok(r) => r.map_err(|e| SourceError::unavailable("listing topics", e))?,
            Err(_) => {
                self.rebuild_client(&client).await;
                return Err(SourceError::unavailable(
                    "listing topics",
                    TimedOut {
                        partition: -1,
                        after: self.config.call_timeout(),
                    },
                ));
            }
        };
        match topics.into_iter().find(|t| t.name == self.config.topic) {
            Some(t) => Ok(t.partitions.into_iter().collect()),
            None => Err(SourceError::UnknownTopic(self.config.topic.clone())),
        }
    }

    async fn start_offset(
        &self,
        partition: i32,
        stored: Option<i64>,
        mark: Option<RecordMark>,
    ) -> Result<StartOffset, SourceError> {
        let earliest = self
            .on_partition(
                partition,
                -1,
                "reading the earliest offset",
                |pc| async move { pc.get_offset(OffsetAt::Earliest).await },
            )
            .await?;
        let Some(stored) = stored else {
            return Ok(StartOffset::Earliest(earliest));
        };
        if stored < earliest {
            return Ok(StartOffset::Reset { stored, earliest });
        }
        let latest = self
            .on_partition(
                partition,
                -1,
                "reading the latest offset",
                |pc| async move { pc.get_offset(OffsetAt::Latest).await },
            )
            .await?;
        if stored > latest {
            return Ok(StartOffset::Reset { stored, earliest });
        }
        // Offsets repeat after a topic is re-created: the record now at the mark's offset
        // must be the one handled there. (Gone by compaction, or a control record: cannot
        // tell, so trust the stored offset.)
        if let Some(mark) = mark.filter(|m| (earliest..latest).contains(&m.offset)) {
            let batch = self.fetch(partition, mark.offset).await?;
            if let Some(now) = batch.records.iter().find(|r| r.offset == mark.offset)
                && RecordMark::of(now) != mark
            {
                return Ok(StartOffset::Recreated { stored, earliest });
            }
        }
        Ok(StartOffset::Stored(stored))
    }

    async fn fetch(&self, partition: i32, offset: i64) -> Result<FetchedBatch, SourceError> {
        let max_wait = i32::try_from(self.config.fetch_max_wait.as_millis()).unwrap_or(i32::MAX);
        let max_bytes = self.config.fetch_max_bytes.max(1024);
        let fetched = self
            .on_partition(partition, offset, "fetching records", |pc| async move {
                pc.fetch_records_detailed(offset, 1..max_bytes, max_wait)
                    .await
            })
            .await;
        let fetched = match fetched {
            Ok(f) => f,
            Err(SourceError::Unavailable { context, source }) => {
                // Keep the lag moving while the partition is stuck, so that an alert fires.
                let high_watermark = self.high_watermark(partition).await;
                return Err(SourceError::Unavailable {
                    context,
                    source: Some(Box::new(FetchFailed {
                        high_watermark,
                        source,
                    })),
                });
            }
            Err(e) => return Err(e),
        };
        if fetched.records.is_empty()
            && fetched.next_offset <= offset
            && let Some(batch) = fetched.undecodable
        {
            // The batch at `offset` itself cannot be decoded. (One after some decodable
            // records waits for the next fetch, which then starts at it.)
            return Err(SourceError::other(
                "fetching records",
                UndecodableBatch {
                    partition,
                    // A batch can start before the requested offset; what lies before it was
                    // consumed already.
                    first_offset: batch.first_offset.max(offset),
                    last_offset: batch.last_offset,
                    reason: batch.reason,
                },
            ));
        }
        let records = fetched
            .records
            .into_iter()
            .map(|r| RawMessage {
                offset: r.offset,
                value: r.record.value.map(Bytes::from),
            })
            .collect();
        Ok(FetchedBatch {
            partition,
            records,
            // Past control batches and aborted transactions too, which yield no records.
            next_offset: fetched.next_offset.max(offset),
            high_watermark: fetched.high_watermark,
        })
    }
}
