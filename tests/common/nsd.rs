//! nsd, the authoritative oracle, serving one zone from a text, in the foreground (killed by
//! the caller), with response rate limiting off (load tests would trip it) and IPv4 only.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// nsd on each `ip@port` of `listen`, serving `zone` (`svc.test`) from `zone_text`, with its
/// files under `dir`.
pub fn spawn(dir: &Path, listen: &[String], zone: &str, zone_text: &str) -> Child {
    let zones = dir.join("zones");
    std::fs::create_dir_all(&zones).unwrap();
    std::fs::write(zones.join(format!("{zone}.zone")), zone_text).unwrap();
    let d = dir.display();
    let addresses: String = listen
        .iter()
        .map(|a| format!("  ip-address: {a}\n"))
        .collect();
    std::fs::write(
        dir.join("nsd.conf"),
        format!(
            "server:\n{addresses}  server-count: 1\n  username: \"\"\n  \
             chroot: \"\"\n  zonesdir: \"{d}/zones\"\n  database: \"\"\n  \
             zonelistfile: \"{d}/zone.list\"\n  xfrdfile: \"{d}/xfrd.state\"\n  \
             xfrdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  logfile: \"{d}/nsd.log\"\n  \
             do-ip6: no\n  rrl-ratelimit: 0\nremote-control:\n  control-enable: no\n\
             zone:\n  name: \"{zone}\"\n  zonefile: \"{zone}.zone\"\n",
        ),
    )
    .unwrap();
    Command::new("nsd")
        .args(["-d", "-c"])
        .arg(dir.join("nsd.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nsd runs")
}
