use std::process::ExitCode;

use clap::Parser;
use orders_app::config::{Cli, Command};
use orders_app::{Application, cli, telemetry};

fn main() -> ExitCode {
    // mimalloc, keeping freed memory a second for the next batch (crate orders-alloc; feature
    // `mimalloc`, on by default).
    #[cfg(feature = "mimalloc")]
    orders_alloc::configure();
    // Values from config.env (here or in the nearest parent) fill in what the environment does
    // not set. A bad line stops start-up: a setting silently ignored is worse.
    if let Err(e) = orders_env::load() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let args = Cli::parse();
    if let Err(e) = telemetry::init(&args.settings.log_level, args.settings.log_format) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match args.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                Application::build(args.settings)
                    .await?
                    .run_until_stopped()
                    .await
            }
            Command::Migrate => cli::migrate(&args.settings).await,
            Command::Rejected(cmd) => cli::rejected(&args.settings, cmd).await,
            Command::Partitions => cli::partitions(&args.settings).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
