//! Structured logs on stderr: text for people, JSON for collectors.
//! `RUST_LOG` wins; else `-v` or `DEBUG_DITTO_SYNC=true` mean debug, and the
//! default is info. Connection strings are never logged whole: code logs
//! `ProviderSpec::redacted_connection()` only.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

pub fn init(format: LogFormat, debug: bool) {
    // odbc-api logs every driver diagnostic as a warning; the ones that
    // matter come back as errors, with context, through our own logs.
    let default = if debug {
        "debug,odbc_api=error"
    } else {
        "info,odbc_api=error"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
