//! A capture file read through a read-only memory map. The pcap reader dissects each packet
//! where the page cache holds it: `read` would first copy every byte into a buffer, and on a
//! walk-shaped capture that copy was the reader thread's largest single cost (benches/README.md,
//! session 35).
//!
//! Two things a plain `read` gives for free are kept by hand:
//! - **Bounded memory.** Mapped file pages count in the process's RSS once touched, so the
//!   pages behind the reader are let go of (`MADV_DONTNEED`, which for a file mapping only
//!   unmaps: the page cache keeps them) every few MiB.
//! - **A file that shrinks while read** (truncated by hand, or by `copytruncate`) must not
//!   fault: touching a mapped page past the end of a file raises SIGBUS. The file's size is
//!   looked up again before the reader is given each window of a few MiB, and the reader never
//!   sees past the last size found, so a shrunk file reads as one cut short there, as `read`
//!   would have it. (Shrinking inside the window just given, in the microseconds the reader
//!   spends on it, is the one case left to the kernel.)

use std::fs::File;
use std::io::{self, BufRead, Read};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How much of the file the reader is given at a time, with the size checked before each.
pub(super) const WINDOW: usize = 4 << 20;
/// A window is renewed once fewer bytes than this are left in it: the largest record the pcap
/// reader takes (a packet and its header) always fits, so no record but the file's last
/// straddles two windows (one that did would still be read, copied out by `read`).
const AHEAD: usize = super::pcap::MAX_PACKET + 64;
/// Pages behind the reader are let go of in steps of this much.
const RELEASE: usize = 8 << 20;

pub(crate) struct Mapped {
    file: File,
    base: *const u8,
    /// The mapping's length: the file's size when mapped.
    mapped: usize,
    /// How far the reader may go: the smaller of the mapping and the file's size last seen.
    end: usize,
    /// The current window's end (`<= end`).
    window_end: usize,
    pos: usize,
    /// Pages before this were let go of.
    released: usize,
    /// Bytes read, for progress (a relaxed store per `consume`: a plain write on x86).
    read: Arc<AtomicU64>,
}

// SAFETY: the mapping is read-only and owned by this value alone; nothing else refers to it.
unsafe impl Send for Mapped {}

impl Mapped {
    /// Map `file` whole when it is a regular, non-empty file that can be mapped; `None` if not
    /// (a pipe, a special file, a file system without mmap), for the caller to read it.
    pub(crate) fn new(file: File, read: Arc<AtomicU64>) -> Option<Mapped> {
        let meta = file.metadata().ok()?;
        let len = usize::try_from(meta.len()).ok()?;
        if !meta.is_file() || len == 0 {
            return None;
        }
        // SAFETY: a fresh read-only private mapping of a file we hold open; checked for failure.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let mut m = Mapped {
            file,
            base: base as *const u8,
            mapped: len,
            end: len,
            window_end: 0,
            pos: 0,
            released: 0,
            read,
        };
        m.renew_window();
        Some(m)
    }

    /// The file's first bytes (up to `n`), for telling its format.
    pub(crate) fn head(&self, n: usize) -> &[u8] {
        let end = self.window_end.min(n);
        // SAFETY: within the current window, which lies within the file's last seen size.
        unsafe { std::slice::from_raw_parts(self.base, end) }
    }

    /// Look the file's size up again and give the reader the next window, no further than it.
    fn renew_window(&mut self) {
        if let Ok(meta) = self.file.metadata() {
            self.end = self
                .end
                .min(usize::try_from(meta.len()).unwrap_or(usize::MAX));
        }
        self.window_end = self.end.min(self.pos.saturating_add(WINDOW)).max(self.pos);
        self.end = self.end.max(self.pos);
        // Start reading the window in from disk if it is not in the page cache yet; advice only.
        let page = page_size();
        let from = self.pos / page * page;
        // SAFETY: advice on a range inside our own mapping.
        unsafe {
            libc::madvise(
                self.base.add(from) as *mut libc::c_void,
                self.window_end - from,
                libc::MADV_WILLNEED,
            );
        }
    }
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
        if self.window_end - self.pos < AHEAD && self.window_end < self.end {
            self.renew_window();
        }
        // SAFETY: `pos..window_end` lies inside the mapping and inside the file's size as last
        // seen; the slice lives no longer than this borrow of `self`, which `consume` ends.
        Ok(unsafe {
            std::slice::from_raw_parts(self.base.add(self.pos), self.window_end - self.pos)
        })
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.window_end);
        self.read.store(self.pos as u64, Ordering::Relaxed);
        if self.pos - self.released >= RELEASE {
            let page = page_size();
            let upto = self.pos / page * page;
            // SAFETY: pages wholly behind the reader, inside our mapping; no slice handed out
            // refers to them any more (each lives only until the `consume` that passes it).
            unsafe {
                libc::madvise(
                    self.base.add(self.released) as *mut libc::c_void,
                    upto - self.released,
                    libc::MADV_DONTNEED,
                );
            }
            self.released = upto;
        }
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
        // SAFETY: our own mapping, unmapped once.
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.mapped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mapped(bytes: &[u8]) -> (tempfile::NamedTempFile, Mapped) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        let m = Mapped::new(File::open(f.path()).unwrap(), Arc::default()).unwrap();
        (f, m)
    }

    #[test]
    fn a_mapped_file_reads_as_its_bytes_across_windows_and_releases() {
        // Three and a half windows of a pattern no two windows share.
        let bytes: Vec<u8> = (0..WINDOW * 7 / 2)
            .map(|i| (i % 251) as u8 ^ (i / WINDOW) as u8)
            .collect();
        let (_f, mut m) = mapped(&bytes);
        let mut got = Vec::new();
        // Odd-sized reads, so that reads cross window and release boundaries.
        let mut buf = vec![0u8; 100_003];
        loop {
            let n = m.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got.len(), bytes.len());
        assert!(got == bytes, "the bytes read differ from the file's");
        assert_eq!(m.read.load(Ordering::Relaxed), bytes.len() as u64);
        assert!(m.released > 0, "nothing behind the reader was let go of");
    }

    #[test]
    fn a_file_truncated_while_mapped_ends_where_it_now_ends_without_a_fault() {
        let bytes = vec![7u8; WINDOW * 3];
        let (f, mut m) = mapped(&bytes);
        let n = m.fill_buf().unwrap().len();
        assert_eq!(n, WINDOW);
        m.consume(WINDOW - AHEAD);
        // The file shrinks to a window and a half while the reader is in its first window.
        let cut = WINDOW + WINDOW / 2;
        f.as_file().set_len(cut as u64).unwrap();
        let mut total = WINDOW - AHEAD;
        loop {
            let avail = m.fill_buf().unwrap();
            if avail.is_empty() {
                break;
            }
            // Touching every byte handed out: one past the file's end would be SIGBUS.
            assert!(avail.iter().all(|&b| b == 7));
            let k = avail.len();
            m.consume(k);
            total += k;
        }
        assert_eq!(total, cut);
    }

    #[test]
    fn an_empty_file_or_a_pipe_is_not_mapped() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(Mapped::new(File::open(f.path()).unwrap(), Arc::default()).is_none());
        let (r, _w) = std::io::pipe().unwrap();
        let fd: std::os::fd::OwnedFd = r.into();
        assert!(Mapped::new(File::from(fd), Arc::default()).is_none());
    }
}
