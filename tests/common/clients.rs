//! Real resolver clients for tests inside a [`super::netns::Netns`]: glibc through `getent`,
//! musl through the static `tests/clients/musl_lookup.c`, Go's pure resolver through
//! `tests/clients/go_lookup.go` (CGO_ENABLED=0), c-ares through `tests/clients/cares_lookup.c`
//! (linked to the system libcares) and `tests/clients/pycares_lookup.py`, hickory-resolver
//! through `tests/clients/hickory_lookup`. Each lookup returns the canonical name the client
//! resolved (absolute, lowercase), or `None` when the lookup failed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ndots::search::name::absolute;
use ndots::search::Family;

use super::netns;

/// Environment for a client: glibc reads `LOCALDOMAIN` and `RES_OPTIONS`; anything not given is
/// removed so the test process's environment does not leak in.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientEnv<'a> {
    pub localdomain: Option<&'a str>,
    pub res_options: Option<&'a str>,
}

impl ClientEnv<'_> {
    fn apply(&self, cmd: &mut Command) {
        cmd.env_remove("HOSTALIASES");
        for (var, value) in [
            ("LOCALDOMAIN", self.localdomain),
            ("RES_OPTIONS", self.res_options),
        ] {
            match value {
                Some(v) => cmd.env(var, v),
                None => cmd.env_remove(var),
            };
        }
    }
}

pub fn family_arg(f: Family) -> &'static str {
    match f {
        Family::Inet => "inet",
        Family::Inet6 => "inet6",
        Family::Unspec => "unspec",
    }
}

/// Run a client with a 30 s watchdog; returns (exit success, stdout).
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

/// glibc getaddrinfo: `getent ahosts` (AF_UNSPEC) or `getent ahostsv4` (AF_INET).
pub fn glibc_lookup(name: &str, family: Family, env: ClientEnv<'_>) -> Option<String> {
    let db = match family {
        Family::Inet => "ahostsv4",
        Family::Inet6 => "ahostsv6",
        Family::Unspec => "ahosts",
    };
    let mut cmd = Command::new("getent");
    env.apply(&mut cmd);
    let (ok, out) = run_client(cmd.args([db, name]));
    // First line: "ADDRESS  STREAM CANONNAME" (getent asks for AI_CANONNAME).
    ok.then(|| {
        absolute(
            out.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(2))
                .unwrap_or(""),
        )
    })
}

/// A client built by the test (musl, Go, c-ares): `CLIENT NAME FAMILY` prints `canon NAME`.
pub fn built_client_lookup(
    client: &Path,
    name: &str,
    family: Family,
    env: ClientEnv<'_>,
) -> Option<String> {
    let mut cmd = Command::new(client);
    env.apply(&mut cmd);
    let (ok, out) = run_client(cmd.args([name, family_arg(family)]));
    ok.then(|| {
        absolute(
            out.lines()
                .find_map(|l| l.strip_prefix("canon "))
                .unwrap_or(""),
        )
    })
}

/// musl getaddrinfo through the client built by [`build_musl_client`].
pub fn musl_lookup(
    client: &Path,
    name: &str,
    family: Family,
    env: ClientEnv<'_>,
) -> Option<String> {
    built_client_lookup(client, name, family, env)
}

/// Build `tests/clients/musl_lookup.c` with `musl-gcc -static` (or `$MUSL_GCC`) into `dir`.
/// Skips loudly, or fails under `CI=true`, when the compiler is missing.
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
            netns::skip_or_fail(&format!(
                "cannot build the musl client with {cc} ({other:?}): install musl-tools (scripts/deps/search.txt)"
            ));
            None
        }
    }
}

/// Build `tests/clients/go_lookup.go` with the system `go` (Debian's golang-go, or `$GO`) and
/// `CGO_ENABLED=0`, so it runs Go's pure resolver. Returns the binary and `go version`'s
/// version word. Skips loudly, or fails under `CI=true`, when the toolchain is missing.
pub fn build_go_client(dir: &Path) -> Option<(PathBuf, String)> {
    let go = std::env::var("GO").unwrap_or_else(|_| "go".into());
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/go_lookup.go");
    let bin = dir.join("go_lookup");
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-build-cache");
    let status = Command::new(&go)
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .current_dir(dir)
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", &cache)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .status();
    match status {
        Ok(s) if s.success() => {
            let v = Command::new(&go).arg("version").output().ok();
            let version = v
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .and_then(|s| s.split_whitespace().nth(2).map(str::to_string))
                .unwrap_or_else(|| "go?".into());
            Some((bin, version))
        }
        other => {
            netns::skip_or_fail(&format!(
                "cannot build the Go client with {go} ({other:?}): install golang-go (scripts/deps/search.txt)"
            ));
            None
        }
    }
}

/// Build `tests/clients/cares_lookup.c` against the system c-ares (`cc ... -lcares`, Debian's
/// libc-ares-dev). Returns the binary and the library's version (`ares_version`). Skips
/// loudly, or fails under `CI=true`, when the compiler or the library is missing.
pub fn build_cares_client(dir: &Path) -> Option<(PathBuf, String)> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/cares_lookup.c");
    let bin = dir.join("cares_lookup");
    let status = Command::new(&cc)
        .args(["-O1", "-Wno-deprecated-declarations", "-o"])
        .arg(&bin)
        .arg(&src)
        .arg("-lcares")
        .status();
    match status {
        Ok(s) if s.success() => {
            let (_, out) = run_client(Command::new(&bin).arg("--version"));
            Some((bin, out.trim().to_string()))
        }
        other => {
            netns::skip_or_fail(&format!(
                "cannot build the c-ares client with {cc} -lcares ({other:?}): install libc-ares-dev (scripts/deps/search.txt)"
            ));
            None
        }
    }
}

/// `tests/clients/pycares_lookup.py` behind a small executable wrapper in `dir` (pycares, from
/// scripts/deps/pip.txt, carries its own c-ares). Returns the wrapper and the c-ares version.
/// Skips loudly, or fails under `CI=true`, when pycares is not installed.
pub fn pycares_client(dir: &Path) -> Option<(PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/pycares_lookup.py");
    let bin = dir.join("pycares_lookup");
    std::fs::write(
        &bin,
        format!("#!/bin/sh\nexec python3 {} \"$@\"\n", src.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(&bin).arg("--version").output();
    match out {
        Ok(o) if o.status.success() => {
            let version = String::from_utf8_lossy(&o.stdout).trim().to_string();
            Some((bin, version))
        }
        other => {
            netns::skip_or_fail(&format!(
                "cannot run the pycares client ({other:?}): pip install pycares (scripts/deps/pip.txt)"
            ));
            None
        }
    }
}

/// The hickory client's crate (`tests/clients/hickory_lookup`, its own Cargo.lock) and target
/// directory (kept under the test target dir, so it is built once).
fn hickory_paths() -> (PathBuf, PathBuf) {
    (
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/hickory_lookup/Cargo.toml"),
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("hickory-client"),
    )
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Download the hickory client's crates (`cargo fetch --locked`), outside the namespace: the
/// namespace has no route to a registry. Failures show up in [`build_hickory_client`].
pub fn fetch_hickory_client() {
    let (manifest, _) = hickory_paths();
    let _ = cargo()
        .args(["fetch", "--locked", "--manifest-path"])
        .arg(&manifest)
        .status();
}

/// Build `tests/clients/hickory_lookup` (hickory-resolver pinned in its Cargo.toml, tokio,
/// no default features) offline. Returns the binary and the hickory-resolver version from its
/// lock file. Skips loudly, or fails under `CI=true`, when it cannot be built.
pub fn build_hickory_client() -> Option<(PathBuf, String)> {
    let (manifest, target) = hickory_paths();
    let status = cargo()
        .args([
            "build",
            "--quiet",
            "--offline",
            "--locked",
            "--manifest-path",
        ])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .status();
    match status {
        Ok(s) if s.success() => {
            let lock = std::fs::read_to_string(manifest.with_file_name("Cargo.lock")).unwrap();
            let version = lock
                .split("[[package]]")
                .find(|p| p.contains("name = \"hickory-resolver\""))
                .and_then(|p| p.split("version = \"").nth(1))
                .and_then(|v| v.split('"').next())
                .unwrap_or("?")
                .to_string();
            Some((target.join("debug/hickory_lookup"), version))
        }
        other => {
            netns::skip_or_fail(&format!(
                "cannot build the hickory client ({other:?}): cargo fetch needs the crates registry once"
            ));
            None
        }
    }
}

/// The stub model for a Go version (`go1.19.8`, or `go version`'s whole line): `go-1.19` for
/// Go 1.19 and before (Debian 12's 1.19.8), else `go`. `NDOTS_GO_STUB` overrides.
pub fn go_model(version: &str) -> String {
    if let Ok(s) = std::env::var("NDOTS_GO_STUB") {
        return s;
    }
    let nums: Vec<u32> = version
        .split("go")
        .filter_map(|w| w.split_whitespace().next())
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or("")
        .split('.')
        .take(2)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    if nums.len() == 2 && (nums[0], nums[1]) < (1, 20) {
        "go-1.19".into()
    } else {
        "go".into()
    }
}

/// The stub model for a c-ares version: `c-ares-1.18` before 1.34 (Debian 12's 1.18.1), else
/// `c-ares`. `NDOTS_CARES_STUB` overrides.
pub fn cares_model(version: &str) -> String {
    if let Ok(s) = std::env::var("NDOTS_CARES_STUB") {
        return s;
    }
    let nums: Vec<u32> = version
        .split('.')
        .take(2)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    if nums.len() == 2 && (nums[0], nums[1]) < (1, 34) {
        "c-ares-1.18".into()
    } else {
        "c-ares".into()
    }
}

/// The stub model matching the installed musl: `musl-1.2.3` before 1.2.4 (Debian 12), else
/// `musl`. `NDOTS_MUSL_STUB` overrides (e.g. when `MUSL_GCC` points at another musl).
pub fn musl_model() -> String {
    if let Ok(s) = std::env::var("NDOTS_MUSL_STUB") {
        return s;
    }
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "musl"])
        .output();
    let version = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let nums: Vec<u32> = version
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    if nums.len() == 3 && (nums[0], nums[1], nums[2]) < (1, 2, 4) {
        "musl-1.2.3".into()
    } else {
        "musl".into()
    }
}

/// The addresses glibc's getaddrinfo returns (`getent ahosts NAME`), sorted, or `None`.
pub fn glibc_addresses(name: &str) -> Option<Vec<String>> {
    let (ok, out) = run_client(Command::new("getent").args(["ahosts", name]));
    ok.then(|| sorted_unique(out.lines().filter_map(|l| l.split_whitespace().next())))
}

/// The addresses musl's getaddrinfo returns (AF_UNSPEC), sorted, or `None`.
pub fn musl_addresses(client: &Path, name: &str) -> Option<Vec<String>> {
    let (ok, out) = run_client(Command::new(client).args([name, "unspec"]));
    ok.then(|| sorted_unique(out.lines().filter_map(|l| l.strip_prefix("addr "))))
}

fn sorted_unique<'a>(it: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<String> = it.map(str::to_string).collect();
    v.sort();
    v.dedup();
    v
}
