//! Bounded newline framing for stdio: one message a line, split on LF only
//! (a CR before the LF is dropped, and a UTF-8 byte order mark at the start
//! of any line, as rmcp drops it). What the proxy forwards is re-framed
//! ([`super::message`]), so the peer's line reader — whatever it splits on —
//! sees exactly the lines the proxy parsed, without the mark.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use super::message::BOM;

/// One line read by [`read_line`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its newline (and without a trailing `\r` or
    /// a leading byte order mark).
    Message(Vec<u8>),
    /// A line longer than the bound: its bytes went to the overflow sink, not
    /// into memory.
    TooLong {
        /// How many bytes it had (at least the bound plus one).
        len: usize,
    },
    /// The end of the input.
    Eof,
}

/// Reads one newline-terminated line, holding at most `max` bytes of it in
/// memory. A longer line is consumed: every byte of it is passed to
/// `overflow` (so that a streaming scanner can still learn what it was), and
/// it is reported as [`Line::TooLong`]. A last line without a newline still
/// counts as a line. A UTF-8 byte order mark at the start of the line is
/// dropped (it is not counted, nor passed to `overflow`).
///
/// # Cancel safety
///
/// Not cancel safe: dropping the future mid-line loses the bytes already
/// consumed. Call it from a loop that owns the reader.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
    mut overflow: impl FnMut(&[u8]),
) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut len = 0usize;
    // A byte order mark first, byte by byte (it may be split across reads).
    let mut seen = 0;
    while seen < BOM.len() {
        let buf = reader.fill_buf().await?;
        if buf.first() != Some(&BOM[seen]) {
            break;
        }
        reader.consume(1);
        seen += 1;
    }
    if seen < BOM.len() {
        // Only part of one: those bytes are the line's.
        line.extend_from_slice(&BOM[..seen]);
        len = seen;
        if len > max {
            overflow(&line);
            line.clear();
        }
    }
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if len == 0 {
                Line::Eof
            } else if len > max {
                Line::TooLong { len }
            } else {
                Line::Message(trim_cr(line))
            });
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(at) => (&buf[..at], at + 1),
            None => (buf, buf.len()),
        };
        len += chunk.len();
        if len <= max {
            line.extend_from_slice(chunk);
        } else {
            if !line.is_empty() {
                overflow(&line);
                line = Vec::new();
            }
            overflow(chunk);
        }
        let ended = done != chunk.len();
        reader.consume(done);
        if ended {
            return Ok(if len > max {
                Line::TooLong { len }
            } else {
                Line::Message(trim_cr(line))
            });
        }
    }
}

fn trim_cr(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    line
}

/// Whether a line holds nothing but white space (skipped, as JSON-RPC peers do).
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Reads every line of `input` through a reader that hands out at most
    /// `chunk` bytes at a time.
    fn lines(input: &[u8], chunk: usize, max: usize) -> Vec<(Line, Vec<u8>)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut reader = tokio::io::BufReader::with_capacity(chunk, input);
            let mut out = Vec::new();
            loop {
                let mut spilled = Vec::new();
                let line = read_line(&mut reader, max, |b| spilled.extend_from_slice(b))
                    .await
                    .unwrap();
                if line == Line::Eof {
                    return out;
                }
                out.push((line, spilled));
            }
        })
    }

    proptest! {
        /// Framing does not depend on how the bytes arrive; an oversized
        /// line spills exactly its bytes; no line holds a LF.
        #[test]
        fn lines_do_not_depend_on_chunking(
            input in prop::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..300),
            chunk in 1usize..40,
            max in 1usize..50,
        ) {
            let whole = lines(&input, 4096, max);
            prop_assert_eq!(&lines(&input, chunk, max), &whole);
            for (line, spilled) in &whole {
                match line {
                    Line::Message(bytes) => {
                        prop_assert!(bytes.len() <= max && !bytes.contains(&b'\n'));
                        prop_assert!(spilled.is_empty());
                    }
                    Line::TooLong { len } => prop_assert_eq!(*len, spilled.len()),
                    Line::Eof => unreachable!(),
                }
            }
        }
    }

    /// A byte order mark at the start of any line is dropped, however the
    /// bytes arrive, and counts for nothing; anywhere else it stays.
    #[test]
    fn a_byte_order_mark_starts_any_line_and_is_dropped() {
        let bom = "\u{feff}";
        let input = format!(
            "{bom}{{\"a\":1}}\r\n{bom}{{\"b\":2}}\n{bom}\n{bom}\r\n \r\n x{bom}\n{bom}{bom}y\n{bom}"
        );
        let expected = [
            b"{\"a\":1}".to_vec(),
            b"{\"b\":2}".to_vec(),
            Vec::new(),
            Vec::new(),
            b" ".to_vec(),
            format!(" x{bom}").into_bytes(),
            format!("{bom}y").into_bytes(),
        ];
        for chunk in [1, 2, 3, 4, 7, 4096] {
            let got: Vec<Vec<u8>> = lines(input.as_bytes(), chunk, 64)
                .into_iter()
                .map(|(line, _)| match line {
                    Line::Message(bytes) => bytes,
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(got, expected, "chunks of {chunk}");
        }
        // Only part of one: the bytes are the line's (and not UTF-8).
        let partial = lines(b"\xEF\xBB{}\n", 1, 64);
        assert_eq!(partial[0].0, Line::Message(b"\xEF\xBB{}".to_vec()));
        // An oversized line does not count it, nor spill it.
        let long = format!("{bom}{}\n", "x".repeat(10));
        assert_eq!(
            lines(long.as_bytes(), 2, 8),
            [(Line::TooLong { len: 10 }, b"xxxxxxxxxx".to_vec())]
        );
        assert!(is_blank(b" \t"));
    }

    #[tokio::test]
    async fn lines_are_bounded_and_overflow_is_streamed() {
        let input = b"{\"a\":1}\r\n0123456789abcdef\n\nlast".to_vec();
        let mut reader = tokio::io::BufReader::with_capacity(4, &input[..]);
        let mut spilled = Vec::new();
        let read = async |reader: &mut tokio::io::BufReader<&[u8]>, spilled: &mut Vec<u8>| {
            read_line(reader, 8, |b| spilled.extend_from_slice(b))
                .await
                .unwrap()
        };
        assert_eq!(
            read(&mut reader, &mut spilled).await,
            Line::Message(b"{\"a\":1}".to_vec())
        );
        assert_eq!(
            read(&mut reader, &mut spilled).await,
            Line::TooLong { len: 16 }
        );
        assert_eq!(spilled, b"0123456789abcdef");
        assert_eq!(
            read(&mut reader, &mut spilled).await,
            Line::Message(Vec::new())
        );
        assert_eq!(
            read(&mut reader, &mut spilled).await,
            Line::Message(b"last".to_vec())
        );
        assert_eq!(read(&mut reader, &mut spilled).await, Line::Eof);
    }
}
