//! The demo's result for a person: the comparison table first, then what the pods' traffic
//! looks like with the shortcut off (histogram, top offenders) and the advice the report gives,
//! in the style of `ndots report`.

use std::fmt::Write;

use super::DemoResult;
use crate::render::text::{write_advice, write_histogram, write_top_names};

pub fn text(d: &DemoResult) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "ndots demo: {} simulated pods ({} glibc, {} musl), {} getaddrinfo calls per run, ndots:5",
        d.pods, d.glibc_pods, d.musl_pods, d.lookups
    );
    let _ = writeln!(o, "search {}", d.search);
    let _ = writeln!(
        o,
        "upstream: in-process, {} ms per answer; each run starts a proxy with an empty cache",
        d.upstream_delay_ms
    );
    let _ = writeln!(o);

    let col = 12;
    let _ = write!(o, "{:<30}", "");
    for r in &d.runs {
        let _ = write!(o, "{:>col$}", r.mode);
    }
    let _ = writeln!(o);
    let off = &d.runs[0];
    let row = |o: &mut String, label: &str, f: &dyn Fn(&super::Run) -> String| {
        let _ = write!(o, "{label:<30}");
        for r in &d.runs {
            let _ = write!(o, "{:>col$}", f(r));
        }
        let _ = writeln!(o);
    };
    row(&mut o, "queries per lookup (pods)", &|r| {
        format!("{:.2}", r.report.amplification.mean)
    });
    row(&mut o, "upstream queries", &|r| {
        r.upstream_queries.to_string()
    });
    row(&mut o, "upstream queries per lookup", &|r| {
        format!("{:.2}", r.upstream_queries_per_lookup)
    });
    row(&mut o, "upstream load saved", &|r| {
        if r.mode == off.mode || off.upstream_queries == 0 {
            "-".into()
        } else {
            let saved = 1.0 - r.upstream_queries as f64 / off.upstream_queries as f64;
            format!("{:.1}%", saved * 100.0)
        }
    });
    row(&mut o, "answered by the shortcut", &|r| {
        r.report.shortcut_answers.to_string()
    });
    row(&mut o, "lookup latency p50 (ms)", &|r| {
        format!("{:.2}", r.latency_ms.p50)
    });
    row(&mut o, "lookup latency p99 (ms)", &|r| {
        format!("{:.2}", r.latency_ms.p99)
    });
    row(&mut o, "same answers as off", &|r| {
        if r.mode == off.mode {
            "-".into()
        } else if r.answers_digest == off.answers_digest {
            "yes".into()
        } else {
            "NO".into()
        }
    });
    let _ = writeln!(
        o,
        "(a lookup is one query type of one getaddrinfo call, as in `ndots report`)"
    );
    if d.mismatched_lookups > 0 {
        let _ = writeln!(
            o,
            "\n{} lookups got different addresses than with the shortcut off, e.g.:",
            d.mismatched_lookups
        );
        for m in &d.mismatches {
            let _ = writeln!(
                o,
                "  {} {} from {}: off {:?}, {} {:?}",
                m.mode, m.name, m.pod, m.off, m.mode, m.this
            );
        }
    }

    for r in [Some(off), d.runs.iter().find(|r| r.mode == "autopath")]
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            o,
            "\nqueries per lookup as the pods send them, shortcut {}",
            r.mode
        );
        write_histogram(&mut o, &r.report.amplification.histogram);
    }

    let _ = writeln!(o, "\ntop names by wasted queries, shortcut off");
    write_top_names(&mut o, &off.report, 8);
    let _ = writeln!(
        o,
        "\nadvice (what `ndots report` says about the shortcut-off traffic)"
    );
    write_advice(&mut o, &off.report);
    let _ = writeln!(
        o,
        "\n(the proxy here has shortcut.zones {:?}; seed {}; {:.1} s)",
        super::world::SHORTCUT_ZONES,
        d.seed,
        d.elapsed_seconds
    );
    o
}
