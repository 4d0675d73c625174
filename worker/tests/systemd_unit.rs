//! The systemd unit in scripts/systemd is accepted by `systemd-analyze verify`
//! (with the path to this build's binary).

use std::process::Command;

#[test]
fn the_unit_file_verifies() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let unit = std::fs::read_to_string(repo.join("scripts/systemd/connector@.service")).unwrap();
    for needed in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "EnvironmentFile=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=connector",
        "--provider %i",
        // A large transaction's temporary file on disk, not a tmpfs /tmp.
        "PrivateTmp=yes",
        "Environment=TMPDIR=/var/tmp",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed}");
    }
    let Ok(analyze) = which("systemd-analyze") else {
        panic!("systemd-analyze is missing: scripts/test.sh installs the systemd package");
    };
    let dir = tempfile::tempdir().unwrap();
    let text = unit.replace("/usr/local/bin/connector", env!("CARGO_BIN_EXE_connector"));
    for name in ["connector@.service", "connector@hq.service"] {
        std::fs::write(dir.path().join(name), &text).unwrap();
        let out = Command::new(&analyze)
            .arg("verify")
            .arg(dir.path().join(name))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("connector@"),
            "{name}: {stderr}"
        );
    }
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin", "/bin"])
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.exists())
        .ok_or(())
}
