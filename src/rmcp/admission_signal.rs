//! The wrapper's admission decision for the guarded call an HTTP POST
//! carries, handed to [`OverloadStatusLayer`](super::OverloadStatusLayer)
//! through the request's extensions.
//!
//! The layer puts a fresh [`AdmissionSignal`] into each POST's
//! `http::Extensions`; rmcp's Streamable HTTP service moves the request's
//! [`http::request::Parts`] (extensions included) into the MCP request's
//! extensions, where [`Backpressure`](super::Backpressure) finds it and
//! records its decision the moment admission ends. The decision is recorded
//! *before* the refusal is returned to rmcp, so by the time the refusal's
//! message is in the response body, the layer can read the decision.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// What the wrapper decided about the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Admitted, or ended otherwise (cancelled, disconnected): the answer is
    /// not an overload refusal.
    Pass,
    /// Refused as overloaded, with this retry delay.
    Refused {
        /// The advertised retry delay (`data.retry_after_ms`).
        retry_after: Duration,
    },
}

/// A one-shot decision shared by the layer (reader) and the wrapper
/// (writer). Clones share it. The first decision recorded is kept.
#[derive(Clone, Debug, Default)]
pub(crate) struct AdmissionSignal(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    decision: OnceLock<Decision>,
    decided: CancellationToken,
}

impl AdmissionSignal {
    /// The signal the layer put into the HTTP request behind an MCP request,
    /// if any: `parts` is the [`http::request::Parts`] rmcp stores in the
    /// MCP request's extensions.
    pub(crate) fn of(parts: Option<&http::request::Parts>) -> Option<Self> {
        parts?.extensions.get::<Self>().cloned()
    }

    /// Records `decision` (the first one recorded is kept) and wakes the
    /// reader.
    pub(crate) fn decide(&self, decision: Decision) {
        if self.0.decision.set(decision).is_ok() {
            self.0.decided.cancel();
        }
    }

    /// The decision, if one was recorded.
    pub(crate) fn get(&self) -> Option<Decision> {
        self.0.decision.get().copied()
    }

    /// Waits for the decision. Cancel safe.
    pub(crate) async fn decided(&self) -> Decision {
        self.0.decided.cancelled().await;
        self.get()
            .expect("the token is cancelled only after the set")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_decision_is_kept_and_wakes_the_reader() {
        let signal = AdmissionSignal::default();
        assert_eq!(signal.get(), None);
        let reader = signal.clone();
        let waiting = tokio::spawn(async move { reader.decided().await });
        let refused = Decision::Refused {
            retry_after: Duration::from_millis(1_500),
        };
        signal.decide(refused);
        signal.decide(Decision::Pass);
        assert_eq!(waiting.await.unwrap(), refused);
        assert_eq!(signal.get(), Some(refused));
    }

    #[test]
    fn it_is_found_in_the_request_parts_rmcp_stores() {
        let signal = AdmissionSignal::default();
        let mut request = http::Request::new(());
        request.extensions_mut().insert(signal.clone());
        let (parts, ()) = request.into_parts();
        let found = AdmissionSignal::of(Some(&parts)).expect("found");
        found.decide(Decision::Pass);
        assert_eq!(signal.get(), Some(Decision::Pass));
        let (bare, ()) = http::Request::new(()).into_parts();
        assert!(AdmissionSignal::of(Some(&bare)).is_none());
        assert!(AdmissionSignal::of(None).is_none());
    }
}
