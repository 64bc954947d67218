//! The container image can run (issue 7): the binary built exactly as the Dockerfile builds it
//! (scripts/build-static.sh) runs as user 65532 in an empty root directory holding only
//! `/ndots` and `/etc/ndots/ndots.yaml` (what the scratch image holds: no libc, no /etc files,
//! no /proc), with the image's entrypoint and configuration, and answers a query from the host.
//!
//! The static build is a full release build (minutes) when scripts/test.sh has not already run
//! it; afterwards it is a no-op.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::netns::skip_or_fail;
use common::tools::{free_port, http_get, require};
use common::upstream::{Rec, Upstream};

const NAME: &str = "api.github.com.";
const IMAGE_UID: u32 = 65532;

/// The proxy process, killed if the test fails before stopping it.
struct Proxy(std::process::Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn static_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/build-static.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running scripts/build-static.sh");
    assert!(out.status.success(), "scripts/build-static.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

#[test]
fn static_binary_serves_dns_from_an_empty_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip_or_fail("needs root to chroot");
        return;
    }
    if !require("chroot") || !require("dig") || !require("readelf") {
        return;
    }
    let bin = static_binary();

    // The image's file system, and nothing else.
    let image = tempfile::tempdir().unwrap();
    let root = image.path();
    std::fs::copy(&bin, root.join("ndots")).unwrap();
    std::fs::create_dir_all(root.join("etc/ndots")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/image.yaml"),
        root.join("etc/ndots/ndots.yaml"),
    )
    .unwrap();
    let mut files = files_under(root);
    files.sort();
    let root_str = root.display().to_string();
    assert_eq!(
        files,
        [
            format!("{root_str}/etc/ndots/ndots.yaml"),
            format!("{root_str}/ndots")
        ]
    );
    // The image's user must be able to traverse the temp dir to reach them.
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(root)
        .status()
        .unwrap();

    let up = Upstream::start();
    up.add(NAME, 1, Rec::A(Ipv4Addr::new(140, 82, 112, 6), 60));
    let dns = free_port();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // The image's ENTRYPOINT and CMD, then flags for this host: ports above 1024 (the image's
    // user has no capability) and an upstream given as an address (no resolv.conf inside).
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut proxy = Proxy(
        Command::new("chroot")
            .arg(format!("--userspec={IMAGE_UID}:{IMAGE_UID}"))
            .arg(root)
            .args(["/ndots", "proxy", "--config", "/etc/ndots/ndots.yaml"])
            .args(["--listen", &format!("127.0.0.1:{dns}")])
            .args(["--upstream", &up.addr.to_string()])
            .args(["--admin", &admin.to_string()])
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
    );
    let pid = proxy.0.id();

    let answer = (0..100).find_map(|_| {
        let out = Command::new("dig")
            .args(["+short", "+tries=1", "+time=1", "@127.0.0.1", "-p"])
            .arg(dns.to_string())
            .args([NAME, "A"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !text.is_empty() && !text.starts_with(";;") {
            Some(text)
        } else {
            std::thread::sleep(Duration::from_millis(100));
            None
        }
    });
    let proxy_log = || std::fs::read_to_string(log.path()).unwrap_or_default();
    assert_eq!(
        answer.as_deref(),
        Some("140.82.112.6"),
        "the proxy in the empty root answers; its log:\n{}",
        proxy_log()
    );
    assert_eq!(up.count(NAME, 1), 1, "through the upstream");

    // It runs as the image's user, inside the empty root.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == IMAGE_UID.to_string()),
        "{uid_line}"
    );
    let proc_root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
    assert_eq!(proc_root, root.canonicalize().unwrap());

    // The admin endpoints the probes use work there too.
    let (code, _) = http_get(admin, "/healthz").expect("/healthz");
    assert_eq!(code, 200);
    let (code, body) = http_get(admin, "/readyz").expect("/readyz");
    assert_eq!(code, 200, "{body}");
    let (_, metrics) = http_get(admin, "/metrics").expect("/metrics");
    assert!(metrics.contains("ndots_build_info"), "{metrics}");

    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let exit = proxy.0.wait().unwrap();
    assert!(
        exit.success(),
        "clean exit on SIGTERM: {exit}; log:\n{}",
        proxy_log()
    );
}
