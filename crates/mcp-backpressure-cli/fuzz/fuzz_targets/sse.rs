//! The SSE parser never panics, and chunking never changes what it parses.
//!
//! Input: one byte for `max_event_bytes`, one byte for the number of cuts
//! (0..8), two bytes per cut, then the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_backpressure_cli::wire::sse::{SseEvent, SseParser};

fn parse<'a>(max: usize, chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<SseEvent>, Vec<u8>) {
    let mut parser = SseParser::new(max);
    let mut events = Vec::new();
    for chunk in chunks {
        parser.push(chunk, &mut |event| events.push(event));
    }
    parser.finish();
    (events, parser.last_event_id().to_vec())
}

fuzz_target!(|input: &[u8]| {
    let [max, cuts, rest @ ..] = input else {
        return;
    };
    let cuts = usize::from(cuts % 8);
    if rest.len() < 2 * cuts {
        return;
    }
    let (cuts, stream) = rest.split_at(2 * cuts);
    let max = usize::from(*max);

    let whole = parse(max, [stream]);
    let mut points: Vec<usize> = cuts
        .chunks(2)
        .map(|cut| usize::from(u16::from_le_bytes([cut[0], cut[1]])) % (stream.len() + 1))
        .collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut at = 0;
    for point in points {
        chunks.push(&stream[at..point]);
        at = point;
    }
    chunks.push(&stream[at..]);
    assert_eq!(parse(max, chunks), whole);
    assert_eq!(parse(max, stream.chunks(1)), whole);
});
