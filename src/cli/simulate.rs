//! `ndots simulate`: print the walk a stub resolver sends (DESIGN §5).

use std::collections::HashMap;
use std::io::Write;

use anyhow::{anyhow, Context};

use super::{CliError, TextOrJson};
use crate::event::{qtype_from_name, qtype_name};
use crate::search::name::absolute;
use crate::search::pod_dns::PodDns;
use crate::search::workloads::Workloads;
use crate::search::{Answer, Environment, Family, ResolverSettings, Stub, Walk};

/// The pod resolv.conf Kubernetes writes for `dnsPolicy: ClusterFirst` in namespace `default`,
/// used when neither `--resolv-conf` nor `--search` is given.
pub const DEFAULT_SEARCH: &str = "default.svc.cluster.local svc.cluster.local cluster.local";
pub const DEFAULT_NDOTS: u32 = 5;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  ndots simulate api.github.com --exists api.github.com\n  \
                  ndots simulate web.prod --stub musl --exists web.prod.svc.cluster.local/A\n  \
                  ndots simulate api.github.com --ndots 2 --search \"shop.svc.cluster.local svc.cluster.local cluster.local\" --format json\n  \
                  ndots simulate web --stub musl-1.2.3 --pod-dns-config pod.yaml\n  \
                  ndots simulate api.github.com --pod-dns-config workloads.yaml --workload shop/web"
)]
pub struct SimulateArgs {
    /// Names to look up, as an application would pass them to getaddrinfo.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Stub resolver model: glibc, musl (1.2.4+), musl-1.2.3 (before 1.2.4), go (1.20+),
    /// go-1.19 (before 1.20), c-ares (1.34), c-ares-1.18 (before 1.34) or hickory
    /// (hickory-resolver 0.26). Default: the --workload's
    /// stub, else glibc.
    #[arg(long)]
    pub stub: Option<String>,
    /// ndots option (default: the file's, else 5 as Kubernetes writes).
    #[arg(long)]
    pub ndots: Option<u8>,
    /// Search list, space-separated as in resolv.conf (default: the file's, else
    /// "default.svc.cluster.local svc.cluster.local cluster.local").
    #[arg(long)]
    pub search: Option<String>,
    /// Read ndots, search and options from a resolv.conf file (as the chosen stub reads it).
    /// With --pod-dns-config: the node's file (dnsPolicy Default, the node's search domains).
    #[arg(long)]
    pub resolv_conf: Option<std::path::PathBuf>,
    /// A pod manifest (or a workload with spec.template, or just dnsPolicy/dnsConfig): simulate
    /// with the resolv.conf kubelet writes for its dnsPolicy and dnsConfig (custom ndots,
    /// searches such as KEP-4427's ".", options).
    /// Also a workloads file as `ndots replay` and `ndots analyze` take it
    /// (docs/pod-dns-config.md), with --workload.
    #[arg(long, value_name = "FILE")]
    pub pod_dns_config: Option<std::path::PathBuf>,
    /// The workload of a --pod-dns-config workloads file to simulate (its `name`).
    #[arg(long, value_name = "NAME", requires = "pod_dns_config")]
    pub workload: Option<String>,
    /// The pod's namespace for --pod-dns-config when the manifest has none.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The cluster domain for --pod-dns-config.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// A name (or NAME/TYPE) that has addresses. Every name not listed is NXDOMAIN.
    #[arg(long, value_name = "NAME[/TYPE]")]
    pub exists: Vec<String>,
    /// A name (or NAME/TYPE) that exists without records of the asked type.
    #[arg(long, value_name = "NAME[/TYPE]")]
    pub nodata: Vec<String>,
    /// A name (or NAME/TYPE) answered SERVFAIL.
    #[arg(long, value_name = "NAME[/TYPE]")]
    pub servfail: Vec<String>,
    /// A name (or NAME/TYPE) answered REFUSED.
    #[arg(long, value_name = "NAME[/TYPE]")]
    pub refused: Vec<String>,
    /// A name (or NAME/TYPE) the server never answers.
    #[arg(long, value_name = "NAME[/TYPE]")]
    pub timeout: Vec<String>,
    /// Address family: inet (A), inet6 (AAAA) or unspec (both).
    #[arg(long, default_value = "unspec")]
    pub family: String,
    /// Output: text (one query per line, default) or json.
    #[arg(long, value_enum)]
    pub format: Option<TextOrJson>,
}

/// Which answer each `(name, type)` gets; `None` type = every type.
#[derive(Debug, Default)]
pub struct AnswerTable {
    map: HashMap<(String, Option<u16>), Answer>,
}

impl AnswerTable {
    /// Add `NAME` or `NAME/TYPE`; the same key listed with two answers is an error.
    pub fn add(&mut self, spec: &str, answer: Answer) -> anyhow::Result<()> {
        let (name, qtype) = match spec.rsplit_once('/') {
            Some((n, t)) => {
                let t = qtype_from_name(t).ok_or_else(|| {
                    anyhow!("{spec:?}: unknown query type {t:?} (e.g. A, AAAA, SRV)")
                })?;
                (n, Some(t))
            }
            None => (spec, None),
        };
        if name.trim_end_matches('.').is_empty() || name.contains(char::is_whitespace) {
            return Err(anyhow!(
                "{spec:?}: expected a domain name, e.g. web.prod or web.prod/A"
            ));
        }
        let key = (absolute(name), qtype);
        if let Some(prev) = self.map.insert(key, answer) {
            if prev != answer {
                return Err(anyhow!(
                    "{spec:?} is given both as {} and as {}",
                    prev.as_str(),
                    answer.as_str()
                ));
            }
        }
        Ok(())
    }

    /// The answer for a query: the typed entry, then the untyped one, else NXDOMAIN.
    pub fn answer(&self, qname: &str, qtype: u16) -> Answer {
        let name = qname.to_string();
        self.map
            .get(&(name.clone(), Some(qtype)))
            .or_else(|| self.map.get(&(name, None)))
            .copied()
            .unwrap_or(Answer::NxDomain)
    }
}

pub fn run(args: SimulateArgs) -> Result<(), CliError> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))
            .map_err(CliError::usage)
    };
    // The pod spec: one manifest, or a workload of a workloads file.
    let manifest = match &args.pod_dns_config {
        None => None,
        Some(pod) => {
            let text = read(pod)?;
            let in_file =
                |e: anyhow::Error| CliError::usage(e.context(format!("reading {}", pod.display())));
            if Workloads::is_workloads_file(&text) {
                let all = Workloads::from_yaml(&text).map_err(in_file)?;
                let w = match &args.workload {
                    Some(name) => all.by_name(name).cloned().ok_or_else(|| {
                        CliError::usage(anyhow!("--workload {name:?}: not in {}", pod.display()))
                    })?,
                    None if all.list.len() == 1 => all.list[0].clone(),
                    None => {
                        return Err(CliError::usage(anyhow!(
                            "{} lists {} workloads: choose one with --workload",
                            pod.display(),
                            all.list.len()
                        )))
                    }
                };
                Some((w.pod, w.stub))
            } else if args.workload.is_some() {
                return Err(CliError::usage(anyhow!(
                    "--workload: {} is one pod manifest, not a workloads file",
                    pod.display()
                )));
            } else {
                Some((PodDns::from_yaml(&text).map_err(in_file)?, None))
            }
        }
    };
    let stub: Stub = match (&args.stub, manifest.as_ref().and_then(|m| m.1)) {
        (Some(s), _) => s.parse().map_err(|e: String| CliError::usage(anyhow!(e)))?,
        (None, Some(own)) => own,
        (None, None) => Stub::Glibc,
    };
    let family: Family = args
        .family
        .parse()
        .map_err(|e: String| CliError::usage(anyhow!(e)))?;
    let format = args.format.unwrap_or(TextOrJson::Text);

    let mut settings = match (&manifest, &args.resolv_conf) {
        (Some((manifest, _)), node) => {
            let node = match node {
                Some(path) => read(path)?,
                None => String::new(),
            };
            let text = manifest.resolv_conf(&args.namespace, &args.cluster_domain, &node);
            ResolverSettings::from_resolv_conf(&text, stub, &Environment::default())
        }
        (None, Some(path)) => {
            ResolverSettings::from_resolv_conf(&read(path)?, stub, &Environment::default())
        }
        (None, None) => {
            let mut s = ResolverSettings::defaults(stub);
            s.set_ndots(DEFAULT_NDOTS, stub);
            s.set_search(DEFAULT_SEARCH);
            s
        }
    };
    if let Some(n) = args.ndots {
        settings.set_ndots(n as u32, stub);
    }
    if let Some(list) = &args.search {
        settings.set_search(list);
    }

    let mut table = AnswerTable::default();
    for (specs, answer) in [
        (&args.exists, Answer::Address),
        (&args.nodata, Answer::NoData),
        (&args.servfail, Answer::ServFail),
        (&args.refused, Answer::Refused),
        (&args.timeout, Answer::Timeout),
    ] {
        for spec in specs {
            table.add(spec, answer).map_err(CliError::usage)?;
        }
    }
    for name in &args.names {
        if name.trim_end_matches('.').is_empty() {
            return Err(CliError::usage(anyhow!(
                "{name:?}: expected a name to look up"
            )));
        }
    }

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for name in &args.names {
        let walk = stub.walk(name, family, &settings, |q, t| table.answer(q, t));
        let text = match format {
            TextOrJson::Json => json_line(stub, name, &settings, &walk),
            _ => text_block(stub, name, &settings, &walk),
        };
        out.write_all(text.as_bytes())
            .map_err(|e| CliError::runtime(anyhow!(e)))?;
    }
    Ok(())
}

fn search_display(s: &ResolverSettings) -> Vec<String> {
    s.search
        .iter()
        .map(|d| {
            if d.is_empty() {
                ".".to_string()
            } else {
                d.clone()
            }
        })
        .collect()
}

/// The DESIGN §5 JSON object (fields in the documented order).
#[derive(serde::Serialize)]
struct JsonWalk<'a> {
    stub: &'static str,
    name: &'a str,
    ndots: u32,
    search: Vec<String>,
    queries: Vec<JsonQuery<'a>>,
    result: JsonResult<'a>,
}

#[derive(serde::Serialize)]
struct JsonQuery<'a> {
    qname: &'a str,
    qtype: String,
    answer: &'static str,
}

#[derive(serde::Serialize)]
struct JsonResult<'a> {
    resolved: bool,
    qname: Option<&'a str>,
}

/// The DESIGN §5 JSON object, one line.
pub fn json_line(stub: Stub, name: &str, s: &ResolverSettings, walk: &Walk) -> String {
    let v = JsonWalk {
        stub: stub.as_str(),
        name,
        ndots: s.ndots,
        search: search_display(s),
        queries: walk
            .queries
            .iter()
            .map(|q| JsonQuery {
                qname: &q.qname,
                qtype: qtype_name(q.qtype).into_owned(),
                answer: q.answer.as_str(),
            })
            .collect(),
        result: JsonResult {
            resolved: walk.result.is_some(),
            qname: walk.result.as_deref(),
        },
    };
    let mut line = serde_json::to_string(&v).unwrap_or_default();
    line.push('\n');
    line
}

/// One query per line, framed by `;` comment lines naming the settings and the result.
pub fn text_block(stub: Stub, name: &str, s: &ResolverSettings, walk: &Walk) -> String {
    let mut t = format!(
        "; {stub} ndots:{} search: {}\n; {name}\n",
        s.ndots,
        search_display(s).join(" ")
    );
    let width = walk
        .queries
        .iter()
        .map(|q| q.qname.len())
        .max()
        .unwrap_or(0);
    for q in &walk.queries {
        t.push_str(&format!(
            "{:<width$}  {:<5} {}\n",
            q.qname,
            qtype_name(q.qtype),
            q.answer.as_str()
        ));
    }
    match &walk.result {
        Some(r) => t.push_str(&format!(
            "; resolved {r} after {} queries\n",
            walk.queries.len()
        )),
        None => t.push_str(&format!(
            "; not resolved after {} queries\n",
            walk.queries.len()
        )),
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_table_typed_entries_win() {
        let mut t = AnswerTable::default();
        t.add("web.prod/A", Answer::Address).unwrap();
        t.add("web.prod", Answer::NoData).unwrap();
        assert_eq!(t.answer("web.prod.", 1), Answer::Address);
        assert_eq!(t.answer("web.prod.", 28), Answer::NoData);
        assert_eq!(t.answer("other.", 1), Answer::NxDomain);
        assert!(t.add("x/BOGUS", Answer::Address).is_err());
        assert!(t.add("web.prod/A", Answer::ServFail).is_err());
        assert!(t.add("", Answer::Address).is_err());
    }

    fn run_with(args: &[&str]) -> Result<(), CliError> {
        use clap::Parser;
        let cli =
            crate::cli::Cli::try_parse_from(["ndots", "simulate"].iter().chain(args)).unwrap();
        match cli.command {
            crate::cli::Command::Simulate(a) => run(a),
            _ => unreachable!(),
        }
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        for args in [
            &["--stub", "bind", "x"][..],
            &["--family", "inet4", "x"],
            &["--exists", "x/NOPE", "x"],
            &["--exists", "x", "--refused", "x", "x"],
            &["--resolv-conf", "/nonexistent/resolv.conf", "x"],
            &["."],
        ] {
            let e = run_with(args).unwrap_err();
            assert_eq!(e.code, 2, "{args:?}: {:#}", e.error);
        }
    }

    #[test]
    fn a_workloads_file_needs_a_workload_it_lists() {
        let dir = tempfile::tempdir().unwrap();
        let two = dir.path().join("two.yaml");
        std::fs::write(
            &two,
            "workloads: [{name: a, dnsPolicy: None}, {name: b, stub: musl}]\n",
        )
        .unwrap();
        let pod = dir.path().join("pod.yaml");
        std::fs::write(&pod, "dnsPolicy: None\n").unwrap();
        let (two, pod) = (two.to_str().unwrap(), pod.to_str().unwrap());
        for args in [
            &["--pod-dns-config", two, "x"][..],
            &["--pod-dns-config", two, "--workload", "c", "x"],
            &["--pod-dns-config", pod, "--workload", "a", "x"],
        ] {
            let e = run_with(args).unwrap_err();
            assert_eq!(e.code, 2, "{args:?}: {:#}", e.error);
        }
        run_with(&["--pod-dns-config", two, "--workload", "b", "x"]).unwrap();
    }

    #[test]
    fn json_has_the_contract_fields() {
        let mut s = ResolverSettings::defaults(Stub::Glibc);
        s.set_ndots(5, Stub::Glibc);
        s.set_search(DEFAULT_SEARCH);
        let w = Stub::Glibc.walk("api.github.com", Family::Unspec, &s, |q, _| {
            if q == "api.github.com." {
                Answer::Address
            } else {
                Answer::NxDomain
            }
        });
        let v: serde_json::Value =
            serde_json::from_str(&json_line(Stub::Glibc, "api.github.com", &s, &w)).unwrap();
        assert_eq!(v["stub"], "glibc");
        assert_eq!(v["ndots"], 5);
        assert_eq!(v["search"][0], "default.svc.cluster.local");
        assert_eq!(v["queries"].as_array().unwrap().len(), 8);
        assert_eq!(
            v["queries"][0]["qname"],
            "api.github.com.default.svc.cluster.local."
        );
        assert_eq!(v["queries"][0]["answer"], "NXDOMAIN");
        assert_eq!(v["result"]["resolved"], true);
        assert_eq!(v["result"]["qname"], "api.github.com.");
        let text = text_block(Stub::Glibc, "api.github.com", &s, &w);
        assert_eq!(text.lines().filter(|l| !l.starts_with(';')).count(), 8);
    }
}
