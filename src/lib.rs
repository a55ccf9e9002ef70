//! questlog: a deterministic, replayable event store for game telemetry.
//!
//! The data flows through the modules in this order (see ARCHITECTURE.md):
//! [`event`] (model, validation) → [`wire`] (limits, URLs and JSON lines shared by the
//! HTTP sides) → [`log`] (durable append, read from offset) →
//! [`api`] (HTTP in) / [`generate`] (seeded traffic) → [`project`] (Parquet tables) →
//! [`report`] / [`sql`] (Polars); [`replay`] prints the log; [`verify`] and [`check`]
//! prove the log and what is derived from it reproducible; [`cli`] parses the command
//! line and [`commands`] runs each command.

pub mod api;
pub mod auth;
pub mod catalog;
pub mod check;
pub mod cli;
pub mod commands;
pub mod event;
pub mod generate;
pub mod log;
pub mod metrics;
pub mod project;
pub mod replay;
pub mod report;
pub mod schema;
pub mod sql;
pub mod verify;
pub mod wire;
