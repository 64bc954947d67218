//! The HTML form: one self-contained file (inline CSS and SVG, no scripts, no external assets)
//! that can be attached to a ticket or opened from disk.

use std::fmt::Write;

use super::advice::{
    display_name, dns_config_snippet, ndots_headline, ndots_limit, shortcut_snippet,
    upstream_wasted_share, AdviceItem,
};
use super::percent;
use crate::amplify::Report;

pub(super) const CSS: &str =
    "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse}td,th{padding:.2em .7em;text-align:right}\
td:first-child,th:first-child{text-align:left}tr:nth-child(even){background:#f6f6f6}\
.kpi{display:inline-block;margin:0 1.5em .8em 0}.kpi b{display:block;font-size:1.6em}\
pre{background:#f3f3f3;padding:.7em;border-radius:4px;overflow-x:auto;white-space:pre-wrap;\
word-break:break-all}code{background:#f3f3f3;padding:0 .2em;overflow-wrap:anywhere}\
.advice{border-left:4px solid #4a7bd0;padding-left:1em}.claims td:nth-child(2){text-align:left}\
.settings{font-size:.85em}.settings td,.settings th{padding:.2em .35em}svg text{font:12px sans-serif}";

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
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>ndots amplification report: {src}</title><style>{CSS}</style></head><body>\
         <h1>ndots amplification report</h1><p>{src}, {w}</p>",
        src = esc(&r.source),
        w = esc(&super::text::window_text(r.window_seconds))
    );
    if let Some(i) = &r.input {
        let _ = write!(o, "<p>input: {}</p>", esc(&super::input_summary(i)));
    }
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
            format!("{:.1}%", upstream_wasted_share(r) * 100.0),
        ),
        ("shortcut answers", r.shortcut_answers.to_string()),
        ("retries", r.retries.to_string()),
    ] {
        let _ = write!(
            o,
            "<div class=\"kpi\"><b>{}</b>{}</div>",
            esc(&value),
            esc(label)
        );
    }

    write_advice(&mut o, r);

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

    // How the lookups ended, as the text and JSON reports say it.
    if !r.outcomes.is_empty() {
        let _ = write!(o, "<h2>How lookups ended</h2>");
        let rows: Vec<(String, u64)> = r.outcomes.iter().map(|(k, v)| (k.clone(), *v)).collect();
        o.push_str(&bars(&rows, "#7a9a4a"));
    }

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
        .map(|n| {
            (
                display_name(&n.name, n.resolved_by.as_deref()),
                n.wasted_queries,
            )
        })
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
            esc(&display_name(&n.name, n.resolved_by.as_deref())),
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

    o.push_str("</body></html>\n");
    o
}

/// Escape `s` and turn `code` spans into `<code>` elements.
fn prose(s: &str) -> String {
    let mut o = String::new();
    for (i, part) in s.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(o, "<code>{}</code>", esc(part));
        } else {
            o.push_str(&esc(part));
        }
    }
    o
}

/// The advice section, from the report's computed `advice`: right after the headline figures.
fn write_advice(o: &mut String, r: &Report) {
    let _ = write!(o, "<h2 id=\"advice\">Advice</h2><div class=\"advice\">");
    if r.wasted_queries == 0 {
        o.push_str("<p>Nothing is wasted: no change needed.</p>");
    } else if r.advice.is_empty() {
        o.push_str("<p>None computed: no name resolved through the search list or as written.</p>");
    }
    for item in &r.advice {
        match item {
            AdviceItem::Fqdn { names } => {
                o.push_str("<p>Write these names as FQDNs (with a trailing dot) in the workloads' config; each lookup then costs one query per type:</p><ul>");
                for n in names {
                    let _ = write!(
                        o,
                        "<li><code>{}</code>: {} wasted</li>",
                        esc(&n.name),
                        n.wasted_queries
                    );
                }
                o.push_str("</ul>");
            }
            AdviceItem::Ndots(a) => {
                let _ = write!(
                    o,
                    "<p>{}</p><table class=\"claims\"><tr><th>name</th><th>resolves at</th>\
                     <th>queries now</th><th>after</th><th>lookups that walked</th></tr>",
                    prose(&ndots_headline(a))
                );
                for n in &a.names {
                    let _ = write!(
                        o,
                        "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td>\
                         <td>{}</td><td>{}</td></tr>",
                        esc(&n.name),
                        esc(&n.resolves_at),
                        n.queries_now,
                        n.queries_after,
                        n.lookups
                    );
                }
                let _ = write!(
                    o,
                    "</table><p>In the pod spec:</p><pre>{}</pre>",
                    esc(&dns_config_snippet(a.ndots))
                );
                if let Some(l) = ndots_limit(a) {
                    let _ = write!(o, "<p>{}</p>", prose(&l));
                }
                for c in &a.caveats {
                    let _ = write!(o, "<p class=\"caveat\">Caveat: {}.</p>", prose(c));
                }
            }
            AdviceItem::ShortcutZones { zones } => {
                let _ = write!(
                    o,
                    "<p>Add these zones to the proxy's shortcut so their expansions are answered locally (no pod change needed):</p><pre>{}</pre>",
                    esc(&shortcut_snippet(zones))
                );
            }
        }
    }
    o.push_str("</div>");
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
        assert_eq!(h.matches("<svg").count(), 4);
        assert!(h.contains("api.github.com."));
        // Advice before the tables; backticks become code.
        assert!(h.find("id=\"advice\"").unwrap() < h.find("<h2>Top clients").unwrap());
        assert!(!h.contains('`'), "backticks left in the HTML");
        assert!(!h.contains("((unknown))"));
    }

    /// The HTML report left out how lookups ended and the retries, which the text and JSON
    /// reports give: each outcome and the retry count appear with their figures.
    #[test]
    fn the_html_report_left_out_outcomes_and_retries() {
        let mut r = sample_report();
        r.retries = 8;
        r.outcomes.insert("timeout".into(), 2);
        assert!(!r.outcomes.is_empty());
        let h = html(&r);
        assert!(h.contains("<b>8</b>retries"), "retries KPI");
        assert!(h.contains("How lookups ended"));
        for (k, v) in &r.outcomes {
            assert!(
                h.contains(&format!(">{}</text>", esc(k))) && h.contains(&format!(">{v}</text>")),
                "outcome {k} {v} not in the HTML"
            );
        }
    }
}
