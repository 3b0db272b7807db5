//! `orders-producer`: sends orders to the topic, for demos, tests and benchmarks.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use orders_domain::REFERENCE_ORDER_JSON;
use orders_domain::sample::{invalid_messages, mixed_order};
use orders_kafka::{KafkaConfig, KafkaSecurityArgs, OrderProducer};

#[derive(Debug, Parser)]
#[command(
    name = "orders-producer",
    version,
    about = "Send orders to the orders topic."
)]
struct Args {
    /// Kafka bootstrap broker(s), comma-separated.
    #[arg(long, env = "KAFKA_BROKER", default_value = "localhost:9092")]
    broker: String,
    /// Topic to send to.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "orders")]
    topic: String,
    /// TLS and SASL, with the same settings as the service.
    #[command(flatten)]
    security: KafkaSecurityArgs,
    /// Send this many generated valid orders (unique uids, consistent totals; 1, 3 or 10 items).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Send one message of each bad kind (tombstone, empty, not UTF-8, not JSON, not an order,
    /// invalid order, oversize).
    #[arg(long)]
    invalid: bool,
    /// Do not send the reference order (sent by default).
    #[arg(long)]
    no_reference: bool,
    /// Prefix of generated uids (default: a random one, so runs never collide).
    #[arg(long)]
    prefix: Option<String>,
    /// Create the topic (3 partitions) when it is missing.
    #[arg(long, env = "CREATE_TOPIC")]
    create_topic: bool,
    /// Keep retrying the connection for this long (the broker may still be starting).
    #[arg(long, default_value_t = 60)]
    wait_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    orders_env::load()?;
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("warn")
        .init();
    let config = KafkaConfig {
        brokers: args.broker.split(',').map(str::to_owned).collect(),
        topic: args.topic.clone(),
        create_topic_partitions: args.create_topic.then_some(3),
        security: args.security.resolve()?,
        ..KafkaConfig::default()
    };
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    let mut producer = loop {
        match OrderProducer::connect(&config).await {
            Ok(p) => break p,
            // Credentials and TLS do not get better by waiting.
            Err(e) if Instant::now() < deadline && !e.is_permanent() => {
                eprintln!("waiting for the broker/topic: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(e).context(format!(
                    "cannot produce to {} at {}",
                    args.topic, args.broker
                ));
            }
        }
    };
    let started = Instant::now();
    let mut sent = 0usize;
    if !args.no_reference {
        let out = producer
            .send(vec![Some(REFERENCE_ORDER_JSON.as_bytes().to_vec())])
            .await?;
        println!(
            "sent reference order b563feb7b2b84b6test to {}/{}@{}",
            args.topic, out[0].0, out[0].1
        );
        sent += 1;
    }
    if args.count > 0 {
        let prefix = args
            .prefix
            .clone()
            .unwrap_or_else(|| format!("gen{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]));
        let mut n = 0u64;
        while n < args.count {
            let chunk = (args.count - n).min(10_000);
            let values: Vec<Option<Vec<u8>>> = (n..n + chunk)
                .map(|i| serde_json::to_vec(&mixed_order(&prefix, i)).map(Some))
                .collect::<Result<_, _>>()?;
            producer.send(values).await?;
            n += chunk;
        }
        println!(
            "sent {} generated orders with uids {prefix}0 .. {prefix}{}",
            args.count,
            args.count - 1
        );
        sent += args.count as usize;
    }
    if args.invalid {
        for (reason, value) in invalid_messages() {
            let out = producer.send(vec![value]).await?;
            println!(
                "sent invalid message ({reason}) to {}/{}@{}",
                args.topic, out[0].0, out[0].1
            );
            sent += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{sent} messages in {secs:.2} s ({:.0}/s)",
        sent as f64 / secs.max(1e-9)
    );
    Ok(())
}
