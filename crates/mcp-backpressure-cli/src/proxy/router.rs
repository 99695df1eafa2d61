//! The one place that decides what happens to a message, for both
//! transports: a client message is admitted, tracked, swallowed, answered by
//! the proxy or forwarded; an upstream message frees the slots of the
//! requests it answers. The transports only move bytes and act on the
//! decision.

use std::sync::Arc;

use super::error::ProxyError;
use super::gate::Gate;
#[cfg(test)]
use super::inflight::Admission;
use super::inflight::{Begun, Cancel, Expired, InFlight, Key, Left, Queued, Scope, Ticket};
use super::wire::message::{self, From, Kind, Malformed, Parsed, RequestId, Shape};
use super::wire::scan::{IdScan, ScanResult};

/// A forwarded request whose answer is awaited.
#[derive(Clone, Debug)]
pub struct Watched {
    /// Its key.
    pub key: Key,
    /// Its generation in the table.
    pub ticket: Ticket,
}

/// What to do with a client message.
#[derive(Debug)]
pub enum FromClient {
    /// Forward `bytes` now; `requests` are the requests in it (tracked).
    Forward {
        /// The re-framed message.
        bytes: Vec<u8>,
        /// The requests it carries, entered in the table.
        requests: Vec<Watched>,
    },
    /// A guarded request: wait for its admission, then forward `bytes`.
    Admit {
        /// The re-framed message.
        bytes: Vec<u8>,
        /// Its place in line.
        queued: Queued,
    },
    /// The cancellation of a request still waiting for a slot: it is leaving
    /// the queue; forward nothing.
    Swallow(Left),
    /// Forward nothing, answer nothing: a cancellation of a request that is
    /// not in flight in its scope.
    Drop,
    /// Answer the client with `error` (one response per id; an array for a
    /// batch); forward nothing.
    Answer {
        /// What went wrong.
        error: ProxyError,
        /// The ids to answer (`None`: null).
        ids: Vec<Option<RequestId>>,
        /// Whether the message was a batch.
        batch: bool,
    },
}

/// What a client's cancellation found.
#[derive(Debug)]
enum Cancelled {
    Queued(Left),
    Forwarded,
    Unknown,
}

/// What to do with an upstream message.
#[derive(Debug)]
pub enum FromUpstream {
    /// Forward the re-framed bytes to the client.
    Forward {
        /// The re-framed message.
        bytes: Vec<u8>,
        /// The in-flight requests it answered (now over, their slots free).
        answered: Vec<RequestId>,
    },
    /// The message could not be passed on; if it answered a request, the
    /// client gets `error` for it instead (and its slot is free).
    Replace {
        /// The request it answered, if known.
        id: Option<RequestId>,
        /// What the client is told.
        error: ProxyError,
    },
}

/// The router of one proxy. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Router {
    inflight: InFlight,
}

impl Router {
    /// A router in front of `gate`.
    pub fn new(gate: Arc<Gate>) -> Self {
        Self {
            inflight: InFlight::new(gate),
        }
    }

    /// The in-flight table.
    pub fn inflight(&self) -> &InFlight {
        &self.inflight
    }

    /// The shared admission control.
    pub fn gate(&self) -> &Arc<Gate> {
        self.inflight.gate()
    }

    /// Decides on one client message of `scope`. Call it in arrival order.
    pub fn client(&self, scope: &Scope, bytes: &[u8]) -> FromClient {
        let Parsed { kinds, bytes } = match message::parse(bytes, From::Client) {
            Ok(parsed) => parsed,
            Err(malformed) => {
                let id = match &malformed {
                    Malformed::Request { id, .. } => Some(id.clone()),
                    _ => None,
                };
                return FromClient::Answer {
                    error: malformed.into(),
                    ids: vec![id],
                    batch: false,
                };
            }
        };
        let settings = &self.gate().settings;
        match kinds {
            Shape::One(Kind::Request { id, method }) => {
                let key = Key {
                    scope: scope.clone(),
                    id: id.clone(),
                };
                match self
                    .inflight
                    .begin(key.clone(), settings.is_guarded(&method))
                {
                    Ok(Begun::Queued(queued)) => FromClient::Admit { bytes, queued },
                    Ok(Begun::Tracked(ticket)) => FromClient::Forward {
                        bytes,
                        requests: vec![Watched { key, ticket }],
                    },
                    Err(refused) => FromClient::Answer {
                        error: refused.into(),
                        ids: vec![Some(id)],
                        batch: false,
                    },
                }
            }
            Shape::One(Kind::Notification {
                cancels: Some(id), ..
            }) => match self.cancel(scope, id) {
                Cancelled::Queued(left) => FromClient::Swallow(left),
                Cancelled::Forwarded => FromClient::Forward {
                    bytes,
                    requests: Vec::new(),
                },
                // Every request of the client went through this table: a
                // cancellation of an id not in flight in its scope cancels
                // nothing of its own (the spec lets a receiver ignore it), and
                // passed on it could stop another client's call on an upstream
                // that does not keep sessions apart.
                Cancelled::Unknown => FromClient::Drop,
            },
            Shape::One(_) => FromClient::Forward {
                bytes,
                requests: Vec::new(),
            },
            Shape::Batch(kinds) => self.batch(scope, bytes, kinds),
        }
    }

    /// A cancellation of `id` in `scope`: a queued request leaves the queue;
    /// a forwarded one keeps its slot for the cancel grace.
    fn cancel(&self, scope: &Scope, id: RequestId) -> Cancelled {
        let key = Key {
            scope: scope.clone(),
            id,
        };
        match self.inflight.cancel(&key) {
            Cancel::Queued(left) => {
                tracing::debug!(id = %key.id, "cancelled while queued; not forwarded");
                Cancelled::Queued(left)
            }
            Cancel::Forwarded(ticket) => {
                let grace = self.gate().settings.cancel_grace;
                self.inflight.expire_after(key, ticket, grace, |_| {});
                Cancelled::Forwarded
            }
            Cancel::Unknown => {
                tracing::debug!(id = %key.id, "cancellation of a request not in flight; dropped");
                Cancelled::Unknown
            }
        }
    }

    fn batch(&self, scope: &Scope, bytes: Vec<u8>, kinds: Vec<Kind>) -> FromClient {
        let settings = &self.gate().settings;
        let ids: Vec<Option<RequestId>> = kinds
            .iter()
            .filter_map(|k| match k {
                Kind::Request { id, .. } => Some(Some(id.clone())),
                _ => None,
            })
            .collect();
        // Guarded requests and cancellations go one by one: each is decided
        // on (admitted, or matched to its own call) before it is forwarded.
        if let Some(method) = kinds.iter().find_map(|k| match k {
            Kind::Request { method, .. } if settings.is_guarded(method) => Some(method.clone()),
            Kind::Notification {
                cancels: Some(_),
                method,
            } => Some(method.clone()),
            _ => None,
        }) {
            if ids.is_empty() {
                return FromClient::Drop;
            }
            return FromClient::Answer {
                error: ProxyError::GuardedBatch { method },
                ids,
                batch: true,
            };
        }
        let mut requests = Vec::new();
        for kind in &kinds {
            let Kind::Request { id, .. } = kind else {
                continue;
            };
            let key = Key {
                scope: scope.clone(),
                id: id.clone(),
            };
            match self.inflight.begin(key.clone(), false) {
                Ok(Begun::Tracked(ticket)) => requests.push(Watched { key, ticket }),
                Ok(Begun::Queued(_)) => unreachable!("unguarded requests are not queued"),
                Err(refused) => {
                    for watched in &requests {
                        self.inflight.finish(
                            &watched.key,
                            watched.ticket,
                            mcp_backpressure::Outcome::Ignore,
                        );
                    }
                    return FromClient::Answer {
                        error: refused.into(),
                        ids,
                        batch: true,
                    };
                }
            }
        }
        FromClient::Forward { bytes, requests }
    }

    /// Routes one upstream message of `scope` (held whole in memory): frees
    /// the slots of the requests it answers.
    pub fn upstream(&self, scope: &Scope, bytes: &[u8]) -> FromUpstream {
        match message::parse(bytes, From::Upstream) {
            Ok(Parsed { kinds, bytes }) => {
                let kinds = match kinds {
                    Shape::One(kind) => vec![kind],
                    Shape::Batch(kinds) => kinds,
                };
                let mut answered = Vec::new();
                for kind in kinds {
                    if let Kind::Response { id: Some(id) } = kind
                        && self.answered(scope, id.clone())
                    {
                        answered.push(id);
                    }
                }
                FromUpstream::Forward { bytes, answered }
            }
            Err(malformed) => {
                tracing::warn!(%malformed, "the upstream sent a message that cannot be passed on");
                let mut scanner = super::wire::scan::TopLevelScanner::new();
                scanner.push(bytes);
                let id = self.salvage(scope, &scanner.finish());
                FromUpstream::Replace {
                    id,
                    error: ProxyError::UpstreamResponse("it is not valid JSON-RPC"),
                }
            }
        }
    }

    /// A response to `id` passed (or was replaced by an error): its request
    /// is over.
    pub fn answered(&self, scope: &Scope, id: RequestId) -> bool {
        self.inflight.answered(&Key {
            scope: scope.clone(),
            id,
        })
    }

    /// An upstream message the proxy could not hold or parse, as far as a
    /// streaming scan saw it: if it was a response to a request in flight,
    /// that request is over (its slot free) and its id is returned so the
    /// client can be told.
    pub fn salvage(&self, scope: &Scope, scan: &ScanResult) -> Option<RequestId> {
        if !scan.is_object || scan.has_method || !(scan.has_result || scan.has_error) {
            return None;
        }
        let IdScan::Raw(raw) = &scan.id else {
            return None;
        };
        let id = std::str::from_utf8(raw).ok().and_then(RequestId::parse)?;
        self.answered(scope, id.clone()).then_some(id)
    }

    /// The request of `watched` was abandoned by its client (HTTP: the
    /// response stream dropped). Returns whether it was still in flight:
    /// then it keeps its slot for the cancel grace, and `on_expiry` runs if
    /// the grace passes before the upstream is done.
    pub fn abandon(
        &self,
        watched: &Watched,
        resumable: bool,
        on_expiry: impl FnOnce(Expired) + Send + 'static,
    ) -> bool {
        if !self
            .inflight
            .abandon(&watched.key, watched.ticket, resumable)
        {
            return false;
        }
        let grace = self.gate().settings.cancel_grace;
        self.inflight
            .expire_after(watched.key.clone(), watched.ticket, grace, on_expiry);
        true
    }
}

#[cfg(test)]
mod tests {
    use mcp_backpressure::LimiterConfig;

    use super::*;
    use crate::proxy::limits::Settings;
    use crate::proxy::metrics::ProxyMetrics;

    fn router() -> Router {
        let settings = Settings::with_defaults(LimiterConfig::new(1).with_queue_size(1));
        let limiter = settings.limiter().unwrap();
        Router::new(Arc::new(Gate {
            limiter,
            settings,
            metrics: ProxyMetrics::default(),
        }))
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#;
    const CANCEL: &str =
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#;

    #[tokio::test]
    async fn a_cancellation_reaches_only_its_own_scopes_calls() {
        let router = router();
        let a = Scope::Session("a".into());
        let b = Scope::Session("b".into());
        let FromClient::Admit { queued, .. } = router.client(&a, CALL.as_bytes()) else {
            panic!("a call is admitted");
        };
        assert!(matches!(queued.admit().await, Admission::Admitted(_)));
        // Another session (or an exchange without one) naming id 1: nothing
        // of its own, so nothing is forwarded.
        assert!(matches!(
            router.client(&b, CANCEL.as_bytes()),
            FromClient::Drop
        ));
        assert!(matches!(
            router.client(&Scope::Exchange(9), CANCEL.as_bytes()),
            FromClient::Drop
        ));
        // Its own session's cancellation is forwarded; the slot is held for the grace.
        assert!(matches!(
            router.client(&a, CANCEL.as_bytes()),
            FromClient::Forward { .. }
        ));
        assert_eq!(router.gate().limiter.snapshot().active, 1);
        // Once cancelled, a second cancellation finds nothing more.
        assert!(matches!(
            router.client(&a, CANCEL.as_bytes()),
            FromClient::Drop
        ));
    }

    #[tokio::test]
    async fn batches_cannot_carry_guarded_calls_or_cancellations() {
        let router = router();
        let s = Scope::Stdio;
        let batch = format!(r#"[{CALL},{{"jsonrpc":"2.0","id":2,"method":"ping"}}]"#);
        let FromClient::Answer {
            ids, batch: true, ..
        } = router.client(&s, batch.as_bytes())
        else {
            panic!("a batch with a guarded call is answered by the proxy");
        };
        assert_eq!(ids, [Some(RequestId::Int(1)), Some(RequestId::Int(2))]);
        let batch = format!("[{CANCEL}]");
        assert!(matches!(
            router.client(&s, batch.as_bytes()),
            FromClient::Drop
        ));
        let batch = format!(r#"[{CANCEL},{{"jsonrpc":"2.0","id":3,"method":"ping"}}]"#);
        assert!(matches!(
            router.client(&s, batch.as_bytes()),
            FromClient::Answer { .. }
        ));
        // Nothing was entered in the table by the refused batches.
        assert_eq!(router.inflight().len(), 0);
        let ok = r#"[{"jsonrpc":"2.0","id":4,"method":"ping"}]"#;
        let FromClient::Forward { requests, .. } = router.client(&s, ok.as_bytes()) else {
            panic!("a plain batch passes");
        };
        assert_eq!(requests.len(), 1);
        // A ping reusing a tracked id is refused.
        let again = r#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#;
        assert!(matches!(
            router.client(&s, again.as_bytes()),
            FromClient::Answer {
                error: ProxyError::Refused(_),
                ..
            }
        ));
    }
}
