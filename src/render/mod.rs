//! Rendering of the amplification report (DESIGN §4): text for a person at a terminal, JSON
//! (the report object, pretty), and one self-contained HTML file. Rendering only reads the
//! [`Report`] model; the figures are computed in `amplify`, the advice in [`advice`].

pub mod advice;
mod html;
pub mod replay;
pub(crate) mod text;

pub use html::html;
pub use text::text;

use crate::amplify::Report;

/// The report object as pretty JSON (with a final newline).
pub fn json(r: &Report) -> String {
    let mut s = serde_json::to_string_pretty(r).expect("the report serializes");
    s.push('\n');
    s
}

/// What the captures held beside the events, in words for the text and HTML reports
/// (analyze and replay): every record read is an event or counted here.
pub(crate) fn input_summary(i: &crate::amplify::report::InputCounts) -> String {
    let mut s = format!("{} events", i.events);
    if i.queries + i.responses > 0 {
        let _ = std::fmt::Write::write_fmt(
            &mut s,
            format_args!(
                " from {} query and {} response messages",
                i.queries, i.responses
            ),
        );
    }
    let mut rest = i.set_aside();
    if i.unreadable > 0 {
        rest.insert(0, format!("{} unreadable records skipped", i.unreadable));
    }
    if !rest.is_empty() {
        s.push_str("; ");
        s.push_str(&rest.join(", "));
    }
    s
}

/// `n` of `total` as a percentage with one decimal, `-` when there is no total.
fn percent(n: u64, total: u64) -> String {
    if total == 0 {
        "-".into()
    } else {
        format!("{:.1}%", n as f64 * 100.0 / total as f64)
    }
}

/// The sample report used by the renderer tests.
#[cfg(test)]
pub(crate) fn sample_report() -> Report {
    use crate::amplify::Analyzer;
    use crate::config::{ClusterConfig, TrackerConfig};
    use crate::event::{AnswerSource, QueryEvent, Timestamp};
    let cluster = ClusterConfig {
        node_search: vec!["ec2.internal".into()],
        ..ClusterConfig::kubernetes("cluster.local")
    };
    let mut a = Analyzer::new(
        &cluster,
        &TrackerConfig {
            idle: std::time::Duration::from_secs(2),
            max_open_walks: 1000,
            namespace_series: crate::config::DEFAULT_NAMESPACE_SERIES,
        },
    );
    let mut t = 1_700_000_000_000_000u64;
    let mut q = |client: &str, name: &str, qtype: u16, rcode: u16, answers: u16| {
        t += 1000;
        a.observe(&QueryEvent {
            time: Timestamp(t),
            client: client.parse().unwrap(),
            client_port: None,
            qname: name.into(),
            qtype,
            rcode: Some(rcode),
            answers: Some(answers),
            latency: Some(std::time::Duration::from_micros(300)),
            source: Some(AnswerSource::Upstream),
        });
    };
    for (client, ns) in [
        ("10.0.0.5", "shop"),
        ("10.0.0.6", "shop"),
        ("10.0.1.9", "batch"),
    ] {
        for qtype in [1, 28] {
            for s in [
                format!("{ns}.svc.cluster.local."),
                "svc.cluster.local.".into(),
                "cluster.local.".into(),
                "ec2.internal.".into(),
            ] {
                q(client, &format!("api.github.com.{s}"), qtype, 3, 0);
            }
            q(client, "api.github.com.", qtype, 0, 1);
        }
        q(
            client,
            &format!("web.prod.{ns}.svc.cluster.local."),
            1,
            3,
            0,
        );
        q(client, "web.prod.svc.cluster.local.", 1, 0, 1);
        q(client, &format!("redis.{ns}.svc.cluster.local."), 1, 0, 1);
    }
    a.finish("sample")
}
