//! A capture session, as `ndots analyze` and `ndots replay` read one: the cluster domain, the
//! pods' search list (given, from a resolv.conf, or the Kubernetes default plus node domains
//! inferred from the capture), the walk tracker's settings, and every capture streamed in
//! query-time order, merged by time, through one [`Reorder`](super::Reorder): [`Events`] reads,
//! decodes, pairs, merges and orders on a thread of its own while the caller's thread tracks
//! walks, and the head of the stream is read once for both the inference and the walks. The CLI
//! words the errors.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context};

use super::{OpenError, Options, Stats};
use crate::config::{ClusterConfig, TrackerConfig};
use crate::event::QueryEvent;
use crate::search::resolv_conf::{Environment, ResolverSettings};
use crate::search::Stub;

/// Why a session could not be set up or read.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The search list, resolv.conf or idle time given is wrong (a usage error).
    #[error(transparent)]
    Setup(anyhow::Error),
    /// A capture could not be opened (missing, unknown format).
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Under `strict`, the first unreadable record.
    #[error("{path}: {error} (--strict)")]
    Strict {
        path: String,
        error: super::Unreadable,
    },
    /// The reader thread could not start or stopped without a result.
    #[error("{0}")]
    Reader(String),
}

/// Where the search list shape comes from: `--search`, `--resolv-conf`, or the capture.
pub struct ShapeSource<'a> {
    pub search: Option<&'a str>,
    pub resolv_conf: Option<&'a std::path::Path>,
    pub first_capture: Option<&'a std::path::Path>,
}

/// What `analyze` and `replay` read captures with: the cluster domain, the pods' search list
/// (and how it was chosen, said on stderr) and the tracker's settings.
pub struct CaptureSetup {
    pub domain: String,
    pub cluster: ClusterConfig,
    pub said: String,
    /// How the search list was chosen (the report's `search_from`).
    pub search_from: &'static str,
    pub tracker: TrackerConfig,
}

/// The session's setup; an inferred search list reads the head of the stream from
/// `events` (once: [`Events::run`] hands the same events on).
pub fn capture_setup(
    source: &ShapeSource<'_>,
    events: &mut Events,
    cluster_domain: &str,
    idle: &str,
) -> Result<CaptureSetup, SessionError> {
    let domain = cluster_domain
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let (cluster, said) = search_shape(source, &domain, &mut |domain| {
        let domain = domain.to_string();
        events.infer(Box::new(move |head| infer_node_domains(head, &domain)))
    })
    .map_err(SessionError::Setup)?;
    let idle = crate::config::parse_duration(idle).map_err(SessionError::Setup)?;
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
/// `infer` reads the node's domains off the stream's first events (called only when needed).
pub fn search_shape(
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
        // Not on standard input: the head read for the inference (200,000 records) is held
        // before any of it is tracked or replayed, which would hold up a live pipe.
        let looked = matches!(args.first_capture, Some(p) if p.as_os_str() != "-");
        let node = if looked { infer(domain) } else { Vec::new() };
        let said = if !looked {
            format!(
                "{} (the Kubernetes pod default, assumed; node domains are not inferred from \
                 standard input: pass --search or --resolv-conf to give them)",
                shape.join(" ")
            )
        } else if node.is_empty() {
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
pub fn shape_from_list(
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

/// Records (events and unreadable ones) of the stream's head read to infer the node's search
/// domains.
const INFER_EVENTS: usize = 200_000;

/// The node's own search domains, read off the walks at the stream's head: a suffix `S` (not
/// under the cluster domain) counts when a client asked for `B.S` and also for the absolute
/// `B.`, the signature of a search walk. Suffixes seen for at least three bases are kept, most
/// frequent first, at most three. A walk that *begins* with the name as written (ndots or more
/// dots) is a stronger signature: `B.` failed (NXDOMAIN or NODATA) and `B.S` of the same type
/// followed within a second; one such walk is enough (zeek-wikipedia's `ncsa.uiuc.edu`). So
/// is the converse, a walk that begins with the expansion: `B.S` failed and `B.` followed
/// (zeek-erspan's `sp.local`), and an NXDOMAIN for a dotted name under a cloud platform's
/// node domain (08-coredns-4066's `example.com.ec2.internal`, see [`cloud_node_domain`]).
/// `head` is the stream's first events, in the order merged (before `Reorder`).
fn infer_node_domains(head: &[QueryEvent], domain: &str) -> Vec<String> {
    // hashbrown's default hasher (foldhash): the keys are the capture's, nothing to defend.
    use hashbrown::{HashMap, HashTable};
    let cluster = format!(".{domain}.");
    // Every (client, name) asked: one table sized once, not a set per client (a capture of
    // distinct clients would make a small table for each), by `name_hash` from a seed drawn
    // per process: the seed is the hash's hidden starting state, carried through every step,
    // so a capture made in advance has no known set of colliding names (weaker than a keyed
    // hash such as foldhash's, which mixes its secret into every multiply).
    let seed = {
        use std::hash::BuildHasher;
        hashbrown::DefaultHashBuilder::default().hash_one(0x6e64u16)
    };
    let mut names: HashTable<(u64, std::net::IpAddr, &str)> = HashTable::with_capacity(head.len());
    // Per (client, type): the last absolute name that failed, and when (a few thousand entries
    // for a node's pods: left to grow).
    let mut failed: HashMap<(std::net::IpAddr, u16), (&str, u64)> = HashMap::new();
    // Suffixes borrowed from the head's names, made `String`s only for the result.
    let mut strong: HashMap<&str, usize> = HashMap::new();
    for ev in head {
        let key = (ev.client, ev.qtype);
        if let Some(&(b, at)) = failed.get(&key) {
            let soon = ev.time.0.saturating_sub(at) <= 1_000_000;
            // The name as written failed, then `B.S`.
            let suffix = ev.qname.strip_prefix(b).map(|s| s.trim_end_matches('.'));
            if let Some(suffix) = suffix {
                if suffix.contains('.') && soon && !ev.qname.ends_with(&cluster) {
                    *strong.entry(suffix).or_default() += 1;
                }
            }
            // `B.S` failed, then the name as written `B.` (a walk that begins with the
            // expansion: fewer dots than ndots; zeek-erspan's `sp.local`).
            let suffix = b
                .strip_prefix(ev.qname.as_str())
                .filter(|_| ev.qname.len() > 1)
                .map(|s| s.trim_end_matches('.'));
            if let Some(suffix) = suffix {
                if suffix.contains('.') && soon && !b.ends_with(&cluster) {
                    *strong.entry(suffix).or_default() += 1;
                }
            }
        }
        let failure = ev.rcode == Some(3) || (ev.rcode == Some(0) && ev.answers == Some(0));
        if ev.rcode == Some(3) && !ev.qname.ends_with(&cluster) {
            if let Some(suffix) = cloud_node_domain(&ev.qname) {
                *strong.entry(suffix).or_default() += 1;
            }
        }
        if failure {
            failed.insert(key, (ev.qname.as_str(), ev.time.0));
        } else {
            failed.remove(&key);
        }
        if failed.len() > INFER_EVENTS {
            failed.clear();
        }
        let name = ev.qname.as_str();
        let h = name_hash(seed, ev.client, name);
        let same = |e: &(u64, std::net::IpAddr, &str)| e.1 == ev.client && e.2 == name;
        if names.find(h, same).is_none() {
            names.insert_unique(h, (h, ev.client, name), |e| e.0);
        }
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for &(_, client, name) in names.iter().filter(|(_, _, n)| !n.ends_with(&cluster)) {
        // Every split of `name` into `base.suffix` on a label boundary, the suffix having at
        // least two labels (a search domain, not a TLD): the dots before the last one of the
        // name without its trailing dots; `base.` asked by the same client.
        let trimmed = name.trim_end_matches('.');
        let Some(last_dot) = trimmed.rfind('.') else {
            continue;
        };
        for (i, _) in name[..last_dot].match_indices('.') {
            let base = &name[..=i];
            let h = name_hash(seed, client, base);
            let found = names.find(h, |e| e.1 == client && e.2 == base);
            if found.is_some() {
                *counts.entry(&trimmed[i + 1..]).or_default() += 1;
            }
        }
    }
    // A strong signature stands on its own (the base need not have been asked absolute).
    for (&s, &n) in &strong {
        counts.entry(s).or_insert(n);
    }
    let mut found: Vec<(&str, usize)> = counts
        .into_iter()
        .filter(|(s, n)| *n >= 3 || strong.contains_key(s))
        .collect();
    found.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    found
        .into_iter()
        .take(3)
        .map(|(s, _)| s.to_string())
        .collect()
}

/// The inference's hash of a (client, name) from `seed`: the client and the name eight bytes
/// at a time, each word mixed in by a folded multiply by a public constant (the seed is only
/// the starting state).
fn name_hash(seed: u64, client: std::net::IpAddr, name: &str) -> u64 {
    let fold = |h: u64, w: u64| {
        let x = (h ^ w) as u128 * 0x2d35_8dcc_aa6c_78a5u128;
        (x as u64) ^ ((x >> 64) as u64)
    };
    let mut h = match client {
        std::net::IpAddr::V4(a) => fold(seed ^ name.len() as u64, u32::from(a) as u64),
        std::net::IpAddr::V6(a) => {
            let a = u128::from(a);
            fold(
                fold(seed ^ (name.len() as u64 | 1 << 63), a as u64),
                (a >> 64) as u64,
            )
        }
    };
    let mut words = name.as_bytes().chunks_exact(8);
    for w in words.by_ref() {
        h = fold(h, u64::from_le_bytes(w.try_into().unwrap_or_default()));
    }
    let mut last = [0u8; 8];
    last[..words.remainder().len()].copy_from_slice(words.remainder());
    fold(h, u64::from_le_bytes(last))
}

/// What reading shows while it goes: a progress bar on a terminal (the CLI's), nothing
/// otherwise ([`NoProgress`]).
pub trait Progress {
    /// A capture begins; its size in bytes when known (a file, not standard input).
    fn begin(&mut self, path: &Path, bytes: Option<u64>);
    /// Bytes of it read so far (compressed, as stored), and events.
    fn update(&mut self, bytes: u64, events: u64);
    /// The capture is read; its summary line follows.
    fn end(&mut self);
}

/// No progress shown.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&mut self, _: &Path, _: Option<u64>) {}
    fn update(&mut self, _: u64, _: u64) {}
    fn end(&mut self) {}
}

/// Events between progress updates (an atomic load and a call: nothing next to a read).
const UPDATE_EVERY: u64 = 4096;

/// A reader that counts the bytes taken from it, for the progress.
struct Counted<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Open `path` (`-`: standard input) with its size and a counter of the bytes read, read ahead
/// as `want` says of an input that can or cannot be opened again.
fn open_counted(
    path: &Path,
    opts: &Options,
    want: super::merge::Want,
) -> Result<super::merge::Opened, OpenError> {
    let read = Arc::new(AtomicU64::new(0));
    let name = path.display().to_string();
    let (input, size): (Box<dyn Read + Send>, Option<u64>) = if name == "-" {
        let input = Counted {
            inner: std::io::stdin(),
            read: read.clone(),
        };
        (Box::new(input), None)
    } else {
        let file = std::fs::File::open(path).map_err(|error| OpenError::Io {
            path: name.clone(),
            error,
        })?;
        let size = file
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        let input = Counted {
            inner: file,
            read: read.clone(),
        };
        (Box::new(input), size)
    };
    let ahead = want.ahead(size.is_some());
    let cap = super::from_reader_named(input, opts, &name, ahead)?;
    Ok(super::merge::Opened {
        cap,
        ahead,
        size,
        read,
    })
}

/// Events in flight between the reader thread and the tracker: batches of this many...
const BATCH: usize = 1024;
/// ...and at most this many batches queued (with one being filled and one being tracked, about
/// 10k events: a few MB whatever the capture's size).
const QUEUED_BATCHES: usize = 8;
/// Fewer batches than this in flight to the caller's thread: names go in wire form.
const WIRE_NAMES_BELOW: usize = 2;

/// What the reader thread tells the caller's thread, in order.
enum Msg {
    /// Events in query-time order.
    Events(Vec<QueryEvent>),
    /// What [`Events::infer`]'s function found in the stream's head.
    Inferred(Vec<String>),
    /// A capture begins ([`Progress::begin`]).
    Begin(PathBuf, Option<u64>),
    /// Bytes and events read so far ([`Progress::update`]).
    Update(u64, u64),
    /// The capture is read ([`Progress::end`]); its summary follows as `Text`.
    End,
    /// Per-file counts for stderr.
    Text(String),
    /// The end: every capture's counts added up, or the error that stopped the reading.
    Done(Result<Stats, SessionError>),
}

/// A function of the stream's head (its first `INFER_EVENTS` records' events, in the
/// order read), run on the reader thread: the search list inference.
type Infer = Box<dyn FnOnce(&[QueryEvent]) -> Vec<String> + Send>;

/// The captures' events, read, decoded, paired and put in query-time order on a thread of their
/// own while the caller's thread tracks walks: on two cores the two halves run at once. The
/// head of the stream is read once, for the search list inference ([`capture_setup`],
/// run on the reader thread) and for the walks. Shared by `analyze` and `replay`.
pub struct Events {
    captures: Vec<PathBuf>,
    opts: Options,
    rx: Option<std::sync::mpsc::Receiver<Msg>>,
    /// Batches observed go back to the reader to be emptied and filled again.
    recycle: Option<std::sync::mpsc::Sender<Vec<QueryEvent>>>,
    /// Messages received while waiting for the inference (progress, counts, the end),
    /// replayed by `run`.
    held: Vec<Msg>,
    /// Records of the stream in the head: `INFER_EVENTS` (tests take fewer).
    head_records: usize,
}

impl Events {
    pub fn new(captures: &[PathBuf], opts: Options) -> Events {
        Events {
            captures: captures.to_vec(),
            opts,
            rx: None,
            recycle: None,
            held: Vec::new(),
            head_records: INFER_EVENTS,
        }
    }

    /// The captures as `analyze` and `replay` name them: `--input-format`, `--strict` and
    /// `--port`, the rest of the reader settings their defaults.
    pub fn from_flags(
        captures: &[PathBuf],
        input_format: Option<super::Format>,
        strict: bool,
        port: u16,
    ) -> Events {
        Events::new(
            captures,
            Options {
                format: input_format,
                strict,
                port,
                ..Options::default()
            },
        )
    }

    /// Start the reader thread (once); `infer` runs on the stream's head.
    fn start(&mut self, infer: Option<Infer>) {
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
                let mut out = Out {
                    batch: Vec::with_capacity(BATCH),
                    tx: &tx,
                    reuse: &reuse,
                    spare: Vec::new(),
                    in_flight: 0,
                    gone: false,
                };
                let end = read_all(&captures, &opts, head_records, infer, &mut out);
                let _ = tx.send(Msg::Done(end));
            });
        if let Err(e) = spawned {
            let (tx, rx2) = std::sync::mpsc::sync_channel(1);
            let _ = tx.send(Msg::Done(Err(SessionError::Reader(format!(
                "starting the capture reader: {e}"
            )))));
            self.rx = Some(rx2);
            return;
        }
        self.rx = Some(rx);
        self.recycle = Some(recycle);
    }

    /// `infer` of the stream's first `head_records` records' events (fewer when it is
    /// shorter), in the order read; `run` then hands the same events on like the rest. Only a
    /// first call before `run` reads: later ones find nothing.
    fn infer(&mut self, infer: Infer) -> Vec<String> {
        if self.rx.is_some() {
            return Vec::new();
        }
        self.start(Some(infer));
        let rx = self.rx.as_ref().expect("started");
        loop {
            match rx.recv() {
                Ok(Msg::Inferred(found)) => return found,
                Ok(m @ Msg::Done(_)) => {
                    self.held.push(m);
                    return Vec::new();
                }
                Ok(m) => self.held.push(m),
                Err(_) => return Vec::new(),
            }
        }
    }

    /// Every event into `observe` in query-time order (across all the captures: they are one
    /// stream of traffic), with `progress` while reading and per-file counts on `stderr`;
    /// returns the counts of every capture added up, or the first unreadable record under
    /// `strict`.
    pub fn run(
        mut self,
        stderr: &mut impl Write,
        progress: &mut dyn Progress,
        mut observe: impl FnMut(&QueryEvent),
    ) -> Result<Stats, SessionError> {
        self.start(None);
        let held = std::mem::take(&mut self.held);
        let rx = self.rx.take().expect("started");
        let mut msgs = held
            .into_iter()
            .map(Ok)
            .chain(std::iter::from_fn(|| Some(rx.recv())));
        let mut scratch = String::new();
        loop {
            match msgs.next().expect("endless") {
                Ok(Msg::Events(mut b)) => {
                    for ev in &mut b {
                        super::pair::finish_name(&mut ev.qname, &mut scratch);
                        observe(ev);
                    }
                    // Back with its events: the reader reuses their names' allocations
                    // (made and freed on its own thread).
                    if let Some(r) = &self.recycle {
                        let _ = r.send(b);
                    }
                }
                Ok(Msg::Inferred(_)) => {}
                Ok(Msg::Begin(path, bytes)) => progress.begin(&path, bytes),
                Ok(Msg::Update(bytes, events)) => progress.update(bytes, events),
                Ok(Msg::End) => progress.end(),
                Ok(Msg::Text(t)) => {
                    let _ = stderr.write_all(t.as_bytes());
                }
                Ok(Msg::Done(Ok(read))) => return Ok(read),
                Ok(Msg::Done(Err(e))) => {
                    progress.end();
                    return Err(e);
                }
                Err(_) => {
                    progress.end();
                    return Err(SessionError::Reader(
                        "the capture reader stopped without a result".into(),
                    ));
                }
            }
        }
    }
}

/// The reader thread's side of the channel: ordered events gathered into batches.
struct Out<'a> {
    batch: Vec<QueryEvent>,
    tx: &'a std::sync::mpsc::SyncSender<Msg>,
    reuse: &'a std::sync::mpsc::Receiver<Vec<QueryEvent>>,
    /// Emptied batches for the next ones.
    spare: Vec<Vec<QueryEvent>>,
    /// Batches sent and not yet handed back (queued, or being taken in).
    in_flight: usize,
    /// The caller stopped receiving.
    gone: bool,
}

impl Out<'_> {
    fn push(&mut self, ev: QueryEvent) {
        if self.gone {
            return;
        }
        self.batch.push(ev);
        if self.batch.len() >= BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.batch.is_empty() || self.gone {
            return;
        }
        // Every batch handed back since (the caller's thread may return several at once, or
        // none yet): their events' names are the next ones the pairing writes into.
        while let Ok(mut b) = self.reuse.try_recv() {
            self.in_flight -= 1;
            super::pair::recycle_names(&mut b);
            if self.spare.len() < QUEUED_BATCHES {
                self.spare.push(b);
            }
        }
        let next = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BATCH));
        // The caller's thread about to wait for events (this thread is the slower one): it
        // makes the next names text. Behind (batches queue up): this thread does.
        super::pair::leave_names_in_wire_form(self.in_flight < WIRE_NAMES_BELOW);
        let full = std::mem::replace(&mut self.batch, next);
        self.in_flight += 1;
        self.gone = self.tx.send(Msg::Events(full)).is_err();
    }

    fn send(&mut self, msg: Msg) -> Result<(), SessionError> {
        if !self.gone {
            self.gone = self.tx.send(msg).is_err();
        }
        self.check()
    }

    fn check(&self) -> Result<(), SessionError> {
        if self.gone {
            return Err(SessionError::Reader("the caller stopped reading".into()));
        }
        Ok(())
    }
}

/// The reader thread: every capture's events, merged by time ([`Merge`](super::merge::Merge))
/// and through one [`Reorder`](super::Reorder), to `out` in batches, with progress and each
/// capture's counts (in the order given, once all are read); `infer` (when given) runs on the
/// head of the stream first, which is then ordered like the rest. An `Err` is a capture that
/// cannot be opened or the first unreadable record under `strict`; a closed channel (the
/// caller gave up) ends the reading quietly.
fn read_all(
    captures: &[PathBuf],
    opts: &Options,
    head_records: usize,
    mut infer: Option<Infer>,
    out: &mut Out<'_>,
) -> Result<Stats, SessionError> {
    let mut reorder = super::Reorder::new(super::Reorder::WINDOW, super::Reorder::MAX_HELD);
    let mut total = Stats::default();
    let mut merge =
        super::merge::Merge::new(captures, |path, want| open_counted(path, opts, want))?;
    let label = match captures {
        [one] => one.clone(),
        many => PathBuf::from(format!("{} captures", many.len())),
    };
    out.send(Msg::Begin(label, merge.size()))?;
    // The stream's events while the head is read (only when inferring).
    let mut head = Vec::new();
    let mut head_left = head_records.max(1);
    let mut summaries: Vec<Option<String>> = vec![None; captures.len()];
    let mut n = 0u64;
    while let Some(step) = merge.next_step()? {
        match step {
            super::merge::Step::Event(ev) => {
                n += 1;
                if n % UPDATE_EVERY == 0 {
                    out.send(Msg::Update(merge.bytes_read(), n))?;
                }
                if infer.is_some() {
                    head.push(ev);
                } else {
                    reorder.push(ev, |e| out.push(e));
                    out.check()?;
                }
            }
            super::merge::Step::Unreadable(index, error) => {
                if opts.strict {
                    return Err(SessionError::Strict {
                        path: captures[index].display().to_string(),
                        error,
                    });
                }
            }
            super::merge::Step::Finished(index, format, s) => {
                let mut text = summary(&captures[index], format, &s);
                if captures.len() > 1 && merge.untimed(index) {
                    text.push_str(
                        "  no timestamps (CoreDNS lines without kubectl's --timestamps): it \
                         cannot be put in time order with the other captures, so a lookup \
                         split between them reads as several\n",
                    );
                }
                summaries[index] = Some(text);
                total.add(&s);
                continue;
            }
        }
        if infer.is_some() {
            head_left -= 1;
            if head_left == 0 {
                head_done(&mut infer, &mut head, &mut reorder, out)?;
            }
        }
    }
    // A stream shorter than the head.
    head_done(&mut infer, &mut head, &mut reorder, out)?;
    reorder.finish(|e| out.push(e));
    // The events go before the counts.
    out.flush();
    out.send(Msg::End)?;
    for text in summaries.into_iter().flatten() {
        out.send(Msg::Text(text))?;
    }
    out.check()?;
    Ok(total)
}

/// A capture's line on stderr: its events, format, and what else it held.
fn summary(path: &Path, format: super::Format, s: &Stats) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{}: {} events ({}), {}",
        path.display(),
        s.counts.events,
        format.as_str(),
        // The unreadable always, the others when there are any.
        std::iter::once(format!("{} unreadable", s.counts.unreadable))
            .chain(s.counts.set_aside())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for u in &s.first_unreadable {
        let _ = writeln!(text, "  unreadable: {u}");
    }
    text
}

/// The head is read: `infer` from it (once), then order it like the rest.
fn head_done(
    infer: &mut Option<Infer>,
    head: &mut Vec<QueryEvent>,
    reorder: &mut super::Reorder,
    out: &mut Out<'_>,
) -> Result<(), SessionError> {
    if let Some(f) = infer.take() {
        // No batch went out before the head was read, so its names are text.
        debug_assert!(head.iter().all(|e| !e.qname.starts_with('\0')));
        let found = f(head);
        out.send(Msg::Inferred(found))?;
        for ev in std::mem::take(head) {
            reorder.push(ev, |e| out.push(e));
        }
        out.check()?;
    }
    Ok(())
}

/// The cloud node domain (`cluster.profile`'s platforms) that `qname` ends with, when what
/// comes before it has two labels or more: `example.com.ec2.internal.` is `example.com`
/// searched under the node domain, while `ip-10-0-0-1.ec2.internal.` is a host. The forms
/// are exact: `ec2.internal`, `<region>.compute.internal`, `google.internal`,
/// `c.<project>.internal`, `reddog.microsoft.com`, `<id>.<x>.internal.cloudapp.net`.
fn cloud_node_domain(qname: &str) -> Option<&str> {
    let name = qname.trim_end_matches('.');
    // Every form ends so: most names are none of them, told without splitting.
    if !(name.ends_with("internal")
        || name.ends_with("microsoft.com")
        || name.ends_with("cloudapp.net"))
    {
        return None;
    }
    // The last five labels, the last first (no allocation: most NXDOMAIN names get here), as
    // `rsplit('.')` gives them.
    let mut last = [""; 5];
    let mut end = name.len();
    for l in last.iter_mut() {
        match name.as_bytes()[..end].iter().rposition(|&c| c == b'.') {
            Some(dot) => {
                *l = &name[dot + 1..end];
                end = dot;
            }
            None => {
                *l = &name[..end];
                break;
            }
        }
    }
    let n = name.bytes().filter(|&b| b == b'.').count() + 1;
    // How many trailing labels make the node domain.
    let k = if n >= 2 && (last[1] == "ec2" || last[1] == "google") && last[0] == "internal" {
        2
    } else if n >= 3
        && ((last[1] == "compute" && last[0] == "internal")
            || (last[2] == "reddog" && last[1] == "microsoft" && last[0] == "com")
            || (last[0] == "internal" && last[2] == "c"))
    {
        3
    } else if n >= 5 && last[2] == "internal" && last[1] == "cloudapp" && last[0] == "net" {
        5
    } else {
        return None;
    };
    // A zonal `<zone>.c.<project>.internal` reads as `c.<project>.internal` (in every GCE
    // node's search list) with the zone in the base.
    if n - k < 2 {
        return None;
    }
    let len = last[..k].iter().map(|l| l.len() + 1).sum::<usize>() - 1;
    Some(&name[name.len() - len..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::synth;

    /// The merge's probe of a capture past the 16th (opened to find its first event) asked for
    /// a buffer, right for a regular file closed after it; a pipe is kept open, and was read
    /// whole through that buffer. The opener picks by what the input is.
    #[test]
    fn a_pipe_past_the_sixteenth_capture_was_read_whole_through_its_probe_s_buffer() {
        use crate::capture::merge::Want;
        use crate::capture::{Ahead, Format};
        let dir = tempfile::tempdir().unwrap();
        let line = |k: u64| {
            format!(
                "{{\"ts\": {}, \"client\": \"10.0.0.1\", \"qname\": \"a{k}.example.\", \"qtype\": \"A\", \"rcode\": \"NOERROR\", \"answers\": 1}}\n",
                1_700_000_000 + k
            )
        };
        let text: String = (0..10).map(line).collect();
        let file = dir.path().join("file.jsonl");
        std::fs::write(&file, &text).unwrap();
        let fifo = |name: &str| {
            let p = dir.path().join(name);
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            let (p2, text) = (p.clone(), text.clone());
            let writer = std::thread::spawn(move || std::fs::write(p2, text).unwrap());
            (p, writer)
        };
        let opts = Options {
            format: Some(Format::Jsonl),
            ..Options::default()
        };
        let events = |cap: crate::capture::Capture| cap.filter(|r| r.is_ok()).count();

        let probe = Want::Probe {
            kept: Ahead::Thread,
        };
        let opened = open_counted(&file, &opts, probe).unwrap();
        assert_eq!(
            (opened.ahead, opened.size),
            (Ahead::Buffer, Some(text.len() as u64))
        );
        let (pipe, writer) = fifo("pipe");
        let opened = open_counted(&pipe, &opts, probe).unwrap();
        assert_eq!((opened.ahead, opened.size), (Ahead::Thread, None));
        assert_eq!(events(opened.cap), 10);
        writer.join().unwrap();
        // With as many read-ahead threads as the merge allows, a pipe too goes through a
        // buffer; a capture read (not probed) is read as asked.
        let (pipe, writer) = fifo("pipe2");
        let kept = Want::Probe {
            kept: Ahead::Buffer,
        };
        let opened = open_counted(&pipe, &opts, kept).unwrap();
        assert_eq!(opened.ahead, Ahead::Buffer);
        assert_eq!(events(opened.cap), 10);
        writer.join().unwrap();
        let opened = open_counted(&file, &opts, Want::Read(Ahead::Thread)).unwrap();
        assert_eq!(opened.ahead, Ahead::Thread);
        assert_eq!(events(opened.cap), 10);
    }

    /// The reader thread hands over every event once, in the order one thread merging the
    /// captures by time and putting them through `Reorder` gives, whether the head ends inside
    /// a batch, at a batch boundary, or covers the whole stream; with two captures of the same
    /// minutes. The inference sees the stream's first events in the order merged (before
    /// `Reorder`). Progress is told once, of both, and ends before the summary lines.
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
        let read: Vec<Vec<QueryEvent>> = paths
            .iter()
            .map(|p| {
                super::super::open_with(p, &opts)
                    .unwrap()
                    .flatten()
                    .collect()
            })
            .collect();
        // Two captures as read, merged: the earlier next event first, ties to the capture
        // being read.
        let (a, b) = (&read[0], &read[1]);
        let (mut i, mut j, mut from_a) = (0, 0, true);
        let mut merged = Vec::new();
        while i < a.len() || j < b.len() {
            from_a = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) if x.time == y.time => from_a,
                (Some(x), Some(y)) => x.time < y.time,
                (x, _) => x.is_some(),
            };
            if from_a {
                merged.push(a[i].clone());
                i += 1;
            } else {
                merged.push(b[j].clone());
                j += 1;
            }
        }
        let mut want = Vec::new();
        let mut reorder = super::super::Reorder::new(
            super::super::Reorder::WINDOW,
            super::super::Reorder::MAX_HELD,
        );
        for ev in merged.iter().cloned() {
            reorder.push(ev, |e| want.push(e));
        }
        reorder.finish(|e| want.push(e));
        assert_eq!(want.len(), 6_000);
        let first = &merged[..3_000];
        assert!(
            first != &want[..3_000],
            "the capture is read out of query-time order"
        );
        // The two are of the same minutes: read one after the other, they are not in order.
        assert!(a.last().unwrap().time > b.first().unwrap().time);
        assert!(want.windows(2).all(|w| w[0].time <= w[1].time));

        /// What progress was told, in order.
        #[derive(Default)]
        struct Told(Vec<String>);
        impl Progress for Told {
            fn begin(&mut self, path: &Path, bytes: Option<u64>) {
                let name = path.file_name().unwrap().to_string_lossy();
                self.0.push(format!("begin {name} {}", bytes.is_some()));
            }
            fn update(&mut self, bytes: u64, events: u64) {
                assert!(bytes > 0 && events % UPDATE_EVERY == 0);
            }
            fn end(&mut self) {
                self.0.push("end".into());
            }
        }
        for head_records in [1, 7, BATCH, BATCH + 1, 3_000, 10_000] {
            let mut events = Events::new(&paths, opts.clone());
            events.head_records = head_records;
            let n = head_records.min(6_000);
            let expect = merged[..n].to_vec();
            let seen = events.infer(Box::new(move |head| {
                vec![head.len().to_string(), (head == expect).to_string()]
            }));
            assert_eq!(seen, [n.to_string(), "true".into()], "head {head_records}");
            let mut got = Vec::new();
            let mut text = Vec::new();
            let mut told = Told::default();
            let read = events
                .run(&mut text, &mut told, |e| got.push(e.clone()))
                .unwrap();
            assert_eq!(read.counts.unreadable, 0);
            assert_eq!(read.counts.events, 2 * 3000);
            assert!(got == want, "head {head_records}: events differ");
            let text = String::from_utf8(text).unwrap();
            assert_eq!(
                text.matches("3000 events (pcap), 0 unreadable").count(),
                2,
                "{text}"
            );
            assert_eq!(told.0, ["begin 2 captures true", "end"]);
            let c0 = text.find("c0.pcap: ").unwrap();
            assert!(c0 < text.find("c1.pcap: ").unwrap(), "{text}");
        }
        // Without a head, and a capture that cannot be opened is the open error it was.
        let mut got = Vec::new();
        Events::new(&paths, opts.clone())
            .run(&mut Vec::new(), &mut NoProgress, |e| got.push(e.clone()))
            .unwrap();
        assert!(got == want);
        let missing = vec![dir.path().join("missing.pcap")];
        let err = Events::new(&missing, opts).run(&mut Vec::new(), &mut NoProgress, |_| {});
        assert!(matches!(err, Err(SessionError::Open(_))), "{err:?}");
    }

    #[test]
    fn a_dotted_name_under_a_cloud_node_domain_is_a_search_expansion_a_host_is_not() {
        let cases = [
            ("example.com.ec2.internal.", Some("ec2.internal")),
            ("ip-10-0-0-1.ec2.internal.", None),
            (
                "api.github.com.us-west-2.compute.internal.",
                Some("us-west-2.compute.internal"),
            ),
            (
                "storage.googleapis.com.c.my-proj.internal.",
                Some("c.my-proj.internal"),
            ),
            ("example.com.google.internal.", Some("google.internal")),
            (
                "example.com.reddog.microsoft.com.",
                Some("reddog.microsoft.com"),
            ),
            (
                "a.b.x1.y2.internal.cloudapp.net.",
                Some("x1.y2.internal.cloudapp.net"),
            ),
            ("a.b.zone.c.proj.internal.", Some("c.proj.internal")),
            ("zone.c.proj.internal.", None),
            ("b.internal.cloudapp.net.", None),
            ("a..ec2.internal.", Some("ec2.internal")),
            ("example.com.", None),
            ("internal.", None),
            (".", None),
        ];
        for (name, want) in cases {
            assert_eq!(cloud_node_domain(name), want, "{name}");
        }
    }
}
