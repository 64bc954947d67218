//! The proxy process: listeners, the engine they share, reload and shutdown (DESIGN §3).
//!
//! `start` binds everything and returns a `Running` handle (tests embed the proxy this way);
//! `serve` is the command: start, then reload on SIGHUP or a changed config file, and drain
//! on SIGTERM/SIGINT.

pub mod handler;
pub mod shortcut;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::admin::{self, AdminSource};
use crate::amplify::Tracker;
use crate::cache::Cache;
use crate::cli::CliError;
use crate::config::{Config, Overrides};
use crate::metrics as m;
pub use handler::Engine;

/// A started proxy.
pub struct Running {
    engine: Arc<ArcSwap<Engine>>,
    stop: Arc<AtomicBool>,
    stopped_tx: tokio::sync::watch::Sender<bool>,
    workers: Vec<std::thread::JoinHandle<()>>,
    /// The bound DNS addresses (the real port when 0 was asked).
    pub dns_addrs: Vec<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pending: Arc<AtomicUsize>,
    metrics: PrometheusHandle,
    tracker: Tracker,
}

struct Admin {
    engine: Arc<ArcSwap<Engine>>,
    metrics: PrometheusHandle,
    tracker: Tracker,
    /// The UDP listeners, by inode, for the kernel's drop counter.
    udp_inodes: Vec<u64>,
}

impl AdminSource for Admin {
    fn metrics(&self) -> String {
        let counts = self.engine.load().cache.counts();
        metrics::gauge!(m::CACHE_ENTRIES, "type" => "success").set(counts.success as f64);
        metrics::gauge!(m::CACHE_ENTRIES, "type" => "denial").set(counts.denial as f64);
        for (server, healthy) in self.engine.load().router.servers() {
            metrics::gauge!(m::UPSTREAM_HEALTHY, "to" => server.to_owned())
                .set(healthy as u8 as f64);
        }
        metrics::counter!(m::UDP_RECEIVE_DROPS).absolute(udp::kernel_drops(&self.udp_inodes));
        metrics::counter!(m::TRACKER_DROPPED_EVENTS).absolute(self.tracker.dropped());
        self.metrics.render()
    }
    fn ready(&self) -> Result<(), String> {
        self.engine.load().router.readiness()
    }
    fn report(&self, window: Option<Duration>) -> Option<String> {
        Some(self.tracker.report_json(window))
    }
    fn report_access(&self) -> crate::config::AdminReport {
        self.engine.load().config.admin_report
    }
}

/// Bind every listener and start serving on `rt`.
pub fn start(config: Config, rt: &tokio::runtime::Handle) -> anyhow::Result<Running> {
    // The node-local addresses must exist before their listeners can bind.
    if let Some(nl) = &config.node_local {
        crate::node_local::ensure(nl)?;
    }
    let metrics = m::install();
    let pending = Arc::new(AtomicUsize::new(0));
    let cache = Arc::new(Cache::new(config.cache.clone()));
    let tracker = Tracker::start(&config.cluster, &config.tracker);
    let engine = Arc::new(ArcSwap::from_pointee(Engine::new(
        config.clone(),
        cache,
        pending.clone(),
        Some(tracker.clone()),
    )?));
    let stop = Arc::new(AtomicBool::new(false));
    let (stopped_tx, stopped_rx) = tokio::sync::watch::channel(false);

    let mut dns_addrs = Vec::new();
    let mut workers = Vec::new();
    let mut udp_inodes = Vec::new();
    for &addr in &config.listen {
        // The first UDP socket fixes the port when 0 was asked; the rest join its group.
        let first = udp::bind(addr)
            .map_err(|e| anyhow::anyhow!("binding UDP {addr}: {e}{}", bind_hint(&e)))?;
        let bound = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..config.server.workers {
            sockets.push(
                udp::bind(bound)
                    .map_err(|e| anyhow::anyhow!("binding UDP {bound}: {e}{}", bind_hint(&e)))?,
            );
        }
        let tcp = tcp::bind(bound)
            .map_err(|e| anyhow::anyhow!("binding TCP {bound}: {e}{}", bind_hint(&e)))?;
        dns_addrs.push(bound);
        udp_inodes.extend(sockets.iter().filter_map(udp::inode));
        for (i, s) in sockets.into_iter().enumerate() {
            let (s, e, h, st) = (Arc::new(s), engine.clone(), rt.clone(), stop.clone());
            workers.push(
                std::thread::Builder::new()
                    .name(format!("ndots-udp-{i}"))
                    .spawn(move || udp::run_worker(s, e, h, st))?,
            );
        }
        let _guard = rt.enter();
        rt.spawn(tcp::serve(
            tcp,
            engine.clone(),
            stop.clone(),
            stopped_rx.clone(),
        ));
    }

    let admin_addr = match config.admin {
        Some(addr) => {
            // SO_REUSEPORT like the DNS listeners: during a DaemonSet surge the new pod binds
            // the same host port while the old one drains.
            let std_listener = tcp::bind(addr)
                .map_err(|e| anyhow::anyhow!("binding admin {addr}: {e}{}", bind_hint(&e)))?;
            let bound = std_listener.local_addr()?;
            let source: Arc<dyn AdminSource> = Arc::new(Admin {
                engine: engine.clone(),
                metrics: metrics.clone(),
                tracker: tracker.clone(),
                udp_inodes: udp_inodes.clone(),
            });
            let _guard = rt.enter();
            let listener = tokio::net::TcpListener::from_std(std_listener)?;
            rt.spawn(admin::serve(listener, source));
            Some(bound)
        }
        None => None,
    };

    if let Some(nl) = config.node_local.clone() {
        rt.spawn(keep_node_local(nl, stopped_rx.clone()));
    }
    // Readiness follows upstream health; failing servers are probed until they answer again.
    rt.spawn(probe_upstreams(engine.clone(), stopped_rx.clone()));
    // Histograms buffer samples until drained; drain them so memory stays flat between scrapes.
    {
        let metrics = metrics.clone();
        let mut stopped = stopped_rx;
        rt.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => metrics.run_upkeep(),
                    _ = stopped.changed() => break,
                }
            }
        });
    }
    tracing::info!(listen = ?dns_addrs, admin = ?admin_addr, upstream_zones = config.upstreams.len(), "ndots proxy serving");
    Ok(Running {
        engine,
        stop,
        stopped_tx,
        workers,
        dns_addrs,
        admin_addr,
        pending,
        metrics,
        tracker,
    })
}

/// What to do about a failed bind, for the error message.
fn bind_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            " (another process serves that port: stop it, or choose another address with \
             --listen / --admin or in the config file)"
        }
        std::io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE; or listen on a high port \
             such as 127.0.0.1:1053)"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            " (no interface has that address: node-local setups add 169.254.20.10 to a dummy \
             interface first, see deploy/README.md)"
        }
        _ => "",
    }
}

/// How often servers that never answered or are failing get a health probe.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How often the node-local link and addresses are checked and put back if removed.
const NODE_LOCAL_CHECK: Duration = Duration::from_secs(2);

async fn keep_node_local(
    cfg: crate::config::NodeLocalConfig,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let cfg = Arc::new(cfg);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(NODE_LOCAL_CHECK) => {}
            _ = stopped.changed() => return,
        }
        let c = cfg.clone();
        match tokio::task::spawn_blocking(move || crate::node_local::restore(&c)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("node-local check: {e:#}"),
            Err(e) => tracing::error!("node-local check: {e}"),
        }
    }
}

async fn probe_upstreams(
    engine: Arc<ArcSwap<Engine>>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        // The current engine: after a reload the new router's servers are probed.
        let router = engine.load_full();
        tokio::select! {
            _ = router.router.probe_unhealthy() => {}
            _ = stopped.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            _ = stopped.changed() => return,
        }
    }
}

impl Running {
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.load_full()
    }

    /// The amplification tracker this proxy feeds.
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    pub fn metrics_text(&self) -> String {
        self.metrics.render()
    }

    /// Apply a new configuration. Listener addresses, the admin address and worker count need a
    /// restart; everything else takes effect for the next query. The cache is kept unless its
    /// settings, the shortcut or the cluster's search shape changed: an entry the old shortcut
    /// filled (an autopath CNAME, a forwarded NXDOMAIN) beside one the new shortcut fills would
    /// give A and AAAA of one name different answers.
    pub fn reload(&self, config: Config) -> anyhow::Result<()> {
        let old = self.engine.load_full();
        if config.listen != old.config.listen
            || config.admin != old.config.admin
            || config.server.workers != old.config.server.workers
            || config.node_local != old.config.node_local
        {
            tracing::warn!(
                "listen, admin, server.workers and node_local changes take effect on restart only"
            );
        }
        let cache = if config.cache == old.config.cache
            && config.shortcut == old.config.shortcut
            && config.cluster == old.config.cluster
        {
            old.cache.clone()
        } else {
            Arc::new(Cache::new(config.cache.clone()))
        };
        let engine = Engine::new(
            config,
            cache,
            self.pending.clone(),
            Some(self.tracker.clone()),
        )?;
        self.engine.store(Arc::new(engine));
        Ok(())
    }

    /// Stop taking queries, let in-flight ones finish within `grace`, and return.
    pub fn shutdown(self, grace: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.stopped_tx.send(true);
        for w in self.workers {
            let _ = w.join();
        }
        let deadline = Instant::now() + grace;
        while self.pending.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// `ndots proxy`: serve until SIGTERM/SIGINT; reload on SIGHUP or when the file changes.
pub fn serve(config: Config, path: Option<PathBuf>, overrides: Overrides) -> Result<(), CliError> {
    init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.server.workers)
        .thread_name("ndots-rt")
        .enable_all()
        .build()
        .map_err(CliError::runtime)?;
    let grace = config.server.shutdown_grace;
    let running = start(config, rt.handle()).map_err(CliError::runtime)?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup()).map_err(CliError::runtime)?;
        let mut term = signal(SignalKind::terminate()).map_err(CliError::runtime)?;
        let mut int = signal(SignalKind::interrupt()).map_err(CliError::runtime)?;
        let mut seen_mtime = path.as_deref().and_then(mtime);
        let mut poll = tokio::time::interval(Duration::from_secs(2));
        loop {
            let reason = tokio::select! {
                _ = hup.recv() => "SIGHUP",
                _ = poll.tick() => {
                    let now = path.as_deref().and_then(mtime);
                    if now == seen_mtime { continue; }
                    seen_mtime = now;
                    "file change"
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            };
            match Config::load(path.as_deref(), &overrides).and_then(|c| running.reload(c)) {
                Ok(()) => {
                    tracing::info!(reason, "configuration reloaded");
                    metrics::counter!(m::CONFIG_RELOADS, "result" => "success").increment(1);
                }
                Err(e) => {
                    tracing::error!(
                        reason,
                        "configuration rejected, the old one keeps serving: {e:#}"
                    );
                    metrics::counter!(m::CONFIG_RELOADS, "result" => "failure").increment(1);
                }
            }
        }
        Ok::<(), CliError>(())
    })?;
    tracing::info!("draining");
    // Shutdown blocks while in-flight queries finish on the runtime's threads.
    running.shutdown(grace);
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

fn mtime(p: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("NDOTS_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
