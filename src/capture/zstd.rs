//! A zstd-compressed capture: one frame or several one after another (RFC 8878 §3: "one or more
//! frames"), as `cat a.zst b.zst` and `pzstd` write them, skippable frames (§3.1.2, `pzstd`
//! starts with one) skipped. `ruzstd`'s decoder reads one frame and then reports the end, so
//! the frames after the first were read as no bytes at all, and their records disappeared
//! uncounted. Bytes after a frame that are not a frame end the input with an error, which the
//! format reader counts as one unreadable record.

use std::io::{self, Read};

use ruzstd::decoding::{FrameDecoder, StreamingDecoder};

/// A zstd frame's magic number, as its first four bytes read little-endian (RFC 8878 §3.1.1).
const FRAME_MAGIC: u32 = 0xFD2F_B528;

/// Whether `head` starts as zstd data: a frame, or a skippable frame (RFC 8878 §3.1.2: magic
/// numbers 0x184D2A50 to 0x184D2A5F).
pub(super) fn starts(head: &[u8]) -> bool {
    match head.get(..4) {
        Some(m) => {
            let m = u32::from_le_bytes([m[0], m[1], m[2], m[3]]);
            m == FRAME_MAGIC || is_skippable(m)
        }
        None => false,
    }
}

fn is_skippable(magic: u32) -> bool {
    magic & 0xFFFF_FFF0 == 0x184D_2A50
}

/// The decompressed bytes of every frame of `R`, in order.
pub(super) struct Frames<R: Read> {
    /// The frame being read; `None` once the input has ended.
    frame: Option<StreamingDecoder<GivenBack<R>, FrameDecoder>>,
    /// Frames begun, for errors.
    frames: u64,
}

impl<R: Read> Frames<R> {
    /// Read up to the first frame's header: an error when the input is not zstd data.
    pub(super) fn new(input: R) -> io::Result<Frames<R>> {
        let mut f = Frames {
            frame: None,
            frames: 0,
        };
        let source = GivenBack {
            back: [0; 4],
            at: 0,
            len: 0,
            inner: input,
        };
        f.begin(source, FrameDecoder::new())?;
        Ok(f)
    }

    /// Begin the next frame of `source`, skipping skippable ones; at the input's end, end.
    fn begin(&mut self, mut source: GivenBack<R>, decoder: FrameDecoder) -> io::Result<()> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        loop {
            let mut magic = [0u8; 4];
            match read_up_to(&mut source, &mut magic)? {
                0 => return Ok(()),
                4 => {}
                n => {
                    return Err(bad(format!(
                        "zstd: {n} bytes after frame {}, not a frame",
                        self.frames
                    )))
                }
            }
            let m = u32::from_le_bytes(magic);
            if is_skippable(m) {
                let mut len = [0u8; 4];
                let len = match read_up_to(&mut source, &mut len)? {
                    4 => u32::from_le_bytes(len) as u64,
                    _ => return Err(bad("zstd: a skippable frame cut in its header".into())),
                };
                let skipped = io::copy(&mut (&mut source).take(len), &mut io::sink())?;
                if skipped < len {
                    return Err(bad(format!(
                        "zstd: a skippable frame cut after {skipped} of its {len} bytes"
                    )));
                }
                continue;
            }
            if m != FRAME_MAGIC {
                return Err(bad(format!(
                    "zstd: bytes after frame {} that are not a frame",
                    self.frames
                )));
            }
            source.give_back(magic);
            self.frames += 1;
            let frame = StreamingDecoder::new_with_decoder(source, decoder)
                .map_err(|e| bad(format!("zstd: frame {}: {e}", self.frames)))?;
            self.frame = Some(frame);
            return Ok(());
        }
    }
}

impl<R: Read> Read for Frames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(frame) = self.frame.as_mut() else {
                return Ok(0);
            };
            let n = frame.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This frame is over: the next one, if any (its decoder's buffers reused).
            let (source, decoder) = self.frame.take().expect("a frame").into_parts();
            self.begin(source, decoder)?;
        }
    }
}

/// `R` with up to four bytes read from it given back, read again first: a frame's magic
/// number, read to tell what comes next.
struct GivenBack<R> {
    back: [u8; 4],
    at: usize,
    len: usize,
    inner: R,
}

impl<R> GivenBack<R> {
    fn give_back(&mut self, bytes: [u8; 4]) {
        debug_assert_eq!(self.at, self.len, "nothing given back is left");
        self.back = bytes;
        self.at = 0;
        self.len = 4;
    }
}

impl<R: Read> Read for GivenBack<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at < self.len {
            let n = (self.len - self.at).min(buf.len());
            buf[..n].copy_from_slice(&self.back[self.at..self.at + n]);
            self.at += n;
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

/// Fill `buf` from `r` until it is full or the input ends: how many bytes.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two frames one after the other, as `cat a.zst b.zst` gives (built here to the RFC;
    /// tests/captures.rs reads the real `zstd` and `pzstd` tools' output).
    fn two_frames() -> Vec<u8> {
        let mut v = Vec::new();
        for text in ["first frame\n", "second frame\n"] {
            v.extend(frame_of(text.as_bytes()));
        }
        v
    }

    /// A frame of one raw block holding `data` (RFC 8878 §3.1.1: frame header with the content
    /// size, no checksum; a last raw block).
    fn frame_of(data: &[u8]) -> Vec<u8> {
        assert!(data.len() < 256);
        let mut v = FRAME_MAGIC.to_le_bytes().to_vec();
        // Frame header descriptor: single segment, 1-byte content size (flag 0).
        v.push(0b0010_0000);
        v.push(data.len() as u8);
        // Block header: last block, raw, size.
        let header = 1u32 | (data.len() as u32) << 3;
        v.extend_from_slice(&header.to_le_bytes()[..3]);
        v.extend_from_slice(data);
        v
    }

    fn skippable(len: u32) -> Vec<u8> {
        let mut v = 0x184D_2A53u32.to_le_bytes().to_vec();
        v.extend_from_slice(&len.to_le_bytes());
        v.extend(std::iter::repeat_n(0xAA, len as usize));
        v
    }

    fn read_all(bytes: &[u8]) -> (Vec<u8>, Option<io::Error>) {
        let mut out = Vec::new();
        let mut f = match Frames::new(bytes) {
            Ok(f) => f,
            Err(e) => return (out, Some(e)),
        };
        let mut buf = [0u8; 7];
        loop {
            match f.read(&mut buf) {
                Ok(0) => return (out, None),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[test]
    fn a_zstd_capture_of_several_frames_was_read_to_the_end_of_its_first() {
        let (out, err) = read_all(&two_frames());
        assert!(err.is_none(), "{err:?}");
        assert_eq!(out, b"first frame\nsecond frame\n");
        // pzstd's output: a skippable frame first, and between frames.
        let mut v = skippable(12);
        v.extend(frame_of(b"one\n"));
        v.extend(skippable(0));
        v.extend(frame_of(b"two\n"));
        assert!(starts(&v));
        let (out, err) = read_all(&v);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(out, b"one\ntwo\n");
    }

    #[test]
    fn what_follows_a_frame_and_is_not_one_ends_the_input_with_an_error() {
        for (tail, want) in [
            (b"xyz!".to_vec(), "not a frame"),
            (b"xy".to_vec(), "2 bytes after frame 1"),
            (skippable(10)[..12].to_vec(), "cut after 4 of its 10"),
        ] {
            let mut v = frame_of(b"kept\n");
            v.extend(tail);
            let (out, err) = read_all(&v);
            assert_eq!(out, b"kept\n");
            let err = err.expect("an error").to_string();
            assert!(err.contains(want), "{err}");
        }
        // A second frame cut short: its bytes up to the cut, then the decoder's error.
        let mut v = frame_of(b"whole\n");
        let second = frame_of(b"cut in the middle\n");
        v.extend_from_slice(&second[..second.len() - 5]);
        let (out, err) = read_all(&v);
        assert!(out.starts_with(b"whole\n"), "{out:?}");
        assert!(err.is_some());
    }
}
