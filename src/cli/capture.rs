//! `ndots capture`: tools around the capture readers.
//! - `synth`: write a synthetic capture (pcap or CoreDNS log lines) of any size.
//! - `dump`: print the events of any capture as JSON lines; unreadable records go to stderr with
//!   their positions, and the counts close the run.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use crate::capture::{self, synth, DnstapMessages, Format, Options};
use crate::event::{qtype_name, rcode_name, QueryEvent};

use super::CliError;

#[derive(clap::Args, Debug)]
pub struct CaptureArgs {
    #[command(subcommand)]
    pub command: CaptureCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum CaptureCommand {
    /// Write a synthetic capture: pods doing ndots:5 walks, deterministic from a seed.
    Synth(SynthArgs),
    /// Print the events of a capture as JSON lines.
    Dump(DumpArgs),
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  ndots capture synth --queries 100000 -o synth.pcap\n  \
                  ndots capture synth --format coredns-log --seed 7 | ndots analyze -"
)]
pub struct SynthArgs {
    /// File format to write.
    #[arg(long, value_enum, default_value = "pcap")]
    pub format: synth::SynthFormat,
    /// Number of queries to write.
    #[arg(long, default_value_t = 10_000)]
    pub queries: u64,
    /// Seed of the generator: the same seed writes the same capture.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Lookups started per second of capture time.
    #[arg(long, default_value_t = 2_000)]
    pub rate: u64,
    /// Who asks: `walks` (pods walking their search lists) or `distinct-clients` (every query
    /// from its own client address and port, one query per walk: nothing to join).
    #[arg(long, value_enum, default_value = "walks")]
    pub shape: SynthShape,
    /// Pods doing the walks (`--shape walks`), spread over 8 namespaces.
    #[arg(long, default_value_t = synth::DEFAULT_PODS)]
    pub pods: u64,
    /// Output file (`-` or absent: standard output).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SynthShape {
    Walks,
    DistinctClients,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  ndots capture dump node.pcap | head\n  \
                  ndots capture dump --count coredns.log")]
pub struct DumpArgs {
    /// Capture file (`-` for standard input); gzip and zstd are read transparently.
    pub capture: PathBuf,
    /// Format instead of detection.
    #[arg(long, value_enum)]
    pub input_format: Option<Format>,
    /// Stop at the first unreadable record (exit 1).
    #[arg(long)]
    pub strict: bool,
    /// DNS server port (pcap).
    #[arg(long, default_value_t = 53)]
    pub port: u16,
    /// dnstap messages reported: client (CLIENT_*) or all.
    #[arg(long, value_enum, default_value = "client")]
    pub dnstap_messages: DnstapMessages,
    /// Print only the counts.
    #[arg(long)]
    pub count: bool,
}

pub fn run(args: CaptureArgs) -> Result<(), CliError> {
    match args.command {
        CaptureCommand::Synth(a) => run_synth(a),
        CaptureCommand::Dump(a) => run_dump(a),
    }
}

fn run_synth(a: SynthArgs) -> Result<(), CliError> {
    if a.rate == 0 {
        return Err(CliError::usage(anyhow::anyhow!(
            "--rate must be at least 1"
        )));
    }
    let cfg = synth::SynthConfig {
        format: a.format,
        queries: a.queries,
        seed: a.seed,
        lookups_per_sec: a.rate,
        shape: match a.shape {
            SynthShape::Walks => synth::Shape::Walks {
                pods: a.pods.max(1),
            },
            SynthShape::DistinctClients => synth::Shape::DistinctClients,
        },
        ..synth::SynthConfig::default()
    };
    let out: Box<dyn Write> = match &a.output {
        Some(p) if p.as_os_str() != "-" => Box::new(
            std::fs::File::create(p)
                .map_err(|e| CliError::runtime(anyhow::anyhow!("{}: {e}", p.display())))?,
        ),
        _ => Box::new(io::stdout().lock()),
    };
    let s = synth::write(&cfg, BufWriter::with_capacity(1 << 20, out))
        .map_err(|e| CliError::runtime(anyhow::Error::from(e)))?;
    if a.shape == SynthShape::DistinctClients {
        eprintln!(
            "ndots: wrote {} queries, each from its own client ({} NXDOMAIN)",
            s.queries, s.nxdomain
        );
    } else {
        eprintln!(
            "ndots: wrote {} queries in {} getaddrinfo calls ({} NXDOMAIN; each call asks A and \
             AAAA, so `ndots analyze` counts two lookups per call)",
            s.queries, s.lookups, s.nxdomain
        );
    }
    Ok(())
}

/// One event as a JSON object (the jsonl reader's shape, plus port and latency).
pub fn event_json(e: &QueryEvent) -> serde_json::Value {
    serde_json::json!({
        "ts": e.time.as_secs_f64(),
        "client": e.client.to_string(),
        "port": e.client_port,
        "qname": e.qname,
        "qtype": qtype_name(e.qtype),
        "rcode": e.rcode.map(rcode_name),
        "answers": e.answers,
        "latency": e.latency.map(|d| d.as_secs_f64()),
    })
}

fn run_dump(a: DumpArgs) -> Result<(), CliError> {
    let opts = Options {
        format: a.input_format,
        strict: a.strict,
        port: a.port,
        dnstap_messages: a.dnstap_messages,
        ..Options::default()
    };
    let mut cap = capture::open_with(&a.capture, &opts).map_err(|e| match e {
        capture::OpenError::UnknownFormat { .. } => CliError::usage(e),
        other => CliError::runtime(other),
    })?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut fatal = None;
    for item in cap.by_ref() {
        match item {
            Ok(e) if !a.count => {
                let r = serde_json::to_writer(&mut out, &event_json(&e))
                    .map_err(io::Error::from)
                    .and_then(|_| out.write_all(b"\n"));
                if let Err(e) = r {
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        return Ok(());
                    }
                    return Err(CliError::runtime(anyhow::Error::from(e)));
                }
            }
            Ok(_) => {}
            Err(u) if a.strict => fatal = Some(u),
            Err(_) => {}
        }
    }
    out.flush()
        .map_err(|e| CliError::runtime(anyhow::Error::from(e)))?;
    let s = cap.stats();
    eprintln!(
        "ndots: {} ({}): {} events, {} queries, {} responses, {} unanswered, {} unmatched responses, {} skipped, {} evicted, {} unreadable",
        a.capture.display(),
        cap.format(),
        s.counts.events,
        s.counts.queries,
        s.counts.responses,
        s.counts.unanswered,
        s.counts.unmatched_responses,
        s.counts.skipped,
        s.counts.evicted,
        s.counts.unreadable
    );
    for u in &s.first_unreadable {
        eprintln!("ndots: unreadable: {u}");
    }
    if s.counts.unreadable > s.first_unreadable.len() as u64 {
        eprintln!(
            "ndots: ... and {} more unreadable",
            s.counts.unreadable - s.first_unreadable.len() as u64
        );
    }
    if let Some(u) = fatal {
        return Err(CliError::runtime(anyhow::anyhow!(
            "{}: {u} (--strict)",
            a.capture.display()
        )));
    }
    Ok(())
}
