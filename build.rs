//! Generates the dnstap protobuf types with prost (`protox` compiles the schema in Rust, so the
//! build needs no `protoc` binary), and records the git commit for `ndots --version`.

use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/dnstap.proto");
    let fds = protox::compile(["proto/dnstap.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    git_commit();
    Ok(())
}

/// `NDOTS_GIT_COMMIT`: the short commit hash, or "unknown" when the source is not a git checkout or git is missing (a crate tarball, a
/// Docker build context without .git).
fn git_commit() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).filter(|c| !c.is_empty());
    let value = commit.unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=NDOTS_GIT_COMMIT={value}");
    // Rebuild when HEAD moves: HEAD itself (a branch switch) and the ref it points to (a commit).
    // In a worktree these live under the worktree's git dir, which `--git-path` resolves.
    if let Some(p) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={p}");
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(p) = git(&["rev-parse", "--git-path", &r]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}
