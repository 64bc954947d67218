//! The HTML report and replay page in a real browser (Debian's headless Chromium): the advice
//! comes before the tables, no code block or table is wider than its box, the page does not
//! scroll sideways. The screenshots are written to `target/screenshots/` for a person to look
//! at; the test asserts the structure, measured by the browser's layout.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::tools::require;

fn ndots() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ndots"))
}

fn run(args: &[&str]) -> String {
    let out = ndots().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ndots {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Measured in the page after layout: written into the title, read back with --dump-dom.
const PROBE: &str = r#"<script>
window.addEventListener('load', () => {
  const wide = [...document.querySelectorAll('pre, code, table, svg')]
    .filter(e => e.getBoundingClientRect().right > document.body.getBoundingClientRect().right + 1
              || e.scrollWidth > e.clientWidth + 1 && e.tagName === 'PRE')
    .map(e => e.tagName + ':' + e.textContent.slice(0, 40));
  const h2 = [...document.querySelectorAll('h2')].map(h => h.textContent);
  const advice = document.getElementById('advice');
  const firstTable = document.querySelector('table');
  const order = advice && firstTable
    ? (advice.getBoundingClientRect().top < firstTable.getBoundingClientRect().top ? 'advice-first' : 'advice-late')
    : 'no-advice';
  const sideways = document.documentElement.scrollWidth > window.innerWidth;
  document.title = 'PROBE|' + order + '|sideways=' + sideways + '|wide=' + wide.join(';') + '|h2=' + h2.join(';') + '|END';
});
</script>"#;

fn chromium(args: &[&str]) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1000,1400",
            "--virtual-time-budget=3000",
        ])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("chromium runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Lay `html` out in Chromium: the probe's verdict, and a screenshot at `shot`.
fn measure(dir: &Path, name: &str, html: &str, shot: &Path) -> String {
    let plain = dir.join(format!("{name}.html"));
    std::fs::write(&plain, html).unwrap();
    let probed = dir.join(format!("{name}-probe.html"));
    std::fs::write(&probed, html.replace("</body>", &format!("{PROBE}</body>"))).unwrap();
    chromium(&[
        &format!("--screenshot={}", shot.display()),
        &format!("file://{}", plain.display()),
    ]);
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    let dom = chromium(&["--dump-dom", &format!("file://{}", probed.display())]);
    let start = dom
        .find("PROBE|")
        .unwrap_or_else(|| panic!("no probe result in {dom:.400}"));
    let end = dom[start..].find("|END").unwrap() + start;
    dom[start..end].to_string()
}

fn screenshots() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn the_html_report_and_replay_page_lay_out_with_the_advice_first_and_nothing_overflowing() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("synth.pcap");
    run(&[
        "capture",
        "synth",
        "--queries",
        "20000",
        "-o",
        cap.to_str().unwrap(),
    ]);
    let cap = cap.to_str().unwrap();
    let report = run(&["analyze", cap, "--format", "html"]);
    let replay = run(&["replay", cap, "--ndots", "1,2,3", "--format", "html"]);

    // Structure, browser or not: the advice section precedes every table, and its snippets
    // are code blocks that wrap.
    let advice = report.find("id=\"advice\"").expect("advice section");
    assert!(advice < report.find("<table").unwrap());
    assert!(report.contains("<pre>shortcut:\n  zones:\n    - "));
    assert!(report.contains("white-space:pre-wrap"));
    assert!(!report.contains('`'));

    if !require("chromium") {
        return;
    }
    let shots = screenshots();
    for (name, html, advice_first) in [("report", &report, true), ("replay", &replay, false)] {
        let verdict = measure(dir.path(), name, html, &shots.join(format!("{name}.png")));
        eprintln!("{name}: {verdict}");
        assert!(verdict.contains("sideways=false"), "{name}: {verdict}");
        assert!(verdict.contains("|wide=|"), "{name}: overflowing {verdict}");
        if advice_first {
            assert!(verdict.contains("|advice-first|"), "{name}: {verdict}");
        }
    }
}
