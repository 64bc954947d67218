//! `ndots analyze CAPTURE...`: rebuild lookups from captured queries and print the
//! amplification report (DESIGN §5), the same report the proxy serves at `/report`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{CliError, Format};
use crate::amplify::by_workload::ByWorkload;
use crate::amplify::Analyzer;
use crate::capture;
use crate::capture::session::{capture_setup, CaptureSetup, Events, SessionError, ShapeSource};
use crate::render;
use crate::search::workloads::Workloads;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  ndots analyze coredns.log\n  \
    ndots analyze dns-logs/*.log    (each CoreDNS replica's log, merged by time)\n  \
    kubectl logs -n kube-system coredns-5d78c9869d-x7v2k --timestamps | ndots analyze -\n  \
    ndots analyze node.pcap --resolv-conf pod-resolv.conf --format html -o report.html\n  \
    ndots analyze coredns.log --pod-dns-config workloads.yaml --format json")]
pub struct AnalyzeArgs {
    #[command(flatten)]
    pub capture: CaptureArgs,
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
    /// Output format: text (default; for a person), json (the report object) or html (one
    /// self-contained file with charts).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Write the report here instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// What `analyze` and `replay` read captures with, alike.
#[derive(clap::Args, Debug)]
pub struct CaptureArgs {
    /// Captures: pcap/pcapng, CoreDNS `log` lines, dnstap, JSON lines or dnsperf files
    /// (detected from content; `.gz`/`.zst` read transparently; `-` is standard input).
    /// Several are one stream, merged by time.
    #[arg(required = true)]
    pub captures: Vec<PathBuf>,
    /// Read every capture as this format instead of detecting it.
    #[arg(long, value_enum)]
    pub input_format: Option<capture::Format>,
    /// Stop at the first unreadable record (exit 1) instead of counting and skipping it.
    #[arg(long)]
    pub strict: bool,
    /// The cluster DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// A walk with no new query for this long ends.
    #[arg(long, default_value = "2s")]
    pub idle: String,
    /// DNS server port in pcap captures.
    #[arg(long, default_value_t = 53)]
    pub port: u16,
}

impl CaptureArgs {
    /// The captures' events (read on a thread of their own: decoding, pairing, query-time
    /// order, the search list inference off the first events) and the session's setup, with
    /// the search list given (`search` or `resolv_conf`) or inferred.
    pub(super) fn open(
        &self,
        search: Option<&str>,
        resolv_conf: Option<&Path>,
    ) -> Result<(Events, CaptureSetup), CliError> {
        let mut events =
            Events::from_flags(&self.captures, self.input_format, self.strict, self.port);
        let setup = capture_setup(
            &ShapeSource {
                search,
                resolv_conf,
                first_capture: self.captures.first().map(PathBuf::as_path),
            },
            &mut events,
            &self.cluster_domain,
            &self.idle,
        )
        .map_err(session_error)?;
        Ok((events, setup))
    }

    /// The captures named in the report.
    pub(super) fn source(&self) -> String {
        self.captures
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn run(args: AnalyzeArgs) -> Result<(), CliError> {
    // The walk tracker gets every event here, on this thread.
    let (
        events,
        CaptureSetup {
            cluster,
            said,
            search_from,
            tracker,
            ..
        },
    ) = args
        .capture
        .open(args.search.as_deref(), args.resolv_conf.as_deref())?;
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

    let read = events
        .run(&mut stderr, &mut super::progress::ReadBar::new(), |ev| {
            analyzer.observe(ev);
            if let Some(b) = by_workload.as_mut() {
                b.observe(ev);
            }
        })
        .map_err(session_error)?;
    let mut report = analyzer.finish(&args.capture.source());
    report.input = Some(read.counts.clone());
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
    if read.counts.unreadable > 0 {
        let _ = writeln!(
            stderr,
            "{} unreadable records skipped (--strict makes the first one fatal)",
            read.counts.unreadable
        );
    }
    Ok(())
}

/// A session's error as the CLI's: what the user gave is wrong (exit 2), or reading failed
/// under `--strict` or the reader thread failed (exit 1).
pub(super) fn session_error(e: SessionError) -> CliError {
    match e {
        SessionError::Setup(_) | SessionError::Open(_) => CliError::usage(e),
        SessionError::Strict { .. } | SessionError::Reader(_) => CliError::runtime(e),
    }
}
