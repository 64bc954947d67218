//! A capture file read through a read-only memory map. The pcap reader dissects each packet
//! where the page cache holds it: `read` would first copy every byte into a buffer, and on a
//! walk-shaped capture that copy was the reader thread's largest single cost (benches/README.md,
//! session 35).
//!
//! A mapping has a failure `read` does not: touching a mapped page past the end of a file that
//! was cut (copytruncate, `tcpdump -w` run again on the same name, `cp` over it) raises SIGBUS,
//! where `read` just returns less. So a file is mapped only under a read lease
//! (`F_SETLEASE`, fcntl(2)):
//! - The kernel grants one only while no one has the file open for writing: a capture still
//!   being written is read as a stream, and followed as it grows.
//! - Anyone who then opens it for writing or truncates it waits (up to
//!   `/proc/sys/fs/lease-break-time`, 45 s) while the kernel signals us (SIGIO). The reader
//!   looks for that signal before each record it is given and asks the kernel whether the
//!   breaking lease is its own: if so, it stops using the mapping, lets go of it and of the
//!   lease, and reads on from the same byte with `read`, which sees the cut as the stream path
//!   does.
//! - Only local file systems (ext4, xfs, btrfs, tmpfs, overlayfs, ...): a network file system's
//!   other clients do not break a local lease, and its read errors would be SIGBUS too.
//!
//! What is left is a disk's read error under the mapping, or a lease the kernel broke itself
//! after the break time (ndots stopped for 45 s). Those end the process with a message that
//! says so (a SIGBUS handler for addresses in our mappings), not with "Bus error".
//!
//! Memory stays bounded: mapped file pages count in the process's RSS once touched, so the
//! pages behind the reader are let go of (`MADV_DONTNEED`, which for a file mapping only
//! unmaps: the page cache keeps them) every MiB.

use std::fs::File;
use std::io::{self, BufRead, Read, Seek};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Once};

/// How much of the file the reader is given at a time.
pub(super) const WINDOW: usize = 4 << 20;
/// A window is renewed once fewer bytes than this are left in it: the largest record the pcap
/// reader takes (a packet and its header) always fits, so no record but the file's last
/// straddles two windows (one that did would still be read, copied out by `read`).
const AHEAD: usize = super::pcap::MAX_PACKET + 64;
/// Pages behind the reader are let go of in steps of this much: at most this much of the file
/// is resident in the process (a `read` buffer was 256 KiB), at one `madvise` a MiB.
const RELEASE: usize = 1 << 20;
/// Mappings live at once (a merge opens at most 16 captures); past this, files are read.
const SLOTS: usize = 32;
/// Read buffer once a lease was broken.
const READ_BUF: usize = 256 << 10;

/// Local file systems (statfs(2) `f_type`): ext2/3/4, xfs, btrfs, tmpfs, overlayfs, f2fs,
/// zfs, bcachefs.
const LOCAL_FILE_SYSTEMS: [i64; 8] = [
    0xEF53,
    0x5846_5342,
    0x9123_683E,
    0x0102_1994,
    0x794C_7630,
    0xF2F5_2010,
    0x2FC1_2FC1,
    0xCA45_1A4E,
];

/// Lease breaks signalled so far (SIGIO, for any of our leases: each mapping then asks the
/// kernel whether its own is breaking).
static LEASE_BREAKS: AtomicU64 = AtomicU64::new(0);
/// The live mappings' (start, length), for the SIGBUS handler; (0, 0) is a free slot.
static LIVE: [(AtomicUsize, AtomicUsize); SLOTS] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; SLOTS];

extern "C" fn on_lease_break(_: libc::c_int) {
    LEASE_BREAKS.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn on_bus_error(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let ours = LIVE.iter().any(|(start, len)| {
        let (s, l) = (start.load(Ordering::SeqCst), len.load(Ordering::SeqCst));
        l > 0 && addr >= s && addr - s < l
    });
    if ours {
        const MSG: &[u8] =
            b"\nndots: a capture file could not be read through its memory map (a read \
error on its disk, or the file was cut after the lease on it ran out): nothing of it was lost \
but this run; read it as a stream instead, e.g. `ndots analyze - < FILE`\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
            libc::_exit(1);
        }
    }
    // Not ours: the handler there was before (Rust's runtime has one for stack overflows), or
    // the default action, when the faulting access runs again.
    // SAFETY: sigaction(2) is async-signal-safe; the old action was written once, before this
    // handler was installed, and is only read after.
    unsafe {
        let old = &raw const PREVIOUS_BUS_ACTION;
        if libc::sigaction(sig, (*old).as_ptr(), std::ptr::null_mut()) != 0 {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// The SIGBUS action before ours, put back for a fault outside our mappings.
static mut PREVIOUS_BUS_ACTION: std::mem::MaybeUninit<libc::sigaction> =
    std::mem::MaybeUninit::zeroed();

/// Install the SIGIO (lease break) and SIGBUS handlers once; false if the kernel refused.
fn handlers_installed() -> bool {
    static ONCE: Once = Once::new();
    static OK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    ONCE.call_once(|| {
        // SAFETY: sigaction with zeroed masks and handlers that only touch atomics, or write
        // and exit.
        let ok = unsafe {
            let mut io: libc::sigaction = std::mem::zeroed();
            io.sa_sigaction = on_lease_break as *const () as usize;
            io.sa_flags = libc::SA_RESTART;
            let mut bus: libc::sigaction = std::mem::zeroed();
            bus.sa_sigaction = on_bus_error as *const () as usize;
            bus.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
            let previous = (&raw mut PREVIOUS_BUS_ACTION).cast::<libc::sigaction>();
            libc::sigaction(libc::SIGIO, &io, std::ptr::null_mut()) == 0
                && libc::sigaction(libc::SIGBUS, &bus, previous) == 0
        };
        OK.store(ok, Ordering::SeqCst);
    });
    OK.load(Ordering::SeqCst)
}

/// A read lease on `file` (read-only fd), signalled to this process; false if not granted.
fn take_lease(file: &File) -> bool {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl and fstatfs on an fd we own, with a zeroed statfs to fill.
    unsafe {
        let mut fs: libc::statfs = std::mem::zeroed();
        if libc::fstatfs(fd, &mut fs) != 0 || !LOCAL_FILE_SYSTEMS.contains(&(fs.f_type as i64)) {
            return false;
        }
        libc::fcntl(fd, libc::F_SETOWN, libc::getpid()) == 0
            && libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) == 0
    }
}

pub(crate) struct Mapped {
    file: File,
    /// The mapping, until a lease break ends it.
    map: Option<Map>,
    /// After a lease break: `read` into this buffer, `lo..hi` not yet consumed.
    buf: Vec<u8>,
    lo: usize,
    hi: usize,
    /// The file's size when mapped; no byte past it is read.
    len: usize,
    pos: usize,
    /// Bytes read, for progress (a relaxed store per `consume`: a plain write on x86).
    read: Arc<AtomicU64>,
}

struct Map {
    base: *const u8,
    slot: usize,
    /// `LEASE_BREAKS` when this lease was last seen whole.
    breaks: u64,
    /// The current window's end.
    window_end: usize,
    /// Pages before this were let go of.
    released: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone; nothing else refers to it.
unsafe impl Send for Mapped {}

impl Mapped {
    /// Map `file` whole when it is a regular, non-empty file on a local file system that no
    /// one has open for writing (a read lease granted); `None` if not, for the caller to read
    /// it as a stream.
    pub(crate) fn new(file: File, read: Arc<AtomicU64>) -> Option<Mapped> {
        let meta = file.metadata().ok()?;
        let len = usize::try_from(meta.len()).ok()?;
        if !meta.is_file() || len == 0 || !handlers_installed() {
            return None;
        }
        let breaks = LEASE_BREAKS.load(Ordering::SeqCst);
        if !take_lease(&file) {
            return None;
        }
        let Some(slot) = LIVE.iter().position(|(start, _)| {
            start
                .compare_exchange(0, usize::MAX, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        }) else {
            release_lease(&file);
            return None;
        };
        // The size again, under the lease: no one may cut it now without our leave.
        let len = file
            .metadata()
            .ok()
            .and_then(|m| usize::try_from(m.len()).ok())
            .map_or(0, |now| now.min(len));
        let base = if len == 0 {
            libc::MAP_FAILED
        } else {
            // SAFETY: a fresh read-only private mapping of a file we hold open, checked below.
            unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    file.as_raw_fd(),
                    0,
                )
            }
        };
        if base == libc::MAP_FAILED {
            LIVE[slot].0.store(0, Ordering::SeqCst);
            release_lease(&file);
            return None;
        }
        LIVE[slot].1.store(len, Ordering::SeqCst);
        LIVE[slot].0.store(base as usize, Ordering::SeqCst);
        let mut m = Mapped {
            file,
            map: Some(Map {
                base: base as *const u8,
                slot,
                breaks,
                window_end: 0,
                released: 0,
            }),
            buf: Vec::new(),
            lo: 0,
            hi: 0,
            len,
            pos: 0,
            read,
        };
        m.renew_window();
        Some(m)
    }

    /// The file's first bytes (up to `n`), for telling its format.
    pub(crate) fn head(&self, n: usize) -> &[u8] {
        match &self.map {
            // SAFETY: within the first window, inside the mapping, under the lease.
            Some(map) => unsafe { std::slice::from_raw_parts(map.base, map.window_end.min(n)) },
            None => &[],
        }
    }

    fn renew_window(&mut self) {
        let Some(map) = &mut self.map else { return };
        map.window_end = self.len.min(self.pos.saturating_add(WINDOW));
        // Start reading the window in from disk if it is not in the page cache yet; advice only.
        let page = page_size();
        let from = self.pos / page * page;
        // SAFETY: advice on a range inside our own mapping.
        unsafe {
            libc::madvise(
                map.base.add(from) as *mut libc::c_void,
                map.window_end - from,
                libc::MADV_WILLNEED,
            );
        }
    }

    /// A lease break was signalled: stop using the mapping, let go of it and of the lease, and
    /// read on from the same byte. No slice of the mapping is held (each lives only until the
    /// `consume` that passes it).
    fn end_mapping(&mut self) {
        let Some(map) = self.map.take() else { return };
        // SAFETY: our own mapping, unmapped once, with no slice of it alive.
        unsafe { libc::munmap(map.base as *mut libc::c_void, self.len) };
        LIVE[map.slot].1.store(0, Ordering::SeqCst);
        LIVE[map.slot].0.store(0, Ordering::SeqCst);
        release_lease(&self.file);
        if self
            .file
            .seek(io::SeekFrom::Start(self.pos as u64))
            .is_err()
        {
            self.len = self.pos; // cannot read on: the input ends here
        }
        self.buf = vec![0; READ_BUF];
    }

    /// Whether this value still reads through its mapping (tests).
    #[cfg(test)]
    fn is_mapped(&self) -> bool {
        self.map.is_some()
    }
}

fn release_lease(file: &File) {
    // SAFETY: fcntl on an fd we own.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

impl BufRead for Mapped {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if let Some(map) = &mut self.map {
            let breaks = LEASE_BREAKS.load(Ordering::SeqCst);
            if breaks != map.breaks {
                // A lease of ours is breaking: this one, if the kernel no longer reports it
                // whole (while it breaks, F_GETLEASE gives the type it is breaking to).
                // SAFETY: fcntl on an fd we own.
                let lease = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_GETLEASE) };
                if lease == libc::F_RDLCK {
                    map.breaks = breaks;
                }
            }
            if breaks != map.breaks {
                self.end_mapping();
            } else {
                if map.window_end - self.pos < AHEAD && map.window_end < self.len {
                    self.renew_window();
                }
                let map = self.map.as_ref().expect("mapped");
                // SAFETY: `pos..window_end` lies inside the mapping of a file no one can cut
                // while we hold the lease (checked just above); the slice lives no longer than
                // this borrow of `self`, which `consume` ends.
                return Ok(unsafe {
                    std::slice::from_raw_parts(map.base.add(self.pos), map.window_end - self.pos)
                });
            }
        }
        if self.lo == self.hi && self.pos < self.len {
            // No further than the size when mapped, as the mapping would have read.
            let want = READ_BUF.min(self.len - self.pos);
            let got = loop {
                match self.file.read(&mut self.buf[..want]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r?,
                }
            };
            self.lo = 0;
            self.hi = got;
            if got == 0 {
                self.len = self.pos; // cut: the input ends here
            }
        }
        Ok(&self.buf[self.lo..self.hi])
    }

    fn consume(&mut self, amt: usize) {
        match &mut self.map {
            Some(map) => {
                debug_assert!(amt <= map.window_end - self.pos);
                self.pos = self.pos.saturating_add(amt).min(map.window_end);
                if self.pos - map.released >= RELEASE {
                    let page = page_size();
                    let upto = self.pos / page * page;
                    // SAFETY: pages wholly behind the reader, inside our mapping; no slice
                    // handed out refers to them any more.
                    let rc = unsafe {
                        libc::madvise(
                            map.base.add(map.released) as *mut libc::c_void,
                            upto - map.released,
                            libc::MADV_DONTNEED,
                        )
                    };
                    debug_assert_eq!(rc, 0, "{}", io::Error::last_os_error());
                    map.released = upto;
                }
            }
            None => {
                let amt = amt.min(self.hi - self.lo);
                self.lo += amt;
                self.pos += amt;
            }
        }
        self.read.store(self.pos as u64, Ordering::Relaxed);
    }
}

impl Read for Mapped {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if let Some(map) = self.map.take() {
            // SAFETY: our own mapping, unmapped once.
            unsafe { libc::munmap(map.base as *mut libc::c_void, self.len) };
            LIVE[map.slot].1.store(0, Ordering::SeqCst);
            LIVE[map.slot].0.store(0, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    /// `bytes` in a file closed for writing (a lease is refused while a writer has it open).
    fn file_of(bytes: &[u8]) -> tempfile::TempPath {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        f.into_temp_path()
    }

    fn mapped(path: &std::path::Path) -> Mapped {
        let m = Mapped::new(File::open(path).unwrap(), Arc::default());
        m.expect("a local file no one writes is mapped")
    }

    /// Every byte the reader is given, in record-sized steps of up to `step` bytes.
    fn read_all(m: &mut Mapped, step: usize) -> Vec<u8> {
        let mut got = Vec::new();
        loop {
            let avail = m.fill_buf().unwrap();
            if avail.is_empty() {
                return got;
            }
            let k = avail.len().min(step);
            got.extend_from_slice(&avail[..k]);
            m.consume(k);
        }
    }

    /// The mapping's resident size (kB), from /proc/self/smaps.
    fn resident_kb(m: &Mapped) -> usize {
        let start = format!("{:x}-", m.map.as_ref().unwrap().base as usize);
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
        lines
            .find_map(|l| l.strip_prefix("Rss:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .expect("the mapping in smaps")
    }

    #[test]
    fn a_mapped_file_reads_as_its_bytes_across_windows_and_releases() {
        // Three and a half windows of a pattern no two windows share.
        let bytes: Vec<u8> = (0..WINDOW * 7 / 2)
            .map(|i| (i % 251) as u8 ^ (i / WINDOW) as u8)
            .collect();
        let path = file_of(&bytes);
        let mut m = mapped(&path);
        // Odd-sized reads, so that reads cross window and release boundaries.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 100_003];
        loop {
            let n = m.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.len() > WINDOW * 3 {
                // The pages behind the reader were let go of: far less than read is resident.
                let kb = resident_kb(&m);
                assert!(kb * 1024 <= RELEASE + WINDOW + AHEAD, "{kb} kB resident");
            }
        }
        assert!(got == bytes, "the bytes read differ from the file's");
        assert_eq!(m.read.load(Ordering::Relaxed), bytes.len() as u64);
    }

    /// The pcap reader asks for whole records: one of up to the largest it takes never
    /// straddles a window (which would copy it), but the file's last.
    #[test]
    fn a_record_never_straddles_two_windows() {
        let path = file_of(&vec![5u8; WINDOW * 3 + 12_345]);
        let mut m = mapped(&path);
        let mut pos = 0usize;
        let mut rng = 7u64;
        loop {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let record = 16 + (rng >> 33) as usize % (super::super::pcap::MAX_PACKET + 1);
            let avail = m.fill_buf().unwrap().len();
            if avail < record {
                assert_eq!(
                    pos + avail,
                    WINDOW * 3 + 12_345,
                    "a record straddles at {pos}"
                );
                break;
            }
            m.consume(record);
            pos += record;
        }
    }

    /// A writer that appends waits for the lease (the reader leaves the mapping, or lets go of
    /// the file at its end); what is read ends at the size when mapped, as the mapping would.
    #[test]
    fn a_file_that_grows_is_read_to_its_size_when_mapped() {
        let path = file_of(&vec![1u8; WINDOW + 100]);
        let mut m = mapped(&path);
        let appender = {
            let path = path.to_path_buf();
            std::thread::spawn(move || {
                let mut w = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                w.write_all(&vec![2u8; WINDOW * 2]).unwrap();
            })
        };
        let got = read_all(&mut m, 70_000);
        drop(m);
        appender.join().unwrap();
        assert_eq!(got.len(), WINDOW + 100);
        assert!(got.iter().all(|&b| b == 1));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() as usize,
            WINDOW * 3 + 100
        );
    }

    /// A file cut to nothing while read inside a window (copytruncate, `tcpdump -w` on the same
    /// name): the truncation waits for the lease, the reader leaves the mapping and reads on,
    /// and ends where the file now ends, without a fault. Run twice: a cut to nothing and a
    /// cut inside the window being read.
    #[test]
    fn a_file_cut_while_mapped_ends_where_it_now_ends_without_a_fault() {
        for cut in [0, WINDOW / 2] {
            let path = file_of(&vec![7u8; WINDOW * 3]);
            let mut m = mapped(&path);
            let _ = m.fill_buf().unwrap();
            m.consume(WINDOW / 4);
            let cutter = {
                let path = path.to_path_buf();
                // Opening for writing breaks the lease: it waits until the reader lets go.
                std::thread::spawn(move || {
                    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                    f.set_len(cut as u64).unwrap();
                })
            };
            // Reading on: the signal comes, the mapping ends, the cut goes through.
            let mut cutter = Some(cutter);
            let mut total = WINDOW / 4;
            let mut switched = None;
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let (n, sevens) = {
                    let avail = m.fill_buf().unwrap();
                    let n = avail.len().min(4096);
                    (n, avail[..n].iter().all(|&b| b == 7))
                };
                assert!(
                    sevens,
                    "cut {cut}: bytes that are not the file's at {total}"
                );
                if switched.is_none() && !m.is_mapped() {
                    // Left the mapping at `total` (and may have read on before the cut).
                    switched = Some(total);
                    cutter.take().unwrap().join().unwrap();
                }
                if n == 0 {
                    break;
                }
                m.consume(n);
                total += n;
                if m.is_mapped() {
                    // Slowly, so that the signal arrives while the mapping is still read.
                    std::thread::sleep(Duration::from_micros(200));
                    assert!(
                        std::time::Instant::now() < deadline,
                        "no lease break signalled"
                    );
                }
            }
            let at = switched.expect("the mapping was left").max(cut);
            assert!(
                total >= at && total <= at + READ_BUF,
                "cut {cut}: read {total}, left the mapping at {switched:?}"
            );
        }
    }

    /// What no lease can prevent (a disk's read error; a lease the kernel broke itself after
    /// the break time) faults under the mapping: the process ends with exit code 1 and a
    /// message that says what happened, not "Bus error". Simulated in a child process: the
    /// lease let go of behind the reader's back, the file cut, the mapping touched.
    #[test]
    fn a_fault_under_the_mapping_ends_the_process_with_a_message() {
        const CHILD: &str = "NDOTS_MAPPED_FAULT_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "capture::mapped::tests::a_fault_under_the_mapping_ends_the_process_with_a_message",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{:?}: {stderr}", out.status);
            assert!(
                stderr.contains("could not be read through its memory map"),
                "{stderr}"
            );
            return;
        }
        let path = file_of(&vec![3u8; WINDOW]);
        let mut m = mapped(&path);
        release_lease(&m.file);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        let touched: u64 = m.fill_buf().unwrap().iter().map(|&b| b as u64).sum();
        panic!("the mapping of a cut file was read without a fault ({touched})");
    }

    #[test]
    fn a_file_open_for_writing_an_empty_file_or_a_pipe_is_not_mapped() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        assert!(Mapped::new(File::open(f.path()).unwrap(), Arc::default()).is_none());
        f.write_all(b"written").unwrap();
        // `f` is still open for writing: no lease, so a stream (which follows it as it grows).
        assert!(Mapped::new(File::open(f.path()).unwrap(), Arc::default()).is_none());
        let (r, _w) = std::io::pipe().unwrap();
        let fd: std::os::fd::OwnedFd = r.into();
        assert!(Mapped::new(File::from(fd), Arc::default()).is_none());
    }
}
