//! The one place that decides what happens to a message, for both
//! transports: a client message is admitted, tracked, swallowed, answered by
//! the proxy or forwarded; an upstream message frees the slots of the
//! requests it answers. The transports only move bytes and act on the
//! decision.
//!
//! A guarded request is admitted as its tool — `params.name` of a
//! `tools/call`, the method name of any other guarded method — and its
//! client's key (see [`client_key`](super::client_key)); both are at most
//! [`MAX_NAME_BYTES`], or the request is refused (-32600). A response frees
//! its call's slot with the outcome [`outcome`] reads in it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mcp_backpressure::Outcome;

use super::error::ProxyError;
use super::gate::Gate;
#[cfg(test)]
use super::inflight::Admission;
use super::inflight::{
    Answered, Ask, Begun, Cancel, Expired, InFlight, Key, Left, Purpose, Queued, Scope, Ticket,
};
use super::outcome;
use super::refusal::Asked;
use super::tasks::{Origin, TaskAsk, TaskMethod, TaskScope, Tasks};
use super::wire::message::{self, From, Kind, Malformed, Parsed, RequestId, Shape};
use super::wire::scan::{IdScan, ScanResult};

/// The longest tool name and client key admission is keyed on, in bytes
/// (MCP tool names are at most 128 characters). A guarded request with a
/// longer one is refused with -32600: every key the limiter tracks is short.
pub const MAX_NAME_BYTES: usize = mcp_backpressure::config::MAX_KEY_BYTES;

/// The method whose requests are admitted as the tool they name.
const TOOLS_CALL: &str = "tools/call";

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
        /// What its refusal's shape depends on.
        asked: Asked,
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

/// Who sent a client message, beyond its scope (HTTP).
#[derive(Clone, Debug, Default)]
pub struct Caller<'a> {
    /// Its client key, if any.
    pub client: Option<&'a str>,
    /// The scope its tasks belong to when it has no session: its identity
    /// (`None`: the callers without one share a scope).
    pub identity: Option<Arc<str>>,
    /// How the proxy may ask the upstream about its tasks itself.
    pub origin: Option<Arc<Origin>>,
}

/// What to do with an upstream message.
#[derive(Debug)]
pub enum FromUpstream {
    /// Forward the re-framed bytes to the client.
    Forward {
        /// The re-framed message, the ids of the responses in it written as
        /// the client wrote them.
        bytes: Vec<u8>,
        /// The in-flight requests it answered (now over, their slots free).
        answered: Vec<RequestId>,
        /// `bytes` differ from the upstream's message in more than white
        /// space (an id written back as the client wrote it, a byte order
        /// mark dropped): pass them rather than the upstream's own bytes.
        rewritten: bool,
    },
    /// The answer to the proxy's own poll: forward nothing.
    Swallow,
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
    /// Whether a guarded request without a client key was logged yet.
    keyless_seen: Arc<AtomicBool>,
}

impl Router {
    /// A router in front of `gate`.
    pub fn new(gate: Arc<Gate>) -> Self {
        Self {
            inflight: InFlight::new(gate),
            keyless_seen: Arc::default(),
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

    /// The task holds.
    pub fn tasks(&self) -> &Tasks {
        self.inflight.tasks()
    }

    /// Decides on one client message of `scope`, from the client `client`
    /// (its key, if any). Call it in arrival order.
    pub fn client(&self, scope: &Scope, client: Option<&str>, bytes: &[u8]) -> FromClient {
        let caller = Caller {
            client,
            ..Caller::default()
        };
        self.client_from(scope, &caller, bytes, |_| None)
    }

    /// The scope of the tasks of a message in `scope` from `caller`.
    fn task_scope(scope: &Scope, caller: &Caller<'_>) -> TaskScope {
        match scope {
            Scope::Stdio => TaskScope::Stdio,
            Scope::Session(session) => TaskScope::Session(session.clone()),
            Scope::Exchange(_) => caller
                .identity
                .clone()
                .map_or(TaskScope::Anonymous, TaskScope::Caller),
        }
    }

    /// [`Router::client`] for a message from `caller`; `check` sees the
    /// message's routing fields (the one parse the proxy makes) and may
    /// refuse it with a reason (HTTP: headers that do not match the body).
    pub fn client_from(
        &self,
        scope: &Scope,
        caller: &Caller<'_>,
        bytes: &[u8],
        check: impl FnOnce(&Shape) -> Option<String>,
    ) -> FromClient {
        let client = caller.client;
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
        if let Some(why) = check(&kinds) {
            let id = match &kinds {
                Shape::One(Kind::Request { id, .. }) => Some(id.clone()),
                _ => None,
            };
            // Answered under the request's own id, so that its client can
            // match the answer to it.
            let error = match &id {
                Some(id) => Malformed::Request {
                    id: id.clone(),
                    why,
                },
                None => Malformed::Invalid(why),
            };
            return FromClient::Answer {
                error: error.into(),
                ids: vec![id],
                batch: false,
            };
        }
        let settings = &self.gate().settings;
        match kinds {
            Shape::One(Kind::Request {
                id,
                method,
                name,
                params,
            }) => {
                // Requests about a task are never admitted through the
                // limiter: they hold no slot, and refusing one would keep a
                // task's slot held for want of news.
                let task = TaskMethod::of(&method).and_then(|m| {
                    params.task_id.as_deref().map(|task_id| TaskAsk {
                        scope: Self::task_scope(scope, caller),
                        method: m,
                        task_id: Arc::from(task_id),
                        own: false,
                    })
                });
                let guarded = task.is_none() && settings.is_guarded(&method);
                let asked = if guarded {
                    Asked::of(&method, params.meta.as_deref())
                } else {
                    Asked::default()
                };
                let purpose = match task {
                    Some(ask) => {
                        self.tasks().asked(&ask);
                        Purpose::Task(ask)
                    }
                    None if guarded && method == TOOLS_CALL => Purpose::Call {
                        tasks: Self::task_scope(scope, caller),
                        origin: caller.origin.clone(),
                        meta: params.meta,
                        wants_task: params.wants_task,
                    },
                    None => Purpose::Plain,
                };
                let ask = if guarded {
                    match self.ask(method, name, client, params.continuation) {
                        Ok(ask) => Some(ask),
                        Err(why) => {
                            return FromClient::Answer {
                                error: Malformed::Request {
                                    id: id.clone(),
                                    why,
                                }
                                .into(),
                                ids: vec![Some(id)],
                                batch: false,
                            };
                        }
                    }
                } else {
                    None
                };
                let key = Key {
                    scope: scope.clone(),
                    id: id.clone(),
                };
                match self.inflight.begin(key.clone(), ask, purpose) {
                    Ok(Begun::Queued(queued)) => FromClient::Admit {
                        bytes,
                        queued,
                        asked,
                    },
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

    /// What a guarded request of `method` (naming `name`) from `client` asks
    /// the limiter for; `Err` says why it cannot be admitted.
    fn ask(
        &self,
        method: String,
        name: Option<String>,
        client: Option<&str>,
        continuation: bool,
    ) -> Result<Ask, String> {
        let tool = match name {
            Some(name) if method == TOOLS_CALL => name,
            _ => method,
        };
        if tool.len() > MAX_NAME_BYTES {
            return Err(format!(
                "the tool name is longer than {MAX_NAME_BYTES} bytes ({} bytes)",
                tool.len()
            ));
        }
        let key = &self.gate().settings.client_key;
        match client {
            Some(client) if client.len() > MAX_NAME_BYTES => Err(format!(
                "the client key (the {} header) is longer than {MAX_NAME_BYTES} bytes ({} bytes)",
                key.header().unwrap_or("client key"),
                client.len()
            )),
            Some(client) => Ok(Ask {
                tool: tool.into(),
                client: Some(client.into()),
                continuation,
            }),
            None => {
                if let Some(header) = key.header()
                    && !self.keyless_seen.swap(true, Ordering::Relaxed)
                {
                    tracing::warn!(
                        header,
                        "a guarded request without a client key: such requests share one \
                         client (one client_limit, one turn in the queue); logged once"
                    );
                }
                Ok(Ask {
                    tool: tool.into(),
                    client: None,
                    continuation,
                })
            }
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
                ..
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
            match self.inflight.begin(key.clone(), None, Purpose::Plain) {
                Ok(Begun::Tracked(ticket)) => requests.push(Watched { key, ticket }),
                Ok(Begun::Queued(_)) => unreachable!("unguarded requests are not queued"),
                Err(refused) => {
                    for watched in &requests {
                        self.inflight
                            .finish(&watched.key, watched.ticket, Outcome::Ignore);
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
    /// the slots of the requests it answers. `status`: the HTTP status of the
    /// response that carried it (none over stdio).
    pub fn upstream(&self, scope: &Scope, input: &[u8], status: Option<u16>) -> FromUpstream {
        match message::parse(input, From::Upstream) {
            Ok(Parsed { kinds, bytes }) => {
                let single = matches!(kinds, Shape::One(_));
                let kinds = match kinds {
                    Shape::One(kind) => vec![kind],
                    Shape::Batch(kinds) => kinds,
                };
                let mut answered = Vec::new();
                // The ids of requests the client wrote otherwise than the
                // upstream's answer does (`1.0` went upstream as `1`): the
                // answer carries them back as the client wrote them.
                let mut respelled: Vec<RequestId> = Vec::new();
                let mut own = false;
                for kind in kinds {
                    match kind {
                        Kind::Response {
                            id: Some(id),
                            answer,
                            task,
                        } => {
                            let outcome =
                                outcome::of_answer(answer, status, self.gate().settings.error_code);
                            let key = Key {
                                scope: scope.clone(),
                                id: id.clone(),
                            };
                            match self.inflight.answered(
                                &key,
                                outcome,
                                Some((answer, task.as_ref())),
                            ) {
                                Answered::Client(entered) => {
                                    if entered.written() != id.written() {
                                        respelled.push(entered);
                                    }
                                    answered.push(id);
                                }
                                Answered::Own => own = true,
                                Answered::Nothing => {}
                            }
                        }
                        Kind::Notification {
                            task: Some(task), ..
                        } => {
                            let tasks = match scope {
                                Scope::Stdio => Some(TaskScope::Stdio),
                                Scope::Session(session) => {
                                    Some(TaskScope::Session(session.clone()))
                                }
                                // A stream without a session: whose task it
                                // is cannot be told; the polls will see it.
                                Scope::Exchange(_) => None,
                            };
                            if let Some(tasks) = tasks {
                                self.tasks().notified(&tasks, &task);
                            }
                        }
                        _ => {}
                    }
                }
                if own && single {
                    return FromUpstream::Swallow;
                }
                let respelled = if respelled.is_empty() {
                    None
                } else {
                    message::respell_ids(&bytes, |id| {
                        respelled
                            .iter()
                            .find(|entered| *entered == id)
                            .map(|entered| entered.written().into_owned())
                    })
                };
                // Different from what the upstream wrote in more than white
                // space: a transport that passes the upstream's bytes on
                // (an HTTP JSON body) passes these instead.
                let rewritten = respelled.is_some() || input.starts_with(message::BOM);
                let bytes = respelled.unwrap_or(bytes);
                FromUpstream::Forward {
                    bytes,
                    answered,
                    rewritten,
                }
            }
            Err(malformed) => {
                tracing::warn!(%malformed, "the upstream sent a message that cannot be passed on");
                let mut scanner = super::wire::scan::TopLevelScanner::new();
                scanner.push(input.strip_prefix(message::BOM).unwrap_or(input));
                let id = self.salvage(scope, &scanner.finish());
                FromUpstream::Replace {
                    id,
                    error: ProxyError::UpstreamResponse("it is not valid JSON-RPC"),
                }
            }
        }
    }

    /// Enters the proxy's own poll of a task in `scope` (its answer is
    /// swallowed); returns its id and the message to send upstream, or
    /// `None` if the table cannot take it now.
    pub fn own_poll(
        &self,
        scope: &Scope,
        due: &super::tasks::Due,
    ) -> Option<(Key, Ticket, Vec<u8>)> {
        let (tasks, task_id) = (due.scope.clone(), &due.task_id);
        let id = self.tasks().poll_id();
        let key = Key {
            scope: scope.clone(),
            id: id.clone(),
        };
        let ask = TaskAsk {
            scope: tasks,
            method: TaskMethod::Get,
            task_id: task_id.clone(),
            own: true,
        };
        match self.inflight.begin(key.clone(), None, Purpose::Task(ask)) {
            Ok(Begun::Tracked(ticket)) => {
                let message = Tasks::poll_message(&id, task_id, &due.follow);
                Some((key, ticket, message))
            }
            _ => None,
        }
    }

    /// An upstream message the proxy could not hold or parse, as far as a
    /// streaming scan saw it: if it was a response to a request in flight,
    /// that request is over (its slot free, its outcome `Ignore`: the proxy
    /// never read what it said) and its id is returned so the client can be
    /// told.
    pub fn salvage(&self, scope: &Scope, scan: &ScanResult) -> Option<RequestId> {
        if !scan.is_object || scan.has_method || !(scan.has_result || scan.has_error) {
            return None;
        }
        let IdScan::Raw(raw) = &scan.id else {
            return None;
        };
        let id = std::str::from_utf8(raw).ok().and_then(RequestId::parse)?;
        let key = Key {
            scope: scope.clone(),
            id,
        };
        match self.inflight.answered(&key, Outcome::Ignore, None) {
            // The id as the client wrote it: the proxy's error answers it.
            Answered::Client(entered) => Some(entered),
            _ => None,
        }
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
    use mcp_backpressure::{LimiterConfig, ToolConfig};

    use super::*;
    use crate::proxy::limits::Settings;

    fn router() -> Router {
        router_with(LimiterConfig::new(1).with_queue_size(1))
    }

    fn router_with(config: LimiterConfig) -> Router {
        let mut settings = Settings::with_defaults(config);
        settings.client_key = "header:x-client-id".parse().unwrap();
        let limiter = settings.limiter().unwrap();
        Router::new(Arc::new(Gate::new(limiter, settings)))
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#;
    const CANCEL: &str =
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#;

    #[tokio::test]
    async fn a_cancellation_reaches_only_its_own_scopes_calls() {
        let router = router();
        let a = Scope::Session("a".into());
        let b = Scope::Session("b".into());
        let FromClient::Admit { queued, .. } = router.client(&a, None, CALL.as_bytes()) else {
            panic!("a call is admitted");
        };
        assert!(matches!(queued.admit().await, Admission::Admitted(_)));
        // Another session (or an exchange without one) naming id 1: nothing
        // of its own, so nothing is forwarded.
        assert!(matches!(
            router.client(&b, None, CANCEL.as_bytes()),
            FromClient::Drop
        ));
        assert!(matches!(
            router.client(&Scope::Exchange(9), None, CANCEL.as_bytes()),
            FromClient::Drop
        ));
        // Its own session's cancellation is forwarded; the slot is held for the grace.
        assert!(matches!(
            router.client(&a, None, CANCEL.as_bytes()),
            FromClient::Forward { .. }
        ));
        assert_eq!(router.gate().limiter.snapshot().active, 1);
        // Once cancelled, a second cancellation finds nothing more.
        assert!(matches!(
            router.client(&a, None, CANCEL.as_bytes()),
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
        } = router.client(&s, None, batch.as_bytes())
        else {
            panic!("a batch with a guarded call is answered by the proxy");
        };
        assert_eq!(ids, [Some(RequestId::int(1)), Some(RequestId::int(2))]);
        let batch = format!("[{CANCEL}]");
        assert!(matches!(
            router.client(&s, None, batch.as_bytes()),
            FromClient::Drop
        ));
        let batch = format!(r#"[{CANCEL},{{"jsonrpc":"2.0","id":3,"method":"ping"}}]"#);
        assert!(matches!(
            router.client(&s, None, batch.as_bytes()),
            FromClient::Answer { .. }
        ));
        // Nothing was entered in the table by the refused batches.
        assert_eq!(router.inflight().len(), 0);
        let ok = r#"[{"jsonrpc":"2.0","id":4,"method":"ping"}]"#;
        let FromClient::Forward { requests, .. } = router.client(&s, None, ok.as_bytes()) else {
            panic!("a plain batch passes");
        };
        assert_eq!(requests.len(), 1);
        // A ping reusing a tracked id is refused.
        let again = r#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#;
        assert!(matches!(
            router.client(&s, None, again.as_bytes()),
            FromClient::Answer {
                error: ProxyError::Refused(_),
                ..
            }
        ));
    }

    fn call(id: i64, tool: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":{tool:?}}}}}"#
        )
    }

    fn admit(router: &Router, scope: &Scope, client: Option<&str>, text: &str) -> Queued {
        match router.client(scope, client, text.as_bytes()) {
            FromClient::Admit { queued, .. } => queued,
            other => panic!("{text} is not admitted: {other:?}"),
        }
    }

    /// A `tools/call` is admitted as its tool, another guarded method as
    /// itself, each with its client's key.
    #[tokio::test]
    async fn guarded_requests_ask_for_their_tool_and_client() {
        let router = router_with(
            LimiterConfig::new(4)
                .with_tool("report", ToolConfig::new().with_max_concurrent(1))
                .with_client_limit(2),
        );
        let s = Scope::Session("a".into());
        let first = admit(&router, &s, Some("alice"), &call(1, "report"));
        let Admission::Admitted(_) = first.admit().await else {
            panic!("the first report runs");
        };
        let second = admit(&router, &s, Some("bob"), &call(2, "report"));
        let Admission::Rejected(overload) = second.admit().await else {
            panic!("a second report is refused by the report tool's limit");
        };
        assert_eq!(overload.data().scope, "tool:report");
        // Alice's second call of another tool runs; her third hits her cap.
        let other = admit(&router, &s, Some("alice"), &call(3, "search"));
        assert!(matches!(other.admit().await, Admission::Admitted(_)));
        let third = admit(&router, &s, Some("alice"), &call(4, "search"));
        let Admission::Rejected(overload) = third.admit().await else {
            panic!("alice is at her client limit");
        };
        assert_eq!(overload.data().scope, "client");
        // Anyone else still gets in.
        let bob = admit(&router, &s, Some("bob"), &call(5, "search"));
        assert!(matches!(bob.admit().await, Admission::Admitted(_)));
        let tools = router.gate().limiter.tool_snapshots();
        assert_eq!(tools[0].tool, "report");
        assert_eq!((tools[0].running, tools[0].rejected), (1, 1));
    }

    /// Another guarded method is admitted as the method, whatever it names.
    #[tokio::test]
    async fn other_guarded_methods_are_their_own_tool() {
        let config = LimiterConfig::new(4)
            .with_tool("resources/read", ToolConfig::new().with_max_concurrent(1));
        let mut settings = Settings::with_defaults(config);
        settings.guarded = vec!["tools/call".into(), "resources/read".into()];
        let limiter = settings.limiter().unwrap();
        let router = Router::new(Arc::new(Gate::new(limiter, settings)));
        let read = |id: i64| {
            format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"resources/read","params":{{"uri":"x","name":"report"}}}}"#
            )
        };
        let s = Scope::Stdio;
        let first = admit(&router, &s, None, &read(1));
        assert!(matches!(first.admit().await, Admission::Admitted(_)));
        let Admission::Rejected(overload) = admit(&router, &s, None, &read(2)).admit().await else {
            panic!("the second read is refused");
        };
        assert_eq!(overload.data().scope, "tool:resources/read");
    }

    /// Keys and tool names are short: longer ones are refused under the
    /// request's id, and take nothing.
    #[tokio::test]
    async fn long_keys_and_tool_names_are_refused() {
        let router = router();
        let s = Scope::Stdio;
        let long = "k".repeat(MAX_NAME_BYTES + 1);
        let fits = "k".repeat(MAX_NAME_BYTES);
        for (client, tool, why) in [
            (
                Some(long.as_str()),
                "x",
                "the client key (the x-client-id header) is longer than 256 bytes (257 bytes)",
            ),
            (
                None,
                long.as_str(),
                "the tool name is longer than 256 bytes (257 bytes)",
            ),
        ] {
            match router.client(&s, client, call(7, tool).as_bytes()) {
                FromClient::Answer {
                    error,
                    ids,
                    batch: false,
                } => {
                    assert_eq!(ids, [Some(RequestId::int(7))]);
                    assert_eq!(error.code(-31429), -32600);
                    assert_eq!(error.to_string(), format!("invalid request: {why}"));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(router.inflight().len(), 0);
        // At the bound, and unguarded requests whatever the key: fine.
        admit(&router, &s, Some(&fits), &call(8, &fits));
        let ping = r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#;
        assert!(matches!(
            router.client(&s, Some(&long), ping.as_bytes()),
            FromClient::Forward { .. }
        ));
    }

    /// A response frees its slot with the outcome it says: an overloaded
    /// upstream's error is a drop, which an adaptive limit backs off on.
    #[tokio::test]
    async fn responses_free_slots_with_their_outcome() {
        let router = router_with(LimiterConfig::new(10).with_limit(
            mcp_backpressure::limit::LimitAlgorithm::Aimd,
            1,
            None,
        ));
        let s = Scope::Stdio;
        // The limiter times one admission in four: enough drops lower it.
        for id in 0..8 {
            let queued = admit(&router, &s, None, &call(id, "x"));
            assert!(matches!(queued.admit().await, Admission::Admitted(_)));
            let tool_error = format!(
                r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[],"isError":true}}}}"#
            );
            router.upstream(&s, tool_error.as_bytes(), None);
        }
        assert_eq!(
            router.gate().limiter.snapshot().max_concurrent,
            10,
            "tool errors say nothing"
        );
        for id in 10_i64..18 {
            let queued = admit(&router, &s, None, &call(id, "x"));
            assert!(matches!(queued.admit().await, Admission::Admitted(_)));
            let timeout = format!(
                r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32001,"message":"timed out"}}}}"#
            );
            let FromUpstream::Forward { answered, .. } =
                router.upstream(&s, timeout.as_bytes(), None)
            else {
                panic!("forwarded");
            };
            assert_eq!(answered, [RequestId::int(id)]);
        }
        assert!(
            router.gate().limiter.snapshot().max_concurrent < 10,
            "timeouts back off"
        );
        assert_eq!(router.gate().limiter.snapshot().active, 0);
    }
}
