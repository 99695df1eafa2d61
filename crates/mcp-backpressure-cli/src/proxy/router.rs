//! The one place that decides what happens to a message, for both
//! transports: a client message is admitted, tracked, swallowed, answered by
//! the proxy or forwarded; an upstream message frees the slots of the
//! requests it answers. The transports only move bytes and act on the
//! decision.

use std::sync::Arc;

use super::error::ProxyError;
use super::gate::Gate;
use super::inflight::{Begun, Cancel, Expired, InFlight, Key, Left, Queued, Scope, Ticket};
use super::wire::message::{self, From, Kind, Parsed, RequestId, Shape};
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
    /// Forward nothing, answer nothing: a cancellation from an HTTP exchange
    /// without a session, which can name none of its own requests — passed
    /// on, it could stop another client's call on a sessionless upstream.
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
                return FromClient::Answer {
                    error: malformed.into(),
                    ids: vec![None],
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
                Some(left) => FromClient::Swallow(left),
                None if matches!(scope, Scope::Exchange(_)) => FromClient::Drop,
                None => FromClient::Forward {
                    bytes,
                    requests: Vec::new(),
                },
            },
            Shape::One(_) => FromClient::Forward {
                bytes,
                requests: Vec::new(),
            },
            Shape::Batch(kinds) => self.batch(scope, bytes, kinds),
        }
    }

    /// A cancellation of `id` in `scope`: `Some` if the request was queued
    /// (it leaves; forward nothing); a forwarded one keeps its slot for the
    /// cancel grace.
    fn cancel(&self, scope: &Scope, id: RequestId) -> Option<Left> {
        let key = Key {
            scope: scope.clone(),
            id,
        };
        match self.inflight.cancel(&key) {
            Cancel::Queued(left) => {
                tracing::debug!(id = %key.id, "cancelled while queued; not forwarded");
                Some(left)
            }
            Cancel::Forwarded(ticket) => {
                let grace = self.gate().settings.cancel_grace;
                self.inflight.expire_after(key, ticket, grace, |_| {});
                None
            }
            Cancel::Unknown => None,
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
        if let Some(method) = kinds.iter().find_map(|k| match k {
            Kind::Request { method, .. } if settings.is_guarded(method) => Some(method.clone()),
            _ => None,
        }) {
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
        // Cancellations in a batch: a queued request leaves the queue (the
        // upstream ignores a cancellation of a request it never saw).
        for kind in kinds {
            if let Kind::Notification {
                cancels: Some(id), ..
            } = kind
            {
                let _ = self.cancel(scope, id);
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
