//! Reading a request body with bounds: in size (`max_bytes`), in time (a
//! total timeout, from the first poll to the last byte) and in memory (a
//! [`Budget`] shared by every body being read at once).
//!
//! The budget counts the bytes actually received: it is taken chunk by
//! chunk as they arrive, not reserved from `Content-Length`, so a client
//! that announces a large body and sends nothing holds nothing. When the
//! budget is spent, a reader waits for bytes to come back (its client's
//! socket is not read meanwhile: TCP backpressure) — and that wait counts
//! against its timeout. Readers are served in order (tokio's semaphore is
//! fair): the first waiter takes the bytes that come back until it has
//! what it asked for, and the readers behind it, small ones too, wait. Two
//! bodies that each hold part of the budget and both need more wait for
//! each other until one times out (408) and gives its bytes back; the
//! timeout is what bounds that wait.
//!
//! Memory: the budget, plus per reader waiting for budget the one chunk it
//! holds meanwhile (at most the listener's read buffer,
//! `listener::MAX_BUF_SIZE`), plus the slack of a growing buffer (a body
//! read in several chunks is copied into one buffer, at most twice its
//! size).

use std::time::Duration;

use axum::body::{Body, HttpBody};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use super::budget::{Budget, Lease};

/// Why a body was not read. The edge answers 413, 408 and 400.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// Larger than `max_bytes`, announced (`Content-Length`) or received.
    #[error("the request body exceeds {max} bytes")]
    TooLarge {
        /// The bound.
        max: usize,
    },
    /// Not received, or no budget for it, within the timeout.
    #[error("the request body was not received within {after:?}")]
    TimedOut {
        /// The timeout.
        after: Duration,
    },
    /// The client broke off the body (the connection closed or failed, or
    /// the chunked encoding was invalid).
    #[error("the client broke off the request body: {0}")]
    BrokenOff(axum::Error),
}

/// Reads `body` whole: at most `max_bytes`, within `timeout` (total, from
/// this call to the last byte, waiting for budget included; the proxy's is
/// `--body-read-timeout`, default 20 s: a body of 16 MiB at less than
/// 1 MiB/s is too slow for a tool call), holding budget for the bytes received as they arrive
/// (a body larger than the whole budget takes the whole budget). Returns
/// the body and the lease on its bytes: hold the lease while the bytes are
/// held.
///
/// A body that announces more than `max_bytes` is refused before any byte
/// is read. Trailers are ignored.
///
/// # Cancel safety
///
/// Cancel safe in that nothing leaks: dropping the future drops the body
/// (and the bytes read so far) and gives their budget back; a wait for
/// budget leaves the semaphore's queue. The body cannot be read again.
pub async fn read_body(
    body: Body,
    max_bytes: usize,
    timeout: Duration,
    budget: &Budget,
) -> Result<(Bytes, Lease), BodyError> {
    if body.size_hint().lower() > max_bytes as u64 {
        return Err(BodyError::TooLarge { max: max_bytes });
    }
    if body.is_end_stream() {
        return Ok((Bytes::new(), Lease::empty()));
    }
    tokio::time::timeout(timeout, read(body, max_bytes, budget))
        .await
        .map_err(|_| BodyError::TimedOut { after: timeout })?
}

async fn read(
    mut body: Body,
    max_bytes: usize,
    budget: &Budget,
) -> Result<(Bytes, Lease), BodyError> {
    let mut lease = Lease::empty();
    // Most bodies come in one chunk: kept as it is, not copied.
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        let Ok(chunk) = frame.map_err(BodyError::BrokenOff)?.into_data() else {
            continue; // trailers
        };
        if chunk.is_empty() {
            continue;
        }
        len += chunk.len();
        if len > max_bytes {
            return Err(BodyError::TooLarge { max: max_bytes });
        }
        budget.grow(&mut lease, len).await;
        match first.take() {
            None if rest.is_empty() => first = Some(chunk),
            held => {
                // Grown as bytes come (not from `Content-Length`, which
                // the client may never send): at most twice what is held.
                if let Some(held) = held {
                    rest.extend_from_slice(&held);
                }
                rest.extend_from_slice(&chunk);
            }
        }
    }
    let bytes = first.unwrap_or_else(|| rest.freeze());
    Ok((bytes, lease))
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use axum::body::HttpBody;
    use axum::http::HeaderMap;
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;
    use tokio::time::Instant;
    use tokio_test::{assert_pending, assert_ready};

    use super::*;

    /// A body fed chunk by chunk by the test, with an optional announced
    /// length (as `Content-Length` gives hyper's body).
    struct Fed {
        chunks: mpsc::UnboundedReceiver<Result<Bytes, &'static str>>,
        announced: Option<u64>,
    }

    impl HttpBody for Fed {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            self.chunks
                .poll_recv(cx)
                .map(|chunk| chunk.map(|chunk| chunk.map(hyper::body::Frame::data)))
        }

        fn size_hint(&self) -> hyper::body::SizeHint {
            match self.announced {
                Some(len) => hyper::body::SizeHint::with_exact(len),
                None => hyper::body::SizeHint::default(),
            }
        }
    }

    type Feed = mpsc::UnboundedSender<Result<Bytes, &'static str>>;

    fn fed(announced: Option<u64>) -> (Feed, Body) {
        let (tx, chunks) = mpsc::unbounded_channel();
        (tx, Body::new(Fed { chunks, announced }))
    }

    fn bytes(n: usize) -> Result<Bytes, &'static str> {
        Ok(Bytes::from(vec![b'x'; n]))
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn a_body_is_read_whole_and_its_lease_holds_its_bytes() {
        let budget = Budget::new(1000);
        let (feed, body) = fed(None);
        for n in [100, 200, 50] {
            feed.send(bytes(n)).unwrap();
        }
        drop(feed);
        let (read, lease) = read_body(body, 1000, SECOND, &budget).await.unwrap();
        assert_eq!(read.len(), 350);
        assert_eq!(lease.bytes(), 350);
        assert_eq!(budget.in_use(), 350);
        drop(lease);
        assert_eq!(budget.in_use(), 0);
        // One chunk, announced: passes as it is.
        let (read, lease) = read_body(Body::from("hello"), 10, SECOND, &budget)
            .await
            .unwrap();
        assert_eq!(&read[..], b"hello");
        assert_eq!(lease.bytes(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_body_takes_no_budget() {
        let budget = Budget::new(1);
        let _all = {
            let mut lease = Lease::empty();
            budget.grow(&mut lease, 1).await;
            lease
        };
        let (read, lease) = read_body(Body::empty(), 10, SECOND, &budget).await.unwrap();
        assert!(read.is_empty());
        assert_eq!(lease.bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_over_the_bound_is_refused() {
        let budget = Budget::new(1000);
        // Announced: refused before anything is read.
        let (_feed, body) = fed(Some(101));
        let error = read_body(body, 100, SECOND, &budget).await.unwrap_err();
        assert!(matches!(error, BodyError::TooLarge { max: 100 }), "{error}");
        // Received: refused at the chunk that crosses the bound.
        let (feed, body) = fed(None);
        feed.send(bytes(60)).unwrap();
        feed.send(bytes(41)).unwrap();
        let error = read_body(body, 100, SECOND, &budget).await.unwrap_err();
        assert!(matches!(error, BodyError::TooLarge { max: 100 }), "{error}");
        assert_eq!(budget.in_use(), 0);
        // Exactly the bound passes.
        let (feed, body) = fed(Some(100));
        feed.send(bytes(100)).unwrap();
        drop(feed);
        assert_eq!(
            read_body(body, 100, SECOND, &budget).await.unwrap().0.len(),
            100
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out_at_the_timeout_and_gives_its_bytes_back() {
        let budget = Budget::new(1000);
        let (feed, body) = fed(Some(500));
        feed.send(bytes(200)).unwrap();
        let started = Instant::now();
        let mut read = tokio_test::task::spawn(read_body(body, 1000, 20 * SECOND, &budget));
        assert_pending!(read.poll());
        assert_eq!(budget.in_use(), 200, "the bytes received are held");
        // More bytes, later, do not extend the timeout: it is total.
        tokio::time::sleep(15 * SECOND).await;
        feed.send(bytes(100)).unwrap();
        assert_pending!(read.poll());
        assert_eq!(budget.in_use(), 300);
        let error = read.await.unwrap_err();
        assert_eq!(started.elapsed().as_millis(), 20_000);
        assert!(
            matches!(error, BodyError::TimedOut { after } if after == 20 * SECOND),
            "{error}"
        );
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_wait_for_budget_and_never_exceed_it() {
        let budget = Budget::new(1000);
        let (feed_a, a) = fed(None);
        let (feed_b, b) = fed(None);
        let mut a = tokio_test::task::spawn(read_body(a, 10_000, 20 * SECOND, &budget));
        let mut b = tokio_test::task::spawn(read_body(b, 10_000, 20 * SECOND, &budget));
        feed_a.send(bytes(700)).unwrap();
        assert_pending!(a.poll());
        feed_b.send(bytes(200)).unwrap();
        assert_pending!(b.poll());
        assert_eq!(budget.in_use(), 900);
        // b's next chunk does not fit: b waits, holding what it has (and,
        // in the semaphore's queue, the 100 bytes left).
        feed_b.send(bytes(300)).unwrap();
        assert_pending!(b.poll());
        assert_eq!(budget.in_use(), 1000);
        // a ends: its bytes are held by its lease until it is dropped.
        drop(feed_a);
        let (body_a, lease_a) = assert_ready!(a.poll()).unwrap();
        assert_eq!(body_a.len(), 700);
        assert_pending!(b.poll());
        assert_eq!(budget.in_use(), 1000);
        drop(lease_a);
        assert!(b.is_woken());
        assert_pending!(b.poll());
        assert_eq!(budget.in_use(), 500);
        drop(feed_b);
        let (body_b, lease_b) = assert_ready!(b.poll()).unwrap();
        assert_eq!((body_b.len(), lease_b.bytes()), (500, 500));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_budget_counts_against_the_timeout() {
        let budget = Budget::new(1000);
        let mut hog = Lease::empty();
        budget.grow(&mut hog, 1000).await;
        let (feed, body) = fed(Some(10));
        feed.send(bytes(10)).unwrap();
        drop(feed);
        let started = Instant::now();
        let error = read_body(body, 100, 3 * SECOND, &budget).await.unwrap_err();
        assert_eq!(started.elapsed().as_millis(), 3_000);
        assert!(matches!(error, BodyError::TimedOut { .. }), "{error}");
        assert_eq!(budget.in_use(), 1000, "only the hog's bytes are held");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_larger_than_the_budget_takes_the_whole_budget() {
        let budget = Budget::new(1000);
        let (feed, body) = fed(None);
        for _ in 0..3 {
            feed.send(bytes(600)).unwrap();
        }
        drop(feed);
        let (read, lease) = read_body(body, 10_000, SECOND, &budget).await.unwrap();
        assert_eq!(read.len(), 1800);
        assert_eq!(lease.bytes(), 1000);
        assert_eq!(budget.in_use(), 1000);
        // Another body waits for it.
        let mut next = tokio_test::task::spawn(read_body(Body::from("x"), 10, SECOND, &budget));
        assert_pending!(next.poll());
        drop(lease);
        assert!(assert_ready!(next.poll()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_off_body_is_an_error_and_gives_its_bytes_back() {
        let budget = Budget::new(1000);
        let (feed, body) = fed(Some(500));
        feed.send(bytes(100)).unwrap();
        feed.send(Err("connection reset")).unwrap();
        let error = read_body(body, 1000, SECOND, &budget).await.unwrap_err();
        assert!(matches!(error, BodyError::BrokenOff(_)), "{error}");
        assert!(error.to_string().contains("connection reset"), "{error}");
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_read_gives_everything_back() {
        let budget = Budget::new(1000);
        let mut hog = Lease::empty();
        budget.grow(&mut hog, 900).await;
        let (feed, body) = fed(None);
        feed.send(bytes(50)).unwrap();
        feed.send(bytes(100)).unwrap();
        let mut read = tokio_test::task::spawn(read_body(body, 1000, SECOND, &budget));
        assert_pending!(read.poll()); // holds 50, waits for 100 more (has 50 of them)
        assert_eq!(budget.in_use(), 1000);
        drop(read);
        assert_eq!(budget.in_use(), 900);
        // The semaphore's queue was left: a later small request gets through.
        drop(hog);
        let (_, lease) = read_body(Body::from("ok"), 10, SECOND, &budget)
            .await
            .unwrap();
        assert_eq!(lease.bytes(), 2);
    }

    #[test]
    fn trailers_are_ignored() {
        let body = http_body_util::Full::new(Bytes::from_static(b"abc"))
            .with_trailers(async { Some(Ok(HeaderMap::new())) });
        let budget = Budget::new(10);
        let read = tokio_test::block_on(read_body(Body::new(body), 10, SECOND, &budget));
        assert_eq!(&read.unwrap().0[..], b"abc");
    }
}
