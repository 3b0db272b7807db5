use std::time::Duration;

/// How to reach the broker and read the topic.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port` of one or more bootstrap brokers.
    pub brokers: Vec<String>,
    pub topic: String,
    /// Upper bound of one fetch, in bytes.
    pub fetch_max_bytes: i32,
    /// How long the broker may wait for data before answering an empty fetch.
    pub fetch_max_wait: Duration,
    /// Create the topic with this many partitions when it is missing (development only).
    pub create_topic_partitions: Option<i32>,
    /// How long one broker request may keep retrying before the error surfaces.
    pub request_deadline: Duration,
}

impl KafkaConfig {
    /// The longest any one broker call may take before it is abandoned as a stall (and its
    /// connection dropped): the retry deadline plus the broker's own wait in a fetch.
    pub fn call_timeout(&self) -> Duration {
        self.request_deadline + self.fetch_max_wait
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: vec!["localhost:9092".into()],
            topic: "orders".into(),
            fetch_max_bytes: 4 * 1024 * 1024,
            fetch_max_wait: Duration::from_millis(500),
            create_topic_partitions: None,
            request_deadline: Duration::from_secs(10),
        }
    }
}
