//! The worker: configuration, the `connector` command line, the provider
//! registry and the runtime that runs each provider's source and sink
//! around the store.

pub mod cli;
pub mod commands;
pub mod config;
pub mod logging;
pub mod registry;
pub mod runtime;
