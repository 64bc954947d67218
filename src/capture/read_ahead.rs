//! A capture's bytes read on a thread of their own, a few chunks ahead of the reader that
//! dissects them. `read(2)` copies each byte out of the page cache (on a 592 MB pcap, 18% of
//! the dissecting thread's time in `perf`), and a compressed capture is inflated, before a
//! record can be looked at; here that work runs beside the dissecting instead of in front of
//! it. It stays `read(2)`: a file cut or rewritten while read ends or changes what is read,
//! as it would with a plain buffered read, and never faults (benches/README.md, session 35:
//! why captures are not memory-mapped).
//!
//! Memory is bounded: at most [`CHUNKS`] chunks of [`CHUNK`] bytes exist per capture (the one
//! being dissected among them), and the thread waits for one handed back before it reads on.
//! A read returns what the input has (a pipe from a live `tcpdump -w -` hands on each write
//! as it comes), so nothing waits for a chunk to fill. A non-blocking input with nothing yet
//! (`EAGAIN`) is waited for, as a blocking one would be, by [`Patient`], which `capture` puts
//! right over the raw input: below the format detection and the decompressors, which would
//! otherwise take the pause for an error (a zstd decoder wraps it as another kind).
//!
//! The input ends at its first read error, after the error is handed on: the readers count it
//! as the unreadable record it cut (retrying a read that failed loops on a cut gzip stream).
//! A panic on the thread (a decoder's bug) is raised again on the dissecting thread, where it
//! would have happened without this module.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;

/// Bytes a chunk holds: what the buffered reader before it held.
pub(crate) const CHUNK: usize = 256 * 1024;
/// Chunks per capture, in all: one being dissected, one being filled, two waiting.
pub(crate) const CHUNKS: usize = 4;

/// A chunk read (its buffer and how many bytes of it the read filled; 0 at the end of the
/// input), or the error that ended the reading.
type Filled = io::Result<(Vec<u8>, usize)>;

/// The dissecting side: the chunks the thread read, taken as `BufRead` takes a buffer.
pub(crate) struct ReadAhead {
    chunk: Vec<u8>,
    len: usize,
    pos: usize,
    filled: Receiver<Filled>,
    /// Chunks handed back to the thread to read into again.
    spent: SyncSender<Vec<u8>>,
    ended: bool,
    /// The thread, joined when it is gone without saying why (it panicked).
    thread: Option<std::thread::JoinHandle<()>>,
    /// Set when this side is dropped: what [`Patient`] waiting on a non-blocking input checks
    /// (a blocked send or receive learns it from its channel).
    gone: Arc<AtomicBool>,
}

/// The raw input, with `EAGAIN` waited out: a non-blocking input with nothing yet (a paused
/// `tcpdump -U -w -` behind a non-blocking stdin) is read again after [`WOULD_BLOCK_WAIT`],
/// until it has bytes, or until `gone` says nobody reads any more (then the `EAGAIN` is
/// returned, which ends the reading).
pub(crate) struct Patient {
    inner: Box<dyn Read + Send>,
    gone: Arc<AtomicBool>,
}

impl Patient {
    /// `input` waited on, and the flag that stops the waiting (give it to
    /// [`ReadAhead::spawn`], which sets it when dropped).
    pub(crate) fn new(input: Box<dyn Read + Send>) -> (Patient, Arc<AtomicBool>) {
        let gone = Arc::new(AtomicBool::new(false));
        let p = Patient {
            inner: input,
            gone: gone.clone(),
        };
        (p, gone)
    }
}

impl Read for Patient {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.gone.load(Ordering::Relaxed) {
                        return Err(e);
                    }
                    std::thread::sleep(WOULD_BLOCK_WAIT);
                }
                other => return other,
            }
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.gone.store(true, Ordering::Relaxed);
    }
}

impl ReadAhead {
    /// Start reading `input` on a thread of its own; `gone` is set when this is dropped (the
    /// flag of the [`Patient`] under `input`).
    pub(crate) fn spawn(
        input: Box<dyn Read + Send>,
        gone: Arc<AtomicBool>,
    ) -> io::Result<ReadAhead> {
        // Each channel can hold every chunk that exists, so no send ever blocks: the thread
        // waits only for a chunk handed back, the dissecting side only for one filled.
        let (filled_tx, filled) = sync_channel(CHUNKS);
        let (spent, spent_rx) = sync_channel(CHUNKS);
        let thread = std::thread::Builder::new()
            .name("capture-read".into())
            .spawn(move || read_chunks(input, filled_tx, spent_rx))?;
        Ok(ReadAhead {
            chunk: Vec::new(),
            len: 0,
            pos: 0,
            filled,
            spent,
            ended: false,
            thread: Some(thread),
            gone,
        })
    }
}

/// The thread: read into free chunks and hand them on until the input ends, fails, or the
/// dissecting side is gone (its receiver dropped).
fn read_chunks(
    mut input: Box<dyn Read + Send>,
    filled: SyncSender<Filled>,
    spent: Receiver<Vec<u8>>,
) {
    let mut made = 0;
    loop {
        let mut chunk = match spent.try_recv() {
            Ok(chunk) => chunk,
            Err(TryRecvError::Empty) if made < CHUNKS => {
                made += 1;
                vec![0; CHUNK]
            }
            Err(TryRecvError::Empty) => match spent.recv() {
                Ok(chunk) => chunk,
                Err(_) => return,
            },
            Err(TryRecvError::Disconnected) => return,
        };
        let read = loop {
            match input.read(&mut chunk) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let last = !matches!(read, Ok(n) if n > 0);
        if filled.send(read.map(|n| (chunk, n))).is_err() || last {
            return;
        }
    }
}

/// How long [`Patient`] waits before reading a non-blocking input again after `EAGAIN`.
const WOULD_BLOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

/// `BufRead`'s two methods, without `Read` (which `BufRead` requires): `capture::Input` is the
/// one `Read` over either kind of buffer.
impl ReadAhead {
    /// The bytes read and not yet consumed; empty at the end of the input.
    pub(crate) fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.len && !self.ended {
            let done = std::mem::take(&mut self.chunk);
            if done.capacity() > 0 {
                // Never full: at most `CHUNKS` chunks exist. An error means the thread is gone.
                let _ = self.spent.try_send(done);
            }
            (self.len, self.pos) = (0, 0);
            match self.filled.recv() {
                Ok(Ok((chunk, n))) => {
                    self.chunk = chunk;
                    self.len = n;
                    self.ended = n == 0;
                }
                Ok(Err(e)) => {
                    self.ended = true;
                    return Err(e);
                }
                Err(_) => {
                    // Gone before the end or an error: it panicked. Raise it here, as if
                    // the read had been made on this thread.
                    self.ended = true;
                    if let Some(Err(panic)) = self.thread.take().map(|t| t.join()) {
                        std::panic::resume_unwind(panic);
                    }
                    return Err(io::Error::other("the capture's read thread ended"));
                }
            }
        }
        Ok(&self.chunk[self.pos..self.len])
    }

    pub(crate) fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
    use std::time::Duration;

    /// Run `body` on a thread of its own: a hand-over that deadlocks fails the test instead of
    /// hanging the suite.
    fn within_a_minute(body: impl FnOnce() + Send + 'static) {
        let (done, wait) = channel();
        let t = std::thread::spawn(move || {
            body();
            let _ = done.send(());
        });
        match wait.recv_timeout(Duration::from_secs(60)) {
            Ok(()) => {}
            Err(RecvTimeoutError::Disconnected) => {
                std::panic::resume_unwind(t.join().expect_err("the body panicked"))
            }
            Err(RecvTimeoutError::Timeout) => panic!("the read-ahead hung"),
        }
    }

    /// An input of `data` read `step` bytes at a time at most, that says `EINTR` before every
    /// read and `EAGAIN` before every third, and tells `reads` of each read and the buffer it
    /// filled.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
        calls: usize,
        reads: Sender<usize>,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            match self.calls % 6 {
                1 | 3 | 5 => return Err(io::ErrorKind::Interrupted.into()),
                2 => return Err(io::ErrorKind::WouldBlock.into()),
                _ => {}
            }
            let n = self.step.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            let _ = self.reads.send(buf.as_ptr() as usize);
            Ok(n)
        }
    }

    /// `input` read ahead, `EAGAIN` waited out below it, as `capture` reads.
    fn spawn(input: impl Read + Send + 'static) -> ReadAhead {
        let (input, gone) = Patient::new(Box::new(input));
        ReadAhead::spawn(Box::new(input), gone).unwrap()
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Up to `limit` bytes (fewer at the end), taken 4,099 at most at a time, as a reader
    /// that straddles chunks does.
    fn read_up_to(r: &mut ReadAhead, limit: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < limit {
            let avail = r.fill_buf().unwrap();
            if avail.is_empty() {
                break;
            }
            let n = avail.len().min(4099).min(limit - got.len());
            got.extend_from_slice(&avail[..n]);
            r.consume(n);
        }
        got
    }

    fn read_all(r: &mut ReadAhead) -> Vec<u8> {
        read_up_to(r, usize::MAX)
    }

    #[test]
    fn every_byte_arrives_once_in_order_in_at_most_four_chunks() {
        within_a_minute(|| {
            // Many more reads than `CHUNKS`: chunks are handed back and read into again.
            let data = pattern(CHUNK * (CHUNKS + 3) + 12_345);
            let (reads, buffers) = channel();
            let input = Trickle {
                data: data.clone(),
                at: 0,
                step: CHUNK,
                calls: 0,
                reads,
            };
            let mut r = spawn(input);
            let got = read_all(&mut r);
            assert_eq!(got.len(), data.len());
            assert!(got == data, "bytes differ");
            assert_eq!(r.fill_buf().unwrap(), b"", "the end stays the end");
            let mut distinct: Vec<usize> = buffers.try_iter().collect();
            assert!(distinct.len() > CHUNKS + 2, "{} reads", distinct.len());
            distinct.sort();
            distinct.dedup();
            assert!(
                distinct.len() <= CHUNKS,
                "{} buffers read into",
                distinct.len()
            );
        });
    }

    #[test]
    fn chunks_are_read_ahead_while_one_is_dissected() {
        within_a_minute(|| {
            let (reads, read) = channel();
            let input = Trickle {
                data: pattern(CHUNK * 10),
                at: 0,
                step: CHUNK,
                calls: 0,
                reads,
            };
            let mut r = spawn(input);
            assert_eq!(r.fill_buf().unwrap().len(), CHUNK);
            // The first chunk held: the thread fills every other one, then waits.
            for _ in 0..CHUNKS {
                read.recv().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
            assert!(read.try_recv().is_err(), "read past the chunks that exist");
        });
    }

    #[test]
    fn a_pipe_s_small_reads_are_handed_on_as_they_come() {
        within_a_minute(|| {
            let data = pattern(3_000);
            let (reads, _read) = channel();
            let input = Trickle {
                data: data.clone(),
                at: 0,
                step: 37,
                calls: 0,
                reads,
            };
            let mut r = spawn(input);
            let first = r.fill_buf().unwrap().len();
            assert!(
                first <= 37,
                "a chunk is handed on after one read, not filled: {first}"
            );
            let got = read_all(&mut r);
            assert!(
                got == data,
                "bytes differ (EINTR and EAGAIN are not an end)"
            );
        });
    }

    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }

    #[test]
    fn a_read_error_reaches_the_reader_after_the_bytes_before_it() {
        within_a_minute(|| {
            let input = Cursor::new(pattern(1000)).chain(Failing);
            let mut r = spawn(input);
            assert_eq!(read_up_to(&mut r, 1000).len(), 1000);
            let e = r.fill_buf().unwrap_err();
            assert_eq!(e.to_string(), "disk on fire");
            assert_eq!(r.fill_buf().unwrap(), b"", "nothing after the error");
        });
    }

    struct Panicking;
    impl Read for Panicking {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            panic!("inflater bug");
        }
    }

    #[test]
    fn a_panic_on_the_thread_is_raised_on_the_reader_s() {
        within_a_minute(|| {
            let input = Cursor::new(pattern(1000)).chain(Panicking);
            let mut r = spawn(input);
            assert_eq!(read_up_to(&mut r, 1000).len(), 1000);
            let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ = r.fill_buf();
            }))
            .expect_err("the thread's panic, raised here");
            assert_eq!(panic.downcast_ref::<&str>(), Some(&"inflater bug"));
        });
    }

    #[test]
    fn the_thread_ends_when_the_reader_is_dropped_mid_input() {
        within_a_minute(|| {
            // An endless input, first with data, then waiting (`EAGAIN`): the thread must
            // stop and drop it either way once nobody reads.
            for waiting in [false, true] {
                struct Endless(Sender<()>, bool);
                impl Read for Endless {
                    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                        let _ = self.0.send(());
                        if self.1 {
                            return Err(io::ErrorKind::WouldBlock.into());
                        }
                        Ok(buf.len())
                    }
                }
                let (tx, rx) = channel();
                let mut r = spawn(Endless(tx, waiting));
                if !waiting {
                    r.fill_buf().unwrap();
                }
                rx.recv().unwrap();
                drop(r);
                // The thread drops the input (and with it the sender) as it returns.
                let mut reads = 0;
                loop {
                    match rx.recv_timeout(Duration::from_secs(10)) {
                        Ok(()) => reads += 1,
                        Err(RecvTimeoutError::Disconnected) => break,
                        Err(RecvTimeoutError::Timeout) => panic!("the thread went on"),
                    }
                    assert!(
                        waiting || reads <= CHUNKS,
                        "read on after the reader was dropped"
                    );
                }
            }
        });
    }
}
