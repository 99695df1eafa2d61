//! Reading an HTTP request body with every bound a hostile client needs:
//! at most `max` bytes, within `timeout` (all of it, not per chunk, so a
//! client trickling a byte at a time is cut too), and holding a shared
//! [`Budget`] for every byte *as it arrives* — so that many stalled large
//! bodies cannot add up, whatever each one's size. A client waiting for
//! budget is not read (TCP backpressure); the wait counts against the
//! timeout.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use super::budget::{Budget, Lease};

/// Why a body was not read. Turned into an HTTP status at the edge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// Larger than the bound.
    #[error("the body exceeds {max} bytes")]
    TooLarge {
        /// The bound.
        max: usize,
    },
    /// Not received in time.
    #[error("the body was not received within {after:?}")]
    TimedOut {
        /// The timeout.
        after: Duration,
    },
    /// The client broke it off.
    #[error("the body broke off")]
    BrokenOff,
}

/// The budget a read body holds; returned when dropped.
#[derive(Debug, Default)]
pub struct BodyLease(#[allow(dead_code)] Vec<Lease>);

/// Reads `body` whole: at most `max` bytes, within `timeout`, each chunk's
/// bytes held from `budget` before the next chunk is read.
///
/// # Errors
///
/// [`BodyError`] says which bound was hit (or that the body broke off).
///
/// # Cancel safety
///
/// Cancel safe: dropping the future drops what was read and returns its
/// budget.
pub async fn read_body<B>(
    body: B,
    max: usize,
    timeout: Duration,
    budget: &Budget,
) -> Result<(Bytes, BodyLease), BodyError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let read = async {
        let mut body = body;
        let mut bytes = BytesMut::new();
        let mut leases = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| BodyError::BrokenOff)?;
            let Ok(chunk) = frame.into_data() else {
                continue; // trailers
            };
            if bytes.len() + chunk.len() > max {
                return Err(BodyError::TooLarge { max });
            }
            leases.push(budget.reserve(chunk.len()).await);
            bytes.extend_from_slice(&chunk);
        }
        Ok((bytes.freeze(), BodyLease(leases)))
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| BodyError::TimedOut { after: timeout })?
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body::Frame;
    use http_body_util::StreamBody;
    use tokio::sync::mpsc;
    use tokio_stream_compat::Receiver;

    use super::*;

    /// A body fed chunk by chunk from a channel.
    mod tokio_stream_compat {
        use std::pin::Pin;
        use std::task::{Context, Poll};

        use futures_util::Stream;
        use tokio::sync::mpsc;

        pub struct Receiver<T>(pub mpsc::Receiver<T>);

        impl<T> Stream for Receiver<T> {
            type Item = T;
            fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
                self.0.poll_recv(cx)
            }
        }
    }

    type Chunks = StreamBody<Receiver<Result<Frame<Bytes>, Infallible>>>;

    fn body() -> (mpsc::Sender<Result<Frame<Bytes>, Infallible>>, Chunks) {
        let (tx, rx) = mpsc::channel(16);
        (tx, StreamBody::new(Receiver(rx)))
    }

    fn chunk(n: usize) -> Result<Frame<Bytes>, Infallible> {
        Ok(Frame::data(Bytes::from(vec![b'x'; n])))
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_cut_at_the_timeout() {
        let budget = Budget::new(1 << 20);
        let (tx, body) = body();
        tx.send(chunk(10)).await.unwrap();
        let started = tokio::time::Instant::now();
        let error = read_body(body, 1000, Duration::from_secs(20), &budget)
            .await
            .unwrap_err();
        assert!(matches!(error, BodyError::TimedOut { .. }), "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(20));
        assert_eq!(budget.available(), 1 << 20, "the budget came back");
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_share_one_budget_as_their_bytes_arrive() {
        let budget = Budget::new(4096);
        let (tx_a, a) = body();
        let (tx_b, b) = body();
        // A takes most of the budget and stalls; B cannot get its bytes held.
        tx_a.send(chunk(3000)).await.unwrap();
        let a = tokio::spawn({
            let budget = budget.clone();
            async move { read_body(a, 10_000, Duration::from_secs(20), &budget).await }
        });
        tokio::task::yield_now().await;
        assert!(budget.available() < 1000);
        tx_b.send(chunk(2000)).await.unwrap();
        drop(tx_b);
        let b = tokio::spawn({
            let budget = budget.clone();
            async move { read_body(b, 10_000, Duration::from_secs(20), &budget).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!b.is_finished(), "B waits for budget");
        // A is cut at its timeout; its bytes go back, and B completes.
        let a = a.await.unwrap();
        assert!(matches!(a, Err(BodyError::TimedOut { .. })));
        let (bytes, lease) = b.await.unwrap().unwrap();
        assert_eq!(bytes.len(), 2000);
        drop(lease);
        drop(tx_a);
        assert_eq!(budget.available(), 4096);
    }

    #[tokio::test]
    async fn an_oversized_body_is_refused() {
        let budget = Budget::new(1 << 20);
        let (tx, body) = body();
        tx.send(chunk(600)).await.unwrap();
        tx.send(chunk(600)).await.unwrap();
        drop(tx);
        let error = read_body(body, 1000, Duration::from_secs(5), &budget)
            .await
            .unwrap_err();
        assert!(matches!(error, BodyError::TooLarge { max: 1000 }));
        assert_eq!(budget.available(), 1 << 20);
    }
}
