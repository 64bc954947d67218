//! Forwarding-loop detection, CoreDNS `loop` style: at start, after each reload, and every
//! `RECHECK` while a loop stands, each upstream server of each zone gets a query for a random
//! name under the zone (`<random>.ndots-loop-check.<zone>`, type HINFO). If that query comes
//! back to this proxy's own listeners, forwarding loops: the proxy reports not ready, logs the
//! zone and server, and sets `ndots_forwarding_loop`. The returning probe is answered SERVFAIL
//! at once, so the probe itself goes round only once.
//!
//! `--check-config` cannot know: a loop is a property of the network (an upstream that
//! forwards back to us, a node-local address that routes to itself), not of the file.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;

use super::handler::Engine;
use crate::metrics as m;
use crate::upstream::Router;
use crate::wire;

/// HINFO, as CoreDNS's `loop` plugin asks: a type no real client looks up.
const TYPE_HINFO: u16 = 13;
/// While a loop stands, how often it is checked again (a fixed upstream clears it without a
/// reload).
pub const RECHECK: Duration = Duration::from_secs(30);

struct Probe {
    /// Lowercase wire form of the probe name.
    name: Vec<u8>,
    returned: Arc<AtomicBool>,
}

/// Shared by every engine of one process (it survives reloads).
#[derive(Default)]
pub struct LoopGuard {
    /// Probes out now; the packet path compares names only while this is non-zero.
    outstanding: AtomicUsize,
    probes: Mutex<Vec<Probe>>,
    /// What loops, for `/readyz`; empty when nothing does.
    loops: Mutex<Vec<String>>,
}

impl LoopGuard {
    /// Cheap test for the packet path: is any probe out?
    #[inline]
    pub fn watching(&self) -> bool {
        self.outstanding.load(Ordering::Relaxed) > 0
    }

    /// True when `qname` (wire form, any case) is one of our probes come back.
    pub fn came_back(&self, qname: &[u8]) -> bool {
        let probes = self.probes.lock();
        match probes.iter().find(|p| wire::names_equal(&p.name, qname)) {
            Some(p) => {
                p.returned.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// `/readyz`: not ready while a loop stands.
    pub fn readiness(&self) -> Result<(), String> {
        let loops = self.loops.lock();
        if loops.is_empty() {
            return Ok(());
        }
        Err(format!("forwarding loop: {}", loops.join("; ")))
    }

    pub fn looping(&self) -> bool {
        !self.loops.lock().is_empty()
    }

    /// Probe every server of every zone once (concurrently), and replace what is known to loop
    /// with what was found.
    pub async fn check(self: &Arc<Self>, engine: Arc<Engine>) {
        let mut tasks = tokio::task::JoinSet::new();
        for (zi, z) in engine.router.zones().iter().enumerate() {
            for si in 0..z.server_count() {
                let (guard, engine) = (self.clone(), engine.clone());
                tasks.spawn(async move { guard.probe(&engine.router, zi, si).await });
            }
        }
        let mut found = Vec::new();
        while let Some(r) = tasks.join_next().await {
            if let Ok(Some(what)) = r {
                found.push(what);
            }
        }
        found.sort();
        metrics::gauge!(m::FORWARDING_LOOP).set(if found.is_empty() { 0.0 } else { 1.0 });
        let was = std::mem::replace(&mut *self.loops.lock(), found.clone());
        if was.is_empty() != found.is_empty() && found.is_empty() {
            tracing::info!("forwarding loop gone: every upstream probe went elsewhere");
        }
    }

    async fn probe(&self, router: &Router, zone: usize, server: usize) -> Option<String> {
        let z = router.zone(zone);
        let label: u64 = rand::rng().random();
        let zone_name = z.label.trim_end_matches('.');
        let name = if zone_name.is_empty() {
            format!("{label:016x}.ndots-loop-check.")
        } else {
            format!("{label:016x}.ndots-loop-check.{zone_name}.")
        };
        let mut query = Vec::new();
        wire::build_query(rand::rng().random(), &name, TYPE_HINFO, false, &mut query).ok()?;
        let mut wire_name = Vec::new();
        wire::encode_name(&name, &mut wire_name).ok()?;
        let returned = Arc::new(AtomicBool::new(false));
        self.probes.lock().push(Probe {
            name: wire_name.clone(),
            returned: returned.clone(),
        });
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        let addr = router.exchange_with(zone, server, &query).await;
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
        self.probes.lock().retain(|p| p.name != wire_name);
        if !returned.load(Ordering::Relaxed) {
            return None;
        }
        let what = format!(
            "zone {} via upstream {addr}: the probe {name} came back to this proxy",
            z.label
        );
        tracing::error!(
            zone = %z.label,
            upstream = %addr,
            probe = %name,
            "forwarding loop detected: a query sent upstream came back to this proxy; not ready \
             until the upstream stops forwarding to us (change upstreams, then reload)"
        );
        Some(what)
    }
}
