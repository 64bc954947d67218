//! The HTML form: one self-contained file (inline CSS and SVG, no scripts, no external assets)
//! that can be attached to a ticket or opened from disk.

use std::fmt::Write;

use super::advice::{advise, dns_config_snippet, ndots_consequence, shortcut_snippet};
use super::percent;
use crate::amplify::Report;

pub(super) const CSS: &str =
    "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse}td,th{padding:.2em .7em;text-align:right}\
td:first-child,th:first-child{text-align:left}tr:nth-child(even){background:#f6f6f6}\
.kpi{display:inline-block;margin:0 1.5em .8em 0}.kpi b{display:block;font-size:1.6em}\
pre{background:#f3f3f3;padding:.7em;border-radius:4px}svg text{font:12px sans-serif}";

/// Escape text for HTML element content and attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A horizontal bar chart: one row per `(label, value)`.
pub(super) fn bars(rows: &[(String, u64)], color: &str) -> String {
    let peak = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1);
    let (row_h, label_w, bar_w) = (22, 240, 420);
    let h = row_h * rows.len().max(1) + 4;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{h}\" role=\"img\">",
        label_w + bar_w + 80
    );
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = i * row_h + 2;
        let w = ((*v as f64 / peak as f64) * bar_w as f64).round().max(1.0);
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{}\" y=\"{y}\" width=\"{w}\" height=\"{}\" fill=\"{color}\"/>\
             <text x=\"{}\" y=\"{}\">{v}</text>",
            label_w - 6,
            y + 15,
            esc(label),
            label_w,
            row_h - 6,
            label_w as f64 + w + 6.0,
            y + 15
        );
    }
    s.push_str("</svg>");
    s
}

pub fn html(r: &Report) -> String {
    let a = &r.amplification;
    let adv = advise(r);
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>ndots amplification report: {src}</title><style>{CSS}</style></head><body>\
         <h1>ndots amplification report</h1><p>{src}, window {w:.0} s</p>",
        src = esc(&r.source),
        w = r.window_seconds
    );
    for (label, value) in [
        ("queries", r.queries.to_string()),
        ("lookups", r.lookups.to_string()),
        ("queries per lookup", format!("{:.2}", a.mean)),
        (
            "p50 / p90 / p99 / max",
            format!("{} / {} / {} / {}", a.p50, a.p90, a.p99, a.max),
        ),
        (
            "wasted queries",
            format!(
                "{} ({})",
                r.wasted_queries,
                percent(r.wasted_queries, r.queries)
            ),
        ),
        (
            "upstream load wasted",
            format!("{:.1}%", adv.upstream_wasted_share * 100.0),
        ),
        ("shortcut answers", r.shortcut_answers.to_string()),
    ] {
        let _ = write!(
            o,
            "<div class=\"kpi\"><b>{}</b>{}</div>",
            esc(&value),
            esc(label)
        );
    }

    let _ = write!(o, "<h2>Queries per lookup</h2>");
    let rows: Vec<(String, u64)> = a
        .histogram
        .iter()
        .map(|[v, n]| (format!("{v} queries"), *n))
        .collect();
    o.push_str(&bars(&rows, "#4a7bd0"));

    let _ = write!(o, "<h2>Queries by the suffix they carried</h2>");
    let s = &r.by_suffix;
    let rows: Vec<(String, u64)> = [
        ("namespace", s.namespace),
        ("svc", s.svc),
        ("cluster", s.cluster),
        ("node", s.node),
        ("other", s.other),
        ("absolute", s.absolute),
    ]
    .into_iter()
    .filter(|(k, v)| *v > 0 || *k != "other")
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    o.push_str(&bars(&rows, "#d0804a"));

    let _ = write!(o, "<h2>By type</h2><table><tr><th>type</th><th>queries</th><th>lookups</th><th>wasted</th></tr>");
    for (t, f) in &r.by_type {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(t),
            f.queries,
            f.lookups,
            f.wasted_queries
        );
    }
    o.push_str("</table>");

    let _ = write!(o, "<h2>Top names</h2>");
    let rows: Vec<(String, u64)> = r
        .top_names
        .iter()
        .take(15)
        .map(|n| (n.name.clone(), n.wasted_queries))
        .collect();
    o.push_str(&bars(&rows, "#c04848"));
    let _ = write!(
        o,
        "<table><tr><th>name</th><th>lookups</th><th>queries</th><th>wasted</th></tr>"
    );
    for n in r.top_names.iter().take(25) {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&n.name),
            n.lookups,
            n.queries,
            n.wasted_queries
        );
    }
    o.push_str("</table>");

    let _ = write!(o, "<h2>Top clients</h2><table><tr><th>client</th><th>namespace</th><th>lookups</th><th>queries</th><th>wasted</th></tr>");
    for c in r.top_clients.iter().take(25) {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.client),
            esc(c.namespace.as_deref().unwrap_or("-")),
            c.lookups,
            c.queries,
            c.wasted_queries
        );
    }
    o.push_str("</table>");

    let _ = write!(o, "<h2>Advice</h2>");
    if r.wasted_queries == 0 {
        o.push_str("<p>Nothing is wasted: no change needed.</p>");
    }
    if !adv.fqdn.is_empty() {
        o.push_str("<p>Write these names as FQDNs (with a trailing dot):</p><ul>");
        for (n, w) in &adv.fqdn {
            let _ = write!(o, "<li><code>{}</code>: {w} wasted</li>", esc(n));
        }
        o.push_str("</ul>");
    }
    if let Some(n) = adv.ndots {
        let who: Vec<String> = adv.workloads.iter().take(3).map(|w| esc(&w.0)).collect();
        let _ = write!(
            o,
            "<p>Lower ndots to {n} for the worst workloads ({}):</p><pre>{}</pre><p>{}.</p>",
            who.join(", "),
            esc(&dns_config_snippet(n)),
            esc(&ndots_consequence(n))
        );
    }
    if !adv.zones.is_empty() {
        let _ = write!(
            o,
            "<p>Add these zones to the proxy's shortcut:</p><pre>{}</pre>",
            esc(&shortcut_snippet(&adv.zones))
        );
    }
    o.push_str("</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::sample_report;

    #[test]
    fn html_is_self_contained_and_escaped() {
        let mut r = sample_report();
        r.source = "<node&1>".into();
        let h = html(&r);
        assert!(h.starts_with("<!DOCTYPE html>"));
        assert!(h.contains("&lt;node&amp;1&gt;"));
        assert!(!h.contains("<node&1>"));
        assert!(!h.contains("src=") && !h.contains("<link") && !h.contains("<script"));
        assert_eq!(h.matches("<svg").count(), 3);
        assert!(h.contains("api.github.com."));
    }
}
