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
}

impl<'a> Request<'a> {
    /// A request with no tool name, no client key and the default cost.
    pub const fn new() -> Self {
        Self {
            tool: None,
            client: None,
            cost: None,
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
