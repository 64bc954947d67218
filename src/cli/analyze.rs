//! `ndots analyze CAPTURE...`: rebuild lookups from captured queries and print the
//! amplification report (DESIGN §5), the same report the proxy serves at `/report`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{anyhow, Context};

use super::{CliError, Format};
use crate::amplify::by_workload::ByWorkload;
use crate::amplify::Analyzer;
use crate::capture::{self, Options};
use crate::config::{ClusterConfig, TrackerConfig};
use crate::event::QueryEvent;
use crate::render;
use crate::search::resolv_conf::{Environment, ResolverSettings};
use crate::search::workloads::Workloads;
use crate::search::Stub;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  ndots analyze coredns.log\n  \
    kubectl logs -n kube-system -l k8s-app=kube-dns --timestamps | ndots analyze -\n  \
    ndots analyze node.pcap --resolv-conf pod-resolv.conf --format html -o report.html\n  \
    ndots analyze coredns.log --pod-dns-config workloads.yaml --format json")]
pub struct AnalyzeArgs {
    /// Captures: pcap/pcapng, CoreDNS `log` lines, dnstap, JSON lines or dnsperf files
    /// (detected from content; `.gz`/`.zst` read transparently; `-` is standard input).
    #[arg(required = true)]
    pub captures: Vec<PathBuf>,
    /// Read every capture as this format instead of detecting it.
    #[arg(long, value_enum)]
    pub input_format: Option<capture::Format>,
    /// Stop at the first unreadable record (exit 1) instead of counting and skipping it.
    #[arg(long)]
    pub strict: bool,
    /// The pods' search list, space-separated as in resolv.conf. An entry `<ns>.svc.<domain>`
    /// stands for every namespace.
    #[arg(long, conflicts_with = "resolv_conf")]
    pub search: Option<String>,
    /// Take the search list from a pod's resolv.conf.
    #[arg(long, value_name = "FILE")]
    pub resolv_conf: Option<PathBuf>,
    /// Workloads with their own pod DNS config (docs/pod-dns-config.md): each is advised from
    /// its own clients' lookups with its own ndots and search list, and the cluster-wide
    /// ndots advice covers only the clients no workload lists.
    #[arg(long, value_name = "FILE")]
    pub pod_dns_config: Option<PathBuf>,
    /// The cluster DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// A walk with no new query for this long ends.
    #[arg(long, default_value = "2s")]
    pub idle: String,
    /// DNS server port in pcap captures.
    #[arg(long, default_value_t = 53)]
    pub port: u16,
    /// Output format: text (default; for a person), json (the report object) or html (one
    /// self-contained file with charts).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Write the report here instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn run(args: AnalyzeArgs) -> Result<(), CliError> {
    // One read of the captures, on a thread of its own: the search list inference takes the
    // first events from it, and the walk tracker gets them all (this thread).
    let mut events = Events::new(
        &args.captures,
        Options {
            format: args.input_format,
            strict: args.strict,
            port: args.port,
            ..Options::default()
        },
    );
    let CaptureSetup {
        cluster,
        said,
        search_from,
        tracker,
        ..
    } = capture_setup(
        &ShapeSource {
            search: args.search.as_deref(),
            resolv_conf: args.resolv_conf.as_deref(),
            first_capture: args.captures.first().map(PathBuf::as_path),
        },
        &mut events,
        &args.cluster_domain,
        &args.idle,
    )?;
    let mut analyzer = Analyzer::new(&cluster, &tracker);
    let mut by_workload = match &args.pod_dns_config {
        Some(p) => Some(ByWorkload::new(
            Workloads::read(p).map_err(CliError::usage)?,
            &p.display().to_string(),
            &cluster,
            &tracker,
        )),
        None => None,
    };
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "search list: {said}");

    let total_unreadable = events.run(&mut stderr, |ev| {
        analyzer.observe(ev);
        if let Some(b) = by_workload.as_mut() {
            b.observe(ev);
        }
    })?;
    let source = args
        .captures
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut report = analyzer.finish(&source);
    report.set_search(&cluster, search_from);
    if let Some(b) = by_workload {
        report.advice = b.advice(&report, search_from);
    }
    let out = match args.format.unwrap_or(Format::Text) {
        Format::Text => render::text(&report),
        Format::Json => render::json(&report),
        Format::Html => render::html(&report),
    };
    match &args.output {
        Some(p) => std::fs::write(p, out)
            .with_context(|| format!("writing {}", p.display()))
            .map_err(CliError::runtime)?,
        None => {
            let _ = std::io::stdout().lock().write_all(out.as_bytes());
        }
    }
    if total_unreadable > 0 {
        let _ = writeln!(
            stderr,
            "{total_unreadable} unreadable records skipped (--strict makes the first one fatal)"
        );
    }
    Ok(())
}

/// Where the search list shape comes from: `--search`, `--resolv-conf`, or the capture.
pub(crate) struct ShapeSource<'a> {
    pub search: Option<&'a str>,
    pub resolv_conf: Option<&'a std::path::Path>,
    pub first_capture: Option<&'a std::path::Path>,
}

/// What `analyze` and `replay` read captures with: the cluster domain, the pods' search list
/// (and how it was chosen, said on stderr) and the tracker's settings.
pub(super) struct CaptureSetup {
    pub domain: String,
    pub cluster: ClusterConfig,
    pub said: String,
    /// How the search list was chosen (the report's `search_from`).
    pub search_from: &'static str,
    pub tracker: TrackerConfig,
}

pub(super) fn capture_setup(
    source: &ShapeSource<'_>,
    events: &mut Events,
    cluster_domain: &str,
    idle: &str,
) -> Result<CaptureSetup, CliError> {
    let domain = cluster_domain
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let (cluster, said) = search_shape(source, &domain, &mut |domain| {
        infer_node_domains(events.head(), domain)
    })
    .map_err(CliError::usage)?;
    let idle = crate::config::parse_duration(idle).map_err(CliError::usage)?;
    use crate::amplify::advice::{SEARCH_ASSUMED, SEARCH_GIVEN, SEARCH_INFERRED};
    let search_from = if source.search.is_some() || source.resolv_conf.is_some() {
        SEARCH_GIVEN
    } else if !cluster.node_search.is_empty() {
        SEARCH_INFERRED
    } else {
        SEARCH_ASSUMED
    };
    Ok(CaptureSetup {
        domain,
        cluster,
        said,
        search_from,
        tracker: TrackerConfig {
            idle,
            max_open_walks: 200_000,
            namespace_series: crate::config::DEFAULT_NAMESPACE_SERIES,
        },
    })
}

/// The search list shape for decomposition, and how it was chosen (said on stderr).
/// `infer` reads the node's domains off the first capture's events (called only when needed).
pub(crate) fn search_shape(
    args: &ShapeSource<'_>,
    domain: &str,
    infer: &mut dyn FnMut(&str) -> Vec<String>,
) -> anyhow::Result<(ClusterConfig, String)> {
    let (list, origin): (Vec<String>, String) = if let Some(s) = args.search {
        (
            s.split_whitespace().map(str::to_string).collect(),
            "from --search".into(),
        )
    } else if let Some(p) = args.resolv_conf {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let settings =
            ResolverSettings::from_resolv_conf(&text, Stub::Glibc, &Environment::default());
        (settings.search, format!("from {}", p.display()))
    } else {
        let shape = vec![
            format!("*.svc.{domain}"),
            format!("svc.{domain}"),
            domain.to_string(),
        ];
        let node = match args.first_capture {
            Some(p) if p.as_os_str() != "-" => infer(domain),
            _ => Vec::new(),
        };
        let said = if node.is_empty() {
            format!(
                "{} (the Kubernetes pod default, assumed; no node domains found in the capture: \
                 pass --search or --resolv-conf to give them)",
                shape.join(" ")
            )
        } else {
            format!(
                "{} {} (the Kubernetes pod default, assumed, plus node domains inferred from \
                 the capture's search walks; --search or --resolv-conf overrides)",
                shape.join(" "),
                node.join(" ")
            )
        };
        return Ok((
            ClusterConfig {
                domain: domain.into(),
                search: shape,
                node_search: node,
            },
            said,
        ));
    };
    shape_from_list(&list, domain, &origin)
}

/// A resolv.conf-style search list as a shape: `<ns>.svc.<domain>` (or `*.svc.<domain>`)
/// stands for every namespace; the cluster's own entries, then the node's.
pub(crate) fn shape_from_list(
    list: &[String],
    domain: &str,
    origin: &str,
) -> anyhow::Result<(ClusterConfig, String)> {
    let ns_suffix = format!(".svc.{domain}");
    let mut search = Vec::new();
    let mut node_search = Vec::new();
    for entry in list {
        let e = entry.trim_end_matches('.').to_ascii_lowercase();
        if e.is_empty() {
            continue;
        }
        // `<ns>.svc.<domain>` is one pod's namespace; a capture holds many.
        if let Some(ns) = e.strip_suffix(ns_suffix.as_str()) {
            if !ns.contains('.') {
                search.push(format!("*{ns_suffix}"));
                continue;
            }
        }
        if e == format!("svc.{domain}") || e == domain {
            search.push(e);
        } else {
            node_search.push(e);
        }
    }
    if search.is_empty() && node_search.is_empty() {
        return Err(anyhow!("the search list {origin} is empty"));
    }
    let said = format!("{} {} ({origin})", search.join(" "), node_search.join(" "));
    Ok((
        ClusterConfig {
            domain: domain.into(),
            search,
            node_search,
        },
        said.replace("  ", " "),
    ))
}

/// Records (events and unreadable ones) of the first capture read to infer the node's search
/// domains.
const INFER_EVENTS: usize = 200_000;

/// The node's own search domains, read off the walks in the first capture: a suffix `S` (not
/// under the cluster domain) counts when a client asked for `B.S` and also for the absolute
/// `B.`, the signature of a search walk. Suffixes seen for at least three bases are kept, most
/// frequent first, at most three. A walk that *begins* with the name as written (ndots or more
/// dots) is a stronger signature: `B.` failed (NXDOMAIN or NODATA) and `B.S` of the same type
/// followed within a second; one such walk is enough (zeek-wikipedia's `ncsa.uiuc.edu`).
/// `head` is the first capture's first events, in the order read (before `Reorder`).
fn infer_node_domains(head: &[crate::event::QueryEvent], domain: &str) -> Vec<String> {
    // hashbrown's default hasher (foldhash): the keys are the capture's, nothing to defend.
    use hashbrown::{HashMap, HashSet};
    let cluster = format!(".{domain}.");
    let mut names: HashMap<std::net::IpAddr, HashSet<&str>> = HashMap::new();
    // Per (client, type): the last absolute name that failed, and when.
    let mut failed: HashMap<(std::net::IpAddr, u16), (&str, u64)> = HashMap::new();
    let mut strong: HashMap<String, usize> = HashMap::new();
    for ev in head {
        let key = (ev.client, ev.qtype);
        if let Some((b, at)) = failed.get(&key) {
            let suffix = ev.qname.strip_prefix(*b).map(|s| s.trim_end_matches('.'));
            if let Some(suffix) = suffix {
                if suffix.contains('.')
                    && ev.time.0.saturating_sub(*at) <= 1_000_000
                    && !ev.qname.ends_with(&cluster)
                {
                    *strong.entry(suffix.to_string()).or_default() += 1;
                }
            }
        }
        if ev.rcode == Some(3) || (ev.rcode == Some(0) && ev.answers == Some(0)) {
            failed.insert(key, (ev.qname.as_str(), ev.time.0));
        } else {
            failed.remove(&key);
        }
        if failed.len() > INFER_EVENTS {
            failed.clear();
        }
        names
            .entry(ev.client)
            .or_default()
            .insert(ev.qname.as_str());
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut absolute = String::new();
    for set in names.values() {
        for name in set.iter().filter(|n| !n.ends_with(&cluster)) {
            // Every split of `name` into `base.suffix` on a label boundary, the suffix having
            // at least two labels (a search domain, not a TLD).
            for (i, _) in name.match_indices('.') {
                let (base, suffix) = (&name[..i], name[i + 1..].trim_end_matches('.'));
                if !suffix.contains('.') {
                    continue;
                }
                absolute.clear();
                absolute.push_str(base);
                absolute.push('.');
                if set.contains(absolute.as_str()) {
                    *counts.entry(suffix.to_string()).or_default() += 1;
                }
            }
        }
    }
    let mut found: Vec<(String, usize)> = counts
        .into_iter()
        .filter(|(s, n)| *n >= 3 || strong.contains_key(s))
        .collect();
    found.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    found.into_iter().take(3).map(|(s, _)| s).collect()
}

/// Events in flight between the reader thread and the tracker: batches of this many...
const BATCH: usize = 1024;
/// ...and at most this many batches queued (with one being filled and one being tracked, about
/// 10k events: a few MB whatever the capture's size).
const QUEUED_BATCHES: usize = 8;

/// What the reader thread tells the tracker's thread, in order.
enum Msg {
    Events(Vec<QueryEvent>),
    /// The first capture's first `INFER_EVENTS` records (or all of it) have been sent.
    HeadEnd,
    /// Progress and per-file counts for stderr.
    Text(String),
    /// The end: records unreadable in all, or the error that stopped the reading.
    Done(Result<u64, CliError>),
}

/// The captures' events, read and decoded on a thread of their own (started at the first use)
/// while the caller's thread puts them in query-time order and tracks walks: on two cores
/// the two halves run at once. Shared by `analyze` and `replay`.
pub(super) struct Events {
    captures: Vec<PathBuf>,
    opts: Options,
    rx: Option<std::sync::mpsc::Receiver<Msg>>,
    /// Emptied batches go back to the reader to be filled again.
    recycle: Option<std::sync::mpsc::Sender<Vec<QueryEvent>>>,
    /// Events taken by [`Events::head`], handed to `observe` first.
    head: Vec<QueryEvent>,
    /// Messages received while taking the head (counts, the end), replayed by `run`.
    held: Vec<Msg>,
    /// Records of the first capture in the head: `INFER_EVENTS` (tests take fewer).
    head_records: usize,
}

impl Events {
    pub(super) fn new(captures: &[PathBuf], opts: Options) -> Events {
        Events {
            captures: captures.to_vec(),
            opts,
            rx: None,
            recycle: None,
            head: Vec::new(),
            held: Vec::new(),
            head_records: INFER_EVENTS,
        }
    }

    fn start(&mut self) {
        if self.rx.is_some() {
            return;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUED_BATCHES);
        let (recycle, reuse) = std::sync::mpsc::channel();
        let captures = self.captures.clone();
        let opts = self.opts.clone();
        let head_records = self.head_records;
        let spawned = std::thread::Builder::new()
            .name("capture-reader".into())
            .spawn(move || {
                let end = read_all(&captures, &opts, head_records, &tx, &reuse);
                let _ = tx.send(Msg::Done(end));
            });
        if let Err(e) = spawned {
            let (tx, rx2) = std::sync::mpsc::sync_channel(1);
            let _ = tx.send(Msg::Done(Err(CliError::runtime(anyhow!(
                "starting the capture reader: {e}"
            )))));
            self.rx = Some(rx2);
            return;
        }
        self.rx = Some(rx);
        self.recycle = Some(recycle);
    }

    /// The events of the first capture's first `head_records` records (fewer when it is
    /// shorter), in the order read; `run` hands them to `observe` like the rest. Only the
    /// first call reads.
    fn head(&mut self) -> &[QueryEvent] {
        if self.rx.is_none() {
            self.start();
            let rx = self.rx.as_ref().expect("started");
            loop {
                match rx.recv() {
                    Ok(Msg::Events(b)) => self.head.extend(b),
                    Ok(Msg::HeadEnd) | Err(_) => break,
                    Ok(m @ Msg::Done(_)) => {
                        self.held.push(m);
                        break;
                    }
                    Ok(m) => self.held.push(m),
                }
            }
        }
        &self.head
    }

    /// Every event into `observe` in query-time order (across all the captures: they are one
    /// stream of traffic), with progress and per-file counts on `stderr`; returns how many
    /// records were unreadable (skipped), or the first one under `--strict`.
    pub(super) fn run(
        mut self,
        stderr: &mut impl Write,
        mut observe: impl FnMut(&QueryEvent),
    ) -> Result<u64, CliError> {
        self.start();
        let mut reorder =
            capture::Reorder::new(capture::Reorder::WINDOW, capture::Reorder::MAX_HELD);
        for ev in std::mem::take(&mut self.head) {
            reorder.push(ev, &mut observe);
        }
        let held = std::mem::take(&mut self.held);
        let rx = self.rx.take().expect("started");
        let mut msgs = held
            .into_iter()
            .map(Ok)
            .chain(std::iter::from_fn(|| Some(rx.recv())));
        loop {
            match msgs.next().expect("endless") {
                Ok(Msg::Events(mut b)) => {
                    for ev in b.drain(..) {
                        reorder.push(ev, &mut observe);
                    }
                    if let Some(r) = &self.recycle {
                        let _ = r.send(b);
                    }
                }
                Ok(Msg::HeadEnd) => {}
                Ok(Msg::Text(t)) => {
                    let _ = stderr.write_all(t.as_bytes());
                }
                Ok(Msg::Done(Ok(unreadable))) => {
                    reorder.finish(&mut observe);
                    return Ok(unreadable);
                }
                Ok(Msg::Done(Err(e))) => return Err(e),
                Err(_) => {
                    return Err(CliError::runtime(anyhow!(
                        "the capture reader stopped without a result"
                    )))
                }
            }
        }
    }
}

/// The reader thread: every capture's events to `tx` in batches. An `Err` is a capture that
/// cannot be opened (a usage error) or the first unreadable record under `--strict`; a closed
/// channel (the tracker side gave up) ends the reading quietly.
fn read_all(
    captures: &[PathBuf],
    opts: &Options,
    head_records: usize,
    tx: &std::sync::mpsc::SyncSender<Msg>,
    reuse: &std::sync::mpsc::Receiver<Vec<QueryEvent>>,
) -> Result<u64, CliError> {
    let gone = || CliError::runtime(anyhow!("the tracker stopped reading"));
    let progress = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
    let mut total_unreadable = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    // Records of the first capture until the head is complete.
    let mut head_left = Some(head_records.max(1));
    for path in captures {
        let mut cap = capture::open_with(path, opts).map_err(|e| CliError::usage(anyhow!(e)))?;
        let mut n = 0u64;
        for item in cap.by_ref() {
            let unreadable = match item {
                Ok(ev) => {
                    batch.push(ev);
                    n += 1;
                    if progress && n % 500_000 == 0 {
                        let _ = tx.send(Msg::Text(format!("\r{}: {n} events", path.display())));
                    }
                    None
                }
                Err(u) => Some(u),
            };
            if let Some(left) = head_left.as_mut() {
                *left -= 1;
                if *left == 0 {
                    head_left = None;
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    tx.send(Msg::Events(full)).map_err(|_| gone())?;
                    tx.send(Msg::HeadEnd).map_err(|_| gone())?;
                }
            }
            if let Some(u) = unreadable {
                if opts.strict {
                    return Err(CliError::runtime(anyhow!(
                        "{}: {u} (--strict)",
                        path.display()
                    )));
                }
            }
            if batch.len() >= BATCH {
                let next = reuse
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(BATCH));
                tx.send(Msg::Events(std::mem::replace(&mut batch, next)))
                    .map_err(|_| gone())?;
            }
        }
        if !batch.is_empty() {
            tx.send(Msg::Events(std::mem::take(&mut batch)))
                .map_err(|_| gone())?;
        }
        if head_left.take().is_some() {
            tx.send(Msg::HeadEnd).map_err(|_| gone())?;
        }
        let s = cap.stats();
        let mut text = String::new();
        if progress {
            text.push('\r');
        }
        use std::fmt::Write as _;
        let _ = writeln!(
            text,
            "{}: {} events ({}), {} unreadable",
            path.display(),
            s.events,
            cap.format().as_str(),
            s.unreadable
        );
        for u in &s.first_unreadable {
            let _ = writeln!(text, "  unreadable: {u}");
        }
        tx.send(Msg::Text(text)).map_err(|_| gone())?;
        total_unreadable += s.unreadable;
    }
    Ok(total_unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::synth;

    /// The reader thread hands over every event once, in the order one thread reading the
    /// captures and putting them through `Reorder` gives, whether the head ends inside a
    /// batch, at a batch boundary, or covers the whole first capture; with two captures.
    #[test]
    fn events_through_the_reader_thread_are_those_of_one_thread() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (i, seed) in [5u64, 6].into_iter().enumerate() {
            let p = dir.path().join(format!("c{i}.pcap"));
            let cfg = synth::SynthConfig {
                queries: 3_000,
                seed,
                ..synth::SynthConfig::default()
            };
            synth::write(&cfg, std::fs::File::create(&p).unwrap()).unwrap();
            paths.push(p);
        }
        let opts = Options::default();
        let mut want = Vec::new();
        let mut reorder =
            capture::Reorder::new(capture::Reorder::WINDOW, capture::Reorder::MAX_HELD);
        for p in &paths {
            for ev in capture::open_with(p, &opts).unwrap().flatten() {
                reorder.push(ev, |e| want.push(e.clone()));
            }
        }
        reorder.finish(|e| want.push(e.clone()));
        assert_eq!(want.len(), 6_000);
        for head_records in [1, 7, BATCH, BATCH + 1, 3_000, 10_000] {
            let mut events = Events::new(&paths, opts.clone());
            events.head_records = head_records;
            let head = events.head().to_vec();
            assert_eq!(head.len(), head_records.min(3_000), "head {head_records}");
            let mut got = Vec::new();
            let mut text = Vec::new();
            let unreadable = events.run(&mut text, |e| got.push(e.clone())).unwrap();
            assert_eq!(unreadable, 0);
            assert!(got == want, "head {head_records}: events differ");
            let text = String::from_utf8(text).unwrap();
            assert_eq!(
                text.matches("3000 events (pcap), 0 unreadable").count(),
                2,
                "{text}"
            );
        }
        // Without a head, and a capture that cannot be opened is the usage error it was.
        let mut got = Vec::new();
        Events::new(&paths, opts.clone())
            .run(&mut Vec::new(), |e| got.push(e.clone()))
            .unwrap();
        assert!(got == want);
        let missing = vec![dir.path().join("missing.pcap")];
        let err = Events::new(&missing, opts).run(&mut Vec::new(), |_| {});
        assert_eq!(err.err().map(|e| e.code), Some(2));
    }
}
