//! Real stub-resolver clients for tests that run inside `netns`: glibc through `getent`, and
//! musl through a tiny static client (`tests/clients/musl_lookup.c`) built with `musl-gcc`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run a client with a watchdog; returns (exit success, stdout).
pub fn run_client(cmd: &mut Command) -> (bool, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning client");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut s = String::new();
            use std::io::Read;
            child.stdout.take().unwrap().read_to_string(&mut s).unwrap();
            return (status.success(), s);
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("client {cmd:?} did not finish in 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Build the static musl client into `dir`; `None` (after `skip_or_fail`) when musl-gcc is
/// missing.
pub fn build_musl_client(dir: &Path) -> Option<PathBuf> {
    let cc = std::env::var("MUSL_GCC").unwrap_or_else(|_| "musl-gcc".into());
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/musl_lookup.c");
    let bin = dir.join("musl_lookup");
    let status = Command::new(&cc)
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .status();
    match status {
        Ok(s) if s.success() => Some(bin),
        other => {
            super::netns::skip_or_fail(&format!(
                "cannot build the musl client with {cc} ({other:?}): install musl-tools (scripts/deps/search.txt)"
            ));
            None
        }
    }
}

/// The addresses glibc's getaddrinfo returns (`getent ahosts NAME`), or `None` on failure.
pub fn glibc_addresses(name: &str) -> Option<Vec<String>> {
    let (ok, out) = run_client(Command::new("getent").args(["ahosts", name]));
    ok.then(|| {
        let mut v: Vec<String> = out
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        v.sort();
        v.dedup();
        v
    })
}

/// The addresses musl's getaddrinfo returns, or `None` on failure.
pub fn musl_addresses(client: &Path, name: &str) -> Option<Vec<String>> {
    let (ok, out) = run_client(Command::new(client).args([name, "unspec"]));
    ok.then(|| {
        let mut v: Vec<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix("addr ").map(str::to_string))
            .collect();
        v.sort();
        v.dedup();
        v
    })
}
