//! What the proxy's threads ask of the kernel's scheduler: the tracker runs under
//! `SCHED_BATCH` (`batch`), so its wake-ups do not preempt a listener.
//!
//! The UDP listeners keep the default policy and slice. Session 22 gave them a 0.2 ms EEVDF
//! slice (`sched_setattr`'s `sched_runtime`, Linux 6.12+: a waking thread with a shorter slice
//! preempts the running one). At 10k queries/s of cached answers, against the same code
//! without it (benches/README.md, latency section, session 24): the listener spent 44% more
//! CPU (1.55 s against 1.08 s per 100,000 answers, `benches/threads_at_rate.sh`: every query
//! preempted whatever ran on the core), the proxy's own median time per answer (query to answer
//! on the wire) fell from 20-22 to 10-11 µs, the clients' median rose from 39-40 to 50-51 µs,
//! and their p99 and p99.9 did not move beyond the noise. CPU per answer is what a node pays.

/// Run the calling thread under `SCHED_BATCH` (sched(7)): the same CPU share as any thread,
/// but its wake-ups (the poll timer) do not preempt a listener thread answering on the same
/// core, so the tracker adds less to the answers' latency. A lower priority (nice) is not an
/// option: under a CPU limit the tracker then starves and drops events (tests/overload.rs).
/// Tested on the tracker's own thread (`amplify::service`'s tests).
pub fn batch() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread. Failure (a seccomp
    // profile that forbids it) leaves the default policy, which is only slower.
    unsafe {
        libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
    }
}
