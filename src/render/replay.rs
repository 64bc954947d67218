//! The replay comparison (DESIGN §5) for a person: a text table, the JSON object, and one
//! self-contained HTML file (inline SVG: queries per lookup per setting, latency when live).

use std::fmt::Write;

use super::html::{bars, esc, CSS};
use crate::replay::{ReplayReport, SettingReport};

pub fn json(r: &ReplayReport) -> String {
    let mut s = serde_json::to_string_pretty(r).expect("the replay report serializes");
    s.push('\n');
    s
}

fn rows(r: &ReplayReport) -> impl Iterator<Item = (&'static str, &SettingReport)> {
    std::iter::once(("captured", &r.captured)).chain(r.settings.iter().map(|s| ("", s)))
}

pub fn text(r: &ReplayReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "ndots replay ({}): {} lookups from {} events in {}",
        r.mode, r.lookups, r.events, r.source
    );
    if let Some(p) = &r.pace {
        let _ = writeln!(o, "sent at {p}");
    }
    if let Some(i) = &r.input {
        let _ = writeln!(o, "input: {}", super::input_summary(i));
    }
    let _ = writeln!(o);
    let live = r.mode == "live";
    let w = rows(r)
        .map(|(tag, s)| s.label.len() + if tag.is_empty() { 0 } else { tag.len() + 3 })
        .max()
        .unwrap_or(0)
        .max(7);
    let _ = write!(
        o,
        "{:<w$} {:>8} {:>6} {:>8} {:>9} {:>7} {:>7}",
        "setting", "queries", "q/lkp", "nxdomain", "upstream", "changed", "unknown"
    );
    if live {
        let _ = write!(o, " {:>8} {:>8} {:>8}", "p50 ms", "p99 ms", "timeouts");
    }
    let _ = writeln!(o);
    for (tag, s) in rows(r) {
        let label = if tag.is_empty() {
            s.label.clone()
        } else {
            format!("{} ({tag})", s.label)
        };
        let changed = if s.possible_changes > 0 {
            format!("{}+{}?", s.changed_resolutions, s.possible_changes)
        } else {
            s.changed_resolutions.to_string()
        };
        let _ = write!(
            o,
            "{:<w$} {:>8} {:>6.2} {:>8} {:>9} {:>7} {:>7}",
            label,
            s.queries,
            s.queries_per_lookup,
            s.nxdomain,
            s.upstream_queries,
            changed,
            s.unknown_answers
        );
        if let (Some(l), Some(f)) = (&s.latency_ms, &s.live) {
            let _ = write!(o, " {:>8.2} {:>8.2} {:>8}", l.p50, l.p99, f.timeouts);
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(o);
    if !r.captured.workloads.is_empty() {
        // --pod-dns-config: what each workload walks with under each row, and its share.
        let _ = writeln!(
            o,
            "per workload (its own pod DNS config; --pod-dns-config):\n{:<w$} {:<20} {:>5} {:>8} {:>9} {:>7}",
            "setting", "workload", "ndots", "queries", "upstream", "changed"
        );
        for (_, s) in rows(r) {
            for f in &s.workloads {
                let _ = writeln!(
                    o,
                    "{:<w$} {:<20} {:>5} {:>8} {:>9} {:>7}",
                    s.label,
                    f.workload,
                    f.ndots,
                    f.queries,
                    f.upstream_queries,
                    f.changed_resolutions
                );
            }
        }
        let _ = writeln!(o);
    }
    if r.captured.target_differences > 0 {
        let _ = writeln!(
            o,
            "the target answers {} lookups differently from the capture (the settings are \
             compared with the target), e.g.:",
            r.captured.target_differences
        );
        for c in r.captured.target_difference_list.iter().take(5) {
            let _ = writeln!(
                o,
                "  {} asked by {}: captured {}, target {} ({} lookups)",
                c.name,
                c.clients.join(", "),
                c.before,
                c.after,
                c.lookups
            );
        }
        let _ = writeln!(o);
    }
    for s in &r.settings {
        for c in &s.changes {
            let _ = writeln!(
                o,
                "changed under {}: {} asked by {}: {} -> {} ({} lookups)",
                s.label,
                c.name,
                c.clients.join(", "),
                c.before,
                c.after,
                c.lookups
            );
        }
        for c in s.possible_change_list.iter().take(5) {
            let _ = writeln!(
                o,
                "possibly changed under {}: {} asked by {}: {} -> {} if the unknown answers \
                 are NXDOMAIN",
                s.label,
                c.name,
                c.clients.join(", "),
                c.before,
                c.after
            );
        }
    }
    let unknown: Vec<&SettingReport> = rows(r)
        .map(|(_, s)| s)
        .filter(|s| s.unknown_answers > 0)
        .collect();
    if !unknown.is_empty() {
        let _ = writeln!(
            o,
            "Answers the capture does not hold were assumed NXDOMAIN (run with --target to \
             settle them), e.g.:"
        );
        for s in unknown.iter().take(3) {
            let names: Vec<&str> = s.unknown_names.iter().take(5).map(String::as_str).collect();
            let _ = writeln!(o, "  {}: {}", s.label, names.join(", "));
        }
        let _ = writeln!(o);
    }
    let rec = &r.recommendation;
    let _ = writeln!(
        o,
        "Recommendation: {} (saves {:.1}% of upstream queries, {} changed resolutions)",
        rec.label, rec.saves_percent, rec.changed_resolutions
    );
    let _ = writeln!(o, "  {}", rec.why);
    o
}

/// A horizontal bar chart of fractional values (two decimals shown).
fn fbars(rows: &[(String, f64)], color: &str) -> String {
    let peak = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1e-9);
    let (row_h, label_w, bar_w) = (22, 320, 380);
    let h = row_h * rows.len().max(1) + 4;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{h}\" role=\"img\">",
        label_w + bar_w + 80
    );
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = i * row_h + 2;
        let w = (v / peak * bar_w as f64).round().max(1.0);
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{label_w}\" y=\"{y}\" width=\"{w}\" height=\"{}\" fill=\"{color}\"/>\
             <text x=\"{}\" y=\"{}\">{v:.2}</text>",
            label_w - 6,
            y + 15,
            esc(label),
            row_h - 6,
            label_w as f64 + w + 6.0,
            y + 15
        );
    }
    s.push_str("</svg>");
    s
}

pub fn html(r: &ReplayReport) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>ndots replay: {src}</title><style>{CSS}</style></head><body>\
         <h1>ndots replay ({mode})</h1><p>{src}: {l} lookups from {e} events</p>",
        src = esc(&r.source),
        mode = esc(&r.mode),
        l = r.lookups,
        e = r.events
    );
    if let Some(p) = &r.pace {
        let _ = write!(o, "<p>Sent at {}.</p>", esc(p));
    }
    if let Some(i) = &r.input {
        let _ = write!(o, "<p>input: {}</p>", esc(&super::input_summary(i)));
    }
    let rec = &r.recommendation;
    let _ = write!(
        o,
        "<div class=\"kpi\"><b>{}</b>recommended</div>\
         <div class=\"kpi\"><b>{:.1}%</b>upstream queries saved</div>\
         <div class=\"kpi\"><b>{}</b>changed resolutions</div><p>{}</p>",
        esc(&rec.label),
        rec.saves_percent,
        rec.changed_resolutions,
        esc(&rec.why)
    );
    let _ = write!(
        o,
        "<h2>Settings</h2><table class=\"settings\"><tr><th>setting</th><th>queries</th><th>per lookup</th>\
         <th>NXDOMAIN</th><th>upstream</th><th>changed</th><th>possibly changed</th>\
         <th>unknown answers</th><th>inferred answers</th><th>p50 ms</th><th>p99 ms</th></tr>"
    );
    for (tag, s) in rows(r) {
        let (p50, p99) = match &s.latency_ms {
            Some(l) => (format!("{:.2}", l.p50), format!("{:.2}", l.p99)),
            None => ("-".into(), "-".into()),
        };
        let _ = write!(
            o,
            "<tr><td>{}{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{p50}</td><td>{p99}</td></tr>",
            esc(&s.label),
            if tag.is_empty() { "" } else { " (captured)" },
            s.queries,
            s.queries_per_lookup,
            s.nxdomain,
            s.upstream_queries,
            s.changed_resolutions,
            s.possible_changes,
            s.unknown_answers,
            s.inferred_answers
        );
    }
    o.push_str("</table>");
    if !r.captured.workloads.is_empty() {
        // --pod-dns-config: each workload's share and the ndots it walks with per row.
        o.push_str(
            "<h2>Per workload (its own pod DNS config)</h2><table><tr><th>setting</th>\
             <th>workload</th><th>stub</th><th>ndots</th><th>search</th><th>lookups</th>\
             <th>queries</th><th>upstream</th><th>changed</th></tr>",
        );
        for (_, s) in rows(r) {
            for f in &s.workloads {
                let _ = write!(
                    o,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&s.label),
                    esc(&f.workload),
                    esc(&f.stub),
                    f.ndots,
                    esc(&f.search.join(" ")),
                    f.lookups,
                    f.queries,
                    f.upstream_queries,
                    f.changed_resolutions
                );
            }
        }
        o.push_str("</table>");
    }

    o.push_str("<h2>Queries per lookup, by setting</h2>");
    let qpl: Vec<(String, f64)> = rows(r)
        .map(|(_, s)| (s.label.clone(), s.queries_per_lookup))
        .collect();
    o.push_str(&fbars(&qpl, "#4a7bd0"));
    if r.mode == "live" {
        o.push_str("<h2>Latency per query, p50 and p99 (ms), by setting</h2>");
        let lat: Vec<(String, f64)> = rows(r)
            .filter_map(|(_, s)| s.latency_ms.as_ref().map(|l| (s, l)))
            .flat_map(|(s, l)| {
                [
                    (format!("{} p50", s.label), l.p50),
                    (format!("{} p99", s.label), l.p99),
                ]
            })
            .collect();
        o.push_str(&fbars(&lat, "#5aa05a"));
    }
    o.push_str("<h2>Upstream queries, by setting</h2>");
    let up: Vec<(String, u64)> = rows(r)
        .map(|(_, s)| (s.label.clone(), s.upstream_queries))
        .collect();
    o.push_str(&bars(&up, "#d08a4a"));

    if r.mode == "live" {
        for (tag, s) in rows(r) {
            let Some(f) = &s.live else { continue };
            let _ = write!(
                o,
                "<h2>Latency: {}{}</h2><p>{} sent, {} answered, {} timeouts, {:.0} queries/s; \
                 per query p50 {:.2} ms, p99 {:.2} ms; per lookup p50 {:.2} ms, p99 {:.2} ms</p>",
                esc(&s.label),
                if tag.is_empty() { "" } else { " (captured)" },
                f.sent,
                f.answered,
                f.timeouts,
                f.queries_per_second,
                f.query_ms.p50,
                f.query_ms.p99,
                f.lookup_ms.p50,
                f.lookup_ms.p99
            );
            let dist: Vec<(String, u64)> = f
                .query_ms_histogram
                .iter()
                .map(|[ms, n]| (format!("< {ms} ms"), *n as u64))
                .collect();
            o.push_str(&bars(&dist, "#5aa05a"));
        }
    }

    let changes: Vec<(&SettingReport, &crate::replay::Change, bool)> = r
        .settings
        .iter()
        .flat_map(|s| {
            s.changes
                .iter()
                .map(move |c| (s, c, true))
                .chain(s.possible_change_list.iter().map(move |c| (s, c, false)))
        })
        .collect();
    if !changes.is_empty() {
        o.push_str(
            "<h2>Lookups that would resolve differently</h2><table><tr><th>setting</th>\
             <th>name asked</th><th>clients</th><th>before</th><th>after</th><th>lookups</th>\
             <th>certain</th></tr>",
        );
        for (s, c, certain) in changes {
            let _ = write!(
                o,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td></tr>",
                esc(&s.label),
                esc(&c.name),
                esc(&c.clients.join(", ")),
                esc(&c.before),
                esc(&c.after),
                c.lookups,
                if certain {
                    "yes"
                } else {
                    "no: unknown answers"
                }
            );
        }
        o.push_str("</table>");
    }
    let unknown: Vec<&SettingReport> = rows(r)
        .map(|(_, s)| s)
        .filter(|s| !s.unknown_names.is_empty())
        .collect();
    if !unknown.is_empty() {
        o.push_str(
            "<h2>Answers the capture does not hold</h2><p>Assumed NXDOMAIN; \
             <code>--target</code> settles them.</p><ul>",
        );
        for s in unknown {
            let _ = write!(
                o,
                "<li>{}: {}</li>",
                esc(&s.label),
                esc(&s.unknown_names.join(", "))
            );
        }
        o.push_str("</ul>");
    }
    o.push_str("</body></html>\n");
    o
}
