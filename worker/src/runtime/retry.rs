//! The one place that decides retry vs give up.
//!
//! Every provider returns a [`ConnectorError`] whose kind says what it is:
//! transient errors (network, restarts, locks) are retried with exponential
//! backoff and jitter (a step plus up to as much again at random), from
//! 0.5 s, never waiting more than 60 s, forever: a database that
//! is down for a day catches up when it returns, and positions only move
//! after commits, so nothing is lost while waiting. Permanent errors stop
//! that provider's task with the message (the others go on). Bad records
//! never reach here: they become dead letters where they are found.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use connector_core::{ConnectorError, ErrorKind};

pub const MIN_DELAY: Duration = Duration::from_millis(500);
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// What a task does after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    RetryAfter(Duration),
    GiveUp,
    /// Copy the provider's rows again, then retry.
    Resnapshot,
}

/// Backoff state of one task; reset after a success.
pub struct Backoff {
    delays: ExponentialBackoff,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    pub fn new() -> Self {
        Backoff {
            delays: builder().build(),
        }
    }

    pub fn reset(&mut self) {
        self.delays = builder().build();
    }

    /// Decides, and advances the backoff when retrying.
    pub fn decide(&mut self, error: &ConnectorError) -> Decision {
        match error.kind {
            ErrorKind::Transient => {
                Decision::RetryAfter(self.delays.next().unwrap_or(MAX_DELAY).min(MAX_DELAY))
            }
            // A bad record that escaped its stage must not loop forever.
            ErrorKind::Permanent | ErrorKind::BadRecord => Decision::GiveUp,
            ErrorKind::NeedsSnapshot => Decision::Resnapshot,
        }
    }
}

/// What a task does after [`after_failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Run another session.
    Retry,
    /// Copy the provider's rows again (initial sync), then run another session.
    Resnapshot,
    /// Stop this task (given up, or shutdown).
    Stop,
}

/// After a task's session failed: counts and records the error, then waits
/// out the backoff (`Retry`), asks for a re-snapshot, or marks the provider
/// red (`Stop`; also on shutdown while waiting).
pub async fn after_failure(
    task: &'static str,
    name: &str,
    e: &ConnectorError,
    backoff: &mut Backoff,
    shared: &super::Shared,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Next {
    use super::health::Light;
    metrics::counter!(connector_core::metrics::ERRORS, "provider" => name.to_string(), "stage" => e.stage.as_str())
        .increment(1);
    let decision = backoff.decide(e);
    // `status` reads this: a stopped task says so (a retried one is only
    // its last error).
    let said = match decision {
        Decision::GiveUp => format!("{task} {}: {e}", connector_store::STOPPED),
        _ => e.to_string(),
    };
    let _ = super::blocking(|| {
        shared
            .open_store()
            .map(|mut s| s.record_error(name, e.stage.as_str(), &said))
    });
    match decision {
        Decision::RetryAfter(d) => {
            tracing::warn!(provider = %name, error = %e, retry_in_ms = d.as_millis() as u64, "{task} failed; retrying");
            shared
                .health
                .set(name, task, Light::Yellow, Some(e.to_string()));
            if super::sleep_or_shutdown(d, shutdown).await {
                Next::Stop
            } else {
                Next::Retry
            }
        }
        Decision::Resnapshot => {
            tracing::warn!(provider = %name, error = %e, "{task}: copying every collection again (on_slot_lost=resnapshot)");
            shared
                .health
                .set(name, task, Light::Yellow, Some(e.to_string()));
            Next::Resnapshot
        }
        Decision::GiveUp => {
            tracing::error!(provider = %name, error = %e, "{task} stopped");
            shared
                .health
                .set(name, task, Light::Red, Some(e.to_string()));
            Next::Stop
        }
    }
}

fn builder() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_jitter()
        .with_factor(2.0)
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .without_max_times()
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector_core::Stage;

    #[test]
    fn transient_errors_back_off_up_to_the_cap_and_reset() {
        let mut b = Backoff::new();
        let e = ConnectorError::transient(Stage::Connect, "refused");
        let delays: Vec<Duration> = (0..20)
            .map(|_| match b.decide(&e) {
                Decision::RetryAfter(d) => d,
                other => panic!("{other:?} on a transient error"),
            })
            .collect();
        assert!(delays.iter().all(|d| *d <= MAX_DELAY), "{delays:?}");
        assert!(delays[15] >= MAX_DELAY / 2, "did not grow: {delays:?}");
        b.reset();
        match b.decide(&e) {
            Decision::RetryAfter(d) => assert!(d <= MIN_DELAY * 2, "{d:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_feed_gap_asks_for_a_resnapshot() {
        let mut b = Backoff::new();
        let e = ConnectorError::new(ErrorKind::NeedsSnapshot, Stage::Source, "slot lost");
        assert_eq!(b.decide(&e), Decision::Resnapshot);
    }

    #[test]
    fn permanent_errors_give_up() {
        let mut b = Backoff::new();
        assert_eq!(
            b.decide(&ConnectorError::permanent(Stage::Setup, "no slot")),
            Decision::GiveUp
        );
    }
}
