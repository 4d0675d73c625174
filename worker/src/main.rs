//! The `connector` binary. See `connector --help` and README.md.

use std::process::ExitCode;

use clap::Parser;

use connector_worker::cli::{Cli, Command, DeadLetterCommand, LogFormat, MappingsCommand};
use connector_worker::commands::{self, Context, Failure};
use connector_worker::config::{Config, ProcessEnv};
use connector_worker::logging;

/// mimalloc for Rust's allocations: with glibc's malloc, `malloc` and
/// `free` were 30% of an initial sync's CPU (field names and JSON values are
/// many small allocations). Measured at scale 1.0: initial sync into the
/// store 87,000 → 97,000–106,000 rows/s, the fan-out into PostgreSQL
/// 50,000 → 67,000 rows/s. SQLite's own allocations stay with glibc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// IBM's DB2 client converts text to the application's code page, which
/// it takes from the locale: under C or POSIX (containers, systemd) that is
/// not UTF-8, and characters outside it came back as substitutes. Unless
/// set, `DB2CODEPAGE=1208` (UTF-8) for the DB2 driver this process loads.
/// Set here, before any thread exists. (No DB2 server runs in the tests.)
fn db2_talks_utf8() {
    if std::env::var_os("DB2CODEPAGE").is_none() {
        std::env::set_var("DB2CODEPAGE", "1208");
    }
}

/// A `.env` error without the line's value: dotenvy quotes the line (and
/// after an unclosed quote, every line after it), passwords included. The
/// line is named by its number and variable in `file`, where found.
fn env_file_error(e: &dotenvy::Error, file: &std::path::Path) -> String {
    match e {
        dotenvy::Error::LineParse(text, at) => {
            let first = text.lines().next().unwrap_or_default();
            let place = std::fs::read_to_string(file)
                .ok()
                .and_then(|all| {
                    all.lines()
                        .enumerate()
                        .find(|(_, l)| !first.is_empty() && l.contains(first))
                        .map(|(n, l)| {
                            let name = l.split('=').next().unwrap_or_default().trim();
                            format!("line {} (`{name}`)", n + 1)
                        })
                })
                .unwrap_or_else(|| "a line".into());
            format!(
                "cannot parse {place} at character {at} (values are not shown: they may hold \
                 passwords); quote a value that holds spaces, e.g. in single quotes"
            )
        }
        other => other.to_string(),
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    return_freed_memory_promptly();
    let cli = Cli::parse();
    // A `.env` file fills in variables the environment does not already set.
    let env_file = match &cli.env_file {
        Some(path) => match dotenvy::from_path(path) {
            Ok(()) => None,
            Err(e) => Some(format!(
                "cannot read --env-file {}: {}",
                path.display(),
                env_file_error(&e, path)
            )),
        },
        // A line it cannot parse stops dotenvy there: every later variable
        // would be missing without a word.
        None => match dotenvy::dotenv() {
            Err(e) if !e.not_found() => Some(format!(
                "cannot read the .env file: {}",
                env_file_error(&e, std::path::Path::new(".env"))
            )),
            _ => None,
        },
    };
    if let Some(msg) = env_file {
        eprintln!("error: {msg}");
        return ExitCode::from(2);
    }
    db2_talks_utf8();
    let mut config = match Config::from_env(&ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(store) = &cli.store {
        config.store_path = store.clone();
    }
    if !cli.mappings.is_empty() {
        config.mappings = cli.mappings.clone();
    }
    // Read after the .env file: a format set there counts too.
    let log_format = match cli.log_format {
        Some(f) => f,
        None => match std::env::var("CONNECTOR_LOG_FORMAT")
            .ok()
            .as_deref()
            .map(str::trim)
        {
            None | Some("") | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                eprintln!("error: CONNECTOR_LOG_FORMAT={other} is not text or json");
                return ExitCode::from(2);
            }
        },
    };
    logging::init(log_format, cli.verbose || config.debug);
    let ctx = Context { config };
    let outcome = dispatch(&ctx, cli.command);
    match outcome {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(Failure { message, code }) => {
            eprintln!("error: {message}");
            ExitCode::from(code.clamp(1, 255) as u8)
        }
    }
}

fn dispatch(ctx: &Context, command: Command) -> commands::Outcome {
    use commands::*;
    match command {
        Command::Mappings(MappingsCommand::Check { paths }) => mappings::check(ctx, &paths),
        Command::Status { json } => status::run(ctx, json),
        Command::Conflicts(l) => conflicts::list(ctx, l.provider.as_deref(), l.limit, l.json),
        Command::Query {
            collection,
            id,
            limit,
        } => query::run(ctx, &collection, id.as_deref(), limit),
        Command::DeadLetters(DeadLetterCommand::List(l)) => {
            dead_letters::list(ctx, l.provider.as_deref(), l.limit, l.json)
        }
        Command::DeadLetters(DeadLetterCommand::Retry(sel)) => dead_letters::retry(ctx, &sel),
        Command::DeadLetters(DeadLetterCommand::Discard(sel)) => dead_letters::discard(ctx, &sel),
        Command::TestConnection(p) => providers::test_connection(ctx, p.provider.as_deref()),
        Command::Setup { provider, dry_run } => {
            providers::setup(ctx, provider.provider.as_deref(), dry_run)
        }
        Command::Verify {
            provider,
            collection,
        } => providers::verify(ctx, provider.provider.as_deref(), collection.as_deref()),
        Command::Run(p) => providers::run(ctx, p.provider.as_deref()),
        Command::InitialSync {
            provider,
            collection,
            restart,
        } => providers::initial_sync(
            ctx,
            provider.provider.as_deref(),
            collection.as_deref(),
            restart,
        ),
    }
}

/// mimalloc keeps freed pages for 10 ms and commits whole arenas up front;
/// with the runtime's blocking threads each holding pages, the peak RSS of a
/// 100,000-change backlog at scale 1.0 was 164 MB. Purging at once and
/// committing on demand: 100 MB, at the same rate. `MIMALLOC_PURGE_DELAY`
/// and `MIMALLOC_ARENA_EAGER_COMMIT` in the environment still win.
fn return_freed_memory_promptly() {
    // `mi_option_arena_eager_commit` and `mi_option_purge_delay` in
    // mimalloc v3's `mi_option_t` (libmimalloc-sys is pinned).
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    for (option, var) in [
        (ARENA_EAGER_COMMIT, "MIMALLOC_ARENA_EAGER_COMMIT"),
        (PURGE_DELAY, "MIMALLOC_PURGE_DELAY"),
    ] {
        if std::env::var_os(var).is_none() {
            // SAFETY: sets a tunable before any other thread exists.
            unsafe { libmimalloc_sys::mi_option_set(option, 0) };
        }
    }
}

/// glibc (SQLite's allocator) gives each thread that allocates its own
/// arena (up to 8 per core), and freed memory stays in them: measured on the
/// fan-out of the retail sample (before mimalloc took Rust's allocations),
/// peak RSS 64 MB with the default, 38 MB with 2 arenas, 26 MB with one. Two keep the runtime's worker threads from contending on one lock.
/// `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator tunable; called before any
        // other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
