//! The command line: what `connector --help` shows.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Keeps several databases and a local-first document store in sync, in
/// every direction, with per-field conflict resolution.
///
/// Providers are configured with environment variables (or a `.env` file):
/// DITTO_SYNC_POSTGRES=true with POSTGRES_CONNECTION_STRING=…, and so on;
/// CONNECTOR_PROVIDERS=hq=postgres,shop=postgres for several databases of one
/// kind. Collections and id rules come from the YAML files in ./mappings.
/// See README.md for the full reference.
#[derive(Debug, Parser)]
#[command(
    name = "connector",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Read environment variables from this file (default: ./.env if present).
    #[arg(long, global = true, value_name = "PATH")]
    pub env_file: Option<PathBuf>,

    /// The store file (default: $CONNECTOR_STORE, else ./data/store.db).
    #[arg(long, global = true, value_name = "PATH")]
    pub store: Option<PathBuf>,

    /// Mapping files or directories, comma-separated or the option repeated
    /// (default: $CONNECTOR_MAPPINGS, else ./mappings).
    #[arg(long, global = true, value_name = "PATH", value_delimiter = ',', action = clap::ArgAction::Append)]
    pub mappings: Vec<PathBuf>,

    /// Log format on stderr [env: CONNECTOR_LOG_FORMAT, also from the .env
    /// file] [default: text].
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,

    /// More log detail (also DEBUG_DITTO_SYNC=true, or RUST_LOG=…).
    #[arg(short, long, global = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sync continuously: every enabled provider's feed into the store, and
    /// the store out to every provider. Stops cleanly on SIGTERM / Ctrl-C.
    Run(ProviderArg),
    /// Copy the rows that already exist in a provider into the store (the
    /// feeds only carry new changes). Resumable after a crash. Refused while
    /// a `connector run` streams the provider (stop it first).
    InitialSync {
        #[command(flatten)]
        provider: ProviderArg,
        /// Only this collection.
        #[arg(long)]
        collection: Option<String>,
        /// Copy collections again that an earlier run finished.
        #[arg(long)]
        restart: bool,
    },
    /// Create what a provider's change feed needs (publication and slot,
    /// CDC, journal triggers …). Idempotent; prints what it does.
    Setup {
        #[command(flatten)]
        provider: ProviderArg,
        /// Print the statements without running them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Compare each collection in the store with every provider: counts and
    /// checksums. Exits non-zero and names the differences when they differ.
    Verify {
        #[command(flatten)]
        provider: ProviderArg,
        #[arg(long)]
        collection: Option<String>,
    },
    /// Connect to each provider and report the server, or the reason it failed.
    TestConnection(ProviderArg),
    /// Per provider: enabled, position, last change, lag, documents synced,
    /// errors and dead letters. Connection strings are shown redacted.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print documents from the store as JSON.
    Query {
        collection: String,
        /// A document id: JSON (`42`, `{"store_id":3,"order_no":17}`) or plain text (a UUID).
        id: Option<String>,
        /// How many documents to list without an id.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Records that could not be synced, with the reason.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
    /// Fields two providers changed concurrently (the last 7 days), newest
    /// first: the value every provider kept and the one that was lost.
    Conflicts(ListArgs),
    /// Mapping files.
    #[command(subcommand)]
    Mappings(MappingsCommand),
}

/// A listing's options.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only this provider's.
    #[arg(long, short = 'p')]
    pub provider: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ProviderArg {
    /// Only this provider (by name, e.g. `postgres` or `hq`).
    #[arg(long, short = 'p')]
    pub provider: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// List dead letters, oldest first.
    List(ListArgs),
    /// Try again (after fixing the mapping or the data): source records are
    /// mapped and merged anew, sink records are written again by the sink.
    Retry(DeadLetterSelection),
    /// Delete dead letters for good.
    Discard(DeadLetterSelection),
}

#[derive(Debug, Clone, Args)]
pub struct DeadLetterSelection {
    /// Dead letter ids (see `dead-letters list`).
    pub ids: Vec<i64>,
    /// Every dead letter (of --provider, if given).
    #[arg(long, conflicts_with = "ids")]
    pub all: bool,
    #[arg(long, short = 'p')]
    pub provider: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum MappingsCommand {
    /// Validate mapping files; prints every error as file:line:column.
    Check {
        /// Files or directories (default: the configured mappings).
        paths: Vec<PathBuf>,
    },
}
