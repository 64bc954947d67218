//! Capture readers (DESIGN §5): each format streams `QueryEvent`s with constant memory.
//!
//! One entry point, [`open`] (or [`from_reader`] for any `Read`), detects the format from the
//! content (`--input-format` overrides), undoes gzip/zstd compression found by magic number, and
//! returns a [`Capture`]: an `Iterator<Item = Result<QueryEvent, Unreadable>>` plus [`Capture::stats`].
//!
//! Every reader follows the same rules:
//! - Bad input loses nothing else: a record that cannot be read becomes one `Err(Unreadable)`
//!   with its position (line, packet, frame or byte offset) and the reader goes on with the next.
//!   With `Options::strict` the first unreadable record is the last item.
//! - Memory is bounded whatever the input: pairing tables, TCP buffers and fragment tables have
//!   fixed capacities and evict (counted in [`Stats`]).
//! - Wire values are untrusted; nothing here panics on any input (proptests in each reader).
//!
//! Pairing (pcap, dnstap): a query and its response are matched on (client address, client port,
//! DNS ID, question). The event's time is the query's and `latency` = response − query time; a
//! response whose query was not seen still yields an event (response time, no latency); a query
//! never answered yields an event with `rcode: None` once `Options::answer_wait` of capture time
//! has passed, or at the end of input.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Cursor, Read};
use std::path::Path;
use std::time::Duration;

use crate::event::QueryEvent;

pub mod coredns_log;
pub mod dnsperf;
pub mod dnstap;
pub mod jsonl;
mod link;
mod merge;
mod pair;
pub mod pcap;
mod read_ahead;
pub mod session;
pub mod synth;
mod tcp;
mod zstd;

/// The capture formats ndots reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Format {
    /// pcap (any byte order, micro- or nanosecond) and pcapng.
    Pcap,
    /// CoreDNS `log` plugin output, every layout and wrapper.
    CorednsLog,
    /// dnstap: Frame Streams files or one raw protobuf message.
    Dnstap,
    /// JSON lines: `{"ts":..,"client":..,"qname":..,"qtype":..,"rcode":..,"answers":..}`.
    Jsonl,
    /// dnsperf query files: `name type` per line.
    Dnsperf,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Pcap => "pcap",
            Format::CorednsLog => "coredns-log",
            Format::Dnstap => "dnstap",
            Format::Jsonl => "jsonl",
            Format::Dnsperf => "dnsperf",
        }
    }

    /// Lines of text (a NUL byte is no part of one).
    pub fn is_text(self) -> bool {
        matches!(self, Format::CorednsLog | Format::Jsonl | Format::Dnsperf)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an unreadable record sits in its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// 1-based line number (text formats).
    Line(u64),
    /// 1-based packet number, as tshark numbers frames (pcap, pcapng).
    Packet(u64),
    /// 1-based data frame number (dnstap Frame Streams).
    Frame(u64),
    /// Byte offset into the (decompressed) input.
    Byte(u64),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line(n) => write!(f, "line {n}"),
            Position::Packet(n) => write!(f, "packet {n}"),
            Position::Frame(n) => write!(f, "frame {n}"),
            Position::Byte(n) => write!(f, "byte {n}"),
        }
    }
}

/// A record that could not be read: counted, reported with its position, and skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    pub position: Position,
    pub reason: String,
}

impl Unreadable {
    pub fn new(position: Position, reason: impl Into<String>) -> Self {
        Unreadable {
            position,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.position, self.reason)
    }
}

impl std::error::Error for Unreadable {}

/// How many unreadable positions `Stats` keeps for the end-of-run summary.
pub const KEEP_UNREADABLE: usize = 10;

/// Counts of one run over a capture: what was read and what became of it, and where the first
/// unreadable records are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// As the report carries them (`input` in its JSON).
    pub counts: InputCounts,
    /// The first [`KEEP_UNREADABLE`] unreadable records (`counts.unreadable` has them all).
    pub first_unreadable: Vec<Unreadable>,
}

impl Stats {
    /// Add another capture's counts (the first unreadable positions up to [`KEEP_UNREADABLE`]).
    pub fn add(&mut self, o: &Stats) {
        self.counts.add(&o.counts);
        for u in &o.first_unreadable {
            if self.first_unreadable.len() < KEEP_UNREADABLE {
                self.first_unreadable.push(u.clone());
            }
        }
    }
}

/// The records of the captures read, and what became of those that did not become events:
/// nothing read disappears uncounted (docs/report.md, "Input"). A report carries them as
/// `input`.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct InputCounts {
    /// Query events yielded (handed to the tracker).
    pub events: u64,
    /// Records that could not be read (bad lines, damaged packets), skipped.
    pub unreadable: u64,
    /// Records passed over on purpose: packets that are not DNS on the port, other CoreDNS
    /// plugins' lines, comments, dnstap message types not reported (see `dnstap`), messages
    /// that are not standard queries of class IN (NOTIFY, UPDATE, CHAOS `version.bind`).
    pub skipped: u64,
    /// DNS query messages seen (pcap, dnstap: what tshark / dnstap-ldns count).
    pub queries: u64,
    /// DNS response messages seen.
    pub responses: u64,
    /// Queries that got no response (by the wait bound, eviction or end of input): events
    /// without an answer.
    pub unanswered: u64,
    /// Responses whose query was not seen (events of their own).
    pub unmatched_responses: u64,
    /// Pending queries, TCP flows or fragment sets pushed out by a capacity bound.
    pub evicted: u64,
    /// Copies of a message already read in a packet capture (the same query or response
    /// again within 10 ms: a capture on `-i any` sees a forwarded packet once per
    /// interface): dropped, so they invent no lookups or retries.
    pub duplicates: u64,
    /// UDP responses with TC set (RFC 1035 §4.1.1): not an answer, the stub asks again over
    /// TCP; read as no answer, so the TCP query continues the lookup as a retry.
    pub truncated: u64,
    /// Places where bytes of a TCP stream were never captured: the messages cut by the gap
    /// are lost (their queries end unanswered); reading resumes at the next message.
    pub stream_gaps: u64,
    /// Places where a capture's time went back by more than [`REWIND`]: logs or captures put
    /// one after another (`kubectl logs -l` prints each pod's log in turn; `cat` of several
    /// servers' logs), or a clock stepped back. A lookup across one is read as two (or more),
    /// since the events cannot be put back in order: each log as its own file is merged by
    /// time. Absent from reports written before the count.
    #[serde(default)]
    pub time_rewinds: u64,
}

/// How far back the time of a capture's record must go, from the latest before it, to be a
/// rewind (`InputCounts::time_rewinds`). An answered event's record (a log line, a response)
/// is written when the answer is: a single server's records only go back by a capture's
/// jitter, far below this, and past it `Reorder` cannot put the events back in order.
pub const REWIND: std::time::Duration = std::time::Duration::from_secs(1);

impl InputCounts {
    /// The records read that did not become events as they were, besides the unreadable
    /// ones, and the places where time went back, in words (a phrase each, for those there
    /// are): for the reports and the per-capture line on stderr.
    pub fn set_aside(&self) -> Vec<String> {
        [
            (
                self.skipped,
                "records skipped (not DNS, not a standard query of class IN, other log lines)",
            ),
            (self.duplicates, "duplicate messages dropped"),
            (self.unmatched_responses, "responses without their query"),
            (self.unanswered, "queries without a response"),
            (self.truncated, "truncated (TC) responses read as no answer"),
            (
                self.stream_gaps,
                "gaps in TCP streams (messages cut by them lost)",
            ),
            (self.evicted, "evicted by a memory bound"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .chain((self.time_rewinds > 0).then(|| {
            let times = match self.time_rewinds {
                1 => "once".to_string(),
                n => format!("{n} times"),
            };
            format!(
                "time went back {times} (logs or captures one after another, or a clock step: \
                 a lookup across it reads as several; give each log as its own file)"
            )
        }))
        .collect()
    }

    pub fn add(&mut self, o: &InputCounts) {
        self.events += o.events;
        self.unreadable += o.unreadable;
        self.skipped += o.skipped;
        self.queries += o.queries;
        self.responses += o.responses;
        self.unanswered += o.unanswered;
        self.unmatched_responses += o.unmatched_responses;
        self.evicted += o.evicted;
        self.duplicates += o.duplicates;
        self.truncated += o.truncated;
        self.stream_gaps += o.stream_gaps;
        self.time_rewinds += o.time_rewinds;
    }
}

/// Which dnstap messages become events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DnstapMessages {
    /// CLIENT_QUERY / CLIENT_RESPONSE only: what the pods asked. A server logging both sides
    /// would otherwise count each lookup twice (once from the client, once upstream).
    #[default]
    Client,
    /// Every query/response message type (client, resolver, forwarder, stub, auth, tool, update).
    All,
}

/// Reader settings. `Default` is what `ndots` uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// Force a format instead of detecting it.
    pub format: Option<Format>,
    /// The first unreadable record ends the run (it is the last item yielded).
    pub strict: bool,
    /// DNS server port for pcap (queries go to it, responses come from it).
    pub port: u16,
    /// Capture time a query waits for its response before it is reported unanswered.
    pub answer_wait: Duration,
    /// Bound on queries waiting for a response (oldest reported unanswered beyond it).
    pub max_pending: usize,
    /// dnstap message selection.
    pub dnstap_messages: DnstapMessages,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            format: None,
            strict: false,
            port: 53,
            // Longer than any client waits (glibc: 5 s x 2 attempts) so that a late SERVFAIL
            // from a server that timed out upstream still pairs (zeek-erspan.pcap has 11 s);
            // memory is bounded by `max_pending` whatever this is.
            answer_wait: Duration::from_secs(30),
            max_pending: 100_000,
            dnstap_messages: DnstapMessages::Client,
        }
    }
}

/// What each format's reader implements; [`Capture`] adds counting and `strict`.
pub(crate) trait Reader: Send {
    fn next_item(&mut self) -> Option<Result<QueryEvent, Unreadable>>;
    /// Add the reader's own counters (queries, responses, skipped, ...) to `stats`.
    fn counters(&self, counts: &mut InputCounts);
}

/// An open capture: iterate for events, then read [`Capture::stats`].
pub struct Capture {
    reader: Box<dyn Reader>,
    format: Format,
    strict: bool,
    done: bool,
    events: u64,
    unreadable: u64,
    first_unreadable: Vec<Unreadable>,
    /// Read before the reader's first record: the NUL bytes a log truncated in place starts
    /// with (`skip_leading_nuls`).
    leading: Option<Unreadable>,
    /// The latest time of an answered event in the current stretch, and the rewinds counted.
    latest_answered: u64,
    rewinds: u64,
}

impl Capture {
    pub fn format(&self) -> Format {
        self.format
    }
    /// Counts so far (final once the iterator returned `None`).
    pub fn stats(&self) -> Stats {
        let mut counts = InputCounts {
            events: self.events,
            unreadable: self.unreadable,
            time_rewinds: self.rewinds,
            ..InputCounts::default()
        };
        self.reader.counters(&mut counts);
        Stats {
            counts,
            first_unreadable: self.first_unreadable.clone(),
        }
    }
}

impl Capture {
    /// Count a rewind (`InputCounts::time_rewinds`), by the time of the record an answered
    /// event was read from: its answer's. Not by the query's time, which trails it by the
    /// latency (seconds for a slow answer), nor of unanswered queries, emitted when their wait
    /// ends, or a TCP connection's.
    fn note_time(&mut self, e: &QueryEvent) {
        if e.rcode.is_none() {
            return;
        }
        let latency = e.latency.map_or(0, |d| d.as_micros() as u64);
        let t = e.time.0.saturating_add(latency);
        if t.saturating_add(REWIND.as_micros() as u64) < self.latest_answered {
            // A new stretch begins: its own records are compared with it from here.
            self.rewinds += 1;
            self.latest_answered = t;
        } else {
            self.latest_answered = self.latest_answered.max(t);
        }
    }
}

impl Iterator for Capture {
    type Item = Result<QueryEvent, Unreadable>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.leading.take() {
            Some(u) => Some(Err(u)),
            None => self.reader.next_item(),
        };
        match item {
            None => {
                self.done = true;
                None
            }
            Some(Ok(e)) => {
                self.events += 1;
                self.note_time(&e);
                Some(Ok(e))
            }
            Some(Err(u)) => {
                self.unreadable += 1;
                if self.first_unreadable.len() < KEEP_UNREADABLE {
                    self.first_unreadable.push(u.clone());
                }
                if self.strict {
                    self.done = true;
                }
                Some(Err(u))
            }
        }
    }
}

/// Why a capture could not be opened at all.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// `error` is shown in the message, so it is not also a `source` (printed twice by `{:#}`).
    #[error("{path}: {error}")]
    Io { path: String, error: io::Error },
    #[error("{path}: cannot tell the capture format from its content (use --input-format)")]
    UnknownFormat { path: String },
    #[error("{path}: {reason}")]
    Bad { path: String, reason: String },
}

/// Open a capture file (`-` is standard input) with default options and `format` forced or detected.
pub fn open(path: impl AsRef<Path>, format: Option<Format>) -> Result<Capture, OpenError> {
    open_with(
        path,
        &Options {
            format,
            ..Options::default()
        },
    )
}

/// Open a capture file (`-` is standard input).
pub fn open_with(path: impl AsRef<Path>, opts: &Options) -> Result<Capture, OpenError> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let input: Box<dyn Read + Send> = if name == "-" {
        Box::new(io::stdin())
    } else {
        Box::new(File::open(path).map_err(|error| OpenError::Io {
            path: name.clone(),
            error,
        })?)
    };
    from_reader_named(input, opts, &name, Ahead::Thread)
}

/// Read a capture from any byte stream.
pub fn from_reader(input: Box<dyn Read + Send>, opts: &Options) -> Result<Capture, OpenError> {
    from_reader_named(input, opts, "<input>", Ahead::Buffer)
}

/// How a capture's bytes are read ahead of its dissecting.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Ahead {
    /// On a thread of their own ([`read_ahead`]): what `open` reads, and the sessions' captures
    /// up to the merge's cap on such threads.
    Thread,
    /// A buffer the dissecting thread fills: [`from_reader`]'s callers (bytes in memory, the
    /// fuzz targets), and the sessions' captures past that cap or opened by the merge only to
    /// find their first event.
    Buffer,
}

/// A capture's byte stream as its format reader takes it. Either way the input ends at its
/// first read error (`Interrupted` aside), after the error is returned: the format readers
/// count it as one unreadable record, where reading on would loop on a cut gzip stream (one
/// unreadable line a read, for ever) or skip what the error cut.
struct Input {
    bytes: Bytes,
    failed: bool,
}

enum Bytes {
    Buffered(BufReader<Box<dyn Read + Send>>),
    Ahead(read_ahead::ReadAhead),
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = io::BufRead::fill_buf(self)?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        io::BufRead::consume(self, n);
        Ok(n)
    }
}

impl io::BufRead for Input {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.failed {
            return Ok(&[]);
        }
        let got = match &mut self.bytes {
            Bytes::Buffered(r) => r.fill_buf(),
            Bytes::Ahead(r) => r.fill_buf(),
        };
        if let Err(e) = &got {
            self.failed = e.kind() != io::ErrorKind::Interrupted;
        }
        got
    }

    fn consume(&mut self, amt: usize) {
        match &mut self.bytes {
            Bytes::Buffered(r) => r.consume(amt),
            Bytes::Ahead(r) => r.consume(amt),
        }
    }
}

const PEEK: usize = 4096;

pub(crate) fn from_reader_named(
    input: Box<dyn Read + Send>,
    opts: &Options,
    name: &str,
    ahead: Ahead,
) -> Result<Capture, OpenError> {
    let io_err = |error| OpenError::Io {
        path: name.to_string(),
        error,
    };
    // `EAGAIN` waited out under everything: the format's detection and a decompressor would
    // take a non-blocking input's pause for an error.
    let (input, gone) = read_ahead::Patient::new(input);
    let input: Box<dyn Read + Send> = Box::new(input);
    let (head, input) = peek(input, PEEK).map_err(io_err)?;
    // Compression by magic number, not extension: gzip (RFC 1952 §2.3.1) and zstd (RFC 8878 §3.1.1).
    let input: Box<dyn Read + Send> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(input))
    } else if zstd::starts(&head) {
        let d = zstd::Frames::new(input).map_err(|e| OpenError::Bad {
            path: name.to_string(),
            reason: e.to_string(),
        })?;
        Box::new(d)
    } else {
        input
    };
    let (head, input) = if head.starts_with(&[0x1f, 0x8b]) || zstd::starts(&head) {
        peek(input, PEEK).map_err(io_err)?
    } else {
        (head, input)
    };
    // A log truncated in place while its writer went on (logrotate `copytruncate`) starts with
    // its old length in NUL bytes, up to the first line written since: read as one unreadable
    // record, and the format told from what follows. Not a Frame Streams file's zero escape.
    let padded_text = head.first() == Some(&0)
        && match opts.format {
            Some(f) => f.is_text(),
            None => !dnstap::starts_frame_stream(&head),
        };
    let (leading, head, input) = if padded_text {
        let (nuls, input) = skip_leading_nuls(input).map_err(io_err)?;
        let (head, input) = peek(input, PEEK).map_err(io_err)?;
        let leading = Unreadable::new(
            Position::Byte(0),
            format!(
                "{nuls} NUL byte{} at the start (a log truncated in place while written, as \
                 logrotate's copytruncate does)",
                if nuls == 1 { "" } else { "s" }
            ),
        );
        (Some(leading), head, input)
    } else {
        (None, head, input)
    };
    let format = match opts.format.or_else(|| detect(&head)) {
        Some(f) => f,
        None if leading.is_some() && head.is_empty() => {
            return Err(OpenError::Bad {
                path: name.to_string(),
                reason: "NUL bytes and no line after them (a log truncated in place while \
                         written, before its writer wrote again)"
                    .into(),
            })
        }
        None => {
            return Err(OpenError::UnknownFormat {
                path: name.to_string(),
            })
        }
    };
    let bytes = match ahead {
        Ahead::Thread => {
            Bytes::Ahead(
                read_ahead::ReadAhead::spawn(input, gone).map_err(|e| OpenError::Bad {
                    path: name.to_string(),
                    reason: format!("starting a thread to read it: {e}"),
                })?,
            )
        }
        Ahead::Buffer => Bytes::Buffered(BufReader::with_capacity(read_ahead::CHUNK, input)),
    };
    let input = Input {
        bytes,
        failed: false,
    };
    let reader: Box<dyn Reader> = match format {
        Format::Pcap => Box::new(pcap::PcapReader::new(input, opts)),
        Format::CorednsLog => Box::new(coredns_log::CorednsLogReader::new(input)),
        Format::Dnstap => Box::new(dnstap::DnstapReader::new(input, opts)),
        Format::Jsonl => Box::new(jsonl::JsonlReader::new(input)),
        Format::Dnsperf => Box::new(dnsperf::DnsperfReader::new(input)),
    };
    Ok(Capture {
        reader,
        format,
        strict: opts.strict,
        done: false,
        events: 0,
        unreadable: 0,
        first_unreadable: Vec::new(),
        leading,
        latest_answered: 0,
        rewinds: 0,
    })
}

/// A query name as a text capture (CoreDNS log, dnsperf file, JSON lines) writes it, as the
/// events carry names: lowercase, fully qualified, and a control character written `\DDD`
/// (RFC 1035 §5.1) as the pcap reader writes it from the wire, so no name read as text starts
/// with the mark of a name the pcap reader left in wire form (`pair::finish_name`).
pub(crate) fn name_from_text(name: &str) -> String {
    let mut qname = if name.bytes().any(|b| b.is_ascii_control()) {
        let mut escaped = String::with_capacity(name.len() + 4);
        for c in name.chars() {
            if c.is_ascii_control() {
                use std::fmt::Write as _;
                let _ = write!(escaped, "\\{:03}", c as u32);
            } else {
                escaped.push(c.to_ascii_lowercase());
            }
        }
        escaped
    } else {
        name.to_ascii_lowercase()
    };
    if !qname.ends_with('.') {
        qname.push('.');
    }
    qname
}

/// Read up to `n` bytes for detection and give back a reader that still yields them.
fn peek(mut input: Box<dyn Read + Send>, n: usize) -> io::Result<(Vec<u8>, Box<dyn Read + Send>)> {
    let mut head = Vec::with_capacity(n);
    (&mut input).take(n as u64).read_to_end(&mut head)?;
    let again = Cursor::new(head.clone()).chain(input);
    Ok((head, Box::new(again)))
}

/// Read past the NUL bytes `input` starts with: how many, and the input from the first other byte.
fn skip_leading_nuls(mut input: Box<dyn Read + Send>) -> io::Result<(u64, Box<dyn Read + Send>)> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut nuls = 0u64;
    loop {
        let got = match input.read(&mut buf) {
            Ok(0) => return Ok((nuls, Box::new(io::empty()))),
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        match buf[..got].iter().position(|&b| b != 0) {
            Some(at) => {
                nuls += at as u64;
                buf.truncate(got);
                buf.drain(..at);
                return Ok((nuls, Box::new(Cursor::new(buf).chain(input))));
            }
            None => nuls += got as u64,
        }
    }
}

/// Tell the format from the first bytes: magic numbers for the binary formats, then the first
/// lines that are not blank or `#` comments for the text formats.
pub fn detect(head: &[u8]) -> Option<Format> {
    if head.len() >= 4 {
        let m = [head[0], head[1], head[2], head[3]];
        // pcap: 0xa1b2c3d4 (µs) / 0xa1b23c4d (ns) in either byte order; pcapng: the SHB type
        // 0x0a0d0d0a, a palindrome (draft-ietf-opsawg-pcapng §4.1).
        if matches!(
            m,
            [0xa1, 0xb2, 0xc3, 0xd4]
                | [0xd4, 0xc3, 0xb2, 0xa1]
                | [0xa1, 0xb2, 0x3c, 0x4d]
                | [0x4d, 0x3c, 0xb2, 0xa1]
        ) || m == [0x0a, 0x0d, 0x0d, 0x0a]
        {
            return Some(Format::Pcap);
        }
        // Frame Streams: a file starts with a control frame, announced by a zero "length".
        if dnstap::starts_frame_stream(head) {
            return Some(Format::Dnstap);
        }
    }
    // A raw dnstap protobuf message starts with the tag of identity (1), version (2), extra (3),
    // message (14) or type (15), all length-delimited except type (varint).
    if let Some(&b) = head.first() {
        if matches!(b, 0x0a | 0x12 | 0x1a | 0x72 | 0x78) && head.iter().take(64).any(|&c| c < 0x09)
        {
            return Some(Format::Dnstap);
        }
    }
    let text = String::from_utf8_lossy(head);
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    // Look at a few lines: a CoreDNS log may begin with other plugins' output.
    let mut first = None;
    for line in lines.by_ref().take(20) {
        if line.starts_with('{') {
            return Some(Format::Jsonl);
        }
        if coredns_log::looks_like_log_line(line) {
            return Some(Format::CorednsLog);
        }
        if first.is_none() {
            first = Some(line);
        }
    }
    if let Some(line) = first {
        if dnsperf::looks_like_query_line(line) {
            return Some(Format::Dnsperf);
        }
    }
    None
}

/// Longest text line read; a longer one is reported unreadable and skipped whole.
pub const MAX_LINE: usize = 64 * 1024;

/// Reads lines with a bound on their length (a file without newlines cannot exhaust memory).
pub(crate) struct LineReader<R> {
    input: R,
    line: Vec<u8>,
    pub line_no: u64,
}

pub(crate) enum Line<'a> {
    Text(&'a str),
    TooLong,
    Failed(String),
}

impl<'a> Line<'a> {
    /// The line's text, or the unreadable record it is (at `pos`).
    pub fn text(self, pos: Position) -> Result<&'a str, Unreadable> {
        match self {
            Line::Text(t) => Ok(t),
            Line::TooLong => Err(Unreadable::new(pos, "line too long")),
            Line::Failed(e) => Err(Unreadable::new(pos, e)),
        }
    }
}

impl<R: io::BufRead> LineReader<R> {
    pub fn new(input: R) -> Self {
        LineReader {
            input,
            line: Vec::with_capacity(256),
            line_no: 0,
        }
    }

    /// The next line without its end (`\n` or `\r\n`); invalid UTF-8 is replaced, not fatal.
    pub fn next_line(&mut self) -> Option<(u64, Line<'_>)> {
        self.line.clear();
        let mut too_long = false;
        let mut any = false;
        loop {
            let buf = match self.input.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.line_no += 1;
                    return Some((self.line_no, Line::Failed(format!("read error: {e}"))));
                }
            };
            if buf.is_empty() {
                if !any {
                    return None;
                }
                break;
            }
            any = true;
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            if !too_long {
                if self.line.len() + take > MAX_LINE {
                    too_long = true;
                    self.line.clear();
                } else {
                    self.line.extend_from_slice(&buf[..take]);
                }
            }
            self.input.consume(take + done as usize);
            if done {
                break;
            }
        }
        self.line_no += 1;
        if too_long {
            return Some((self.line_no, Line::TooLong));
        }
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        if std::str::from_utf8(&self.line).is_err() {
            let fixed = String::from_utf8_lossy(&self.line).into_owned();
            self.line = fixed.into_bytes();
        }
        Some((
            self.line_no,
            Line::Text(std::str::from_utf8(&self.line).unwrap_or("")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rewind is told by the time of the record an event was read from (its answer's): a
    /// slow answer's query, seconds before the latest record, is none; a record more than
    /// [`REWIND`] before the latest is one, and the stretch after it is compared with itself.
    #[test]
    fn time_rewinds_count_records_going_back_not_slow_answers() {
        let line = |ts: f64, latency: f64, rcode: &str| {
            format!(
                "{{\"ts\": {ts}, \"client\": \"10.0.0.1\", \"qname\": \"a.\", \"qtype\": \"A\", \"rcode\": \"{rcode}\", \"latency\": {latency}}}\n"
            )
        };
        let mut text = String::new();
        text += &line(100.0, 0.001, "NOERROR");
        text += &line(95.0, 5.5, "NOERROR"); // answered at 100.5: in order
        text += &line(99.7, 0.0, "NOERROR"); // 0.8 s back: a capture's jitter
        text += &line(90.0, 0.0, "SERVFAIL"); // back 10.5 s: a rewind
        text += &line(91.0, 0.0, "NOERROR"); // on from there
        text += &line(101.0, 0.0, "NOERROR");
        text += &line(50.0, 0.0, "NOERROR"); // a second one
        let opts = Options {
            format: Some(Format::Jsonl),
            ..Options::default()
        };
        let mut c = from_reader(Box::new(io::Cursor::new(text)), &opts).unwrap();
        assert_eq!(c.by_ref().filter(|r| r.is_ok()).count(), 7);
        let counts = c.stats().counts;
        assert_eq!(counts.time_rewinds, 2);
        let said = counts.set_aside().join(", ");
        assert!(said.starts_with("time went back 2 times"), "{said}");
    }

    #[test]
    fn detects_by_content() {
        assert_eq!(detect(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0]), Some(Format::Pcap));
        assert_eq!(detect(&[0x4d, 0x3c, 0xb2, 0xa1, 2, 0]), Some(Format::Pcap));
        assert_eq!(detect(&[0x0a, 0x0d, 0x0d, 0x0a, 0, 0]), Some(Format::Pcap));
        // A Frame Streams START control frame (34 bytes, type 2), as BIND and unbound write.
        assert_eq!(
            detect(&[0, 0, 0, 0, 0, 0, 0, 0x22, 0, 0, 0, 2]),
            Some(Format::Dnstap)
        );
        assert_eq!(
            detect(b"{\"ts\": 1, \"client\": \"10.0.0.1\"}\n"),
            Some(Format::Jsonl)
        );
        assert_eq!(
            detect(b"# c\n[INFO] 10.0.0.1:5 - 1 \"A IN a. udp 1 false 512\" NOERROR qr 1 0.1s\n"),
            Some(Format::CorednsLog)
        );
        assert_eq!(
            detect(b"www.example.com A\nexample.org AAAA\n"),
            Some(Format::Dnsperf)
        );
        assert_eq!(detect(b"hello world, this is not a capture\n"), None);
        assert_eq!(detect(b""), None);
    }

    /// A CoreDNS log truncated in place while CoreDNS went on writing (logrotate's
    /// `copytruncate`) starts with its old length in NUL bytes. It was taken for a Frame
    /// Streams file (four zero bytes), read as dnstap with 0 events and 1 unreadable record,
    /// and the whole log was lost behind exit code 0. The NULs are now one unreadable record,
    /// and the lines after them are read, whether the format is detected or given.
    #[test]
    fn a_log_truncated_in_place_was_read_as_dnstap_and_lost() {
        let line = "[INFO] 10.0.0.1:5 - 1 \"A IN a. udp 1 false 512\" NOERROR qr,rd,ra 1 0.1s\n";
        for nuls in [12, PEEK, 3 * 64 * 1024 + 5] {
            for format in [None, Some(Format::CorednsLog)] {
                let mut input = vec![0u8; nuls];
                input.extend_from_slice(line.repeat(3).as_bytes());
                let opts = Options {
                    format,
                    ..Options::default()
                };
                let c = from_reader(Box::new(Cursor::new(input)), &opts).unwrap();
                assert_eq!(c.format(), Format::CorednsLog);
                let items: Vec<_> = c.collect();
                assert_eq!(items.len(), 4, "{nuls} NULs, format {format:?}");
                let err = items[0].as_ref().unwrap_err();
                assert_eq!(err.position, Position::Byte(0));
                assert!(
                    err.reason.starts_with(&format!("{nuls} NUL bytes")),
                    "{}",
                    err.reason
                );
                assert!(items[1..].iter().all(|i| i.is_ok()));
            }
        }
        let nothing_after =
            from_reader(Box::new(Cursor::new(vec![0u8; 9000])), &Options::default());
        assert!(
            matches!(&nothing_after, Err(OpenError::Bad { reason, .. }) if reason.contains("NUL bytes")),
            "{:?}",
            nothing_after.err()
        );
        // Something after the NULs that is no capture (review): the usual error, not
        // "nothing after them".
        let mut junk = vec![0u8; 100];
        junk.extend_from_slice(b"hello world\nfoo bar baz qux\n");
        let junk = from_reader(Box::new(Cursor::new(junk)), &Options::default());
        assert!(
            matches!(&junk, Err(OpenError::UnknownFormat { .. })),
            "{:?}",
            junk.err()
        );
        // A dnstap file is still one, NUL bytes and all.
        let mut dnstap = vec![0, 0, 0, 0, 0, 0, 0, 0x22, 0, 0, 0, 2];
        dnstap.extend_from_slice(&[0; 34 - 4]);
        let c = from_reader(Box::new(Cursor::new(dnstap)), &Options::default()).unwrap();
        assert_eq!(c.format(), Format::Dnstap);
    }

    #[test]
    fn strict_stops_at_the_first_unreadable() {
        let input = b"www.example.com A\nbad line with too many words\nexample.org AAAA\n".to_vec();
        let opts = Options {
            format: Some(Format::Dnsperf),
            strict: true,
            ..Options::default()
        };
        let items: Vec<_> = from_reader(Box::new(Cursor::new(input.clone())), &opts)
            .unwrap()
            .collect();
        assert_eq!(items.len(), 2);
        assert!(items[1].is_err());
        let opts = Options {
            format: Some(Format::Dnsperf),
            ..Options::default()
        };
        let mut c = from_reader(Box::new(Cursor::new(input)), &opts).unwrap();
        assert_eq!(c.by_ref().filter(|r| r.is_ok()).count(), 2);
        let s = c.stats();
        assert_eq!((s.counts.events, s.counts.unreadable), (2, 1));
        assert_eq!(s.first_unreadable[0].position, Position::Line(2));
    }

    #[test]
    fn lines_are_bounded() {
        let mut text = b"a\r\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        text.extend_from_slice(b"\nb\xff\nlast");
        let mut r = LineReader::new(BufReader::with_capacity(16, Cursor::new(text)));
        assert!(matches!(r.next_line(), Some((1, Line::Text("a")))));
        assert!(matches!(r.next_line(), Some((2, Line::TooLong))));
        assert!(matches!(r.next_line(), Some((3, Line::Text("b\u{fffd}")))));
        assert!(matches!(r.next_line(), Some((4, Line::Text("last")))));
        assert_eq!(r.line_no, 4);
        assert!(r.next_line().is_none());
    }

    /// Found by cargo fuzz: gzip magic followed by an invalid header is an open error.
    #[test]
    fn broken_gzip_header_is_an_open_error() {
        let r = from_reader(
            Box::new(Cursor::new(vec![0x1f, 0x8b, 0xff, 0, 1, 2])),
            &Options::default(),
        );
        assert!(matches!(r, Err(OpenError::Io { .. })));
    }

    #[test]
    fn gzip_and_zstd_are_read_by_magic() {
        use std::io::Write;
        let text = b"www.example.com A\nexample.org AAAA\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text).unwrap();
        let gz = gz.finish().unwrap();
        let c = from_reader(Box::new(Cursor::new(gz)), &Options::default()).unwrap();
        assert_eq!(c.format(), Format::Dnsperf);
        assert_eq!(c.filter(|r| r.is_ok()).count(), 2);
        let zst = ruzstd::encoding::compress_to_vec(
            &text[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let c = from_reader(Box::new(Cursor::new(zst)), &Options::default()).unwrap();
        assert_eq!(c.filter(|r| r.is_ok()).count(), 2);
    }
}

/// Events put back into query-time order before they reach the walk tracker. Readers that pair
/// queries with responses (pcap, dnstap) emit a query when its response arrives, so a query
/// answered fast overtakes one sent just before it; two lookups of one name from one client
/// then swap candidates and their walks mix (false changes in replay). Events are held until
/// `window` of event time has passed after them, at most `max_held` at once (then the oldest
/// goes out early): bounded memory, exact order for any answer faster than `window`.
///
/// The order is (time, arrival), exactly; where events are held follows how they come: nearly
/// all arrive at most a few places out of order (a query overtaken by the few answered faster
/// just after it) and go into `run`, a queue kept sorted by inserting from its end, so the
/// usual event costs a comparison or two and the oldest is at the front; one that would go
/// further back (a slow answer, an unanswered query reported late) goes into `late`, a
/// [`LateQueue`]. The next event out is the smaller of the two fronts.
pub struct Reorder {
    run: std::collections::VecDeque<Held>,
    /// Stragglers' (time and sequence as one key, slot): small entries, the events in `slots`.
    late: LateQueue,
    slots: Vec<Option<QueryEvent>>,
    free: Vec<u32>,
    window_us: u64,
    max_held: usize,
    latest: u64,
    seq: u64,
}

/// An event in `Reorder::run` with its place in the order.
struct Held {
    time: u64,
    seq: u64,
    ev: QueryEvent,
}

/// How far from the end of `Reorder::run` an event is inserted; one that goes further is late.
const RUN_SEARCH: usize = 16;

impl Reorder {
    /// Answers come within a second or are timeouts; a million events is ~150 MB at most.
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(1);
    pub const MAX_HELD: usize = 1 << 20;

    pub fn new(window: std::time::Duration, max_held: usize) -> Reorder {
        Reorder {
            run: std::collections::VecDeque::new(),
            late: LateQueue::default(),
            slots: Vec::new(),
            free: Vec::new(),
            window_us: window.as_micros() as u64,
            max_held: max_held.max(1),
            latest: 0,
            seq: 0,
        }
    }

    /// Events held.
    fn held(&self) -> usize {
        self.run.len() + self.late.len()
    }

    /// Take `ev`; hand every event that is now in order to `out`.
    pub fn push(&mut self, ev: QueryEvent, mut out: impl FnMut(QueryEvent)) {
        self.latest = self.latest.max(ev.time.0);
        self.seq += 1;
        let (time, seq) = (ev.time.0, self.seq);
        // After every held event of the same time or earlier: arrival order among equals.
        let len = self.run.len();
        // `run` is sorted: when the event `RUN_SEARCH` places from its end is later, this one
        // is late without looking at those in between.
        let far = len.saturating_sub(RUN_SEARCH);
        let late = far > 0 && self.run[far - 1].time > time;
        let mut at = len;
        while !late && at > far && self.run[at - 1].time > time {
            at -= 1;
        }
        if !late && at == len {
            self.run.push_back(Held { time, seq, ev });
        } else if !late {
            self.run.insert(at, Held { time, seq, ev });
        } else {
            let slot = match self.free.pop() {
                Some(i) => {
                    self.slots[i as usize] = Some(ev);
                    i
                }
                None => {
                    self.slots.push(Some(ev));
                    (self.slots.len() - 1) as u32
                }
            };
            self.late.push(late_key(time, seq), slot);
        }
        while let Some(t) = self.first_time() {
            if self.held() <= self.max_held && t.saturating_add(self.window_us) > self.latest {
                break;
            }
            self.pop(&mut out);
        }
    }

    /// The earliest held event's time.
    fn first_time(&self) -> Option<u64> {
        let run = self.run.front().map(|h| h.time);
        let late = self.late.peek().map(|(key, _)| (key >> 64) as u64);
        match (run, late) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Hand the earliest event held to `out`.
    fn pop(&mut self, out: &mut impl FnMut(QueryEvent)) {
        let run = self.run.front().map(|h| (h.time, h.seq));
        let late = self.late.peek().map(|(key, _)| key);
        let from_run = match (run, late) {
            (Some(a), Some(b)) => late_key(a.0, a.1) < b,
            (a, _) => a.is_some(),
        };
        if from_run {
            if let Some(h) = self.run.pop_front() {
                out(h.ev);
            }
            return;
        }
        let Some(slot) = self.late.pop() else {
            return;
        };
        if let Some(ev) = self.slots[slot as usize].take() {
            out(ev);
        }
        self.free.push(slot);
    }

    /// Hand every event held to `out`, in order.
    pub fn finish(&mut self, mut out: impl FnMut(QueryEvent)) {
        while self.held() > 0 {
            self.pop(&mut out);
        }
    }
}

/// A late event's place in the order: (time, arrival) as one number.
fn late_key(time: u64, seq: u64) -> u128 {
    (u128::from(time) << 64) | u128::from(seq)
}

/// `Reorder`'s late events, (key, slot) with the smallest key first: a calendar queue. An event
/// is late by a few milliseconds (a slow answer) and held about a second (the window), so the
/// entries are put in a ring of buckets by time, each bucket sorted only when it comes to the
/// front: a push is a store, a pop takes from the end of a sorted bucket. On the walk-shaped
/// benchmark capture ~45% of the events come this way, and a binary heap's sifting was a quarter
/// of the reader thread. Keys for the front bucket once it is sorted, keys before it (few late
/// events held, or one later than the window) and keys past the ring's span go to three heaps,
/// so the order is exact and no push costs more than a heap's for any keys.
struct LateQueue {
    /// Bucket `b % RING` holds the keys whose time is in bucket `b` (`time / BUCKET_US`), for
    /// `b` from `front` to `front + RING - 1`.
    ring: Vec<Vec<(u128, u32)>>,
    /// Bit `i % 64` of word `i / 64` set when `ring[i]` holds an entry.
    occupied: Vec<u64>,
    /// The bucket taken from now, sorted largest first (taken from its end); while any entry
    /// is in the ring, it or `front_new` holds one.
    front: u64,
    /// Keys pushed for the front bucket after it was sorted.
    front_new: KeyHeap,
    /// Entries in `ring` and `front_new`.
    in_ring: usize,
    /// Keys whose bucket was before `front` when pushed: smaller than any in the ring.
    stale: KeyHeap,
    /// Keys whose bucket was past the ring's span: larger than any in the ring.
    far: KeyHeap,
}

type KeyHeap = std::collections::BinaryHeap<std::cmp::Reverse<(u128, u32)>>;

impl Default for LateQueue {
    fn default() -> Self {
        LateQueue {
            ring: Vec::new(),
            occupied: vec![0; LateQueue::RING / 64],
            front: 0,
            front_new: KeyHeap::new(),
            in_ring: 0,
            stale: KeyHeap::new(),
            far: KeyHeap::new(),
        }
    }
}

// The ring spans twice the window, so that a late event's bucket is within it.
const _: () = assert!(
    LateQueue::RING as u128 * LateQueue::BUCKET_US as u128 >= 2 * Reorder::WINDOW.as_micros()
);

impl LateQueue {
    /// 2,048 buckets of 1,024 us: two seconds.
    const RING: usize = 2048;
    const BUCKET_US: u64 = 1024;
    /// Room an emptied bucket keeps (a bucket holds ~10 at 20,000 queries/s)...
    const BUCKET_KEEPS: usize = 64;
    /// ...and an emptied heap.
    const HEAP_KEEPS: usize = 1024;

    fn len(&self) -> usize {
        self.in_ring + self.stale.len() + self.far.len()
    }

    fn bucket_of(key: u128) -> u64 {
        ((key >> 64) as u64) / Self::BUCKET_US
    }

    fn at(bucket: u64) -> usize {
        (bucket % Self::RING as u64) as usize
    }

    fn push(&mut self, key: u128, slot: u32) {
        if self.ring.is_empty() {
            self.ring = vec![Vec::new(); Self::RING];
        }
        let b = Self::bucket_of(key);
        if self.len() == 0 {
            self.front = b;
        }
        if b < self.front {
            self.stale.push(std::cmp::Reverse((key, slot)));
        } else if b == self.front {
            self.front_new.push(std::cmp::Reverse((key, slot)));
            self.in_ring += 1;
        } else if b - self.front >= Self::RING as u64 {
            self.far.push(std::cmp::Reverse((key, slot)));
        } else {
            self.put(b, key, slot);
        }
        self.settle();
    }

    /// Into the ring, unsorted.
    fn put(&mut self, b: u64, key: u128, slot: u32) {
        let i = Self::at(b);
        self.ring[i].push((key, slot));
        self.occupied[i / 64] |= 1 << (i % 64);
        self.in_ring += 1;
    }

    /// The front's smallest, and whether it is in the sorted bucket (else in `front_new`).
    fn front_first(&self) -> Option<((u128, u32), bool)> {
        let sorted = self.ring[Self::at(self.front)].last().copied();
        let new = self.front_new.peek().map(|std::cmp::Reverse(first)| *first);
        match (sorted, new) {
            (Some(a), Some(b)) if b.0 < a.0 => Some((b, false)),
            (Some(a), _) => Some((a, true)),
            (None, b) => b.map(|b| (b, false)),
        }
    }

    /// The smallest (key, slot).
    fn peek(&self) -> Option<(u128, u32)> {
        if let Some(std::cmp::Reverse(first)) = self.stale.peek() {
            return Some(*first);
        }
        if self.in_ring > 0 {
            return self.front_first().map(|(first, _)| first);
        }
        self.far.peek().map(|std::cmp::Reverse(first)| *first)
    }

    /// Take the smallest; its slot.
    fn pop(&mut self) -> Option<u32> {
        if let Some(std::cmp::Reverse((_, slot))) = self.stale.pop() {
            shrink_emptied(&mut self.stale);
            return Some(slot);
        }
        let slot = if self.in_ring > 0 {
            let (_, sorted) = self.front_first()?;
            self.in_ring -= 1;
            if sorted {
                let i = Self::at(self.front);
                let (_, slot) = self.ring[i].pop()?;
                if self.ring[i].is_empty() {
                    self.occupied[i / 64] &= !(1 << (i % 64));
                    // A bucket that took a burst does not keep its room: 2,048 buckets each
                    // at its peak would be far more than the entries ever held at once.
                    self.ring[i].shrink_to(Self::BUCKET_KEEPS);
                }
                slot
            } else {
                let std::cmp::Reverse((_, slot)) = self.front_new.pop()?;
                shrink_emptied(&mut self.front_new);
                slot
            }
        } else {
            let std::cmp::Reverse((_, slot)) = self.far.pop()?;
            shrink_emptied(&mut self.far);
            slot
        };
        self.settle();
        Some(slot)
    }

    /// Make the front bucket the first one holding an entry (the far keys that its move brings
    /// within the ring's span go in), sorted.
    fn settle(&mut self) {
        let front_held = !self.ring[Self::at(self.front)].is_empty() || !self.front_new.is_empty();
        if self.in_ring > 0 && front_held {
            return;
        }
        if self.in_ring == 0 {
            // Nothing in the span: it starts at the smallest far key.
            match self.far.peek() {
                Some(std::cmp::Reverse((key, _))) => self.front = Self::bucket_of(*key),
                None => return,
            }
        } else {
            self.front += self.next_occupied(Self::at(self.front)) as u64;
        }
        while let Some(&std::cmp::Reverse((key, slot))) = self.far.peek() {
            let b = Self::bucket_of(key);
            if b - self.front >= Self::RING as u64 {
                break;
            }
            self.far.pop();
            self.put(b, key, slot);
        }
        shrink_emptied(&mut self.far);
        let front = Self::at(self.front);
        self.ring[front].sort_unstable_by_key(|&(key, _)| std::cmp::Reverse(key));
    }

    /// How many buckets on from ring index `from` the next one holding an entry is (the ring
    /// holds one).
    fn next_occupied(&self, from: usize) -> usize {
        let words = self.occupied.len();
        let (mut w, bit) = (from / 64, from % 64);
        let mut bits = self.occupied[w] & (!0u64 << bit);
        let mut steps = 0;
        while bits == 0 {
            w = (w + 1) % words;
            bits = self.occupied[w];
            steps += 1;
            assert!(steps <= words, "the ring holds an entry");
        }
        let i = w * 64 + bits.trailing_zeros() as usize;
        (i + Self::RING - from) % Self::RING
    }
}

/// A heap emptied after a burst gives its room back.
fn shrink_emptied(heap: &mut KeyHeap) {
    if heap.is_empty() && heap.capacity() > LateQueue::HEAP_KEEPS {
        heap.shrink_to(LateQueue::HEAP_KEEPS);
    }
}

#[cfg(test)]
mod reorder_tests {
    use super::*;
    use crate::event::Timestamp;

    fn ev(us: u64) -> QueryEvent {
        QueryEvent {
            time: Timestamp(us),
            client: "10.0.0.1".parse().unwrap(),
            client_port: None,
            qname: format!("n{us}."),
            qtype: 1,
            rcode: None,
            answers: None,
            latency: None,
            source: None,
        }
    }

    /// A seeded generator of numbers below `n`, the same sequence every run.
    fn xorshift(mut state: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        }
    }

    #[test]
    fn a_query_answered_fast_no_longer_overtakes_the_one_sent_before_it() {
        let mut r = Reorder::new(std::time::Duration::from_millis(10), 100);
        let mut out = Vec::new();
        for t in [1_000, 3_000, 2_000, 20_000, 15_000, 40_000] {
            r.push(ev(t), |e| out.push(e.time.0));
        }
        r.finish(|e| out.push(e.time.0));
        assert_eq!(out, [1_000, 2_000, 3_000, 15_000, 20_000, 40_000]);
    }

    #[test]
    fn memory_is_bounded_by_max_held() {
        let mut r = Reorder::new(std::time::Duration::from_secs(100), 3);
        let mut out = Vec::new();
        for t in 0..10 {
            r.push(ev(t), |e| out.push(e.time.0));
            assert!(r.held() <= 3);
        }
        assert_eq!(out.len(), 7);
    }

    /// The calendar queue gives what a binary heap gives, pop for pop, on keys that mostly grow
    /// (as the window's), keys below everything taken before (stale), keys far past the
    /// ring's span, and runs that empty it.
    #[test]
    fn late_queue_pops_as_a_binary_heap_does() {
        // Times spread over many buckets, and times within two buckets (pushes for the front).
        for per_us in [4, 512] {
            let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
            let mut q = LateQueue::default();
            let mut model = std::collections::BinaryHeap::new();
            let mut seq = 0u64;
            let (mut stale_seen, mut far_seen, mut front_new_seen) = (false, false, false);
            for step in 0..200_000u64 {
                let time = step / per_us;
                if next(3) > 0 || model.is_empty() {
                    seq += 1;
                    let t = match next(20) {
                        0 => time.saturating_sub(next(50_000)), // stale
                        1 if next(50) == 0 => time + 3_000_000 + next(5_000_000), // far
                        1..=8 => time.saturating_sub(next(400)),
                        _ => time,
                    };
                    let key = late_key(t, seq);
                    q.push(key, seq as u32);
                    stale_seen |= !q.stale.is_empty();
                    far_seen |= !q.far.is_empty();
                    front_new_seen |= !q.front_new.is_empty();
                    model.push(std::cmp::Reverse((key, seq as u32)));
                } else {
                    let peeked = q.peek().map(|(key, _)| key);
                    let want = model
                        .pop()
                        .map(|std::cmp::Reverse((key, slot))| (key, slot));
                    assert_eq!(peeked, want.map(|w| w.0), "step {step}");
                    assert_eq!(q.pop(), want.map(|w| w.1), "step {step}");
                }
                assert_eq!(q.len(), model.len());
            }
            while let Some(std::cmp::Reverse((_, slot))) = model.pop() {
                assert_eq!(q.pop(), Some(slot));
            }
            assert_eq!(q.pop(), None);
            assert!(front_new_seen, "no key came for the sorted front bucket");
            if per_us == 4 {
                assert!(stale_seen, "no key went below the front bucket");
                assert!(far_seen, "no key went past the ring");
            }
        }
    }

    /// Found in review: a key for the front bucket was inserted at its place in the sorted
    /// bucket, moving every entry after it; keys of one time come in rising order, so each
    /// went to the start: quadratic in a burst of equal times (a JSON-lines file of late
    /// lines with one timestamp). They now go to a heap beside the sorted bucket.
    #[test]
    fn equal_late_times_were_inserted_into_the_sorted_front_bucket() {
        let mut q = LateQueue::default();
        for seq in 1..=10_000u64 {
            q.push(late_key(5, seq), seq as u32);
            assert!(q.ring[LateQueue::at(q.front)].len() <= 1);
        }
        for seq in 1..=10_000u32 {
            assert_eq!(q.pop(), Some(seq));
        }
        assert_eq!(q.pop(), None);
        assert!(
            q.front_new.capacity() <= LateQueue::HEAP_KEEPS,
            "the burst's room given back"
        );
    }

    /// The queue for events nearly in order and the heap for late ones give together exactly
    /// the order of one priority queue on (time, arrival), with the same releases by window
    /// and by `max_held`: checked against a plain list on events a few places out of order,
    /// far out of order, and of equal times.
    #[test]
    fn late_events_and_equal_times_come_out_as_from_one_priority_queue() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for (window_us, max_held) in [(1_000, 1 << 20), (50_000, 1 << 20), (50_000, 40)] {
            let window = std::time::Duration::from_micros(window_us);
            let mut r = Reorder::new(window, max_held);
            // The model: every held (time, arrival, id), the smallest released first.
            let mut model: Vec<(u64, u64, usize)> = Vec::new();
            let (mut got, mut want) = (Vec::new(), Vec::new());
            let mut latest = 0;
            for i in 0..5_000usize {
                let base = i as u64 * 10;
                let time = match next(10) {
                    0 => base.saturating_sub(next(200_000)), // far late
                    1..=3 => base.saturating_sub(next(300)), // a few places
                    4 => base / 40 * 40,                     // equal times
                    _ => base,
                };
                let mut e = ev(time);
                e.qtype = i as u16;
                r.push(e, |e| got.push(e.qtype as usize));
                latest = latest.max(time);
                model.push((time, i as u64, i));
                while let Some(min) = model.iter().copied().min() {
                    if model.len() <= max_held && min.0 + window_us > latest {
                        break;
                    }
                    model.retain(|m| *m != min);
                    want.push(min.2);
                }
                assert!(r.held() <= max_held);
            }
            r.finish(|e| got.push(e.qtype as usize));
            model.sort();
            want.extend(model.iter().map(|m| m.2));
            assert_eq!(got.len(), 5_000);
            assert!(got == want, "window {window_us} us, max_held {max_held}");
            assert!(!r.slots.is_empty(), "no event went the late way");
        }
    }
}
