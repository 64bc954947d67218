//! The text form: a summary a person can act on, fitting an 80-column terminal.

use std::fmt::Write;

use super::advice::{
    display_name, dns_config_snippet, ndots_headline, ndots_limit, shortcut_snippet,
    upstream_wasted_share, AdviceItem,
};
use super::percent;
use crate::amplify::Report;

const BAR: usize = 40;

pub fn text(r: &Report) -> String {
    let mut o = String::new();
    let a = &r.amplification;
    let _ = writeln!(
        o,
        "ndots amplification report: {} ({})",
        r.source,
        window_text(r.window_seconds)
    );
    if let Some(i) = &r.input {
        let _ = writeln!(o, "input: {}", super::input_summary(i));
    }
    let _ = writeln!(o);
    if r.lookups == 0 {
        let _ = writeln!(
            o,
            "No lookups: nothing in it made one (a capture without DNS queries, or a proxy that saw no \
             traffic in the window; a longer --window may help)."
        );
        return o;
    }
    let _ = writeln!(
        o,
        "{} queries for {} lookups: {:.2} queries per lookup (p50 {}, p90 {}, p99 {}, max {})",
        r.queries, r.lookups, a.mean, a.p50, a.p90, a.p99, a.max
    );
    let _ = writeln!(
        o,
        "wasted: {} queries ({} of all queries) on search-list candidates nobody meant",
        r.wasted_queries,
        percent(r.wasted_queries, r.queries)
    );
    if r.upstream_queries > 0 {
        let _ = writeln!(
            o,
            "upstream load: {} of {} upstream queries are wasted ({:.1}%)",
            r.upstream_wasted_queries,
            r.upstream_queries,
            upstream_wasted_share(r) * 100.0
        );
    }
    if r.shortcut_answers > 0 {
        let _ = writeln!(
            o,
            "shortcut: {} expansions answered locally, never sent upstream",
            r.shortcut_answers
        );
    }
    if r.retries > 0 {
        let _ = writeln!(o, "retries: {} (the same candidate sent again)", r.retries);
    }
    if r.dropped_events > 0 {
        let _ = writeln!(
            o,
            "note: {} events were dropped by a busy tracker; figures are a lower bound",
            r.dropped_events
        );
    }
    if r.shed_events > 0 {
        let _ = writeln!(
            o,
            "note: a busy tracker left out whole walks ({} events); the figures cover the rest",
            r.shed_events
        );
    }

    let _ = writeln!(o, "\nadvice");
    write_advice(&mut o, r);

    let _ = writeln!(o, "\nqueries per lookup");
    write_histogram(&mut o, &a.histogram);

    let _ = writeln!(o, "\nby type                queries    lookups     wasted");
    for (t, f) in &r.by_type {
        let _ = writeln!(
            o,
            "  {t:<18} {:>9} {:>10} {:>10}",
            f.queries, f.lookups, f.wasted_queries
        );
    }
    let s = &r.by_suffix;
    let w = &r.wasted_by_suffix;
    let _ = writeln!(o, "\nby suffix carried      queries     wasted");
    for (name, q, wq) in [
        ("namespace", s.namespace, w.namespace),
        ("svc", s.svc, w.svc),
        ("cluster", s.cluster, w.cluster),
        ("node", s.node, w.node),
        ("other", s.other, w.other),
        ("absolute", s.absolute, w.absolute),
    ] {
        if q > 0 || name != "other" {
            let _ = writeln!(o, "  {name:<18} {q:>9} {wq:>10}");
        }
    }
    if !r.outcomes.is_empty() {
        let list: Vec<String> = r.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(o, "\noutcomes: {}", list.join(", "));
    }

    let _ = writeln!(o, "\ntop names (by wasted queries)");
    write_top_names(&mut o, r, 10);
    let _ = writeln!(o, "\ntop clients");
    let _ = writeln!(
        o,
        "  {:<22} {:<17} {:>8} {:>8} {:>8}",
        "client", "namespace", "lookups", "queries", "wasted"
    );
    for c in r.top_clients.iter().take(10) {
        let _ = writeln!(
            o,
            "  {:<22} {:<17} {:>8} {:>8} {:>8}",
            c.client,
            c.namespace.as_deref().unwrap_or("-"),
            c.lookups,
            c.queries,
            c.wasted_queries
        );
    }

    o
}

/// The amplification histogram as bars, one row per queries-per-lookup value.
pub(crate) fn write_histogram(o: &mut String, histogram: &[[u64; 2]]) {
    let peak = histogram.iter().map(|p| p[1]).max().unwrap_or(1).max(1);
    for [v, n] in histogram {
        let len = ((*n as f64 / peak as f64) * BAR as f64).ceil() as usize;
        let _ = writeln!(o, "  {v:>4} | {:<BAR$} {n}", "#".repeat(len.max(1)));
    }
}

/// The first `limit` top names with their lookups, queries and wasted queries.
pub(crate) fn write_top_names(o: &mut String, r: &Report, limit: usize) {
    let _ = writeln!(
        o,
        "  {:<40} {:>8} {:>8} {:>8}",
        "name", "lookups", "queries", "wasted"
    );
    for n in r.top_names.iter().take(limit) {
        let _ = writeln!(
            o,
            "  {:<40} {:>8} {:>8} {:>8}",
            display_name(&n.name, n.resolved_by.as_deref()),
            n.lookups,
            n.queries,
            n.wasted_queries
        );
    }
}

/// The advice list, as the report's `advice` computed it: FQDNs, ndots per stub, shortcut
/// zones.
pub(crate) fn write_advice(o: &mut String, r: &Report) {
    if r.wasted_queries == 0 {
        let _ = writeln!(o, "  Nothing is wasted: no change needed.");
        return;
    }
    if r.advice.is_empty() {
        let _ = writeln!(
            o,
            "  None computed: no name resolved through the search list or as written."
        );
    }
    for item in &r.advice {
        match item {
            AdviceItem::Fqdn { names } => {
                wrap(
                    o,
                    "- ",
                    "Write these names as FQDNs (with a trailing dot) in the workloads' config; \
                     each lookup then costs one query per type:",
                );
                for n in names {
                    let _ = writeln!(o, "    {:<40} {} wasted", n.name, n.wasted_queries);
                }
            }
            AdviceItem::Ndots(a) => {
                wrap(o, "- ", &ndots_headline(a));
                let w = a
                    .names
                    .iter()
                    .map(|n| n.name.len())
                    .max()
                    .unwrap_or(0)
                    .clamp(18, 48);
                let _ = writeln!(
                    o,
                    "    {:<w$} {:>5} {:>6} {:>8}",
                    "name (resolves at)", "now", "after", "walked"
                );
                for n in &a.names {
                    let _ = writeln!(
                        o,
                        "    {:<w$} {:>5} {:>6} {:>8}",
                        n.name, n.queries_now, n.queries_after, n.lookups
                    );
                    if n.resolves_at.trim_end_matches('.') != n.name {
                        let _ = writeln!(o, "      at {}", n.resolves_at);
                    }
                }
                let _ = writeln!(o, "  In the pod spec:");
                for line in dns_config_snippet(a.ndots).lines() {
                    let _ = writeln!(o, "    {line}");
                }
                if let Some(l) = ndots_limit(a) {
                    wrap(o, "  ", &l);
                }
                for c in &a.caveats {
                    wrap(o, "  ", &format!("Caveat: {c}."));
                }
            }
            AdviceItem::ShortcutZones { zones } => {
                wrap(
                    o,
                    "- ",
                    "Add these zones to the proxy's shortcut so their expansions are answered \
                     locally (no pod change needed):",
                );
                for line in shortcut_snippet(zones).lines() {
                    let _ = writeln!(o, "    {line}");
                }
            }
        }
    }
}

/// Append `text` word-wrapped to 78 columns, the first line after `lead`, the rest indented
/// to match.
fn wrap(o: &mut String, lead: &str, text: &str) {
    let width = 78;
    let indent = " ".repeat(lead.len());
    let mut line = lead.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.len() + 1 + word.len() > width {
            o.push_str(&line);
            o.push('\n');
            line = indent.clone();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    o.push_str(&line);
    o.push('\n');
}

pub(super) fn window_text(secs: f64) -> String {
    let span = if secs <= 0.0 {
        return "no time span (no timestamps, or one instant)".into();
    } else if secs < 10.0 {
        format!("{secs:.2} s")
    } else if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 7200.0 {
        format!("{:.1} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    };
    format!("window {span}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::sample_report;

    #[test]
    fn text_shows_the_figures_and_the_advice() {
        let r = sample_report();
        let t = text(&r);
        assert!(t.contains(&format!("{} queries for {} lookups", r.queries, r.lookups)));
        // One histogram bar per row.
        let bars = t.lines().filter(|l| l.contains(" | #")).count();
        assert_eq!(bars, r.amplification.histogram.len());
        assert!(t.contains("api.github.com."));
        // The in-cluster name with most dots is `web.prod` (one): musl needs ndots 2 for it.
        assert!(t.contains("value: \"2\""), "{t}");
        assert!(t.contains("- \"github.com\""), "{t}");
        // Advice comes before the tables.
        assert!(t.find("advice").unwrap() < t.find("top clients").unwrap());
        // Relative names print without a trailing dot.
        assert!(t.contains("  web.prod "), "{t}");
    }
}
