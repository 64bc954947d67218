//! The proxy process: listeners, the engine they share, reload and shutdown (DESIGN §3).
//!
//! `start` binds everything and returns a `Running` handle (tests embed the proxy this way);
//! `serve` is the command: start, then reload on SIGHUP or a changed config file, and drain
//! on SIGTERM/SIGINT.

pub mod handler;
pub mod loops;
pub mod peers;
pub mod shortcut;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::admin::{self, AdminSource};
use crate::amplify::Tracker;
use crate::budget::MemoryBudget;
use crate::cache::Cache;
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
    /// Kept across reloads (`dnstap` needs a restart to change).
    tap: Option<crate::tap::Tap>,
    loops: Arc<loops::LoopGuard>,
    rt: tokio::runtime::Handle,
    /// Woken when a newer process on our admin address asks us to hand over (proxy::peers).
    handover: Arc<tokio::sync::Notify>,
    /// This process's id in hand-overs and `X-Ndots-Instance`.
    pub instance: String,
}

struct Admin {
    engine: Arc<ArcSwap<Engine>>,
    loops: Arc<loops::LoopGuard>,
    instance: String,
    /// Found another process on the admin address at start: it announces, and does not yield
    /// until the previous process took its announcement or is gone (`watch_peers` clears
    /// it); from then on it is the incumbent, and hands over to the next update's newcomer.
    newcomer: Arc<AtomicBool>,
    handing_over: AtomicBool,
    handover: Arc<tokio::sync::Notify>,
    metrics: PrometheusHandle,
    tracker: Tracker,
    /// The kernel's drop counts of the UDP listeners.
    udp_drops: udp::KernelDrops,
}

impl AdminSource for Admin {
    fn metrics(&self) -> String {
        let counts = self.engine.load().cache.counts();
        metrics::gauge!(m::CACHE_ENTRIES, "type" => "success").set(counts.success as f64);
        metrics::gauge!(m::CACHE_ENTRIES, "type" => "denial").set(counts.denial as f64);
        if m::coredns_names() {
            let server = self.engine.load().server_label.to_string();
            metrics::gauge!(m::COREDNS_CACHE_ENTRIES, "server" => server.clone(), "type" => "success")
                .set(counts.success as f64);
            metrics::gauge!(m::COREDNS_CACHE_ENTRIES, "server" => server, "type" => "denial")
                .set(counts.denial as f64);
        }
        for (server, healthy) in self.engine.load().router.servers() {
            metrics::gauge!(m::UPSTREAM_HEALTHY, "to" => server.to_owned())
                .set(healthy as u8 as f64);
        }
        metrics::counter!(m::UDP_RECEIVE_DROPS).absolute(self.udp_drops.total());
        metrics::counter!(m::TRACKER_DROPPED_EVENTS).absolute(self.tracker.dropped());
        metrics::counter!(m::TRACKER_SHED_EVENTS).absolute(self.tracker.shed());
        self.engine.load().cache.budget().export_metrics();
        let mut text = self.metrics.render();
        m::render_extra(&mut text);
        text
    }
    fn ready(&self) -> Result<(), String> {
        if self.handing_over.load(Ordering::Relaxed) {
            return Err("handed over to a newer process on this address; draining".into());
        }
        self.loops.readiness()?;
        self.engine.load().router.readiness()
    }
    fn report(&self, window: Option<Duration>) -> Option<String> {
        Some(self.tracker.report_json(window))
    }
    fn instance(&self) -> &str {
        &self.instance
    }
    fn handover(&self, from: &str) -> Result<(), String> {
        if from.is_empty() || from == self.instance {
            return Err("no other instance named".into());
        }
        if self.newcomer.load(Ordering::Acquire) {
            return Err(format!(
                "instance {} is itself taking over this address; it does not hand over",
                self.instance
            ));
        }
        if !self.handing_over.swap(true, Ordering::Relaxed) {
            tracing::info!(
                newer = from,
                "a newer process on this address announced itself: handing over, draining"
            );
            self.handover.notify_one();
        }
        Ok(())
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
    m::set_coredns_names(config.coredns_names);
    let pending = Arc::new(AtomicUsize::new(0));
    // One budget for the process (DESIGN §9 "Faults"): kept across reloads, with the tracker.
    let budget = Arc::new(MemoryBudget::new(config.server.memory_limit));
    let cache = Arc::new(Cache::with_budget(config.cache.clone(), budget.clone()));
    let tracker = Tracker::start_with_budget(&config.cluster, &config.tracker, budget.clone());
    tracker.set_configured_zones(&config.shortcut.zones);
    let tap = match &config.dnstap {
        Some(d) => Some(
            crate::tap::Tap::start(d)
                .map_err(|e| anyhow::anyhow!("dnstap.output {:?}: {e}", d.output))?,
        ),
        None => None,
    };
    let loop_guard = Arc::new(loops::LoopGuard::default());
    let mut first = Engine::new(
        config.clone(),
        cache,
        pending.clone(),
        Some(tracker.clone()),
    )?
    .with_loop_guard(loop_guard.clone());
    first.tap = tap.clone();
    let engine = Arc::new(ArcSwap::from_pointee(first));
    preregister(&engine.load());
    let stop = Arc::new(AtomicBool::new(false));
    let (stopped_tx, stopped_rx) = tokio::sync::watch::channel(false);

    let mut dns_addrs = Vec::new();
    let mut workers = Vec::new();
    let mut udp_inodes = Vec::new();
    let mut listeners = Vec::new();
    for &addr in &config.listen {
        let (sockets, tcp, bound) = bind_dns(addr, config.server.workers)?;
        dns_addrs.push(bound);
        let inodes: Vec<u64> = sockets.iter().filter_map(udp::inode).collect();
        udp_inodes.extend(&inodes);
        listeners.push(peers::Listener {
            label: format!("dns udp {bound}"),
            addr: bound,
            tcp: false,
            ours: inodes,
        });
        listeners.push(peers::Listener {
            label: format!("dns tcp {bound}"),
            addr: bound,
            tcp: true,
            ours: peers::inode(&tcp).into_iter().collect(),
        });
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

    let instance = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
    let handover = Arc::new(tokio::sync::Notify::new());
    let newcomer = Arc::new(AtomicBool::new(false));
    // At 0 from the start, like every series (peers::check sets the counts): before the
    // admin listener serves its first scrape.
    let zero = |l: &peers::Listener| {
        metrics::gauge!(m::FOREIGN_LISTENERS, "listener" => l.label.clone()).set(0.0)
    };
    listeners.iter().for_each(zero);
    let admin_addr = match config.admin {
        Some(addr) => {
            // SO_REUSEPORT like the DNS listeners: during a DaemonSet surge the new pod binds
            // the same host port while the old one drains.
            let std_listener = tcp::bind(addr)
                .map_err(|e| anyhow::anyhow!("binding admin {addr}: {e}{}", bind_hint(&e)))?;
            let bound = std_listener.local_addr()?;
            let admin_listener = peers::Listener {
                label: format!("admin {bound}"),
                addr: bound,
                tcp: true,
                ours: peers::inode(&std_listener).into_iter().collect(),
            };
            newcomer.store(admin_listener.foreign() > 0, Ordering::Release);
            zero(&admin_listener);
            listeners.push(admin_listener);
            let source: Arc<dyn AdminSource> = Arc::new(Admin {
                engine: engine.clone(),
                loops: loop_guard.clone(),
                instance: instance.clone(),
                newcomer: newcomer.clone(),
                handing_over: AtomicBool::new(false),
                handover: handover.clone(),
                metrics: metrics.clone(),
                tracker: tracker.clone(),
                udp_drops: udp::KernelDrops::new(udp_inodes.clone()),
            });
            let _guard = rt.enter();
            let listener = tokio::net::TcpListener::from_std(std_listener)?;
            rt.spawn(admin::serve(listener, source, stopped_rx.clone()));
            Some(bound)
        }
        None => None,
    };

    if let Some(nl) = config.node_local.clone() {
        rt.spawn(keep_node_local(nl, stopped_rx.clone()));
    }
    // Readiness follows upstream health; failing servers are probed until they answer again.
    rt.spawn(probe_upstreams(engine.clone(), stopped_rx.clone()));
    rt.spawn(watch_peers(
        listeners,
        admin_addr.filter(|_| newcomer.load(Ordering::Acquire)),
        newcomer,
        instance.clone(),
        engine.clone(),
        loop_guard.clone(),
        stopped_rx.clone(),
    ));
    // Listeners are up: a probe that loops back reaches them.
    rt.spawn(watch_loops(
        engine.clone(),
        loop_guard.clone(),
        stopped_rx.clone(),
    ));
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
    let listen: Vec<String> = dns_addrs.iter().map(|a| a.to_string()).collect();
    let upstreams: Vec<String> = config
        .upstreams
        .iter()
        .map(|z| {
            let servers: Vec<String> = z.servers.iter().map(|s| s.to_string()).collect();
            format!("{}={}", z.zone, servers.join(","))
        })
        .collect();
    tracing::info!(
        version = crate::VERSION,
        listen = %listen.join(" "),
        admin = %admin_addr.map_or("off".to_string(), |a| a.to_string()),
        upstreams = %upstreams.join(" "),
        shortcut = %config.shortcut.mode.as_str(),
        "ndots proxy serving"
    );
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
        tap,
        loops: loop_guard,
        rt: rt.clone(),
        handover,
        instance,
    })
}

/// The UDP sockets (one a worker, in one SO_REUSEPORT group) and the TCP listener of one
/// `listen` address. When port 0 was asked, the port is one no socket holds
/// (`udp::bind_any_port`); if TCP cannot have it (another socket, often an outgoing connection,
/// holds it), another port is tried: port 0 promises any free port, not a spurious failure (a
/// CI run failed so, 4663d00).
fn bind_dns(
    addr: SocketAddr,
    workers: usize,
) -> anyhow::Result<(Vec<std::net::UdpSocket>, std::net::TcpListener, SocketAddr)> {
    bind_dns_with(addr, workers, tcp::bind)
}

fn bind_dns_with(
    addr: SocketAddr,
    workers: usize,
    tcp_bind: impl Fn(SocketAddr) -> std::io::Result<std::net::TcpListener>,
) -> anyhow::Result<(Vec<std::net::UdpSocket>, std::net::TcpListener, SocketAddr)> {
    const PORT_ZERO_TRIES: usize = 8;
    // A port given up on stays bound until the search ends, so port 0 cannot pick it again.
    let mut given_up = Vec::new();
    loop {
        let first = if addr.port() == 0 {
            udp::bind_any_port(addr)
        } else {
            udp::bind(addr)
        }
        .map_err(|e| anyhow::anyhow!("binding UDP {addr}: {e}{}", bind_hint(&e)))?;
        let bound = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..workers {
            sockets.push(
                udp::bind(bound)
                    .map_err(|e| anyhow::anyhow!("binding UDP {bound}: {e}{}", bind_hint(&e)))?,
            );
        }
        // Port 0: a SO_REUSEPORT bind joins the same user's TCP listener on the port (another
        // proxy's admin port); a bind without it is refused by any listener there.
        let tcp = if addr.port() == 0 {
            std::net::TcpListener::bind(bound).and_then(|alone| {
                drop(alone);
                tcp_bind(bound)
            })
        } else {
            tcp_bind(bound)
        };
        match tcp {
            Ok(tcp) => return Ok((sockets, tcp, bound)),
            Err(e)
                if addr.port() == 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && given_up.len() + 1 < PORT_ZERO_TRIES =>
            {
                given_up.push(sockets);
            }
            Err(e) => anyhow::bail!("binding TCP {bound}: {e}{}", bind_hint(&e)),
        }
    }
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

/// Read the socket tables every `peers::CHECK` (gauge and log); a newcomer (`announce_to`
/// is its shared admin address) announces itself once ready, until a previous process
/// answers; then (or once no other process is left) it is the incumbent: `newcomer` is
/// cleared so it hands over to the next update in turn.
async fn watch_peers(
    listeners: Vec<peers::Listener>,
    mut announce_to: Option<SocketAddr>,
    newcomer: Arc<AtomicBool>,
    instance: String,
    engine: Arc<ArcSwap<Engine>>,
    loops: Arc<loops::LoopGuard>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut last = Vec::new();
    loop {
        let l = listeners.clone();
        let mut seen = std::mem::take(&mut last);
        let admin_foreign = match tokio::task::spawn_blocking(move || {
            let n = peers::check(&l, &mut seen);
            (n, seen)
        })
        .await
        {
            Ok((n, seen)) => {
                last = seen;
                n
            }
            Err(_) => 0,
        };
        if let Some(admin) = announce_to {
            let ready = loops.readiness().is_ok() && engine.load().router.readiness().is_ok();
            if admin_foreign == 0 {
                announce_to = None; // the other process is gone already
                newcomer.store(false, Ordering::Release);
            } else if ready {
                match peers::announce(admin, &instance).await {
                    Some((200, other)) => {
                        tracing::info!(
                            previous = other,
                            "announced to the previous process on this address: it drains"
                        );
                        announce_to = None;
                        newcomer.store(false, Ordering::Release);
                    }
                    Some((status, other)) => {
                        tracing::warn!(
                            other,
                            status,
                            "the other process on this address declined to hand over"
                        );
                        announce_to = None;
                    }
                    None => {}
                }
            }
        }
        let next = if announce_to.is_some() {
            peers::ANNOUNCE_POLL
        } else {
            peers::CHECK
        };
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Check for a forwarding loop at start, then again every `loops::RECHECK` while one stands
/// (reloads check on their own, `Running::reload`).
async fn watch_loops(
    engine: Arc<ArcSwap<Engine>>,
    guard: Arc<loops::LoopGuard>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = guard.check(engine.load_full()) => {}
            _ = stopped.changed() => return,
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(loops::RECHECK) => {}
                _ = stopped.changed() => return,
            }
            if guard.looping() {
                break;
            }
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

    /// The dnstap writer, when `dnstap` is configured.
    pub fn tap(&self) -> Option<&crate::tap::Tap> {
        self.tap.as_ref()
    }

    /// The amplification tracker this proxy feeds.
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    pub fn metrics_text(&self) -> String {
        let mut text = self.metrics.render();
        m::render_extra(&mut text);
        text
    }

    /// Apply a new configuration. What is built once at start needs a restart (`restart_only`
    /// names it, and the log says which changed); everything else takes effect for the next
    /// query. The cache is kept unless its
    /// settings, the shortcut or the cluster's search shape changed: an entry the old shortcut
    /// filled (an autopath CNAME, a forwarded NXDOMAIN) beside one the new shortcut fills would
    /// give A and AAAA of one name different answers.
    pub fn reload(&self, config: Config) -> anyhow::Result<()> {
        let old = self.engine.load_full();
        let kept = restart_only(&old.config, &config);
        if !kept.is_empty() {
            tracing::warn!(
                settings = kept.join(", "),
                "these settings changed and take effect on restart only; the running values stay"
            );
        }
        let cache = if config.cache == old.config.cache
            && config.shortcut == old.config.shortcut
            && config.cluster == old.config.cluster
        {
            old.cache.clone()
        } else {
            Arc::new(Cache::with_budget(
                config.cache.clone(),
                old.cache.budget().clone(),
            ))
        };
        let mut engine = Engine::new(
            config,
            cache,
            self.pending.clone(),
            Some(self.tracker.clone()),
        )?
        .with_loop_guard(self.loops.clone());
        engine.tap = self.tap.clone();
        let engine = Arc::new(engine);
        m::set_coredns_names(engine.config.coredns_names);
        preregister(&engine);
        self.engine.store(engine.clone());
        // A new upstream may loop where the old one did not (or the reverse).
        let guard = self.loops.clone();
        self.rt.spawn(async move { guard.check(engine).await });
        Ok(())
    }

    /// Stop taking queries, let in-flight ones finish within `grace`, and return.
    pub fn shutdown(mut self, grace: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.stopped_tx.send(true);
        for w in std::mem::take(&mut self.workers) {
            let _ = w.join();
        }
        let deadline = Instant::now() + grace;
        while self.pending.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // The dnstap stream ends whole (STOP; FINISH from a socket receiver).
        if let Some(tap) = &self.tap {
            tap.close();
        }
    }
}

/// A proxy dropped without `shutdown` stops too. Its UDP workers are threads of their own:
/// they served its sockets on after the drop, with nothing left to answer the queries they
/// passed on (a test process held the ports of tests long finished), and a listener later
/// asked for port 0 could be given one of those ports (`udp::bind_any_port`). They stop taking
/// queries and close their sockets as on `shutdown`; unlike it, a drop neither waits for the
/// queries in flight nor closes the dnstap stream.
impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.stopped_tx.send(true);
    }
}

/// `ndots proxy`: serve until SIGTERM/SIGINT; reload on SIGHUP or when the file changes.
/// `read_as` is the file's [`FileState`] taken before `config` was read from it, so a change
/// made while the proxy starts is loaded at the first poll.
pub fn serve(
    config: Config,
    path: Option<PathBuf>,
    read_as: Option<FileState>,
    overrides: Overrides,
) -> anyhow::Result<()> {
    crate::logging::init(config.log.format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.server.workers)
        .thread_name("ndots-rt")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let grace = config.server.shutdown_grace;
    // Before `start`: once /healthz answers, a SIGTERM must drain and a SIGHUP reload, not
    // kill the process with the default action (each did when it came between the admin
    // listener and its handler).
    let (mut term, mut int, mut hup) = rt
        .block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let term = signal(SignalKind::terminate())?;
            let int = signal(SignalKind::interrupt())?;
            let hup = signal(SignalKind::hangup())?;
            Ok::<_, std::io::Error>((term, int, hup))
        })
        .context("installing the signal handlers")?;
    let mut seen = read_as;
    let running = start(config, rt.handle())?;
    let mut handed_over = false;
    rt.block_on(async {
        let mut poll = tokio::time::interval(Duration::from_secs(2));
        loop {
            let reason = tokio::select! {
                _ = hup.recv() => {
                    // The file as this reload reads it: the poll must not load it again. Taken
                    // before the read, so a write that lands after it is a change to the poll.
                    seen = path.as_deref().and_then(FileState::of);
                    "SIGHUP"
                }
                _ = poll.tick() => {
                    let now = path.as_deref().and_then(FileState::of);
                    if now == seen { continue; }
                    // A file still being written is read at a later tick, once it is still.
                    tokio::time::sleep(FILE_SETTLE).await;
                    if path.as_deref().and_then(FileState::of) != now { continue; }
                    seen = now;
                    "file change"
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = running.handover.notified() => {
                    handed_over = true;
                    break;
                }
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
    });
    tracing::info!("draining");
    // Shutdown blocks while in-flight queries finish on the runtime's threads.
    running.shutdown(grace);
    if handed_over {
        // Exiting now would have the kubelet restart us, and the restarted process would take
        // the address back: stay idle, listeners closed, until our own SIGTERM.
        tracing::info!("handed over and drained; waiting for SIGTERM");
        rt.block_on(async {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        });
    }
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

/// How long a changed config file must stay unchanged before a reload reads it.
const FILE_SETTLE: Duration = Duration::from_millis(200);

/// What tells one version of the config file from another. Not the modification time alone:
/// it ticks every few milliseconds, so a file truncated and then written at once keeps it, and
/// a reload that read the empty file would never see the written one. Its length and inode
/// (a ConfigMap's symlink swap, a rename into place) tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileState {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileState {
    /// The file at `p` now (following symlinks); `None` when it cannot be read.
    pub fn of(p: &std::path::Path) -> Option<FileState> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p).ok()?;
        Some(FileState {
            modified: m.modified().ok(),
            len: m.len(),
            inode: m.ino(),
        })
    }
}

/// Every series at 0 for the label values this engine knows (DESIGN §9).
fn preregister(engine: &Engine) {
    let zones: Vec<&str> = engine.router.zones().iter().map(|z| &*z.label).collect();
    let tcp_only: Vec<(String, bool)> = engine
        .config
        .upstreams
        .iter()
        .flat_map(|z| {
            z.servers
                .iter()
                .map(move |s| (s.to_string(), z.protocol == crate::config::Protocol::Tcp))
        })
        .collect();
    let upstreams: Vec<(&str, bool)> = tcp_only.iter().map(|(s, t)| (s.as_str(), *t)).collect();
    m::preregister(&m::Known {
        server: &engine.server_label,
        zones: &zones,
        upstreams: &upstreams,
        ipv6: engine.config.listen.iter().any(|a| a.is_ipv6()),
    });
}

/// The settings that differ between `old` and `new` and that a reload cannot apply: the
/// sockets, threads, tracker and memory budget are made once at start (a reload that said
/// nothing about them left an operator believing a new `memory_limit` was in force).
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.server, &new.server);
    [
        ("listen", old.listen != new.listen),
        ("admin", old.admin != new.admin),
        ("server.workers", o.workers != n.workers),
        (
            "server.shutdown_grace",
            o.shutdown_grace != n.shutdown_grace,
        ),
        ("log.format", old.log.format != new.log.format),
        ("server.memory_limit", o.memory_limit != n.memory_limit),
        (
            "server.max_tcp_connections",
            o.max_tcp_connections != n.max_tcp_connections,
        ),
        ("tracker", old.tracker != new.tracker),
        ("node_local", old.node_local != new.node_local),
        ("dnstap", old.dnstap != new.dnstap),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload with a new `server.memory_limit` or `max_tcp_connections` logged "configuration
    /// reloaded" and nothing else, while the running budget and connection cap stayed: the
    /// reload now names every restart-only setting that changed.
    #[test]
    fn a_reload_said_nothing_of_a_memory_limit_it_did_not_apply() {
        let old = Config::load(None, &Default::default()).unwrap();
        let mut new = old.clone();
        assert!(restart_only(&old, &new).is_empty());
        new.server.memory_limit += 1 << 20;
        new.server.max_tcp_connections = 3;
        new.cache.max_ttl += 1; // applied by a reload: not named
        assert_eq!(
            restart_only(&old, &new),
            ["server.memory_limit", "server.max_tcp_connections"]
        );
    }

    /// CI on 4663d00: a proxy asked for 127.0.0.1:0 got a UDP port whose TCP twin another
    /// socket held, and failed to start. The TCP side taken is now a reason to pick another
    /// port when any port was asked, and still an error when the port was given.
    #[test]
    fn listen_on_port_zero_failed_when_the_tcp_side_of_its_port_was_taken() {
        let taken = std::cell::Cell::new(0u16);
        let first_taken = |a: SocketAddr| {
            if taken.get() == 0 {
                taken.set(a.port());
                return Err(std::io::ErrorKind::AddrInUse.into());
            }
            tcp::bind(a)
        };
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (udp, tcp, bound) = bind_dns_with(any, 2, first_taken).unwrap();
        assert_ne!(bound.port(), taken.get(), "the taken port again");
        assert_eq!(udp.len(), 2);
        assert_eq!(tcp.local_addr().unwrap(), bound);
        assert!(udp.iter().all(|u| u.local_addr().unwrap() == bound));

        let given = SocketAddr::new(any.ip(), bound.port());
        drop((udp, tcp));
        let err = bind_dns_with(given, 1, |_| Err(std::io::ErrorKind::AddrInUse.into()));
        let err = err.expect_err("a given port is not swapped for another");
        assert!(err.to_string().contains("binding TCP"), "{err}");
    }

    /// A listener asked for port 0 could be given a port the same user's SO_REUSEPORT sockets
    /// held: Linux does not count a port a SO_REUSEPORT UDP socket could share as taken, and a
    /// SO_REUSEPORT TCP bind joins a listener there; the kernel then splits clients between the
    /// two servers. In a network namespace of three ports, one held by such a UDP socket and one
    /// by such a TCP listener (another proxy's DNS port, and its admin port), every bind to port
    /// 0 must get the third.
    #[test]
    fn a_listener_asked_for_port_zero_shared_a_port_another_listener_held() {
        let ports = std::thread::spawn(|| {
            // SAFETY: moves only this thread (and threads it starts) into a new namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(format!("unshare: {}", std::io::Error::last_os_error()));
            }
            // /proc/sys/net is this thread's namespace's.
            std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40002")
                .map_err(|e| format!("narrowing the port range: {e}"))?;
            let _dns = udp::bind("127.0.0.1:40000".parse().unwrap()).unwrap();
            let _admin = tcp::bind("127.0.0.1:40001".parse().unwrap()).unwrap();
            let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
            Ok((0..12)
                .map(|_| bind_dns(any, 2).map(|(_, _, bound)| bound.port()))
                .collect::<Result<Vec<u16>, _>>())
        })
        .join()
        .unwrap();
        let ports = match ports {
            Ok(ports) => ports.unwrap(),
            Err(reason) => {
                // Not root, or root without CAP_SYS_ADMIN or a writable /proc/sys.
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI=true: {reason}"
                );
                eprintln!("\n*** SKIPPED: needs a network namespace of its own: {reason} ***\n");
                return;
            }
        };
        assert_eq!(ports, [40002; 12]);
    }

    /// The DNS sockets set SO_REUSEADDR, with which Linux lets two UDP sockets that both set it
    /// bind one address, whoever owns them (dnsmasq sets it on its listeners): a proxy started on
    /// a port another server held took its traffic (200 datagrams of 200, a review's probe),
    /// without an error. Only SO_REUSEPORT shares now (the same user's, for the hand-over;
    /// `peers` counts foreign ones).
    #[test]
    fn a_udp_port_another_server_held_with_so_reuseaddr_was_shared() {
        use socket2::{Domain, Socket, Type};
        let other = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
        other.set_reuse_address(true).unwrap();
        other
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let held = other.local_addr().unwrap().as_socket().unwrap();
        let err = bind_dns(held, 1).expect_err("the port is another server's");
        assert!(err.to_string().contains("binding UDP"), "{err}");
    }
}
