//! What the proxy's threads ask of the kernel's scheduler: the tracker runs under
//! `SCHED_BATCH` (`batch`), so its wake-ups do not preempt a listener.
//!
//! The UDP listeners keep the default policy and slice. Session 22 gave them a 0.2 ms EEVDF
//! slice (`sched_setattr`'s `sched_runtime`, Linux 6.12+: a waking thread with a shorter slice
//! preempts the running one). Measured at 10k queries/s of cached answers against the same
//! build without it (benches/README.md, latency section, session 24): the proxy's own time per
//! answer (query to answer on the wire) fell from 23 to 10 µs at the median, but the listener
//! spent 45% more CPU (1.60 s against 1.10 s per 100,000 answers: every query preempted
//! whatever ran on the core), the clients' median latency rose by 7-9 µs, and their p99 and
//! p99.9 did not move beyond the noise. CPU per answer is what a node pays, so it went.

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
