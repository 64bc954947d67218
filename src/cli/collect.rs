//! `ndots collect`: receive dnstap from DNS servers and run the tracker on it (DESIGN §9).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;

use super::CliError;
use crate::admin::{self, AdminSource};
use crate::amplify::Tracker;
use crate::collect::{self, Counters, Listen};
use crate::config::{parse_socket_addr, Config, Overrides};
use crate::metrics as m;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  ndots collect --listen unix:/run/ndots/dnstap.sock --admin 127.0.0.1:9255\n  \
                  # unbound.conf: dnstap: dnstap-enable: yes, dnstap-socket-path: /run/ndots/dnstap.sock,\n  \
                  #   dnstap-bidirectional: yes, dnstap-log-client-query-messages: yes,\n  \
                  #   dnstap-log-client-response-messages: yes\n  \
                  # CoreDNS: dnstap tcp://ndots-collect.kube-system:6000 full"
)]
pub struct CollectArgs {
    /// Where DNS servers send dnstap (Frame Streams): `unix:PATH` or `tcp:HOST:PORT`.
    #[arg(long, value_name = "unix:PATH|tcp:HOST:PORT")]
    pub listen: String,
    /// Admin HTTP address (/metrics, /report, /healthz, /readyz); replaces the file's `admin`.
    #[arg(long, value_name = "ADDR:PORT")]
    pub admin: Option<String>,
    /// YAML configuration file: `cluster` (search list shape) and `tracker` keys apply.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

struct Admin {
    metrics: PrometheusHandle,
    tracker: Tracker,
    counters: Arc<Counters>,
}

impl AdminSource for Admin {
    fn metrics(&self) -> String {
        self.counters.export();
        metrics::counter!(m::TRACKER_DROPPED_EVENTS).absolute(self.tracker.dropped());
        // The lookup histograms are fixed histograms, outside the recorder.
        let mut text = self.metrics.render();
        m::render_extra(&mut text);
        text
    }
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
    fn report(&self, window: Option<Duration>) -> Option<String> {
        Some(self.tracker.report_json(window))
    }
}

pub fn run(args: CollectArgs) -> Result<(), CliError> {
    let listen: Listen = args.listen.parse().map_err(CliError::usage)?;
    let admin = args
        .admin
        .as_deref()
        .map(|s| parse_socket_addr(s, None))
        .transpose()
        .map_err(CliError::usage)?;
    // Upstreams do not apply to collect; naming one keeps the file's (or the host's
    // resolv.conf, absent from the image) from being required.
    let overrides = Overrides {
        admin,
        upstreams: vec![(".".into(), std::net::SocketAddr::from(([127, 0, 0, 1], 53)))],
        ..Overrides::default()
    };
    let cfg = Config::load(args.config.as_deref(), &overrides).map_err(CliError::usage)?;
    crate::logging::init(cfg.log.format);
    let metrics = m::install();
    let tracker = Tracker::start(&cfg.cluster, &cfg.tracker);
    let collector = collect::start(&listen, tracker.clone(), crate::capture::Options::default())
        .map_err(|e| CliError::runtime(anyhow::anyhow!("listening on {listen}: {e}")))?;
    collector.counters.export();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ndots-rt")
        .enable_all()
        .build()
        .map_err(CliError::runtime)?;
    // The admin server runs as long as this command; the sender lives to its end.
    let (admin_stop, _) = tokio::sync::watch::channel(false);
    let admin_addr = match cfg.admin {
        Some(addr) => {
            let std_listener = crate::proxy::tcp::bind(addr)
                .map_err(|e| CliError::runtime(anyhow::anyhow!("binding admin {addr}: {e}")))?;
            let bound = std_listener.local_addr().map_err(CliError::runtime)?;
            let source: Arc<dyn AdminSource> = Arc::new(Admin {
                metrics: metrics.clone(),
                tracker: tracker.clone(),
                counters: collector.counters.clone(),
            });
            let _guard = rt.enter();
            let l = tokio::net::TcpListener::from_std(std_listener).map_err(CliError::runtime)?;
            rt.spawn(admin::serve(l, source, admin_stop.subscribe()));
            Some(bound)
        }
        None => None,
    };
    tracing::info!(
        listen = %collector.local,
        admin = ?admin_addr,
        "collecting dnstap"
    );
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(CliError::runtime)?;
        let mut int = signal(SignalKind::interrupt()).map_err(CliError::runtime)?;
        let mut upkeep = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = upkeep.tick() => metrics.run_upkeep(),
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        Ok::<(), CliError>(())
    })?;
    drop(collector);
    if let Listen::Unix(p) = &listen {
        let _ = std::fs::remove_file(p);
    }
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}
