//! One process at a time streams or copies a provider.
//!
//! A copy run beside a stream of the same provider can overwrite a commit
//! its snapshot did not see: PostgreSQL sends a commit to logical
//! replication once it is flushed, possibly before it is visible, so the
//! stream may merge it before the copy has saved what it missed
//! ([`super::in_flight`]). So a provider's source holds an exclusive lock
//! while it streams (and while it copies again after a lost feed), and
//! `connector initial-sync` takes the same lock for each provider it copies:
//! the copy refuses to run beside a stream with that reason, and a stream
//! started beside a copy waits for it (a transient error, retried). A
//! provider's sink holds a lock of its own (`<provider>.sink`): a `run` of
//! every provider beside a `run --provider` wrote each change twice, and
//! one process's record of its tagged writes was not the other's source's.
//!
//! The lock is `flock` on `<store file>.<provider>.lock` (beside the
//! store's real path, so links to the store share it): the kernel releases
//! it when the process ends, however it ends, so a crash never leaves a
//! provider locked. The file is created group-writable and opened read-only
//! when it exists (`flock` needs no write access), so one left by an
//! operator's own run does not lock the service's user out.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use connector_core::{ConnectorError, Stage};

/// Held while it lives.
#[derive(Debug)]
pub struct ProviderLock {
    _file: File,
}

pub fn lock_path(store: &Path, provider: &str) -> PathBuf {
    // The store file's real path where it exists (a link to it shares its
    // lock), else the same name in its directory's real path.
    let real = std::fs::canonicalize(store).unwrap_or_else(|_| {
        let dir = match store.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        std::fs::canonicalize(dir)
            .unwrap_or_else(|_| dir.to_path_buf())
            .join(store.file_name().unwrap_or("store".as_ref()))
    });
    let name = real.file_name().unwrap_or_default().to_string_lossy();
    real.with_file_name(format!("{name}.{provider}.lock"))
}

fn open(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o660)
            .open(path),
        other => other,
    }
}

/// Takes `provider`'s lock, or `None` when another process (or another
/// holder in this one) has it.
pub fn try_acquire(store: &Path, provider: &str) -> Result<Option<ProviderLock>, ConnectorError> {
    let path = lock_path(store, provider);
    let file = open(&path).map_err(|e| {
        ConnectorError::permanent(
            Stage::Store,
            format!("cannot open the lock file {}: {e}", path.display()),
        )
    })?;
    match file.try_lock() {
        Ok(()) => Ok(Some(ProviderLock { _file: file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(ConnectorError::permanent(
            Stage::Store,
            format!("cannot lock {}: {e}", path.display()),
        )),
    }
}

/// Whether some process holds `lock_name`'s lock now (for `status`): the
/// lock taken and released at once when free; a lock file not there yet
/// is free and is not made.
pub fn is_held(store: &Path, lock_name: &str) -> bool {
    let Ok(file) = File::open(lock_path(store, lock_name)) else {
        return false;
    };
    matches!(file.try_lock(), Err(TryLockError::WouldBlock))
}

/// How often a task whose lock another process holds tries it again.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Takes the lock `lock_name` for `provider`'s `task`. While another process
/// holds it (waiting is not an error), says so once (yellow: `another
/// process {doing} {provider}`) and waits a second, or less on shutdown:
/// `Ok(None)`, to be tried again.
pub async fn take_or_wait(
    shared: &super::Shared,
    provider: &str,
    task: &'static str,
    lock_name: &str,
    doing: &str,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<Option<ProviderLock>, ConnectorError> {
    if let Some(lock) = try_acquire(&shared.store_path, lock_name)? {
        return Ok(Some(lock));
    }
    let why = format!(
        "waiting: another process {doing} {provider} (its lock {} is held)",
        lock_path(&shared.store_path, lock_name).display()
    );
    if shared
        .health
        .set_once(provider, task, super::health::Light::Yellow, &why)
    {
        tracing::warn!(provider, "{why}");
    }
    super::sleep_or_shutdown(LOCK_WAIT, shutdown).await;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_is_locked_once_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store.db");
        let held = try_acquire(&store, "hq").unwrap().expect("free at first");
        assert!(try_acquire(&store, "hq").unwrap().is_none());
        assert!(try_acquire(&store, "shop").unwrap().is_some());
        assert_eq!(lock_path(&store, "hq"), dir.path().join("store.db.hq.lock"));
        drop(held);
        assert!(try_acquire(&store, "hq").unwrap().is_some());
    }
}
