//! What the proxy's threads ask of the kernel's scheduler: a UDP listener a short slice, so it
//! runs promptly when it wakes (`for_listener`); the tracker `SCHED_BATCH`, so its wake-ups
//! do not preempt a listener (`batch`).
//!
//! The slice: since Linux 6.12 (EEVDF) a SCHED_OTHER thread may ask for a shorter time slice
//! through `sched_attr::sched_runtime`, and a waking thread whose slice is shorter than the
//! running thread's preempts it at once instead of waiting for that slice to end (up to a few
//! milliseconds). A listener wakes for each burst of queries and runs briefly: at 10k
//! queries/s its turn took 30 µs at the median and 160 µs at the 90th percentile (`perf sched
//! timehist`), so a query that wakes it need not wait behind the tracker's turn on that core.
//! The measured effect there: the listener's wait from wake-up to running, 14 µs at the median
//! before, 4 µs after. Between cgroups the kernel compares the groups, not their threads, so
//! whether the listener also cuts short another pod's thread depends on the kernel.
//!
//! The share of CPU a thread gets is its weight (nice), not its slice: a short slice only cuts
//! the CPU into shorter turns while threads compete. Only the listeners ask (the runtime's
//! threads also build reports and run blocking jobs). Older kernels ignore the value, and a
//! seccomp profile that forbids `sched_setattr` leaves the default slice: answers are then
//! as before, only sometimes later.

use std::time::Duration;

/// The slice a listener asks for (the kernel's bounds are 0.1 to 100 ms).
pub const LISTENER_SLICE: Duration = Duration::from_micros(200);

/// `struct sched_attr` of sched_setattr(2), its first version (`SCHED_ATTR_SIZE_VER0`).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

const SCHED_ATTR_SIZE_VER0: u32 = 48;
const _: () = assert!(std::mem::size_of::<SchedAttr>() == SCHED_ATTR_SIZE_VER0 as usize);
/// The one flag kept from what the thread had (an operator's `chrt -R`).
const SCHED_FLAG_RESET_ON_FORK: u64 = 1;

/// The calling thread's scheduling attributes.
fn current() -> Option<SchedAttr> {
    let mut attr = SchedAttr::default();
    // SAFETY: the kernel writes at most `size` bytes into `attr`, which we own; tid 0 is the
    // calling thread.
    let got = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0 as libc::c_long,
            &mut attr as *mut SchedAttr,
            SCHED_ATTR_SIZE_VER0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    (got == 0).then_some(attr)
}

/// Ask for `slice` as the calling thread's time slice, keeping its policy and nice value.
/// True when the kernel reports the slice back as asked: false on kernels before 6.12 (which
/// take the call and ignore the value), under a seccomp profile that refuses it, and for a
/// thread not under SCHED_OTHER (an operator's `chrt`), which is left alone.
pub fn request(slice: Duration) -> bool {
    let Some(mut attr) = current() else {
        return false;
    };
    if attr.policy != libc::SCHED_OTHER as u32 {
        return false;
    }
    let want = slice.as_nanos().min(u64::MAX as u128) as u64;
    attr.size = SCHED_ATTR_SIZE_VER0;
    attr.flags &= SCHED_FLAG_RESET_ON_FORK;
    attr.runtime = want;
    // SAFETY: `attr` is a valid sched_attr of the size it declares; tid 0 is the calling thread.
    let set = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0 as libc::c_long,
            &attr as *const SchedAttr,
            0 as libc::c_long,
        )
    };
    set == 0 && current().is_some_and(|now| now.runtime == want)
}

/// [`request`] with [`LISTENER_SLICE`]; logs once per process when the kernel does not take it.
pub fn for_listener() {
    static REFUSED: std::sync::Once = std::sync::Once::new();
    if !request(LISTENER_SLICE) {
        REFUSED.call_once(|| {
            tracing::debug!(
                "the kernel did not take a short scheduler slice for the UDP listeners \
                 (sched_setattr needs Linux 6.12+); they keep the default"
            )
        });
    }
}

/// Run the calling thread under `SCHED_BATCH` (sched(7)): the same CPU share as any thread,
/// but its wake-ups (the poll timer) do not preempt a listener thread answering on the same
/// core, so the tracker adds less to the answers' latency. A lower priority (nice) is not an
/// option: under a CPU limit the tracker then starves and drops events (tests/overload.rs).
pub fn batch() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread. Failure (a seccomp
    // profile that forbids it) leaves the default policy, which is only slower.
    unsafe {
        libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel_at_least(major: u32, minor: u32) -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
        let maj: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let min: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        (maj, min) >= (major, minor)
    }

    #[test]
    fn a_listener_gets_the_short_slice_and_keeps_its_nice_value() {
        std::thread::spawn(|| {
            let before = current().expect("sched_getattr");
            let accepted = request(LISTENER_SLICE);
            let after = current().expect("sched_getattr");
            assert_eq!(before.nice, after.nice, "the nice value changed");
            assert_eq!(before.policy, after.policy, "the policy changed");
            if !kernel_at_least(6, 12) || before.policy != libc::SCHED_OTHER as u32 {
                assert!(!accepted, "a slice reported taken where it cannot be");
                eprintln!(
                    "SKIPPED the slice itself: kernel before 6.12 or the test thread not \
                     under SCHED_OTHER (policy {})",
                    before.policy
                );
                return;
            }
            assert!(accepted, "a SCHED_OTHER thread's slice was not taken");
            assert_eq!(after.runtime, LISTENER_SLICE.as_nanos() as u64);
        })
        .join()
        .unwrap();
    }
}
