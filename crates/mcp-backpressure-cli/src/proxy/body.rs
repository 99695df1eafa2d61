//! Reading a request body with bounds: in size (`max_message_bytes`), in
//! time (a total timeout and a [`pace`]) and in memory (the connection's own
//! bytes, then a [`Budget`] shared by every body being read at once).
//!
//! **What one client's upload cannot do to another's.** The first
//! `small_body_bytes` (`--small-body-bytes`, default 64 KiB) of every body
//! are the connection's own: they are never taken from the shared budget,
//! so **a body of at most `small_body_bytes` is read as fast as its client
//! sends it, whatever other connections upload or fail to upload**. Only
//! bytes beyond that come from the budget (`buffer_bytes`), and they are
//! taken as they arrive, never waited for:
//!
//! - a body whose `Content-Length` is more than `max_message_bytes` is
//!   refused before a byte is read (413), as is one that grows past it;
//! - a body whose `Content-Length` needs more of the budget than is free
//!   now is refused before a byte is read: 503 with `Retry-After`
//!   ([`BUSY_RETRY_AFTER`]), and so is a body (announced or chunked) at the
//!   chunk that finds the budget spent. Its bytes are given back at once.
//!   Nobody waits for budget, so nobody waits behind a stalled upload, and
//!   two half-read bodies never wait for each other;
//! - every body must keep a [`pace`]: it may pause for at most
//!   `body_stall_timeout` (default 5 s), and over longer spans it must
//!   average `body_min_rate` (default 1024 bytes/s); and it must arrive
//!   whole within `body_read_timeout` (default 20 s). A body that does not
//!   gets 408 and gives its bytes back.
//!
//! So a single uploader, however slow or stalled, holds at most
//! `max_message_bytes` (its own `small_body_bytes`, the rest from the
//! budget), for at most
//! `body_stall_timeout` after its last byte and never longer than
//! `body_read_timeout`; then its bytes are free again. A body fully read
//! keeps its bytes (its [`Lease`]) until its request is answered or
//! forwarded, queueing for admission included.
//!
//! At the listener's connection cap, a connection whose body is still
//! being read is ranked with the idle ones by the time since its last byte,
//! and the one longest without progress is evicted for a new connection
//! (`listener::idle`): its read stops at once ([`BodyError::Evicted`]), it
//! is answered 503 with `Retry-After` and `Connection: close`, its bytes
//! are given back, and nothing of it is admitted or forwarded. So stalled
//! uploads cannot hold every connection slot until `body_stall_timeout`
//! either; a body streaming at a healthy pace always has a recent last byte
//! and goes only after every connection that made even less progress.
//!
//! A body refused with 503 for want of budget is read on in the background and thrown away
//! (at the same pace, within the same timeout, up to `max_message_bytes`),
//! holding nothing: a client that is still sending its body when the
//! proxy closes the connection would be sent a reset, which can destroy
//! the 503 before the client reads it. Drained whole, the connection even
//! stays open for the next request.
//!
//! Memory: each connection reads one body at a time (HTTP/1.1), so the
//! connections' own parts are at most `max_connections` ×
//! `small_body_bytes` (64 MiB at the defaults), on top of the budget. Each
//! body may hold about as much again while it is read (a body read in
//! several chunks is copied into one buffer, which grows by doubling) plus
//! one chunk (at most the listener's read buffer,
//! `listener::MAX_BUF_SIZE`).

use std::time::Duration;

use axum::body::{Body, HttpBody};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::time::Instant;

use self::pace::Pace;
use super::budget::{Budget, Lease};
use super::listener::idle::Upload;

pub mod pace;

/// The `Retry-After` of a body refused because the shared budget is spent:
/// the budget frees as bodies are read and forwarded, usually within
/// milliseconds; stalled ones are cut within `body_stall_timeout`.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The bounds of one body: see the module's documentation.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// Largest body accepted (`max_message_bytes`).
    pub max_bytes: usize,
    /// Bytes of each body that are its connection's own, never taken from
    /// the shared budget (`small_body_bytes`).
    pub own_bytes: usize,
    /// The whole body must arrive within this, from the first poll
    /// (`body_read_timeout`).
    pub timeout: Duration,
    /// The longest the body may go without a byte (`body_stall_timeout`).
    pub stall_timeout: Duration,
    /// Over spans longer than `stall_timeout`, the least average rate, in
    /// bytes per second; 0 for none (`body_min_rate`).
    pub min_rate: u64,
}

/// Why a body was not read. The edge answers 413, 408, 503 and 400.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// Larger than `max_message_bytes`, announced (`Content-Length`) or
    /// received.
    #[error("the request body exceeds {max} bytes")]
    TooLarge {
        /// The bound.
        max: usize,
    },
    /// Not received whole within the total timeout.
    #[error("the request body was not received within {after:?}")]
    TimedOut {
        /// The timeout.
        after: Duration,
    },
    /// Below the pace: a pause longer than the stall timeout, or less than
    /// the minimum rate over a longer span.
    #[error(
        "the request body came too slowly: it may pause for at most {stall:?} \
         and must average at least {min_rate} bytes/s"
    )]
    TooSlow {
        /// The stall timeout.
        stall: Duration,
        /// The minimum rate, in bytes per second.
        min_rate: u64,
    },
    /// The shared budget could not hold it now: announced, or at a chunk.
    #[error(
        "the proxy is reading as many request bodies as it can hold; \
         retry after {} s",
        retry_after.as_secs()
    )]
    BudgetSpent {
        /// When to come back.
        retry_after: Duration,
    },
    /// The listener evicted the connection at its cap while the body was
    /// read: the request is not dispatched; answer 503 and close.
    #[error(
        "the proxy is at its connection cap and this request's body made the least \
         progress; retry after {} s",
        retry_after.as_secs()
    )]
    Evicted {
        /// When to come back.
        retry_after: Duration,
    },
    /// The client broke off the body (the connection closed or failed, or
    /// the chunked encoding was invalid).
    #[error("the client broke off the request body: {0}")]
    BrokenOff(axum::Error),
}

/// Reads `body` whole within `limits`, taking the bytes beyond the
/// connection's own part from `budget` as they arrive (a body larger than
/// the whole budget would take the whole budget: the settings forbid a
/// budget below `max_message_bytes`). Returns the body and the lease on
/// its bytes: hold the lease while the bytes are held. Trailers are
/// ignored. Never waits for budget: see the module's documentation for
/// the refusals and the guarantee.
///
/// With the connection's `upload` handle, each chunk is progress for the
/// listener's ranking at the connection cap, the read stops with
/// [`BodyError::Evicted`] when the listener evicts the connection, and on
/// return the request is dispatched (its connection serving) — unless it
/// was evicted first: then the result is [`BodyError::Evicted`] whatever
/// was read, and nothing of the request may be forwarded or admitted.
///
/// # Cancel safety
///
/// Cancel safe in that nothing leaks: dropping the future drops the body
/// (and the bytes read so far) and gives their budget back. The body
/// cannot be read again. A body refused for want of budget is handed to a
/// task of its own that reads it to its end and drops it; that task ends
/// by itself, within the same bounds.
pub async fn read_body(
    body: Body,
    limits: BodyLimits,
    budget: &Budget,
    upload: Option<&Upload>,
) -> Result<(Bytes, Lease), BodyError> {
    let read = read_bounded(body, limits, budget, upload).await;
    match upload {
        Some(upload) if !upload.dispatched() => Err(BodyError::Evicted {
            retry_after: BUSY_RETRY_AFTER,
        }),
        _ => read,
    }
}

async fn read_bounded(
    body: Body,
    limits: BodyLimits,
    budget: &Budget,
    upload: Option<&Upload>,
) -> Result<(Bytes, Lease), BodyError> {
    let announced = body.size_hint().lower();
    if announced > limits.max_bytes as u64 {
        return Err(BodyError::TooLarge {
            max: limits.max_bytes,
        });
    }
    if body.is_end_stream() {
        return Ok((Bytes::new(), Lease::empty()));
    }
    let mut reader = Reader::new(body, limits, upload.cloned());
    // `announced` is at most `max_bytes`, a `usize`.
    let needed = usize::try_from(announced).map_or(usize::MAX, |n| n - n.min(limits.own_bytes));
    if !budget.has_free(needed) {
        reader.drain();
        return Err(spent());
    }
    match reader.read(budget).await {
        Err(BodyError::BudgetSpent { .. }) => {
            reader.drain();
            Err(spent())
        }
        read => read,
    }
}

fn spent() -> BodyError {
    BodyError::BudgetSpent {
        retry_after: BUSY_RETRY_AFTER,
    }
}

/// A body being read, with its deadlines.
struct Reader {
    body: Body,
    limits: BodyLimits,
    pace: Pace,
    /// The total timeout's end.
    deadline: Instant,
    /// Bytes received so far.
    len: usize,
    /// The connection's handle, while the request is not dispatched.
    upload: Option<Upload>,
}

impl Reader {
    fn new(body: Body, limits: BodyLimits, upload: Option<Upload>) -> Self {
        let now = Instant::now();
        Self {
            body,
            limits,
            pace: Pace::new(limits.min_rate, limits.stall_timeout, now),
            deadline: now + limits.timeout,
            len: 0,
            upload,
        }
    }

    /// The next chunk of data (empty ones and trailers skipped); `None` at
    /// the end. Counts it against the size bound and the pace.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a chunk is returned in the poll that receives it.
    async fn next(&mut self) -> Result<Option<Bytes>, BodyError> {
        loop {
            let cut = self.pace.deadline().min(self.deadline);
            let upload = self.upload.clone();
            let evicted = async {
                match &upload {
                    Some(upload) => upload.evicted().await,
                    None => std::future::pending().await,
                }
            };
            let frame = tokio::select! {
                biased;
                () = evicted => {
                    return Err(BodyError::Evicted { retry_after: BUSY_RETRY_AFTER });
                }
                frame = self.body.frame() => frame,
                () = tokio::time::sleep_until(cut) => {
                    return Err(if self.deadline <= self.pace.deadline() {
                        BodyError::TimedOut { after: self.limits.timeout }
                    } else {
                        BodyError::TooSlow {
                            stall: self.limits.stall_timeout,
                            min_rate: self.limits.min_rate,
                        }
                    });
                }
            };
            let Some(frame) = frame else {
                return Ok(None);
            };
            let Ok(chunk) = frame.map_err(BodyError::BrokenOff)?.into_data() else {
                continue; // trailers
            };
            if chunk.is_empty() {
                continue;
            }
            self.pace.received(chunk.len(), Instant::now());
            if let Some(upload) = &self.upload {
                upload.received();
            }
            self.len += chunk.len();
            if self.len > self.limits.max_bytes {
                return Err(BodyError::TooLarge {
                    max: self.limits.max_bytes,
                });
            }
            return Ok(Some(chunk));
        }
    }

    /// Reads the body to its end, holding budget for every byte beyond the
    /// connection's own part.
    async fn read(&mut self, budget: &Budget) -> Result<(Bytes, Lease), BodyError> {
        let mut lease = Lease::empty();
        // Most bodies come in one chunk: kept as it is, not copied.
        let mut first: Option<Bytes> = None;
        let mut rest = BytesMut::new();
        while let Some(chunk) = self.next().await? {
            let beyond_own = self.len - self.len.min(self.limits.own_bytes);
            if !budget.try_grow(&mut lease, beyond_own) {
                return Err(spent());
            }
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

    /// Reads the rest of the body on a task of its own, throwing it away,
    /// until it ends or breaks a bound.
    fn drain(mut self) {
        // Refused: the request is not the listener's to evict any more.
        self.upload = None;
        tokio::spawn(async move {
            let ended = loop {
                match self.next().await {
                    Ok(Some(_)) => {}
                    Ok(None) => break Ok(()),
                    Err(error) => break Err(error),
                }
            };
            match ended {
                Ok(()) => tracing::debug!(bytes = self.len, "a refused request body was drained"),
                Err(error) => tracing::debug!(%error, "a refused request body was cut"),
            }
        });
    }
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

    /// Bounds for the tests: `max_bytes` and `own_bytes`, a total timeout
    /// of 20 s, no stall shorter than 10 s and no minimum rate (unless a
    /// test sets them).
    fn limits(max_bytes: usize, own_bytes: usize) -> BodyLimits {
        BodyLimits {
            max_bytes,
            own_bytes,
            timeout: 20 * SECOND,
            stall_timeout: 10 * SECOND,
            min_rate: 0,
        }
    }

    /// A lease on `len` bytes of `budget`, taken at once.
    fn hog(budget: &Budget, len: usize) -> Lease {
        let mut lease = Lease::empty();
        assert!(budget.try_grow(&mut lease, len));
        lease
    }

    fn is_spent(error: &BodyError) -> bool {
        matches!(error, BodyError::BudgetSpent { retry_after } if *retry_after == BUSY_RETRY_AFTER)
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_is_read_whole_and_its_lease_holds_its_bytes_beyond_its_own() {
        let budget = Budget::new(1000);
        let (feed, body) = fed(None);
        for n in [100, 200, 50] {
            feed.send(bytes(n)).unwrap();
        }
        drop(feed);
        let (read, lease) = read_body(body, limits(1000, 120), &budget, None)
            .await
            .unwrap();
        assert_eq!(read.len(), 350);
        assert_eq!(
            lease.bytes(),
            230,
            "the first 120 bytes are the connection's"
        );
        assert_eq!(budget.in_use(), 230);
        drop(lease);
        assert_eq!(budget.in_use(), 0);
        // One chunk, announced: passes as it is.
        let (read, lease) = read_body(Body::from("hello"), limits(10, 0), &budget, None)
            .await
            .unwrap();
        assert_eq!(&read[..], b"hello");
        assert_eq!(lease.bytes(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_body_takes_no_budget() {
        let budget = Budget::new(1);
        let _all = hog(&budget, 1);
        let (read, lease) = read_body(Body::empty(), limits(10, 0), &budget, None)
            .await
            .unwrap();
        assert!(read.is_empty());
        assert_eq!(lease.bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_over_the_bound_is_refused() {
        let budget = Budget::new(1000);
        // Announced: refused before anything is read.
        let (_feed, body) = fed(Some(101));
        let error = read_body(body, limits(100, 0), &budget, None)
            .await
            .unwrap_err();
        assert!(matches!(error, BodyError::TooLarge { max: 100 }), "{error}");
        // Received: refused at the chunk that crosses the bound.
        let (feed, body) = fed(None);
        feed.send(bytes(60)).unwrap();
        feed.send(bytes(41)).unwrap();
        let error = read_body(body, limits(100, 0), &budget, None)
            .await
            .unwrap_err();
        assert!(matches!(error, BodyError::TooLarge { max: 100 }), "{error}");
        assert_eq!(budget.in_use(), 0);
        // Exactly the bound passes.
        let (feed, body) = fed(Some(100));
        feed.send(bytes(100)).unwrap();
        drop(feed);
        let (read, _lease) = read_body(body, limits(100, 0), &budget, None)
            .await
            .unwrap();
        assert_eq!(read.len(), 100);
    }

    /// The defect: stalled uploads held the budget and a small body waited
    /// behind them until they timed out. Now the budget is spent and a body
    /// within the connection's own part is read at once.
    #[tokio::test(start_paused = true)]
    async fn a_small_body_is_read_at_once_while_stalled_uploads_hold_the_budget() {
        let budget = Budget::new(1000);
        let limits = limits(10_000, 100);
        // Two bodies of 700 announced, each stalled after 650: the first
        // holds 550 of the budget; the second cannot have the 600 it
        // announces beyond its own part, and is refused at once.
        let (feed, body) = fed(Some(700));
        feed.send(bytes(650)).unwrap();
        let mut first = tokio_test::task::spawn(read_body(body, limits, &budget, None));
        assert_pending!(first.poll());
        let (_feed, body) = fed(Some(700));
        let error = read_body(body, limits, &budget, None).await.unwrap_err();
        assert!(is_spent(&error), "{error}");
        assert_eq!(budget.in_use(), 550);
        // Something else takes the rest of the budget.
        let _rest = hog(&budget, 450);
        let started = Instant::now();
        let (read, lease) = read_body(Body::from("x".repeat(100)), limits, &budget, None)
            .await
            .unwrap();
        assert_eq!((read.len(), lease.bytes()), (100, 0));
        assert_eq!(started.elapsed(), Duration::ZERO);
        // Many connections each stalled within their own part hold no
        // budget at all, however many: the small body still passes.
        drop((feed, first));
        drop(_rest);
        let mut small_stalls = Vec::new();
        for _ in 0..50 {
            let (feed, body) = fed(Some(1000));
            feed.send(bytes(90)).unwrap();
            let mut read = tokio_test::task::spawn(read_body(body, limits, &budget, None));
            assert_pending!(read.poll());
            small_stalls.push((feed, read));
        }
        assert_eq!(budget.in_use(), 0);
        assert!(
            read_body(Body::from("ok"), limits, &budget, None)
                .await
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_cannot_fit_now_is_refused_before_a_byte_is_read() {
        let budget = Budget::new(1000);
        let limits = limits(10_000, 100);
        let _hog = hog(&budget, 800);
        // Announced 301: 201 beyond its own part, 200 free.
        let (feed, body) = fed(Some(301));
        let error = read_body(body, limits, &budget, None).await.unwrap_err();
        assert!(is_spent(&error), "{error}");
        assert_eq!(budget.in_use(), 800);
        // The body is read on (and thrown away) in the background: the
        // client is not reset while it sends.
        feed.send(bytes(301)).unwrap();
        drop(feed);
        tokio::task::yield_now().await;
        assert_eq!(budget.in_use(), 800);
        // Announced 300: fits, and is read.
        let (feed, body) = fed(Some(300));
        feed.send(bytes(300)).unwrap();
        drop(feed);
        let (read, lease) = read_body(body, limits, &budget, None).await.unwrap();
        assert_eq!((read.len(), lease.bytes()), (300, 200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunked_body_is_refused_at_the_chunk_that_finds_the_budget_spent() {
        let budget = Budget::new(1000);
        let limits = limits(10_000, 100);
        let hog = hog(&budget, 700);
        let (feed, body) = fed(None);
        let mut read = tokio_test::task::spawn(read_body(body, limits, &budget, None));
        feed.send(bytes(300)).unwrap();
        assert_pending!(read.poll());
        assert_eq!(budget.in_use(), 900);
        feed.send(bytes(101)).unwrap();
        let error = assert_ready!(read.poll()).unwrap_err();
        assert!(is_spent(&error), "{error}");
        assert_eq!(budget.in_use(), 700, "its bytes are given back at once");
        drop(hog);
        // The refused body is drained to its end.
        feed.send(bytes(5000)).unwrap();
        drop(feed);
        tokio::task::yield_now().await;
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_body_is_drained_within_its_pace_and_then_dropped() {
        let budget = Budget::new(1000);
        let limits = BodyLimits {
            stall_timeout: 2 * SECOND,
            ..limits(10_000, 0)
        };
        let _all = hog(&budget, 1000);
        let (feed, body) = fed(Some(500));
        let error = read_body(body, limits, &budget, None).await.unwrap_err();
        assert!(is_spent(&error), "{error}");
        // The drain reads what comes...
        feed.send(bytes(200)).unwrap();
        let started = Instant::now();
        // ...and drops the body once it stalls.
        tokio::time::timeout(60 * SECOND, feed.closed())
            .await
            .expect("the drain ended");
        assert_eq!(started.elapsed(), 2 * SECOND);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_cut_at_the_stall_timeout_and_gives_its_bytes_back() {
        let budget = Budget::new(1000);
        let limits = BodyLimits {
            stall_timeout: 3 * SECOND,
            ..limits(1000, 0)
        };
        let (feed, body) = fed(Some(500));
        feed.send(bytes(200)).unwrap();
        let mut read = tokio_test::task::spawn(read_body(body, limits, &budget, None));
        assert_pending!(read.poll());
        assert_eq!(budget.in_use(), 200, "the bytes received are held");
        // A chunk after 2 s moves the cut to 3 s after it.
        tokio::time::sleep(2 * SECOND).await;
        feed.send(bytes(100)).unwrap();
        assert_pending!(read.poll());
        let last = Instant::now();
        let error = read.await.unwrap_err();
        assert_eq!(last.elapsed(), 3 * SECOND);
        assert!(
            matches!(error, BodyError::TooSlow { stall, min_rate: 0 } if stall == 3 * SECOND),
            "{error}"
        );
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_trickling_below_the_minimum_rate_is_cut() {
        let budget = Budget::new(100_000);
        let limits = BodyLimits {
            timeout: 600 * SECOND,
            stall_timeout: 2 * SECOND,
            min_rate: 100,
            ..limits(100_000, 0)
        };
        let (feed, body) = fed(Some(50_000));
        // A burst, then 10 bytes a second: never a pause of 2 s.
        feed.send(bytes(20_000)).unwrap();
        let started = Instant::now();
        let mut read = tokio_test::task::spawn(read_body(body, limits, &budget, None));
        let error = loop {
            if let std::task::Poll::Ready(result) = read.poll() {
                break result.unwrap_err();
            }
            tokio::time::sleep(SECOND).await;
            let _ = feed.send(bytes(10));
        };
        // 2 s of credit (the burst banks no more); each 10 bytes earn 0.1 s:
        // cut after about 2 / 0.9 s.
        assert!(started.elapsed() <= 3 * SECOND, "{:?}", started.elapsed());
        assert!(
            matches!(error, BodyError::TooSlow { min_rate: 100, .. }),
            "{error}"
        );
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_at_the_rate_is_bounded_by_the_total_timeout() {
        let budget = Budget::new(100_000);
        let limits = BodyLimits {
            timeout: 20 * SECOND,
            stall_timeout: 2 * SECOND,
            min_rate: 100,
            ..limits(100_000, 0)
        };
        let (feed, body) = fed(Some(50_000));
        let started = Instant::now();
        let mut read = tokio_test::task::spawn(read_body(body, limits, &budget, None));
        let error = loop {
            let _ = feed.send(bytes(100));
            if let std::task::Poll::Ready(result) = read.poll() {
                break result.unwrap_err();
            }
            tokio::time::sleep(SECOND).await;
        };
        assert_eq!(started.elapsed(), 20 * SECOND);
        assert!(
            matches!(error, BodyError::TimedOut { after } if after == 20 * SECOND),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_off_body_is_an_error_and_gives_its_bytes_back() {
        let budget = Budget::new(1000);
        let (feed, body) = fed(Some(500));
        feed.send(bytes(100)).unwrap();
        feed.send(Err("connection reset")).unwrap();
        let error = read_body(body, limits(1000, 0), &budget, None)
            .await
            .unwrap_err();
        assert!(matches!(error, BodyError::BrokenOff(_)), "{error}");
        assert!(error.to_string().contains("connection reset"), "{error}");
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_read_gives_everything_back() {
        let budget = Budget::new(1000);
        let (feed, body) = fed(None);
        feed.send(bytes(50)).unwrap();
        feed.send(bytes(100)).unwrap();
        let mut read = tokio_test::task::spawn(read_body(body, limits(1000, 0), &budget, None));
        assert_pending!(read.poll());
        assert_eq!(budget.in_use(), 150);
        drop(read);
        assert_eq!(budget.in_use(), 0);
        assert!(feed.is_closed(), "the body was dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn trailers_are_ignored() {
        let body = http_body_util::Full::new(Bytes::from_static(b"abc"))
            .with_trailers(async { Some(Ok(HeaderMap::new())) });
        let budget = Budget::new(10);
        let read = read_body(Body::new(body), limits(10, 0), &budget, None).await;
        assert_eq!(&read.unwrap().0[..], b"abc");
    }
}
