//! A capture's bytes read on a thread of their own, a few chunks ahead of the reader that
//! dissects them. `read(2)` copies each byte out of the page cache (on a 592 MB pcap, 18% of
//! the dissecting thread's time in `perf`), and a compressed capture is inflated, before a
//! record can be looked at; here that work runs beside the dissecting instead of in front of
//! it. It stays `read(2)`: a file cut or rewritten while read ends or changes what is read,
//! as it would with a plain buffered read, and never faults (benches/README.md, session 35:
//! why captures are not memory-mapped).
//!
//! Memory is bounded: at most [`CHUNKS`] chunks of [`CHUNK`] bytes exist per capture, and
//! the thread waits for one handed back before it reads on. A read returns what the input
//! has (a pipe from a live `tcpdump -w -` hands on each write as it comes), so nothing waits
//! for a chunk to fill.

use std::io::{self, BufRead, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};

/// Bytes a chunk holds: what the buffered reader before it held.
pub(crate) const CHUNK: usize = 256 * 1024;
/// Chunks per capture: one being dissected, one being filled, two waiting.
pub(crate) const CHUNKS: usize = 4;

/// A chunk read (its buffer and how many bytes of it the read filled; 0 at the end of the
/// input), or the error that ended the reading.
type Filled = io::Result<(Vec<u8>, usize)>;

/// The dissecting side: a `BufRead` over the chunks the thread read.
pub(crate) struct ReadAhead {
    chunk: Vec<u8>,
    len: usize,
    pos: usize,
    filled: Receiver<Filled>,
    /// Chunks handed back to the thread to read into again.
    spent: SyncSender<Vec<u8>>,
    ended: bool,
}

impl ReadAhead {
    /// Start reading `input` on a thread of its own.
    pub(crate) fn spawn(input: Box<dyn Read + Send>) -> io::Result<ReadAhead> {
        // Every chunk can be waiting at once on either side: neither send ever blocks on
        // capacity but the thread's, which waits for the dissecting side by design.
        let (filled_tx, filled) = sync_channel(CHUNKS);
        let (spent, spent_rx) = sync_channel(CHUNKS);
        std::thread::Builder::new()
            .name("capture-read".into())
            .spawn(move || read_chunks(input, filled_tx, spent_rx))?;
        Ok(ReadAhead {
            chunk: Vec::new(),
            len: 0,
            pos: 0,
            filled,
            spent,
            ended: false,
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

impl BufRead for ReadAhead {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
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
                    self.ended = true;
                    return Err(io::Error::other("the capture's read thread ended"));
                }
            }
        }
        Ok(&self.chunk[self.pos..self.len])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.len);
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Reads of odd sizes and an input that hands over a few bytes at a time, as a pipe does.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
        interrupt: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = self.step.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn every_byte_arrives_once_in_order_across_chunks() {
        // More than `CHUNKS` chunks, so chunks are handed back and read into again.
        let data = pattern(CHUNK * (CHUNKS + 3) + 12_345);
        let mut r = ReadAhead::spawn(Box::new(Cursor::new(data.clone()))).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0; 4099];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got.len(), data.len());
        assert!(got == data, "bytes differ");
        assert_eq!(r.fill_buf().unwrap(), b"", "the end stays the end");
    }

    #[test]
    fn a_pipe_s_small_reads_are_handed_on_as_they_come() {
        let data = pattern(10_000);
        let input = Trickle {
            data: data.clone(),
            at: 0,
            step: 37,
            interrupt: false,
        };
        let mut r = ReadAhead::spawn(Box::new(input)).unwrap();
        let first = r.fill_buf().unwrap().len();
        assert!(
            first <= 37,
            "a chunk is handed on after one read, not filled: {first}"
        );
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert!(got == data, "bytes differ (EINTR is retried, not an end)");
    }

    #[test]
    fn a_read_error_reaches_the_reader_after_the_bytes_before_it() {
        let input = Cursor::new(pattern(1000)).chain(Failing);
        let mut r = ReadAhead::spawn(Box::new(input)).unwrap();
        let mut got = vec![0; 1000];
        r.read_exact(&mut got).unwrap();
        let e = r.fill_buf().unwrap_err();
        assert_eq!(e.to_string(), "disk on fire");
        assert_eq!(r.fill_buf().unwrap(), b"", "nothing after the error");
    }

    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }

    #[test]
    fn the_thread_ends_when_the_reader_is_dropped_mid_input() {
        // An endless input: the thread must stop at its next chunk once nobody reads.
        let (tx, rx) = std::sync::mpsc::channel();
        struct Endless(std::sync::mpsc::Sender<()>);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let _ = self.0.send(());
                Ok(buf.len())
            }
        }
        impl Drop for Endless {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        let mut r = ReadAhead::spawn(Box::new(Endless(tx))).unwrap();
        r.fill_buf().unwrap();
        drop(r);
        // The thread reads at most the chunks that exist, then drops the input as it returns.
        let mut reads = 0;
        while rx.recv_timeout(std::time::Duration::from_secs(10)).is_ok() {
            reads += 1;
            assert!(
                reads <= CHUNKS + 2,
                "the thread read on after the reader was dropped"
            );
        }
    }
}
