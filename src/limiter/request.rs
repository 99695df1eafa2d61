/// What the limiter needs to know about one request: its tool (or method)
/// name, its client key and its cost. Every part is optional; the empty
/// descriptor ([`Request::new`], what [`Limiter::acquire`](crate::Limiter::acquire)
/// uses) counts against the global limit only, as one anonymous client.
///
/// ```
/// use mcp_backpressure::{Limiter, LimiterConfig, Request};
/// use mcp_backpressure::config::ToolConfig;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let limiter = Limiter::new(
///     LimiterConfig::new(8).with_tool("report", ToolConfig::new().with_max_concurrent(1)),
/// )
/// .unwrap();
/// let _report = limiter
///     .acquire_with(Request::new().tool("report").client("alice"))
///     .await
///     .unwrap();
/// // A second report is refused by the report tool's own limit...
/// let refused = limiter.acquire_with(Request::new().tool("report")).await.unwrap_err();
/// assert_eq!(refused.data().scope, "tool:report");
/// // ...while other tools still run.
/// assert!(limiter.acquire_with(Request::new().tool("search")).await.is_ok());
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Request<'a> {
    tool: Option<&'a str>,
    client: Option<&'a str>,
    cost: Option<usize>,
    continuation: bool,
}

impl<'a> Request<'a> {
    /// A request with no tool name, no client key and the default cost.
    pub const fn new() -> Self {
        Self {
            tool: None,
            client: None,
            cost: None,
            continuation: false,
        }
    }

    /// The tool (or method) name: selects the tool's limit and weight.
    pub const fn tool(mut self, name: &'a str) -> Self {
        self.tool = Some(name);
        self
    }

    /// The client key (a session, an auth identity): selects the per-client
    /// limit and the client's turn in the queue.
    pub const fn client(mut self, key: &'a str) -> Self {
        self.client = Some(key);
        self
    }

    /// The slots this request takes, overriding its tool's weight (values
    /// below 1 act as 1; values above the limit in force take the whole limit).
    pub const fn cost(mut self, cost: usize) -> Self {
        self.cost = Some(cost);
        self
    }

    /// Marks the request as the continuation of a multi-round-trip call
    /// (SEP-2322: a retry carrying `inputResponses` or `requestState`): it
    /// is served before calls that arrived after its first round, and may
    /// wait at the head of the queue even when the queue is full or has no
    /// places, up to the queue timeout. The continuations waiting at once
    /// are bounded ([`LimiterConfig::with_max_continuations`](crate::LimiterConfig::with_max_continuations));
    /// past that bound a continuation is treated like any other call.
    ///
    /// A continuation keeps its tool's and its client's limits: one held
    /// back by either waits without holding anyone else back. One admitted
    /// at once (a free slot, nobody stalled ahead) is admitted as any call.
    /// It is never shed by [CoDel](crate::config::QueueDiscipline::CoDel).
    ///
    /// With a shared limit ([`LimiterBuilder::shared`](crate::LimiterBuilder),
    /// feature `redis`), a continuation asks Redis like any other call:
    /// there is no priority across replicas (only in the local fail-open
    /// fallback).
    pub const fn continuation(mut self) -> Self {
        self.continuation = true;
        self
    }

    pub(crate) fn is_continuation(&self) -> bool {
        self.continuation
    }

    pub(crate) fn tool_name(&self) -> Option<&'a str> {
        self.tool
    }

    pub(crate) fn client_key(&self) -> Option<&'a str> {
        self.client
    }

    pub(crate) fn cost_override(&self) -> Option<usize> {
        self.cost
    }
}
