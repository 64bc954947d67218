//! Any bytes as a dnstap capture: no panic, every record accounted for.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ndots::capture::{from_reader, Format, Options};

fuzz_target!(|data: &[u8]| {
    let opts = Options {
        format: Some(Format::Dnstap),
        max_pending: 64,
        ..Options::default()
    };
    // Open fails only on a compression header that does not decode: an error, not a panic.
    let Ok(mut c) = from_reader(Box::new(std::io::Cursor::new(data.to_vec())), &opts) else {
        return;
    };
    for _ in c.by_ref() {}
    let s = c.stats();
    assert!(s.first_unreadable.len() as u64 <= s.counts.unreadable);
});
