//! The recommendation: the setting with the least upstream load that changes no resolution.

use serde::Serialize;

use super::SettingReport;

#[derive(Clone, Debug, Serialize)]
pub struct Recommendation {
    pub ndots: u32,
    pub saves_percent: f64,
    pub changed_resolutions: u64,
    pub label: String,
    pub stub: String,
    pub shortcut: String,
    pub fqdn: bool,
    pub unknown_answers: u64,
    pub why: String,
}

/// Pick the setting with the least upstream load (then the fewest queries, then the highest
/// ndots: the smallest change) among those without changed resolutions, nor possible ones,
/// unless `allow_changes`, and with the captured stub. The captured setting is always
/// eligible: it changes nothing.
pub fn recommend(
    captured: &SettingReport,
    settings: &[SettingReport],
    allow_changes: bool,
) -> Recommendation {
    // The stub is the image's libc, not a setting: other stubs are compared, not recommended.
    let same_stub = |s: &&SettingReport| s.stub == captured.stub;
    let eligible = |s: &&SettingReport| {
        allow_changes || (s.changed_resolutions == 0 && s.possible_changes == 0)
    };
    let best = std::iter::once(captured)
        .chain(settings.iter().filter(same_stub).filter(eligible))
        .min_by(|a, b| {
            a.upstream_queries
                .cmp(&b.upstream_queries)
                .then(a.queries.cmp(&b.queries))
                .then(b.ndots.cmp(&a.ndots))
        })
        .unwrap_or(captured);
    let saves_percent = if captured.upstream_queries == 0 {
        0.0
    } else {
        (captured.upstream_queries as f64 - best.upstream_queries as f64) * 100.0
            / captured.upstream_queries as f64
    };
    let excluded: Vec<&str> = settings
        .iter()
        .filter(same_stub)
        .filter(|s| !eligible(s))
        .map(|s| s.label.as_str())
        .collect();
    let mut why = if std::ptr::eq(best, captured) {
        "no setting asked lowers the load without changing a resolution".to_string()
    } else {
        format!(
            "{} cuts upstream queries from {} to {} ({:.1}%)",
            best.label, captured.upstream_queries, best.upstream_queries, saves_percent
        )
    };
    if !excluded.is_empty() {
        why.push_str(&format!(
            "; left out because some lookups would resolve differently (or might: unknown \
             answers): {}",
            excluded.join(", ")
        ));
    }
    if captured.changed_resolutions > 0 || captured.target_differences > 0 {
        why.push_str(&format!(
            "; the target ends {} lookups of the captured setting elsewhere than the capture \
             shows: it does not answer as the captured server did, so each setting is compared \
             with the target's own answers",
            captured.changed_resolutions + captured.target_differences
        ));
    }
    if best.unknown_answers > 0 {
        why.push_str(&format!(
            "; {} answers were not in the capture and assumed NXDOMAIN: run with --target to \
             settle them",
            best.unknown_answers
        ));
    }
    Recommendation {
        ndots: best.ndots,
        saves_percent,
        changed_resolutions: best.changed_resolutions,
        label: best.label.clone(),
        stub: best.stub.clone(),
        shortcut: best.shortcut.clone(),
        fqdn: best.fqdn,
        unknown_answers: best.unknown_answers,
        why,
    }
}
