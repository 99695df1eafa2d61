//! (Provisional, replaced by the body-reading module.) Reads a request body
//! bounded in size and time, holding budget bytes for it.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

use super::budget::{Budget, Lease};

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Larger than the bound.
    #[error("the body exceeds {max} bytes")]
    TooLarge {
        /// The bound.
        max: usize,
    },
    /// Not read in time.
    #[error("the body was not received within {after:?}")]
    TimedOut {
        /// The timeout.
        after: Duration,
    },
    /// The client broke it off.
    #[error("the body broke off")]
    BrokenOff,
}

/// Reads `body`.
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn read_body(
    body: axum::body::Body,
    max: usize,
    timeout: Duration,
    budget: &Budget,
) -> Result<(Bytes, Lease), BodyError> {
    let read = async {
        match http_body_util::Limited::new(body, max).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                Err(BodyError::TooLarge { max })
            }
            Err(_) => Err(BodyError::BrokenOff),
        }
    };
    let bytes = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| BodyError::TimedOut { after: timeout })??;
    let lease = budget.reserve(bytes.len()).await;
    Ok((bytes, lease))
}
