//! Several captures read as one stream in time order: each CoreDNS replica's log of the same
//! minutes is its own file (`kubectl logs` of each pod), and a lookup's queries can be in two
//! of them (kube-proxy picks a replica per client socket, and stubs such as musl use a new
//! socket per query). Read one after another, the second file's events came a whole file
//! behind the first's, and every lookup split across them was read as two (28% more lookups
//! on two replicas' logs of synthetic walks).
//!
//! Each capture is in time order to within [`Reorder`](super::Reorder)'s window; the merge
//! hands on the event with the earliest time among the captures' next ones, so the stream out
//! is in that order too. A capture that starts after the others' events so far is opened only
//! when their time reaches its first event: rotated files (`tcpdump -G`, given in any order,
//! `file10` before `file2`) are read one or two at a time, not all open at once. Copies of one
//! packet in two captures (two nodes' pcaps of a query that crossed them) are not told apart
//! here: each capture's pairing drops its own copies only.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Ahead, Capture, Format, OpenError, Stats, Unreadable};
use crate::event::QueryEvent;

/// A capture opened: its reader, its size when it is a regular file, and the bytes read of it.
pub(super) struct Opened {
    pub cap: Capture,
    /// How its bytes are read, as [`Want::ahead`] chose for it.
    pub ahead: Ahead,
    pub size: Option<u64>,
    pub read: Arc<AtomicU64>,
}

/// How the merge asks for a capture to be opened.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Want {
    /// To be read.
    Read(Ahead),
    /// To find its first event: a regular file is then closed until its time comes, so it is
    /// read through a buffer (a thread would read and inflate up to a megabyte of it for
    /// nothing); what cannot be opened again (a pipe) is kept open and read as `kept` says.
    Probe { kept: Ahead },
}

impl Want {
    /// How a capture is read, by whether it can be opened again (a regular file).
    pub(super) fn ahead(self, reopenable: bool) -> Ahead {
        match self {
            Want::Read(ahead) => ahead,
            Want::Probe { .. } if reopenable => Ahead::Buffer,
            Want::Probe { kept } => kept,
        }
    }
}

/// What the merge hands on, in order.
pub(super) enum Step {
    Event(QueryEvent),
    /// Capture `index` (as given) holds an unreadable record: its first only (what `--strict`
    /// stops at). Every one is counted in its stats, handed on with `Finished`; handing on
    /// each, the merge held all those before a capture's next event, 200 bytes a record (a log
    /// read as the wrong format: 594 MB for 3M lines).
    Unreadable(usize, Unreadable),
    /// Capture `index` is read to its end.
    Finished(usize, Format, Stats),
}

/// Captures opened at the start (read up to their first event) and kept open; beyond these,
/// a regular file is opened again when the stream's time reaches its first event. Those
/// beyond are first opened to find that event ([`Want::Probe`]).
const OPEN_AT_START: usize = 16;

/// Captures read with a thread reading ahead ([`Ahead::Thread`]) at once; one opened while
/// this many are is read through a buffer on the merge's thread. Captures of the same minutes
/// (one per CoreDNS replica, one pcap per node) are all open at once, and a thread with up to
/// a megabyte read ahead each grew with their number: 100 overlapping pcaps ran 102 threads.
/// Twice [`OPEN_AT_START`], so rotated files given in any order (those open at the start
/// waiting for their time) are still read ahead when their time comes. A capture opened
/// through a buffer keeps it to its end (a thread freed later is not handed to it), and is
/// inflated on the merge's thread.
const READ_AHEAD_THREADS: usize = 2 * OPEN_AT_START;

struct Source {
    opened: Opened,
    /// Its next event, already read.
    next: QueryEvent,
}

pub(super) struct Merge<F> {
    paths: Vec<PathBuf>,
    open: F,
    /// The captures with an event to hand on, by index; `None` once finished or not open.
    sources: Vec<Option<Source>>,
    /// The open captures other than `current`: (next event's time, index), earliest first.
    waiting: BinaryHeap<Reverse<(u64, usize)>>,
    /// The capture being read: its events go out while none waiting or closed is earlier.
    current: Option<usize>,
    /// Closed regular files with events: (first event's time, index), the earliest last.
    closed: Vec<(u64, usize)>,
    /// Steps read ahead (while opening captures): handed on first.
    ready: VecDeque<Step>,
    /// Bytes read of the captures finished.
    bytes_done: u64,
    /// Every capture's size, when all are regular files.
    size: Option<u64>,
    /// Every capture was opened once (`size` is known).
    started: bool,
    /// By index: its first event's time is before 2000, made up by its reader (CoreDNS log
    /// lines without a timestamp count 1 µs each from 0): merged with others on no clock.
    untimed: Vec<bool>,
    /// By index: its first unreadable record was handed on (or is in `ready`).
    told_unreadable: Vec<bool>,
    /// Open captures read with a thread reading ahead (at most [`READ_AHEAD_THREADS`]).
    threads: usize,
}

/// 2000-01-01 in µs since the epoch: no capture of Kubernetes traffic is older.
const EARLIEST_REAL_TIME_US: u64 = 946_684_800_000_000;

impl<F: FnMut(&std::path::Path, Want) -> Result<Opened, OpenError>> Merge<F> {
    /// Open every capture and read it to its first event: one that cannot be opened stops
    /// the reading before any event goes out.
    pub(super) fn new(paths: &[PathBuf], open: F) -> Result<Merge<F>, OpenError> {
        refuse_twice(paths)?;
        let mut m = Merge {
            paths: paths.to_vec(),
            open,
            sources: paths.iter().map(|_| None).collect(),
            waiting: BinaryHeap::new(),
            current: None,
            closed: Vec::new(),
            ready: VecDeque::new(),
            bytes_done: 0,
            size: Some(0),
            started: false,
            untimed: vec![false; paths.len()],
            told_unreadable: vec![false; paths.len()],
            threads: 0,
        };
        for index in 0..paths.len() {
            let Some(time) = m.start(index)? else {
                continue;
            };
            m.untimed[index] = time < EARLIEST_REAL_TIME_US;
            let reopenable = m.sources[index]
                .as_ref()
                .is_some_and(|s| s.opened.size.is_some());
            if index >= OPEN_AT_START && reopenable {
                // Read again from its start when its time comes, unreadable records and all.
                m.ready
                    .retain(|s| !matches!(s, Step::Unreadable(i, _) if *i == index));
                m.told_unreadable[index] = false;
                m.close(index);
                m.closed.push((time, index));
            } else {
                m.waiting.push(Reverse((time, index)));
            }
        }
        m.closed.sort_unstable_by_key(|&(t, i)| Reverse((t, i)));
        m.started = true;
        Ok(m)
    }

    /// Capture `index` has no real times (its first event is before 2000), so merging it with
    /// other captures by time means nothing.
    pub(super) fn untimed(&self, index: usize) -> bool {
        self.untimed[index]
    }

    /// Every capture's size in bytes, when all are regular files.
    pub(super) fn size(&self) -> Option<u64> {
        self.size
    }

    /// Open capture `index` and read it to its first event: that event's time, or `None`
    /// when it has none (then it is finished).
    fn start(&mut self, index: usize) -> Result<Option<u64>, OpenError> {
        let ahead = if self.threads < READ_AHEAD_THREADS {
            Ahead::Thread
        } else {
            Ahead::Buffer
        };
        let want = if !self.started && index >= OPEN_AT_START {
            Want::Probe { kept: ahead }
        } else {
            Want::Read(ahead)
        };
        let mut opened = (self.open)(&self.paths[index], want)?;
        if !self.started {
            self.size = self.size.zip(opened.size).map(|(a, b)| a + b);
        }
        let told = &mut self.told_unreadable[index];
        match read_event(&mut self.ready, told, index, &mut opened.cap) {
            Some(next) => {
                let time = next.time.0;
                self.threads += (opened.ahead == Ahead::Thread) as usize;
                self.sources[index] = Some(Source { opened, next });
                Ok(Some(time))
            }
            None => {
                self.finish(index, opened);
                Ok(None)
            }
        }
    }

    /// Take capture `index`'s source out of the open ones.
    fn close(&mut self, index: usize) -> Option<Source> {
        let source = self.sources[index].take()?;
        self.threads -= (source.opened.ahead == Ahead::Thread) as usize;
        Some(source)
    }

    fn finish(&mut self, index: usize, opened: Opened) {
        self.bytes_done += opened.read.load(Ordering::Relaxed);
        let step = Step::Finished(index, opened.cap.format(), opened.cap.stats());
        self.ready.push_back(step);
    }

    /// Bytes read of every capture so far (compressed, as stored), and their sizes when all
    /// are regular files.
    pub(super) fn bytes_read(&self) -> u64 {
        let open = self.sources.iter().flatten();
        self.bytes_done
            + open
                .map(|s| s.opened.read.load(Ordering::Relaxed))
                .sum::<u64>()
    }

    /// The time of the earliest event not in `current`: waiting, or a closed file's first.
    fn others_first(&self) -> Option<u64> {
        let waiting = self.waiting.peek().map(|r| r.0 .0);
        let closed = self.closed.last().map(|&(t, _)| t);
        match (waiting, closed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next step: read ahead ones first, else the earliest event among the captures.
    pub(super) fn next_step(&mut self) -> Result<Option<Step>, OpenError> {
        loop {
            if let Some(step) = self.ready.pop_front() {
                return Ok(Some(step));
            }
            let Some(index) = self.current else {
                if !self.pick()? {
                    return Ok(None);
                }
                continue;
            };
            let src = self.sources[index].as_mut().expect("current is open");
            let told = &mut self.told_unreadable[index];
            if let Some(ev) = read_event(&mut self.ready, told, index, &mut src.opened.cap) {
                let out = std::mem::replace(&mut src.next, ev);
                let next_time = src.next.time.0;
                // Ties stay with the capture being read: the order among equal times is the
                // order read, as `Reorder` keeps it.
                if self.others_first().is_some_and(|t| t < next_time) {
                    self.waiting.push(Reverse((next_time, index)));
                    self.current = None;
                }
                return Ok(Some(Step::Event(out)));
            }
            self.current = None;
            let Source { opened, next, .. } = self.close(index).expect("current is open");
            self.finish(index, opened);
            // The finish goes after its last event.
            self.ready.push_front(Step::Event(next));
        }
    }

    /// Make the capture with the earliest next event `current`, opening a closed file when
    /// its first event is the earliest. False when every capture is finished.
    fn pick(&mut self) -> Result<bool, OpenError> {
        loop {
            let waiting = self.waiting.peek().map(|r| r.0);
            let closed = self.closed.last().copied();
            match (waiting, closed) {
                (Some((tw, _)), Some((tc, _))) if tc < tw => self.reopen()?,
                (None, Some(_)) => self.reopen()?,
                (Some((_, index)), _) => {
                    self.waiting.pop();
                    self.current = Some(index);
                    return Ok(true);
                }
                (None, None) => return Ok(false),
            }
        }
    }

    fn reopen(&mut self) -> Result<(), OpenError> {
        let Some((_, index)) = self.closed.pop() else {
            return Ok(());
        };
        if let Some(time) = self.start(index)? {
            self.waiting.push(Reverse((time, index)));
        }
        Ok(())
    }
}

/// The same input given twice would be read twice: every query counted twice from a file,
/// and standard input or a pipe split between two readers, each reading torn lines.
fn refuse_twice(paths: &[PathBuf]) -> Result<(), OpenError> {
    use std::os::unix::fs::MetadataExt;
    let mut seen: Vec<((u64, u64), &PathBuf)> = Vec::with_capacity(paths.len());
    for path in paths {
        let at = if path.as_os_str() == "-" {
            std::path::Path::new("/dev/stdin")
        } else {
            path.as_path()
        };
        // One that cannot be looked at fails when opened, with its own error.
        let Ok(meta) = std::fs::metadata(at) else {
            continue;
        };
        let id = (meta.dev(), meta.ino());
        if let Some((_, first)) = seen.iter().find(|(i, _)| *i == id) {
            return Err(OpenError::Bad {
                path: path.display().to_string(),
                reason: format!(
                    "the same input as {} given before it: its records would be read twice",
                    first.display()
                ),
            });
        }
        seen.push((id, path));
    }
    Ok(())
}

/// The capture's next event; its first unreadable record, when it comes before, goes to
/// `ready` (`told`: it went already).
fn read_event(
    ready: &mut VecDeque<Step>,
    told: &mut bool,
    index: usize,
    cap: &mut Capture,
) -> Option<QueryEvent> {
    for item in cap.by_ref() {
        match item {
            Ok(ev) => return Some(ev),
            Err(u) if !*told => {
                *told = true;
                ready.push_back(Step::Unreadable(index, u));
            }
            Err(_) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Options;

    /// A JSON-lines capture of one query a second from `start` (seconds), `n` of them, with
    /// `bad` unreadable lines first.
    fn capture(dir: &std::path::Path, name: &str, start: u64, n: u64, bad: usize) -> PathBuf {
        let mut text = "not json\n".repeat(bad);
        for k in 0..n {
            text.push_str(&format!(
                "{{\"ts\": {}, \"client\": \"10.0.0.{}\", \"qname\": \"a{k}.{name}.\", \"qtype\": \"A\", \"rcode\": \"NOERROR\", \"answers\": 1}}\n",
                1_700_000_000 + start + k,
                1 + k % 200,
            ));
        }
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// The JSON-lines capture at `p`, read as `want` says; `size` as a regular file's
    /// (reopenable) or a pipe's.
    fn open_jsonl(p: &std::path::Path, want: Want, size: Option<u64>) -> Result<Opened, OpenError> {
        let ahead = want.ahead(size.is_some());
        let opts = Options {
            format: Some(Format::Jsonl),
            ..Options::default()
        };
        let file = std::fs::File::open(p).unwrap();
        let name = p.display().to_string();
        Ok(Opened {
            cap: crate::capture::from_reader_named(Box::new(file), &opts, &name, ahead)?,
            ahead,
            size,
            read: Arc::default(),
        })
    }

    /// Every step of `paths` merged, with how each was opened, in turn (`true`: with a thread
    /// reading ahead); `size` as a regular file's (reopenable) or a pipe's.
    fn merge_all(paths: &[PathBuf], size: Option<u64>) -> (Vec<Step>, Vec<Vec<bool>>) {
        let mut opens = vec![Vec::new(); paths.len()];
        let mut m = Merge::new(paths, |p: &std::path::Path, want| {
            let opened = open_jsonl(p, want, size)?;
            let i = paths.iter().position(|q| q == p).unwrap();
            opens[i].push(opened.ahead == Ahead::Thread);
            Ok(opened)
        })
        .unwrap();
        let mut steps = Vec::new();
        while let Some(s) = m.next_step().unwrap() {
            steps.push(s);
        }
        drop(m);
        (steps, opens)
    }

    fn events(steps: &[Step]) -> Vec<&QueryEvent> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    /// Two replicas' logs of the same minutes, given one after the other: the second file's
    /// events came a whole file behind the first's, and a lookup across them read as two.
    #[test]
    fn captures_of_the_same_minutes_were_read_one_after_another() {
        let dir = tempfile::tempdir().unwrap();
        let paths = [
            capture(dir.path(), "a", 0, 300, 0),
            capture(dir.path(), "b", 100, 300, 10_000),
        ];
        let (steps, opens) = merge_all(&paths, Some(1));
        let evs = events(&steps);
        assert_eq!(evs.len(), 600);
        assert!(evs.windows(2).all(|w| w[0].time <= w[1].time));
        assert_eq!(opens, [[true], [true]]);
        // A capture's first unreadable record under its own index (each was held until the
        // capture's next event: 10,000 here), every one counted in its stats; each capture
        // finished once, after its last event.
        let bad: Vec<usize> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Unreadable(i, _) => Some(*i),
                _ => None,
            })
            .collect();
        assert_eq!(bad, [1]);
        let finished: Vec<(usize, u64, u64)> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Finished(i, Format::Jsonl, st) => {
                    Some((*i, st.counts.events, st.counts.unreadable))
                }
                _ => None,
            })
            .collect();
        assert_eq!(finished, [(0, 300, 0), (1, 300, 10_000)]);
        let last_a = steps
            .iter()
            .rposition(|s| matches!(s, Step::Event(e) if e.qname.ends_with(".a.")))
            .unwrap();
        let fin_a = steps
            .iter()
            .position(|s| matches!(s, Step::Finished(0, ..)))
            .unwrap();
        assert!(fin_a > last_a);
    }

    /// A run of unreadable records (a log read as the wrong format) was held in the merge,
    /// each of them, until the capture's next event: 594 MB for 3M lines. Now its first is
    /// handed on and the rest only counted; also when no event ever comes.
    #[test]
    fn a_run_of_unreadable_records_was_held_whole_until_the_next_event() {
        let dir = tempfile::tempdir().unwrap();
        let paths = [
            capture(dir.path(), "events", 0, 10, 0),
            capture(dir.path(), "bad", 0, 0, 50_000),
        ];
        let mut m = Merge::new(&paths, |p: &std::path::Path, want| {
            open_jsonl(p, want, Some(1))
        })
        .unwrap();
        // Opening read the bad capture to its end: what is held is one record, not 50,000.
        let held = m
            .ready
            .iter()
            .filter(|s| matches!(s, Step::Unreadable(1, _)))
            .count();
        assert_eq!(held, 1);
        let mut unreadable = 0;
        let mut counted = 0;
        while let Some(s) = m.next_step().unwrap() {
            match s {
                Step::Unreadable(..) => unreadable += 1,
                Step::Finished(1, _, st) => counted = st.counts.unreadable,
                _ => {}
            }
        }
        assert_eq!((unreadable, counted), (1, 50_000));
    }

    /// Captures of the same minutes, more of them than read-ahead threads: each one the merge
    /// held open had a thread reading ahead a megabyte (100 overlapping pcaps: 102 threads,
    /// 303 MB). Past the cap they are read through a buffer, every event still in time order.
    #[test]
    fn every_overlapping_capture_had_a_thread_reading_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let n = READ_AHEAD_THREADS + 8;
        let paths: Vec<PathBuf> = (0..n)
            .map(|k| capture(dir.path(), &format!("o{k}"), k as u64, 50, 0))
            .collect();
        let mut threads_opened = 0;
        let mut m = Merge::new(&paths, |p: &std::path::Path, want| {
            let opened = open_jsonl(p, want, Some(1))?;
            threads_opened += (opened.ahead == Ahead::Thread) as usize;
            Ok(opened)
        })
        .unwrap();
        let mut steps = Vec::new();
        let mut most = 0;
        while let Some(s) = m.next_step().unwrap() {
            let open = m.sources.iter().flatten();
            let reading_ahead = open.filter(|s| s.opened.ahead == Ahead::Thread).count();
            assert_eq!(m.threads, reading_ahead);
            most = most.max(reading_ahead);
            steps.push(s);
        }
        drop(m);
        assert_eq!(most, READ_AHEAD_THREADS);
        assert_eq!(threads_opened, READ_AHEAD_THREADS);
        let evs = events(&steps);
        assert_eq!(evs.len(), 50 * n);
        assert!(evs.windows(2).all(|w| w[0].time <= w[1].time));
    }

    /// Rotated files (an hour each) given in any order, more than are opened at the start:
    /// read in time order, the later ones opened when their time comes (twice: once to find
    /// their first event); a file with no event is finished at once.
    #[test]
    fn rotated_files_in_any_order_are_read_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let n = OPEN_AT_START + 8;
        let mut paths: Vec<PathBuf> = (0..n)
            .map(|k| {
                capture(
                    dir.path(),
                    &format!("r{k}"),
                    k as u64 * 3600,
                    50,
                    (k == 0) as usize,
                )
            })
            .collect();
        paths.reverse();
        paths.push(capture(dir.path(), "empty", 0, 0, 1));
        let (steps, opens) = merge_all(&paths, Some(1));
        let evs = events(&steps);
        assert_eq!(evs.len(), 50 * n);
        assert!(evs.windows(2).all(|w| w[0].time < w[1].time));
        // Those past the first ones: found their first event through a buffer, then read with
        // a thread when their time came (a thread each, reading ahead a megabyte, before).
        for (i, o) in opens.iter().enumerate() {
            let want: &[bool] = match i {
                _ if i < OPEN_AT_START => &[true],
                _ if i < n => &[false, true],
                _ => &[false], // empty: finished when its first event was looked for
            };
            assert_eq!(o, want, "capture {i}");
        }
        let finished = steps
            .iter()
            .filter(|s| matches!(s, Step::Finished(..)))
            .count();
        assert_eq!(finished, n + 1);
        // Unreadable records are handed on once, also for a file opened twice.
        let bad = steps
            .iter()
            .filter(|s| matches!(s, Step::Unreadable(..)))
            .count();
        assert_eq!(bad, 2);
        // What cannot be opened again (a pipe) stays open, read ahead as the first ones: past
        // them it was read whole through the buffer it was first opened with.
        let (steps, opens) = merge_all(&paths, None);
        assert_eq!(events(&steps).len(), 50 * n);
        for (i, o) in opens.iter().enumerate() {
            assert_eq!(o, &[true], "capture {i}");
        }
    }
}
