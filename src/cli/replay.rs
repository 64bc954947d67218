//! `ndots replay CAPTURE...`: re-expand the captured lookups under other settings, offline or
//! live against `--target`, and recommend one (DESIGN §5; the model is `crate::replay`).

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::{anyhow, Context};

use super::analyze::{session_error, CaptureArgs};
use super::{CliError, Format};
use crate::capture::session::{shape_from_list, CaptureSetup};
use crate::config::ShortcutMode;
use crate::render;
use crate::replay::live::{LiveOptions, Pace};
use crate::replay::{self, Captured, Collector, ReplayReport, Setting};
use crate::search::workloads::Workloads;
use crate::search::Stub;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  ndots replay coredns.log\n  \
    ndots replay coredns.log --ndots 1,2,3,5 --stub glibc,musl --shortcut off,nxdomain --fqdn\n  \
    ndots replay coredns.log --pod-dns-config workloads.yaml --ndots 1,2,3\n  \
    ndots replay node.pcap --target 10.96.0.10:53 --speed 4 --format html -o replay.html")]
pub struct ReplayArgs {
    #[command(flatten)]
    pub capture: CaptureArgs,
    /// The search list the captured pods had (as in resolv.conf; `<ns>.svc.<domain>` stands
    /// for every namespace). Default: the Kubernetes pod list plus node domains inferred from
    /// the capture, as `ndots analyze` does.
    #[arg(long, conflicts_with = "resolv_conf")]
    pub captured_search: Option<String>,
    /// Take the captured search list from a pod's resolv.conf.
    #[arg(long, value_name = "FILE")]
    pub resolv_conf: Option<PathBuf>,
    /// The ndots the captured pods ran with.
    #[arg(long, default_value_t = 5)]
    pub captured_ndots: u32,
    /// The stub resolver the captured pods ran.
    #[arg(long, default_value = "glibc")]
    pub captured_stub: String,
    /// Workloads with their own pod DNS config (docs/pod-dns-config.md): a YAML or JSON file
    /// `workloads: [{name, clients: [CIDR...], namespace?, stub?, dnsPolicy?, dnsConfig?}]`.
    /// Their clients are replayed with that resolv.conf; a setting's ndots applies to them
    /// only when their pod does not set its own.
    #[arg(long, value_name = "FILE")]
    pub pod_dns_config: Option<PathBuf>,
    /// ndots values to compare, comma-separated.
    #[arg(long, default_value = "1,2,3,4,5")]
    pub ndots: String,
    /// A search list to compare (repeatable); default: the captured one.
    #[arg(long)]
    pub search: Vec<String>,
    /// Stub models to compare, comma-separated (glibc, musl, musl-1.2.3, go, go-1.19, c-ares,
    /// c-ares-1.18, hickory); default: the captured stub.
    #[arg(long)]
    pub stub: Option<String>,
    /// Proxy shortcut modes to compare, comma-separated: off, nxdomain, autopath.
    #[arg(long, default_value = "off")]
    pub shortcut: String,
    /// A zone whose names' expansions the shortcut rules out (repeatable), as
    /// `shortcut.zones` in the proxy's config.
    #[arg(long, value_name = "ZONE")]
    pub shortcut_zone: Vec<String>,
    /// Also compare the FQDN rewrite: external names asked with a trailing dot.
    #[arg(long)]
    pub fqdn: bool,
    /// Let the recommendation pick a setting under which some lookups resolve differently.
    #[arg(long)]
    pub allow_changes: bool,
    /// Send the walks to this DNS server (UDP) and measure, instead of predicting offline.
    #[arg(long, value_name = "HOST:PORT")]
    pub target: Option<String>,
    /// Live: replay this many times faster than captured.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Live: send at this many queries per second instead of the captured pace (`max`: as
    /// fast as the in-flight bound allows).
    #[arg(long, value_name = "QPS|max")]
    pub rate: Option<String>,
    /// Live: queries outstanding at most.
    #[arg(long, default_value_t = 1000)]
    pub max_inflight: usize,
    /// Live: a query unanswered this long is a timeout.
    #[arg(long, default_value = "2s")]
    pub timeout: String,
    /// Live: UDP sockets to send from.
    #[arg(long, default_value_t = 4)]
    pub sockets: usize,
    /// Repeat the captured lookups this many times (live load generation).
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Output format: text (default; a table for a terminal), json (DESIGN §5) or html (one
    /// self-contained file with charts).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Write the comparison here instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

fn list<T>(s: &str, what: &str, parse: impl Fn(&str) -> Option<T>) -> anyhow::Result<Vec<T>> {
    let v = s
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| parse(x).ok_or_else(|| anyhow!("{what}: {x:?} is not valid")))
        .collect::<anyhow::Result<Vec<T>>>()?;
    if v.is_empty() {
        return Err(anyhow!("{what}: empty list"));
    }
    Ok(v)
}

pub fn run(args: ReplayArgs) -> Result<(), CliError> {
    let (
        events,
        CaptureSetup {
            domain,
            cluster,
            said,
            tracker,
            ..
        },
    ) = args
        .capture
        .open(args.captured_search.as_deref(), args.resolv_conf.as_deref())?;
    let captured_stub: Stub = args
        .captured_stub
        .parse()
        .map_err(|e: String| CliError::usage(anyhow!(e)))?;
    let captured = Captured {
        cluster: cluster.clone(),
        ndots: args.captured_ndots,
        stub: captured_stub,
        workloads: match &args.pod_dns_config {
            Some(p) => Some(std::sync::Arc::new(
                Workloads::read(p).map_err(CliError::usage)?,
            )),
            None => None,
        },
    };
    let settings = settings(&args, &captured, &domain).map_err(CliError::usage)?;
    let live = live_options(&args, &settings).map_err(CliError::usage)?;

    let mut stderr = std::io::stderr().lock();
    // The shared wording names analyze's flag; here the captured list is --captured-search.
    let said = said.replace("--search", "--captured-search");
    let _ = writeln!(stderr, "captured search list: {said}");
    let mut collector = Collector::new(&captured, &tracker, live.is_some());
    let read = events
        .run(&mut stderr, &mut super::progress::ReadBar::new(), |ev| {
            collector.observe(ev)
        })
        .map_err(session_error)?;
    let mut rp = collector.finish();
    // Without timestamps the captured pace is every lookup at once (a flood): a safe rate
    // instead, said here and in the output.
    let mut live = live;
    let mut pace_said = None;
    if let Some(opts) = live.as_mut() {
        pace_said = Some(match opts.pace {
            Pace::Captured { .. } if !rp.has_timestamps() => {
                opts.pace = Pace::Rate(SAFE_RATE);
                format!(
                    "{SAFE_RATE} queries/s: the capture has no timestamps, so its pace is \
                     unknown (--rate sets another)"
                )
            }
            Pace::Captured { speed: 1.0 } => "the captured pace".to_string(),
            Pace::Captured { speed } => format!("the captured pace x{speed}"),
            Pace::Rate(q) => format!("{q} queries/s (--rate)"),
            Pace::Max => "as fast as --max-inflight allows (--rate max)".to_string(),
        });
        if let Some(p) = &pace_said {
            let _ = writeln!(stderr, "live pace: {p}");
        }
    }
    rp.shortcut_zones = args
        .shortcut_zone
        .iter()
        .map(|z| z.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    if args.repeat > 1 {
        rp.repeat(args.repeat);
    }
    let source = args.capture.source();

    let bar = super::progress::steps(settings.len() as u64 + 1, "settings");
    let evaluate = |s: &Setting| -> Result<replay::SettingReport, CliError> {
        bar.set_message(s.label(&cluster));
        let r = match &live {
            None => Ok(rp.evaluate(s)),
            Some(opts) => rp
                .evaluate_live(s, opts)
                .with_context(|| format!("live replay to {}", opts.target))
                .map_err(CliError::runtime),
        };
        bar.inc(1);
        r
    };
    let captured_setting = captured.setting();
    let captured_report = evaluate(&captured_setting)?;
    let mut reports = Vec::with_capacity(settings.len());
    for s in &settings {
        if *s == captured_setting {
            bar.inc(1);
            reports.push(captured_report.clone());
        } else {
            reports.push(evaluate(s)?);
        }
    }
    bar.finish_and_clear();
    let recommendation = replay::recommend(&captured_report, &reports, args.allow_changes);
    let report = ReplayReport {
        source,
        mode: if live.is_some() { "live" } else { "offline" }.into(),
        lookups: captured_report.lookups,
        application_lookups: rp.application_lookups(),
        events: rp.events,
        captured: captured_report,
        settings: reports,
        recommendation,
        pace: pace_said,
        input: Some(read.counts.clone()),
    };
    let out = match args.format.unwrap_or(Format::Text) {
        Format::Text => render::replay::text(&report),
        Format::Json => render::replay::json(&report),
        Format::Html => render::replay::html(&report),
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

/// Every combination asked: search lists x ndots x stubs x shortcut modes, then the FQDN
/// rewrite per stub and shortcut mode.
fn settings(args: &ReplayArgs, captured: &Captured, domain: &str) -> anyhow::Result<Vec<Setting>> {
    let ndots = list(&args.ndots, "--ndots", |x| x.parse::<u32>().ok())?;
    let stubs = match &args.stub {
        Some(s) => list(s, "--stub", |x| x.parse::<Stub>().ok())?,
        None => vec![captured.stub],
    };
    let shortcuts = list(&args.shortcut, "--shortcut", |x| match x {
        "off" => Some(ShortcutMode::Off),
        "nxdomain" => Some(ShortcutMode::Nxdomain),
        "autopath" => Some(ShortcutMode::Autopath),
        _ => None,
    })?;
    let searches = if args.search.is_empty() {
        vec![captured.cluster.clone()]
    } else {
        args.search
            .iter()
            .map(|s| {
                let words: Vec<String> = s.split_whitespace().map(str::to_string).collect();
                shape_from_list(&words, domain, "--search").map(|(c, _)| c)
            })
            .collect::<anyhow::Result<_>>()?
    };
    let mut out = Vec::new();
    for cluster in &searches {
        for &n in &ndots {
            for &stub in &stubs {
                for &shortcut in &shortcuts {
                    out.push(Setting {
                        ndots: n,
                        cluster: cluster.clone(),
                        stub,
                        shortcut,
                        fqdn: false,
                    });
                }
            }
        }
    }
    if args.fqdn {
        for &stub in &stubs {
            for &shortcut in &shortcuts {
                out.push(Setting {
                    ndots: captured.ndots,
                    cluster: captured.cluster.clone(),
                    stub,
                    shortcut,
                    fqdn: true,
                });
            }
        }
    }
    Ok(out)
}

/// Live pace when the capture has no timestamps and no `--rate` is given: a rate any DNS
/// server takes without dropping (the captured "pace" would be every lookup at once).
const SAFE_RATE: f64 = 1000.0;

fn live_options(args: &ReplayArgs, settings: &[Setting]) -> anyhow::Result<Option<LiveOptions>> {
    let Some(target) = &args.target else {
        if args.rate.is_some() {
            return Err(anyhow!("--rate needs --target"));
        }
        return Ok(None);
    };
    if settings
        .iter()
        .any(|s| s.shortcut == ShortcutMode::Autopath)
    {
        return Err(anyhow!(
            "--shortcut autopath is modelled offline only; to measure it live, run \
             `ndots proxy --shortcut-mode autopath` and give it as --target with --shortcut off"
        ));
    }
    let target: SocketAddr = target
        .to_socket_addrs()
        .with_context(|| format!("--target {target:?}: expected HOST:PORT"))?
        .next()
        .ok_or_else(|| anyhow!("--target {target:?}: no address"))?;
    if !args.speed.is_finite() || args.speed <= 0.0 {
        return Err(anyhow!("--speed must be above 0"));
    }
    let pace = match args.rate.as_deref() {
        None => Pace::Captured { speed: args.speed },
        Some("max") => Pace::Max,
        Some(r) => {
            let qps: f64 = r
                .parse()
                .map_err(|_| anyhow!("--rate {r:?}: expected queries per second or `max`"))?;
            if !qps.is_finite() || qps <= 0.0 {
                return Err(anyhow!("--rate must be above 0"));
            }
            Pace::Rate(qps)
        }
    };
    if args.max_inflight == 0 || args.max_inflight > 60_000 {
        return Err(anyhow!("--max-inflight must be between 1 and 60000"));
    }
    Ok(Some(LiveOptions {
        target,
        pace,
        max_inflight: args.max_inflight,
        timeout: crate::config::parse_duration(&args.timeout)?,
        sockets: args.sockets.clamp(1, 64),
    }))
}
