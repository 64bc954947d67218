//! The memory budget (DESIGN §9 "Faults"): one byte bound, `server.memory_limit`, over
//! everything that grows with traffic or with a failing upstream, so the node's DNS is never
//! OOM-killed when the cluster DNS is in trouble.
//!
//! Each part gets a fixed share of the limit, so a part that fills (walks left open by a dead
//! upstream, say) cannot starve another (the cache that keeps cached names answering). A part
//! charges an allocation before it makes it and releases it when freed; what does not fit is
//! refused early and counted by part (`ndots_memory_refusals_total{reason}`):
//! - `cache`: older entries are evicted to make room (CLOCK), an answer larger than the share
//!   is not stored;
//! - `waiting`: a query that would wait on an upstream gets a stale answer or SERVFAIL at once;
//! - `tcp`: a new client connection is closed;
//! - `tracker_queue`: the events of a receive batch are dropped (counted, as before);
//! - `tracker_walks`: the oldest open walk is closed and reported as evicted (a whole walk,
//!   never half of one).
//!
//! The charges are estimates of the heap bytes each item holds (its buffers plus a fixed
//! overhead for the containers), not allocator measurements: they are cheap (one atomic add)
//! and deterministic. The quarter of the cgroup limit the default leaves out covers what is
//! not charged: code, thread stacks, receive buffers, metrics, the report's ring of 10 s
//! buckets (its duration histograms up to ~9 MiB), allocator slack.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The smallest `server.memory_limit` accepted.
pub const MIN_LIMIT: u64 = 16 << 20;
/// Without a cgroup limit.
pub const DEFAULT_LIMIT: u64 = 256 << 20;

/// What the budget is spent on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Cache = 0,
    Waiting = 1,
    Tcp = 2,
    TrackerQueue = 3,
    TrackerWalks = 4,
}

impl Part {
    pub const ALL: [Part; 5] = [
        Part::Cache,
        Part::Waiting,
        Part::Tcp,
        Part::TrackerQueue,
        Part::TrackerWalks,
    ];

    /// The `part` / `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Cache => "cache",
            Part::Waiting => "waiting",
            Part::Tcp => "tcp",
            Part::TrackerQueue => "tracker_queue",
            Part::TrackerWalks => "tracker_walks",
        }
    }

    /// Thousandths of the limit. The cache gets half: it is what keeps names answering when
    /// upstreams fail. The tracker's walks get more than its queue, which drains in
    /// milliseconds when the tracker keeps up.
    fn per_mille(self) -> u64 {
        match self {
            Part::Cache => 500,
            Part::Waiting => 200,
            Part::Tcp => 100,
            Part::TrackerQueue => 75,
            Part::TrackerWalks => 125,
        }
    }
}

/// Bytes charged per part against their shares of one limit. Shared by the listeners, the
/// async tasks and the tracker thread; every operation is one or two relaxed atomics.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: [AtomicUsize; 5],
    refused: [AtomicU64; 5],
}

impl MemoryBudget {
    pub fn new(limit: u64) -> MemoryBudget {
        MemoryBudget {
            limit,
            used: Default::default(),
            refused: Default::default(),
        }
    }

    /// A budget no test or offline tool will reach (the tracker of `ndots analyze`).
    pub fn unbounded() -> MemoryBudget {
        MemoryBudget::new(u64::MAX / 2)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The bytes `part` may hold.
    pub fn share(&self, part: Part) -> usize {
        (self.limit / 1000 * part.per_mille()).min(usize::MAX as u64) as usize
    }

    /// Charge `bytes` to `part` if they fit in its share; otherwise count a refusal.
    #[inline]
    pub fn try_charge(&self, part: Part, bytes: usize) -> bool {
        if !self.try_charge_quietly(part, bytes) {
            self.refuse(part);
            return false;
        }
        true
    }

    /// `try_charge` without counting a refusal: for what the part may do without (an upstream
    /// attempt sent again), not for what it refuses to someone.
    #[inline]
    pub fn try_charge_quietly(&self, part: Part, bytes: usize) -> bool {
        let used = &self.used[part as usize];
        let before = used.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) > self.share(part) {
            used.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Charge without a check: for a part that makes room itself before it charges (the
    /// cache evicts first).
    #[inline]
    pub fn charge(&self, part: Part, bytes: usize) {
        self.used[part as usize].fetch_add(bytes, Ordering::Relaxed);
    }

    #[inline]
    pub fn release(&self, part: Part, bytes: usize) {
        self.used[part as usize].fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Count a refusal that `part` decided on itself (a walk shed, an answer not cached).
    pub fn refuse(&self, part: Part) {
        self.refused[part as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn used(&self, part: Part) -> usize {
        self.used[part as usize].load(Ordering::Relaxed)
    }

    pub fn refused(&self, part: Part) -> u64 {
        self.refused[part as usize].load(Ordering::Relaxed)
    }

    /// Set the `ndots_memory_*` series (at each scrape).
    pub fn export_metrics(&self) {
        use crate::metrics as m;
        metrics::gauge!(m::MEMORY_LIMIT).set(self.limit as f64);
        for p in Part::ALL {
            metrics::gauge!(m::MEMORY_USED, "part" => p.as_str()).set(self.used(p) as f64);
            metrics::gauge!(m::MEMORY_SHARE, "part" => p.as_str()).set(self.share(p) as f64);
            metrics::counter!(m::MEMORY_REFUSALS, "reason" => p.as_str()).absolute(self.refused(p));
        }
    }
}

/// 3/4 of this process's cgroup memory limit, else [`DEFAULT_LIMIT`] (DESIGN §9).
pub fn default_limit() -> u64 {
    cgroup_limit()
        .map(|l| (l / 4 * 3).max(MIN_LIMIT))
        .unwrap_or(DEFAULT_LIMIT)
}

/// The tightest memory limit on this process's cgroup or its ancestors: cgroup v2
/// `memory.max`, or v1 `memory.limit_in_bytes` (whose "no limit" is a huge number).
pub fn cgroup_limit() -> Option<u64> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    limit_from(&membership, |p| std::fs::read_to_string(p).ok())
}

fn limit_from(membership: &str, read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    const NO_LIMIT_V1: u64 = 1 << 60;
    let mut best: Option<u64> = None;
    let mut consider = |v: Option<String>| {
        if let Some(n) = v.and_then(|t| t.trim().parse::<u64>().ok()) {
            if n < NO_LIMIT_V1 {
                best = Some(best.map_or(n, |b| b.min(n)));
            }
        }
    };
    for line in membership.lines() {
        // `hierarchy-ID:controllers:path`
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(ctrl), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let (root, file) = if ctrl.is_empty() {
            ("/sys/fs/cgroup", "memory.max")
        } else if ctrl.split(',').any(|c| c == "memory") {
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
        } else {
            continue;
        };
        // The cgroup and each ancestor below the root: a limit anywhere above applies.
        let mut p = path.trim_end_matches('/').to_string();
        loop {
            consider(read(&format!("{root}{p}/{file}")));
            match p.rfind('/') {
                Some(i) if !p.is_empty() => p.truncate(i),
                _ => break,
            }
        }
    }
    best
}

/// A charge released on drop.
pub struct Charge<'a> {
    budget: &'a MemoryBudget,
    part: Part,
    bytes: usize,
}

impl<'a> Charge<'a> {
    pub fn try_new(budget: &'a MemoryBudget, part: Part, bytes: usize) -> Option<Charge<'a>> {
        budget.try_charge(part, bytes).then_some(Charge {
            budget,
            part,
            bytes,
        })
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        self.budget.release(self.part, self.bytes);
    }
}

/// A charge on a shared budget, released on drop: held by a task or a connection.
pub struct OwnedCharge {
    budget: std::sync::Arc<MemoryBudget>,
    part: Part,
    bytes: usize,
}

impl OwnedCharge {
    /// Charge `bytes` to `part` if they fit; otherwise count a refusal.
    pub fn try_new(
        budget: &std::sync::Arc<MemoryBudget>,
        part: Part,
        bytes: usize,
    ) -> Option<OwnedCharge> {
        let charge = OwnedCharge::try_new_quietly(budget, part, bytes);
        if charge.is_none() {
            budget.refuse(part);
        }
        charge
    }

    /// `try_new` for what may be done without: a refusal is not counted.
    pub fn try_new_quietly(
        budget: &std::sync::Arc<MemoryBudget>,
        part: Part,
        bytes: usize,
    ) -> Option<OwnedCharge> {
        budget.try_charge_quietly(part, bytes).then(|| OwnedCharge {
            budget: budget.clone(),
            part,
            bytes,
        })
    }
}

impl Drop for OwnedCharge {
    fn drop(&mut self) {
        self.budget.release(self.part, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_does_not_fit_its_share_is_refused_and_counted() {
        let b = MemoryBudget::new(1_000_000);
        let share = b.share(Part::Waiting);
        assert_eq!(share, 200_000);
        assert!(b.try_charge(Part::Waiting, share - 10));
        assert!(!b.try_charge(Part::Waiting, 11));
        assert_eq!(b.used(Part::Waiting), share - 10);
        assert_eq!(b.refused(Part::Waiting), 1);
        // Another part's share is untouched by this one being full.
        assert!(b.try_charge(Part::Cache, 1000));
        b.release(Part::Waiting, share - 10);
        assert!(b.try_charge(Part::Waiting, 11));
        {
            let _c = OwnedCharge::try_new(
                &std::sync::Arc::new(MemoryBudget::new(1000)),
                Part::Tcp,
                100,
            );
        }
        let c = Charge::try_new(&b, Part::Tcp, 5000).unwrap();
        assert_eq!(b.used(Part::Tcp), 5000);
        drop(c);
        assert_eq!(b.used(Part::Tcp), 0);
    }

    #[test]
    fn cgroup_limits_v2_v1_and_none() {
        let files = |p: &str| -> Option<String> {
            match p {
                "/sys/fs/cgroup/kubepods/pod1/ctr/memory.max" => Some("max\n".into()),
                "/sys/fs/cgroup/kubepods/pod1/memory.max" => Some("268435456\n".into()),
                "/sys/fs/cgroup/kubepods/memory.max" => Some("1073741824\n".into()),
                "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes" => {
                    Some("134217728\n".into())
                }
                "/sys/fs/cgroup/memory/memory.limit_in_bytes" => {
                    Some("9223372036854771712\n".into())
                }
                _ => None,
            }
        };
        assert_eq!(
            limit_from("0::/kubepods/pod1/ctr\n", files),
            Some(268435456)
        );
        assert_eq!(
            limit_from("5:cpu,cpuacct:/x\n4:memory:/docker/abc\n", files),
            Some(134217728)
        );
        assert_eq!(limit_from("4:memory:/\n", files), None);
        assert_eq!(limit_from("0::/\n", files), None);
        assert_eq!(limit_from("garbage", files), None);
    }

    fn engine(limit: &str) -> std::sync::Arc<crate::proxy::Engine> {
        use crate::config::{Config, FileConfig, Overrides};
        let text = format!(
            "upstreams: [{{zone: ., servers: [\"127.0.0.1:9\"]}}]\nserver: {{memory_limit: {limit}}}\n"
        );
        let cfg =
            Config::from_file_config(FileConfig::parse(&text).unwrap(), &Overrides::default())
                .unwrap();
        let budget = std::sync::Arc::new(MemoryBudget::new(cfg.server.memory_limit));
        let cache =
            std::sync::Arc::new(crate::cache::Cache::with_budget(cfg.cache.clone(), budget));
        std::sync::Arc::new(
            crate::proxy::Engine::new(cfg, cache, Default::default(), None).unwrap(),
        )
    }

    fn job(name: &str) -> crate::proxy::handler::Job {
        let mut q = Vec::new();
        crate::wire::build_query(7, name, 1, false, &mut q).unwrap();
        let view = crate::wire::parse_query(&q).unwrap();
        crate::proxy::handler::Job {
            query: q,
            view,
            zone: Some(0),
            plan: crate::proxy::shortcut::Plan::Forward,
            reply: None,
            proto: crate::proxy::handler::Proto::Udp,
            client: "127.0.0.1:5353".parse().unwrap(),
            started: std::time::Instant::now(),
        }
    }

    #[test]
    fn memory_limit_parses_sizes_and_rejects_tiny_ones() {
        assert_eq!(engine("64MiB").config.server.memory_limit, 64 << 20);
        assert_eq!(engine("\"1GiB\"").config.server.memory_limit, 1 << 30);
        assert_eq!(engine("33554432").config.server.memory_limit, 32 << 20);
        let text = "server: {memory_limit: 1MiB}\n";
        let f = crate::config::FileConfig::parse(text).unwrap();
        let err = crate::config::Config::from_file_config(f, &Default::default()).unwrap_err();
        assert!(err.to_string().contains("memory_limit"), "{err}");
        assert!(
            crate::config::FileConfig::parse("server: {memory_limit: 5 parsecs}\n").is_err()
                || crate::config::Config::from_file_config(
                    crate::config::FileConfig::parse("server: {memory_limit: 5 parsecs}\n")
                        .unwrap(),
                    &Default::default()
                )
                .is_err()
        );
    }

    /// The charge per waiting query covers the task's future and its first upstream attempt
    /// (boxed apart from it), or the bound is a fiction.
    #[test]
    fn the_waiting_charge_covers_the_resolve_future() {
        let e = engine("64MiB");
        let fut = e.clone().resolve(job("a.example."));
        let held = std::mem::size_of_val(&fut) + crate::upstream::ATTEMPT_OVERHEAD;
        assert!(
            held + 512 <= crate::proxy::handler::WAITING_OVERHEAD,
            "resolve's future and an attempt are {held} bytes: raise WAITING_OVERHEAD",
        );
    }

    /// config.md said `server.max_inflight` (default 10000) bounds the queries waiting on
    /// upstreams; at the default memory limit the `waiting` share refuses them past ~5,000
    /// (a probe: 586,948 refusals by `memory_limit`, none by `max_inflight`). The numbers the
    /// docs now give (the share's bound for 60-byte queries at 256MiB and 64MiB, and the limit
    /// from which 10000 binds first) are these.
    #[test]
    fn the_default_max_inflight_could_never_be_reached_at_the_default_memory_limit() {
        let per = crate::proxy::handler::WAITING_OVERHEAD + 60;
        let fit = |limit: u64| MemoryBudget::new(limit).share(Part::Waiting) / per;
        let default_max_inflight = crate::config::Config::from_file_config(
            crate::config::FileConfig::parse("server: {workers: 1}\n").unwrap(),
            &Default::default(),
        )
        .unwrap()
        .server
        .max_inflight;
        assert_eq!(default_max_inflight, 10_000);
        assert_eq!(fit(DEFAULT_LIMIT) / 100, 49, "about 5,000 at 256MiB");
        assert_eq!(fit(64 << 20) / 100, 12, "about 1,200 at 64MiB");
        assert!(fit(515 << 20) < default_max_inflight);
        assert!(
            fit(516 << 20) >= default_max_inflight,
            "binds above about 515MiB"
        );
        // From a cgroup limit: 3/4 of it.
        assert!(fit((687u64 << 20) / 4 * 3) < default_max_inflight);
        assert!(
            fit((688u64 << 20) / 4 * 3) >= default_max_inflight,
            "from 688MiB"
        );
    }

    /// A dead upstream cannot make waiting queries pile up past the `waiting` share: once it
    /// is full, further queries are refused at once (and counted), and a finished one gives
    /// its bytes back.
    #[test]
    fn waiting_queries_beyond_their_share_are_refused_at_once() {
        let e = engine("16MiB");
        let b = e.cache.budget().clone();
        let per = crate::proxy::handler::WAITING_OVERHEAD + job("a.example.").query.len();
        let fit = b.share(Part::Waiting) / per;
        let mut held = Vec::new();
        for i in 0..fit {
            held.push(e.admit(job(&format!("n{i}.example."))).expect("fits"));
        }
        assert!(e.admit(job("one-more.example.")).is_none());
        assert_eq!(b.refused(Part::Waiting), 1);
        assert!(b.used(Part::Waiting) <= b.share(Part::Waiting));
        drop(held.pop());
        assert!(e.admit(job("now-it-fits.example.")).is_some());
    }
}
