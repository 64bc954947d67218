//! The progress bar of `analyze` and `replay` (indicatif): drawn with rate and ETA when
//! stderr is a terminal (a pty from `script`, util-linux) and CI is not set; absent
//! otherwise, so logs and pipes get the summary lines alone.

use std::process::{Command, Stdio};

fn ndots() -> &'static str {
    env!("CARGO_BIN_EXE_ndots")
}

fn synth(dir: &std::path::Path) -> String {
    let cap = dir.join("synth.pcap");
    let st = Command::new(ndots())
        .args(["capture", "synth", "--queries", "20000", "-o"])
        .arg(&cap)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    cap.display().to_string()
}

/// `cmd` run with its stderr (and stdout) on a pseudo-terminal; what the terminal got.
fn on_terminal(cmd: &str, ci: bool) -> Option<String> {
    let mut c = Command::new("script");
    c.args(["-qec", cmd, "/dev/null"]).env_remove("CI");
    if ci {
        c.env("CI", "true");
    }
    match c.output() {
        Ok(out) => {
            assert!(out.status.success(), "{cmd}: {out:?}");
            Some(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "`script` (util-linux) is needed under CI: {e}"
            );
            eprintln!("SKIPPED: no `script` to give the command a terminal: {e}");
            None
        }
    }
}

#[test]
fn progress_bar_with_rate_and_eta_on_a_terminal_and_none_in_a_pipe_or_under_ci() {
    let dir = tempfile::tempdir().unwrap();
    let cap = synth(dir.path());
    let out = dir.path().join("out");
    for sub in ["analyze", "replay"] {
        let cmd = format!("{} {sub} {cap} --format json -o {}", ndots(), out.display());
        if let Some(tty) = on_terminal(&cmd, false) {
            assert!(
                tty.contains("ETA") && tty.contains("events (") && tty.contains("/s"),
                "{sub}: no bar on a terminal: {tty:?}"
            );
            assert!(
                tty.contains("synth.pcap: 20000 events (pcap)"),
                "{sub}: the summary line stays: {tty:?}"
            );
        }
        if let Some(tty) = on_terminal(&cmd, true) {
            assert!(!tty.contains("ETA"), "{sub}: a bar under CI: {tty:?}");
        }
        let piped = Command::new(ndots())
            .args([sub, &cap, "--format", "json", "-o"])
            .arg(&out)
            .env_remove("CI")
            .output()
            .unwrap();
        assert!(piped.status.success());
        let err = String::from_utf8_lossy(&piped.stderr);
        assert!(
            !err.contains("ETA") && !err.contains('\r') && !err.contains('\x1b'),
            "{sub}: a bar on a pipe: {err:?}"
        );
    }
}
