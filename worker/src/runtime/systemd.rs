//! systemd `Type=notify` support without a dependency: READY/STOPPING and
//! watchdog pings are datagrams to `$NOTIFY_SOCKET`. The watchdog is fed
//! only while some provider is not red, so systemd restarts a worker whose
//! every provider has stopped.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use tokio::sync::watch;

use super::health::Health;

fn notify(state: &str) {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    if let Some(abstract_name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) =
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
        {
            let _ = sock.send_to_addr(state.as_bytes(), &addr);
        }
    } else {
        let _ = sock.send_to(state.as_bytes(), &path);
    }
}

pub fn notify_ready() {
    notify("READY=1\nSTATUS=starting");
}

/// What `systemctl status` shows as the unit's status line.
pub fn notify_status(status: &str) {
    notify(&format!("STATUS={status}"));
}

pub fn notify_stopping() {
    notify("STOPPING=1");
}

/// Pings the watchdog at half its interval (`$WATCHDOG_USEC`), if set.
pub async fn watchdog(health: Health, mut shutdown: watch::Receiver<bool>) {
    let Some(usec) = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    let every = Duration::from_micros(usec / 2).max(Duration::from_millis(100));
    loop {
        if super::sleep_or_shutdown(every, &mut shutdown).await {
            return;
        }
        if !health.all_red() {
            notify("WATCHDOG=1");
        }
    }
}
