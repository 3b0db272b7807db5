//! The `orders` service: reads [`config::Settings`], wires the adapters into the domain's use
//! cases and runs them ([`startup::Application`]); also the operator commands ([`cli`]).
//!
//! Invariant: this is the only crate that names concrete adapters.

pub mod cli;
pub mod config;
pub mod metrics;
pub mod startup;
pub mod telemetry;

pub use config::{Cli, Settings};
pub use startup::{Application, ShutdownHandle};
