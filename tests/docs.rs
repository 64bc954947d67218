//! The docs cannot drift from the code (issue 9):
//! - docs/reference/{metrics,config,cli}.md are exactly what `ndots docs` generates now;
//! - every metric constant in src/metrics.rs is in `metrics::ALL`, and every series a running
//!   proxy exports is a documented metric with documented labels;
//! - every key in configs/example.yaml is a documented config key, and every documented key is
//!   in the example;
//! - every subcommand's `--help` has a one-line purpose and an example;
//! - relative links in README.md and docs/ point at files that exist.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::upstream::{Rec, Upstream};
use ndots::config::{Config, FileConfig, Overrides};
use ndots::docs;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn generated_reference_pages_are_up_to_date() {
    let dir = root().join(docs::REFERENCE_DIR);
    let mut stale = Vec::new();
    for (name, want) in docs::reference_pages(&ndots::cli::command()) {
        let have = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        if have != want {
            let first = have
                .lines()
                .zip(want.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(have.lines().count().min(want.lines().count()));
            stale.push(format!("{name} (first difference at line {})", first + 1));
        }
    }
    assert!(
        stale.is_empty(),
        "the generated reference is out of date: {}.\nRegenerate it with `{}` and commit the result.",
        stale.join(", "),
        docs::REGENERATE
    );
}

#[test]
fn every_metric_constant_is_listed_with_its_metadata() {
    let src = std::fs::read_to_string(root().join("src/metrics.rs")).unwrap();
    let consts: BTreeSet<String> = src
        .lines()
        .filter(|l| {
            l.starts_with("pub const ")
                && (l.contains(": &str = \"ndots_")
                    || l.contains(": &str = \"process_")
                    || l.contains(": &str = \"coredns_"))
        })
        .filter_map(|l| l.split('"').nth(1).map(str::to_string))
        .collect();
    let listed: BTreeSet<String> = ndots::metrics::ALL
        .iter()
        .chain(ndots::metrics::COREDNS)
        .map(|m| m.name.to_string())
        .collect();
    assert!(consts.len() >= 20, "parsed the constants: {consts:?}");
    assert_eq!(
        consts,
        listed,
        "a metric name constant in src/metrics.rs is missing from metrics::ALL (or the other way \
         round); add it there with its type, labels and help, then run `{}`",
        docs::REGENERATE
    );
    for m in ndots::metrics::ALL.iter().chain(ndots::metrics::COREDNS) {
        assert!(
            matches!(m.kind, "counter" | "gauge" | "histogram"),
            "{}",
            m.name
        );
        assert!(!m.help.is_empty(), "{} has no help", m.name);
    }
}

/// Series a live proxy exports must be documented metrics with documented label names.
#[test]
fn exported_series_are_documented_with_their_labels() {
    let up = Upstream::start();
    up.add(
        "web.default.svc.cluster.local.",
        1,
        Rec::A(Ipv4Addr::new(10, 96, 0, 7), 30),
    );
    let file = FileConfig::parse(
        "listen: [\"127.0.0.1:0\"]\nserver: {workers: 1}\nshortcut: {zones: [github.com]}\n",
    )
    .unwrap();
    let overrides = Overrides {
        upstreams: vec![(".".into(), up.addr)],
        ..Default::default()
    };
    let mut cfg = Config::from_file_config(file, &overrides).unwrap();
    cfg.admin = None;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let proxy = ndots::proxy::start(cfg, rt.handle()).unwrap();
    let addr = proxy.dns_addrs[0];
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    // A walk (expansions answered by the shortcut and by upstream), then a cache hit.
    for name in [
        "api.github.com.default.svc.cluster.local.",
        "api.github.com.svc.cluster.local.",
        "web.default.svc.cluster.local.",
        "web.default.svc.cluster.local.",
        "malformed",
    ] {
        let mut q = Vec::new();
        if name == "malformed" {
            q = vec![0u8; 5];
        } else {
            ndots::wire::build_query(1, name, 1, false, &mut q).unwrap();
        }
        client.send_to(&q, addr).unwrap();
        let mut buf = [0u8; 1500];
        let _ = client.recv(&mut buf);
    }
    proxy.tracker().sync(true);
    let text = proxy.metrics_text();
    proxy.shutdown(Duration::from_millis(100));

    let mut seen = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("ndots_")) {
        let (series, _) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s).filter(|b| {
                    ndots::metrics::ALL
                        .iter()
                        .any(|m| m.name == *b && m.kind == "histogram")
                })
            })
            .unwrap_or(name);
        let info = ndots::metrics::ALL
            .iter()
            .find(|m| m.name == base)
            .unwrap_or_else(|| panic!("{base} is exported but not in metrics::ALL"));
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let label = pair.split('=').next().unwrap();
            if label == "le" {
                continue;
            }
            assert!(
                info.labels.iter().any(|(l, _)| *l == label),
                "{base} is exported with label {label:?}, which metrics::ALL does not document"
            );
        }
        seen.insert(base.to_string());
    }
    for expected in [
        "ndots_dns_requests_total",
        "ndots_dns_responses_total",
        "ndots_cache_hits_total",
        "ndots_shortcut_answers_total",
        "ndots_build_info",
    ] {
        assert!(seen.contains(expected), "{expected} not exported:\n{text}");
    }
}

/// Leaf keys of a YAML document, dotted, with `[]` for list entries that are mappings.
fn yaml_keys(v: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(path.clone());
                yaml_keys(v, &path, out);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items.iter().filter(|i| i.is_object()) {
                yaml_keys(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn example_config_and_reference_have_the_same_keys() {
    let text = std::fs::read_to_string(root().join("configs/example.yaml")).unwrap();
    let doc: serde_json::Value = yaml_serde::from_str(&text).unwrap();
    let mut in_example = BTreeSet::new();
    yaml_keys(&doc, "", &mut in_example);
    let documented: BTreeSet<String> = docs::config_keys().into_iter().map(|k| k.path).collect();
    let undocumented: Vec<_> = in_example.difference(&documented).collect();
    let not_in_example: Vec<_> = documented.difference(&in_example).collect();
    assert!(
        undocumented.is_empty(),
        "configs/example.yaml has keys the config types do not: {undocumented:?}"
    );
    assert!(
        not_in_example.is_empty(),
        "config keys missing from configs/example.yaml (add each with its default and a comment): \
         {not_in_example:?}"
    );
    for k in docs::config_keys() {
        assert!(
            !k.description.is_empty(),
            "config key {} has no doc comment in src/config.rs",
            k.path
        );
    }
}

#[test]
fn every_subcommand_has_a_purpose_and_an_example() {
    let mut cli = ndots::cli::command();
    cli.build();
    for path in docs::subcommand_paths(&cli) {
        let cmd = docs::find_subcommand(&cli, &path).unwrap();
        let name = path.join(" ");
        let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
        assert!(
            !about.trim().is_empty(),
            "`ndots {name}` has no one-line purpose"
        );
        assert!(
            !about.contains('\n'),
            "`ndots {name}`: purpose longer than a line"
        );
        if cmd.get_subcommands().next().is_some() {
            continue; // a group: its subcommands carry the examples
        }
        let after = cmd
            .get_after_help()
            .map(|a| a.to_string())
            .unwrap_or_default();
        assert!(
            after.contains("Example") && after.contains(&format!("ndots {name}")),
            "`ndots {name} --help` shows no example (`#[command(after_help = \"Example:\\n  ndots {name} ...\")]`)"
        );
        for arg in docs::documented_args(cmd) {
            assert!(
                arg.get_help().is_some(),
                "`ndots {name}`: {} has no help text",
                docs::arg_synopsis(arg)
            );
        }
    }
}

/// Relative Markdown links `](path)` in `file` whose target does not exist.
fn broken_links(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let base = file.parent().unwrap();
    let mut broken = Vec::new();
    for part in text.split("](").skip(1) {
        let Some(target) = part.split(')').next() else {
            continue;
        };
        let target = target.split('#').next().unwrap_or("");
        if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let path = base.join(target);
        if !path.exists() {
            broken.push(format!("{}: {target}", file.display()));
        }
    }
    broken
}

#[test]
fn relative_links_in_the_docs_resolve() {
    let mut files = vec![
        root().join("README.md"),
        root().join("ARCHITECTURE.md"),
        root().join("deploy/README.md"),
    ];
    for dir in ["docs", "docs/reference"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "md") {
                files.push(p);
            }
        }
    }
    let broken: Vec<String> = files.iter().flat_map(|f| broken_links(f)).collect();
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}

#[test]
fn completions_man_pages_and_version_come_from_the_clap_definitions() {
    let bin = env!("CARGO_BIN_EXE_ndots");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        assert!(out.status.success(), "ndots {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let version = run(&["--version"]);
    assert!(
        version.starts_with(&format!("ndots {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        for word in ["proxy", "demo", "shortcut-mode", "upstream"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    run(&["man", "--dir", dir.path().to_str().unwrap()]);
    let mut cli = ndots::cli::command();
    cli.build();
    for path in docs::subcommand_paths(&cli) {
        let page = dir.path().join(format!("ndots-{}.1", path.join("-")));
        let text =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(text.contains(".TH"), "{} is not a man page", page.display());
    }
    assert!(dir.path().join("ndots.1").exists());
}
