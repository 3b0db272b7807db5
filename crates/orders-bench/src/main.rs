//! `orders-bench` (`just bench`): measures the sink path, end-to-end ingestion, reads and
//! warm-up, each against a baseline measured in the same run, and writes `bench/results.md`
//! and `bench/results.json`. It reports figures and asserts nothing about time.
#![allow(clippy::print_stdout)]

mod data;
mod db;
mod e2e;
mod failover;
mod load;
mod reads;
mod report;
mod sink;
mod stats;
mod warm;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use orders_app::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "orders-bench",
    version,
    about = "Benchmarks of the orders service, each figure beside a baseline from the same run.",
    long_about = "Benchmarks of the orders service, each figure beside a baseline from the same run.\n\n\
        Needs PostgreSQL and a Kafka-protocol broker (DB_* and KAFKA_BROKER, as the service; \
        `just bench` starts the local ones). Every measurement uses a database of its own \
        (orders_bench_*, dropped afterwards) and a topic of its own. Traffic goes to 127.0.0.1 only."
)]
struct Cli {
    /// Sections to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "sink,e2e,reads,warmup,replicas"
    )]
    sections: Vec<Section>,
    /// Orders through the sink path (and its COPY baselines).
    #[arg(long, default_value_t = 100_000)]
    orders: usize,
    /// Orders for the naive baseline (a rate; it is slow, so a subset).
    #[arg(long, default_value_t = 10_000)]
    naive_orders: usize,
    /// Repetitions of each sink-path variant (the median and the spread are reported) and of
    /// each replica event.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Orders produced to the broker for the end-to-end section.
    #[arg(long, default_value_t = 100_000)]
    e2e_orders: usize,
    /// Seconds of measured load per read endpoint and round.
    #[arg(long, default_value_t = 3.0)]
    read_secs: f64,
    /// Seconds of unmeasured load before each read measurement.
    #[arg(long, default_value_t = 0.5)]
    read_warmup_secs: f64,
    /// Rounds over all read endpoints (interleaved; the median round is reported).
    #[arg(long, default_value_t = 3)]
    read_rounds: usize,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Distinct cached orders the read section requests.
    #[arg(long, default_value_t = 10_000)]
    read_uids: usize,
    /// Orders warmed into the cache, one line per number (e.g. `100000,1000000`). They are
    /// read from the sink path's database, topped up by binary COPY of generated orders when
    /// it holds fewer (or from a database filled that way when the sink section does not run).
    #[arg(long, value_delimiter = ',', default_value = "100000")]
    warm_orders: Vec<usize>,
    /// Runs of each warm-up line (each in a fresh process; the median and the spread are
    /// reported).
    #[arg(long, default_value_t = 5)]
    warm_repeat: usize,
    /// Markdown report (its part between the bench markers is replaced; the rest is kept).
    #[arg(long, default_value = "bench/results.md")]
    out: PathBuf,
    /// Raw figures as JSON.
    #[arg(long, default_value = "bench/results.json")]
    json: PathBuf,
    /// Do not write the report files (print only).
    #[arg(long)]
    no_write: bool,
    /// The service's settings (DB_*, KAFKA_*, HTTP_WORKERS, ...), as `orders --help` lists them.
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    Sink,
    E2e,
    Reads,
    Warmup,
    Replicas,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// (internal) warm the cache from DB_NAME in this fresh process and print JSON.
    #[command(hide = true)]
    WarmProbe {
        #[arg(long)]
        count: usize,
    },
    /// (internal) store `count` generated orders in DB_NAME (which must exist) by binary COPY,
    /// after applying the migrations: a database for profiling `warm-probe`.
    #[command(hide = true)]
    WarmFill {
        #[arg(long)]
        count: usize,
    },
    /// (internal) run the service with the settings from the environment (a replica of the
    /// replicas section).
    #[command(hide = true)]
    Replica,
}

fn main() -> anyhow::Result<()> {
    // The allocator of the `orders` binary, set up as it does: the service runs in this
    // process here.
    #[cfg(feature = "mimalloc")]
    orders_alloc::configure();
    orders_env::load()?;
    let cli = Cli::parse();
    // The service's own subscriber and level (LOG_LEVEL, info by default): its spans and
    // events cost what they cost in production.
    orders_app::telemetry::init(&cli.settings.log_level, cli.settings.log_format)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async_main(cli))
}

async fn async_main(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::WarmProbe { count }) = cli.command {
        let r = warm::probe(&cli.settings.postgres()?, count).await?;
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    if let Some(Command::WarmFill { count }) = cli.command {
        let config = cli.settings.postgres()?;
        orders_postgres::PgRepository::connect(&config)
            .await?
            .close();
        let prefix = format!("fill{}-", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let took = db::copy_generated(&config, &prefix, count).await?;
        println!("stored {count} orders in {:.1} s", took.as_secs_f64());
        return Ok(());
    }
    if let Some(Command::Replica) = cli.command {
        return orders_app::Application::build(cli.settings)
            .await?
            .run_until_stopped()
            .await;
    }
    let started = Instant::now();
    let admin = cli.settings.postgres()?;
    let version: String = db::client(&admin)
        .await
        .context("PostgreSQL not reachable; start it with `just db-up` (or run `just bench`)")?
        .query_one("SHOW server_version", &[])
        .await?
        .get(0);
    let machine = stats::Machine::describe(
        format!("PostgreSQL {version}"),
        cli.settings.kafka_broker.clone(),
    );
    let mut results = report::Results::new(machine, stats::git_commit());
    let has = |s| cli.sections.contains(&s);

    let mut warm_db = None;
    if has(Section::Sink) {
        let prefix = format!("bench{}-", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let data = data::Dataset::generate(&prefix, cli.orders)?;
        let plan = data::plan(
            &data.payloads,
            cli.settings.kafka_partitions as usize,
            500,
            cli.settings.fetch_max_bytes as usize,
        );
        let (sink, db) = sink::run(
            &admin,
            &data,
            &plan,
            &sink::SinkOptions {
                repeat: cli.repeat.max(1),
                naive_orders: cli.naive_orders,
                cache_capacity: cli.settings.cache_capacity as usize,
            },
        )
        .await?;
        results.sink = Some(sink);
        warm_db = Some(db);
    }
    if has(Section::Warmup) {
        let db = match warm_db.take() {
            Some(db) => db,
            None => db::BenchDb::create(&admin).await?,
        };
        let most = cli.warm_orders.iter().copied().max().unwrap_or(0);
        let stored = usize::try_from(sink::count_orders(&db.config).await?)?;
        if stored < most {
            // Stored after the sink's orders, so they are the newest: what warm-up reads first.
            let prefix = format!("warm{}-", &uuid::Uuid::new_v4().simple().to_string()[..6]);
            tracing::info!(
                orders = most - stored,
                "storing orders for the warm-up (COPY)"
            );
            db::copy_generated(&db.config, &prefix, most - stored).await?;
        }
        // As a restarted service finds its tables: vacuumed (hint bits and visibility map
        // set), not just written, which the first reader would pay for (warm-up or baseline,
        // whichever came first).
        db::client(&db.config)
            .await?
            .batch_execute("VACUUM (ANALYZE)")
            .await
            .context("vacuuming the warm-up's database")?;
        db::settle(&admin).await?;
        let config = db.config.clone();
        let counts = cli.warm_orders.clone();
        let repeat = cli.warm_repeat;
        results.warmup = Some(
            tokio::task::spawn_blocking(move || warm::run_all(&config, &counts, repeat)).await??,
        );
        db.drop_now().await?;
    }
    if let Some(db) = warm_db {
        db.drop_now().await?;
    }
    if has(Section::E2e) {
        let prefix = format!("e2e{}-", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let data = data::Dataset::generate(&prefix, cli.e2e_orders)?;
        results.e2e = Some(
            e2e::run(
                &cli.settings,
                &admin,
                &data.payloads,
                Duration::from_secs(600),
            )
            .await?,
        );
    }
    if has(Section::Reads) {
        // The sections before wrote hundreds of MB: their checkpoint or autovacuum must not
        // land on the read measurements (PostgreSQL shares the 2 cores with both servers).
        db::settle(&admin).await?;
        let prefix = format!("read{}-", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let data = data::Dataset::generate(&prefix, cli.read_uids)?;
        let load = load::Load {
            connections: cli.connections,
            warmup: Duration::from_secs_f64(cli.read_warmup_secs),
            duration: Duration::from_secs_f64(cli.read_secs),
            max_requests_per_connection: 10_000_000,
        };
        results.reads =
            Some(reads::run(&cli.settings, &admin, &data.orders, &load, cli.read_rounds).await?);
    }
    if has(Section::Replicas) {
        results.failover = Some(failover::run(&cli.settings, &admin, cli.repeat.max(1)).await?);
    }
    results.total_secs = started.elapsed().as_secs_f64();

    let table = report::markdown(&results);
    println!("{table}");
    if !cli.no_write {
        report::write(&cli.out, &cli.json, &table, &results)?;
        println!("written: {} and {}", cli.out.display(), cli.json.display());
    }
    Ok(())
}
