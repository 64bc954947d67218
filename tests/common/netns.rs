//! Run a test inside a private network + mount namespace, so real clients (glibc's resolver
//! through `getent`, a static musl binary, later the proxy) can be pointed at a server on
//! 127.0.0.1:53 through a pod-like /etc/resolv.conf without touching the host.
//!
//! Pattern: the test calls [`enter`] first. Outside the namespace it re-executes its own test
//! binary for just that test (`--exact NAME --nocapture --test-threads=1`) under
//! `unshare --net --mount --uts` with `NDOTS_NETNS_CHILD=NAME`, waits, and returns `None`: the
//! parent's work is done. Inside, it brings `lo` up, adds an interface with an IPv4 and an
//! IPv6 address (getaddrinfo's AI_ADDRCONFIG only asks for a family that has a non-loopback
//! address), makes mounts private, bind-mounts its own `/etc/resolv.conf`, `/etc/hosts` and
//! `/etc/nsswitch.conf` (`hosts: files dns`), hides nscd's socket, and returns the handle.
//!
//! Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN). Without it the test is skipped with a loud
//! message, unless `CI=true`, where not being able to run is a failure.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub const CHILD_ENV: &str = "NDOTS_NETNS_CHILD";

/// The namespace a test runs in (inside only).
pub struct Netns {
    dir: tempfile::TempDir,
    resolv_conf: PathBuf,
}

fn under_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

/// Skip (loudly) or, under `CI=true`, fail.
pub fn skip_or_fail(reason: &str) {
    if under_ci() {
        panic!("CI=true and this test cannot run: {reason}");
    }
    eprintln!("\n*** SKIPPED: {reason} ***\n*** (set CI=true to make this a failure) ***\n");
}

/// See the module docs. `test` is the test's name as libtest knows it (the function name for
/// a top-level test in an integration test file).
pub fn enter(test: &str) -> Option<Netns> {
    if std::env::var(CHILD_ENV).as_deref() == Ok(test) {
        return Some(Netns::setup().unwrap_or_else(|e| panic!("setting up the namespace: {e}")));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip_or_fail(
            "needs root for unshare --net --mount (run as root, e.g. in the CI container)",
        );
        return None;
    }
    if which("unshare").is_none() || which("ip").is_none() {
        skip_or_fail("needs unshare (util-linux) and ip (iproute2): see scripts/deps/search.txt");
        return None;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let status = Command::new("unshare")
        .args(["--net", "--mount", "--uts", "--"])
        .arg(&exe)
        // `--include-ignored`: an ignored test (a bench) that was asked for runs inside too.
        .args([
            "--exact",
            test,
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(CHILD_ENV, test)
        .status()
        .expect("running unshare");
    assert!(
        status.success(),
        "the test inside the namespace failed ({status}); its output is above"
    );
    None
}

pub fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn bind_over(src: &Path, target: &str) -> Result<(), String> {
    run("mount", &["--bind", src.to_str().unwrap(), target])
}

impl Netns {
    fn setup() -> Result<Netns, String> {
        run("mount", &["--make-rprivate", "/"])?;
        // A host name without a domain: resolvers that derive a search domain from it
        // (hickory-resolver always, glibc and Go without a search list) then see none, whatever
        // the machine is called.
        let host = b"ndots-test";
        // SAFETY: the pointer and length describe `host`; the UTS namespace is our own.
        if unsafe { libc::sethostname(host.as_ptr().cast(), host.len()) } != 0 {
            return Err(format!("sethostname: {}", std::io::Error::last_os_error()));
        }
        run("ip", &["link", "set", "lo", "up"])?;
        // A dummy interface if the kernel has the module, else a veth pair, else lo itself.
        let dev = if run("ip", &["link", "add", "ndots0", "type", "dummy"]).is_ok() {
            "ndots0"
        } else if run(
            "ip",
            &[
                "link", "add", "ndots0", "type", "veth", "peer", "name", "ndots1",
            ],
        )
        .is_ok()
        {
            run("ip", &["link", "set", "ndots1", "up"])?;
            "ndots0"
        } else {
            "lo"
        };
        run("ip", &["link", "set", dev, "up"])?;
        run("ip", &["addr", "add", "192.0.2.1/24", "dev", dev])?;
        run(
            "ip",
            &["-6", "addr", "add", "2001:db8::1/64", "dev", dev, "nodad"],
        )?;

        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let resolv_conf = dir.path().join("resolv.conf");
        std::fs::write(&resolv_conf, "nameserver 127.0.0.1\n").map_err(|e| e.to_string())?;
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "127.0.0.1 localhost\n::1 localhost\n")
            .map_err(|e| e.to_string())?;
        let nss = dir.path().join("nsswitch.conf");
        std::fs::write(&nss, "hosts: files dns\n").map_err(|e| e.to_string())?;
        bind_over(&resolv_conf, "/etc/resolv.conf")?;
        bind_over(&hosts, "/etc/hosts")?;
        if Path::new("/etc/nsswitch.conf").exists() {
            bind_over(&nss, "/etc/nsswitch.conf")?;
        }
        // getaddrinfo asks nscd first (nss/getaddrinfo.c); its socket is a path, so the
        // network namespace does not hide it. A tmpfs does.
        for d in ["/run/nscd", "/var/run/nscd"] {
            if Path::new(d).is_dir() {
                run("mount", &["-t", "tmpfs", "none", d])?;
            }
        }
        Ok(Netns { dir, resolv_conf })
    }

    /// Replace /etc/resolv.conf's content (in place: the bind mount keeps the inode).
    pub fn set_resolv_conf(&self, text: &str) {
        std::fs::write(&self.resolv_conf, text).expect("writing resolv.conf");
    }

    /// A scratch directory that lives as long as the namespace handle.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }
}
