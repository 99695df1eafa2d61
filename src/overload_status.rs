//! The HTTP status a refusal travels with, for the edges that speak HTTP
//! (the rmcp wrapper's [`OverloadStatusLayer`](crate::rmcp::OverloadStatusLayer),
//! the proxy's `--http-overload-status`), and its `Retry-After`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The HTTP status of a refused POST.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverloadStatus {
    /// `200 OK`: the refusal travels in the body only, as without the
    /// layer (the default; the layer then changes nothing).
    #[default]
    Ok,
    /// `429 Too Many Requests`.
    TooManyRequests,
    /// `503 Service Unavailable`: what load balancers retry on another
    /// replica (Envoy's and NGINX's retry-on-503, HAProxy's `retry-on 503`).
    ServiceUnavailable,
}

impl OverloadStatus {
    /// The status code.
    pub const fn code(self) -> u16 {
        match self {
            OverloadStatus::Ok => 200,
            OverloadStatus::TooManyRequests => 429,
            OverloadStatus::ServiceUnavailable => 503,
        }
    }

    /// The setting for a status code: 200, 429 or 503.
    pub fn from_code(code: i128) -> Option<Self> {
        match code {
            200 => Some(OverloadStatus::Ok),
            429 => Some(OverloadStatus::TooManyRequests),
            503 => Some(OverloadStatus::ServiceUnavailable),
            _ => None,
        }
    }
}

impl fmt::Display for OverloadStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// The error of parsing an [`OverloadStatus`] from anything but `200`, `429`
/// or `503`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected 200, 429 or 503, got {0:?}")]
pub struct InvalidOverloadStatus(String);

impl FromStr for OverloadStatus {
    type Err = InvalidOverloadStatus;

    /// `200`, `429` or `503`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "200" => Ok(OverloadStatus::Ok),
            "429" => Ok(OverloadStatus::TooManyRequests),
            "503" => Ok(OverloadStatus::ServiceUnavailable),
            _ => Err(InvalidOverloadStatus(text.to_owned())),
        }
    }
}

/// `Retry-After` for a retry delay: whole seconds, rounded up, at least 1.
pub fn retry_after_seconds(retry_after: Duration) -> u64 {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    seconds.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_from_their_numbers() {
        assert_eq!("503".parse(), Ok(OverloadStatus::ServiceUnavailable));
        assert_eq!("429".parse(), Ok(OverloadStatus::TooManyRequests));
        assert_eq!("200".parse(), Ok(OverloadStatus::Ok));
        assert!("500".parse::<OverloadStatus>().is_err());
        assert_eq!(OverloadStatus::TooManyRequests.to_string(), "429");
    }
    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1_000)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2_200)), 3);
    }
}
