use std::fmt;
use std::sync::Arc;

use ::rmcp::service::{RequestContext, RoleServer};

use crate::jsonrpc::{DEFAULT_OVERLOAD_CODE, PYTHON_PACKAGE_OVERLOAD_CODE};

/// Where a guarded request's client key comes from: the key selects the
/// per-client limit (`client_limit`) and the client's turn in the limiter's
/// round-robin queue. Requests without a key share one anonymous key.
///
/// ```
/// use mcp_backpressure::rmcp::{BackpressureOptions, ClientKey};
///
/// // One key per Streamable HTTP session:
/// let by_session = BackpressureOptions::default().with_client_key(ClientKey::Session);
/// // Or an identity an authentication layer put in the request's extensions:
/// #[derive(Clone)]
/// struct User(String);
/// let by_user = BackpressureOptions::default().with_client_key(ClientKey::from_fn(|ctx| {
///     ctx.extensions.get::<User>().map(|user| user.0.clone())
/// }));
/// # let _ = (by_session, by_user);
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum ClientKey {
    /// No key: every request is the same anonymous client (the default).
    #[default]
    None,
    /// The request's `Mcp-Session-Id` (Streamable HTTP, read from the HTTP
    /// request rmcp stores in the request's extensions); sessionless and
    /// stdio requests have no key.
    Session,
    /// The value of an HTTP request header (e.g. one an authenticating proxy
    /// sets); requests without it have no key. Values longer than 256 bytes
    /// are cut to 256 bytes.
    Header(String),
    /// A function of the request context (e.g. an auth identity from its
    /// extensions); `None` = no key.
    Custom(KeyFn),
}

/// A user-supplied client-key function (see [`ClientKey::Custom`]).
pub type KeyFn = Arc<dyn Fn(&RequestContext<RoleServer>) -> Option<String> + Send + Sync>;

/// The longest client key taken from a header, in bytes.
pub const MAX_HEADER_KEY_BYTES: usize = crate::config::MAX_KEY_BYTES;

impl ClientKey {
    /// A key computed by `f` from each request's context.
    pub fn from_fn<F>(f: F) -> Self
    where
        F: Fn(&RequestContext<RoleServer>) -> Option<String> + Send + Sync + 'static,
    {
        ClientKey::Custom(Arc::new(f))
    }

    /// The key of one request.
    pub fn key_of(&self, context: &RequestContext<RoleServer>) -> Option<String> {
        let header = |name: &str| -> Option<String> {
            let parts = context.extensions.get::<http::request::Parts>()?;
            let value = parts.headers.get(name)?.as_bytes();
            let value = &value[..value.len().min(MAX_HEADER_KEY_BYTES)];
            Some(String::from_utf8_lossy(value).into_owned())
        };
        match self {
            ClientKey::None => None,
            ClientKey::Session => header("mcp-session-id"),
            ClientKey::Header(name) => header(name),
            ClientKey::Custom(f) => f(context),
        }
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::None => f.write_str("None"),
            ClientKey::Session => f.write_str("Session"),
            ClientKey::Header(name) => f.debug_tuple("Header").field(name).finish(),
            ClientKey::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl PartialEq for ClientKey {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ClientKey::None, ClientKey::None) | (ClientKey::Session, ClientKey::Session) => true,
            (ClientKey::Header(a), ClientKey::Header(b)) => a.eq_ignore_ascii_case(b),
            (ClientKey::Custom(a), ClientKey::Custom(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for ClientKey {}

/// Which request methods are admitted through the limiter. Everything else —
/// `initialize`, `ping`, the list methods, notifications, tasks, subscriptions —
/// is always passed straight through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GuardedMethods {
    /// `tools/call` (guarded by default).
    pub tools_call: bool,
    /// `resources/read`.
    pub resources_read: bool,
    /// `prompts/get`.
    pub prompts_get: bool,
    /// `completion/complete`.
    pub completion_complete: bool,
}

impl GuardedMethods {
    /// Only `tools/call`: the default.
    pub const TOOLS_CALL: Self = Self {
        tools_call: true,
        resources_read: false,
        prompts_get: false,
        completion_complete: false,
    };

    /// No method: the wrapper limits nothing (every request passes through).
    pub const NONE: Self = Self {
        tools_call: false,
        resources_read: false,
        prompts_get: false,
        completion_complete: false,
    };

    /// Sets whether `tools/call` is guarded.
    pub const fn with_tools_call(mut self, guarded: bool) -> Self {
        self.tools_call = guarded;
        self
    }

    /// Sets whether `resources/read` is guarded.
    pub const fn with_resources_read(mut self, guarded: bool) -> Self {
        self.resources_read = guarded;
        self
    }

    /// Sets whether `prompts/get` is guarded.
    pub const fn with_prompts_get(mut self, guarded: bool) -> Self {
        self.prompts_get = guarded;
        self
    }

    /// Sets whether `completion/complete` is guarded.
    pub const fn with_completion_complete(mut self, guarded: bool) -> Self {
        self.completion_complete = guarded;
        self
    }

    /// Every method that does work on the server's behalf: `tools/call`,
    /// `resources/read`, `prompts/get` and `completion/complete`.
    pub const ALL_WORK: Self = Self {
        tools_call: true,
        resources_read: true,
        prompts_get: true,
        completion_complete: true,
    };
}

impl Default for GuardedMethods {
    fn default() -> Self {
        Self::TOOLS_CALL
    }
}

/// How a rejected `tools/call` is answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverloadResponse {
    /// A JSON-RPC error with the configured code and the overload `data`
    /// (the default; every other guarded method is always answered this way).
    #[default]
    JsonRpcError,
    /// A tool result with `isError: true`: an explanation as text content
    /// (the error's message, then why and when to retry, see
    /// [`jsonrpc::tool_result_text`](crate::jsonrpc::tool_result_text)), the
    /// overload `data` as `structuredContent`, and the SEP-3313
    /// classification under `_meta["io.modelcontextprotocol/toolFailure"]`
    /// (see [`tool_failure`](crate::tool_failure)). For hosts that show the
    /// model tool results but not protocol errors. Each refusal is logged
    /// (`tracing`, INFO) with its correlation id.
    ToolResult,
}

/// What happens to a running request whose client cancels it
/// (`notifications/cancelled`, or the session closing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelPolicy {
    /// Drop the handler's future at once and free its slot (the default: the
    /// MCP specification says receivers should stop processing a cancelled
    /// request, and the client no longer waits for its response).
    #[default]
    Stop,
    /// Let the handler run to completion, holding its slot; only its response
    /// is discarded (by rmcp). For handlers that must not be interrupted
    /// half-way.
    RunToCompletion,
}

/// Options of the [`Backpressure`](super::Backpressure) wrapper.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackpressureOptions {
    /// Which methods are admitted through the limiter.
    pub guarded: GuardedMethods,
    /// The JSON-RPC error code of the overload error.
    pub error_code: i32,
    /// How a rejected `tools/call` is answered.
    pub overload_response: OverloadResponse,
    /// What happens to a running request whose client cancels it.
    pub cancel_policy: CancelPolicy,
    /// Where a request's client key comes from.
    pub client_key: ClientKey,
    /// The most background tasks whose calls keep their slots at once (the
    /// cap of the wrapper's [`TaskHolds`](crate::TaskHolds) table; 0 acts
    /// as 1). Past it, the hold least recently known alive is ended to make
    /// room. Default [`DEFAULT_MAX_HOLDS`](crate::task_holds::DEFAULT_MAX_HOLDS).
    pub max_task_holds: usize,
}

impl Default for BackpressureOptions {
    fn default() -> Self {
        Self {
            guarded: GuardedMethods::default(),
            error_code: DEFAULT_OVERLOAD_CODE,
            overload_response: OverloadResponse::default(),
            cancel_policy: CancelPolicy::default(),
            client_key: ClientKey::default(),
            max_task_holds: crate::task_holds::DEFAULT_MAX_HOLDS,
        }
    }
}

impl BackpressureOptions {
    /// Sets which methods are admitted through the limiter.
    pub fn with_guarded(mut self, guarded: GuardedMethods) -> Self {
        self.guarded = guarded;
        self
    }

    /// Sets the JSON-RPC error code of the overload error.
    pub fn with_error_code(mut self, code: i32) -> Self {
        self.error_code = code;
        self
    }

    /// Uses -32001, the code of the Python `mcp-backpressure` package, for
    /// clients that already match on it. Beware: the official TypeScript and
    /// Python SDKs use -32001 for their own client-side request timeout, so
    /// those clients cannot tell the two apart.
    pub fn with_python_package_error_code(self) -> Self {
        self.with_error_code(PYTHON_PACKAGE_OVERLOAD_CODE)
    }

    /// Sets how a rejected `tools/call` is answered.
    pub fn with_overload_response(mut self, response: OverloadResponse) -> Self {
        self.overload_response = response;
        self
    }

    /// Sets what happens to a running request whose client cancels it.
    pub fn with_cancel_policy(mut self, policy: CancelPolicy) -> Self {
        self.cancel_policy = policy;
        self
    }

    /// Sets where a request's client key comes from.
    pub fn with_client_key(mut self, client_key: ClientKey) -> Self {
        self.client_key = client_key;
        self
    }

    /// Sets the cap on background tasks holding slots
    /// ([`BackpressureOptions::max_task_holds`]).
    pub fn with_max_task_holds(mut self, max: usize) -> Self {
        self.max_task_holds = max;
        self
    }
}
