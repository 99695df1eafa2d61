#![allow(deprecated)] // Forwards every method of rmcp's trait, deprecated ones included.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use ::rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, CancelledNotificationParam,
    CompleteRequestParams, CompleteResult, CustomNotification, CustomRequest, CustomResult,
    DiscoverResult, GetPromptRequestParams, GetPromptResponse, GetSkillRequestParams,
    GetSkillResult, GetTaskParams, GetTaskResult, InitializeRequestParams, InitializeResult,
    ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListSkillsResult,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ProtocolVersion,
    ReadResourceDirectoryRequestParams, ReadResourceDirectoryResult, ReadResourceRequestParams,
    ReadResourceResponse, ServerConfig, SetLevelRequestParams, SubscribeRequestParams,
    SubscriptionFilter, Tool, UnsubscribeRequestParams, UpdateTaskParams,
};
use ::rmcp::service::{
    MaybeSendFuture, NotificationContext, RequestContext, RoleServer, SubscriptionContext,
};
use ::rmcp::{ErrorData, ServerHandler};
use tokio_util::sync::CancellationToken;

use super::admission_signal::{AdmissionSignal, Decision};
use super::disconnect::Disconnected;
use super::options::{BackpressureOptions, CancelPolicy, OverloadResponse};
use super::tasks::{TaskWatch, Tasks, poll_context};
use super::wire;
use crate::jsonrpc::signals_overload;
use crate::limiter::{Limiter, Outcome, Permit, Request};
use crate::overload::Overload;
use crate::task_holds::TaskHoldsSnapshot;

/// The outcome an error reports.
fn error_outcome(error: &ErrorData, own_code: i32) -> Outcome {
    if signals_overload(error.code.0.into(), own_code) {
        Outcome::Dropped
    } else {
        Outcome::Ignore
    }
}

/// The outcome of a `tools/call` answer: a completed result is a success
/// unless the tool reported its own error (`isError`), which says nothing
/// about load; a task handle or a request for input is not the work's time.
fn call_tool_outcome(response: &CallToolResponse) -> Outcome {
    match response {
        CallToolResponse::Complete(result) if result.is_error != Some(true) => Outcome::Success,
        // A guarded server further down (the inner handler relays it)
        // refused in the tool-result dialect: an overload signal, like the
        // overload error's code.
        CallToolResponse::Complete(result)
            if result
                .meta
                .as_ref()
                .is_some_and(|meta| crate::tool_failure::says_overload(&meta.0)) =>
        {
            Outcome::Dropped
        }
        _ => Outcome::Ignore,
    }
}

/// Whether a `tools/call` is the retry of a multi-round-trip call (SEP-2322):
/// it carries the client's `inputResponses` or the server's `requestState`.
fn is_continuation(request: &CallToolRequestParams) -> bool {
    request.input_responses.is_some() || request.request_state.is_some()
}

/// The outcome of any other guarded method's result.
fn success<T>(_: &T) -> Outcome {
    Outcome::Success
}

/// An rmcp [`ServerHandler`] whose guarded requests are admitted through a
/// [`Limiter`].
///
/// Every clone shares the limiter, so one limit covers every session of a
/// Streamable HTTP server when its session factory clones one `Backpressure`
/// (or wraps each new handler with the same limiter).
///
/// Guarded methods (`tools/call` by default, see
/// [`GuardedMethods`](super::GuardedMethods)) wait for a slot, or are answered
/// with the overload error; every other method, and every notification, is
/// forwarded untouched. Every method of rmcp's `ServerHandler` is forwarded
/// (a test compares this impl with rmcp's trait, method by method).
///
/// # Cancellation
///
/// A request waiting in the queue leaves it the moment its client cancels it
/// (rmcp fires the request's cancellation token on `notifications/cancelled`,
/// and for every request still running when the session ends). A running
/// request whose client cancels it is stopped — its future dropped, its slot
/// freed at once — unless [`CancelPolicy::RunToCompletion`] is set.
///
/// # Disconnection
///
/// rmcp cancels nothing when a transport's input ends (stdin closed, a
/// Streamable HTTP session deleted): it first waits up to 5 s for the
/// responses in flight. Served with [`Backpressure::serve`] (or over a
/// [`DisconnectAware`](super::DisconnectAware) transport), a request still
/// queued when the client disconnects leaves the queue at once, counted in
/// `cancelled_in_queue`; a running one keeps its slot until it ends or rmcp
/// cancels it when its drain ends (once the responses in flight are written,
/// at the first one that cannot be, or after 5 s). Served otherwise, queued
/// requests wait for that drain to end, and may be admitted and started in
/// the meantime.
///
/// # Tasks
///
/// A `tools/call` answered with a task handle (SEP-2663,
/// `CallToolResponse::Task`) keeps its slot while the task works: its permit
/// becomes a hold in the wrapper's task table ([`Backpressure::task_holds`]),
/// ended exactly once when the task's work ends (a handler that arms the
/// call's [`TaskWatch`]), when a `tasks/get` answer says it is terminal, when
/// `tasks/cancel` is acknowledged, when the server says it does not know the
/// task, or when its TTL runs out. The table is shared by the clones of one
/// `Backpressure` and holds at most
/// [`BackpressureOptions::max_task_holds`] tasks. See [`TaskWatch`] and
/// the module docs ("Background tasks") for the details.
///
/// A call that carries `inputResponses` or `requestState` (the retry of a
/// multi-round-trip call, SEP-2322) is admitted as a continuation
/// ([`Request::continuation`]).
#[derive(Clone, Debug)]
pub struct Backpressure<H> {
    inner: H,
    limiter: Limiter,
    options: BackpressureOptions,
    tasks: Arc<Tasks>,
}

enum Refusal {
    /// Boxed: an overload carries a whole metrics snapshot.
    Overload(Box<Overload>),
    Cancelled,
    Disconnected,
}

/// What ends a guarded request's wait besides the limiter: its own
/// cancellation token, and the disconnect signal of the transport it came
/// through (when that was a [`DisconnectAware`](super::DisconnectAware) one).
struct Exits {
    ct: CancellationToken,
    disconnected: Option<CancellationToken>,
    /// The request's client key.
    client: Option<String>,
    /// Where an [`OverloadStatusLayer`](super::OverloadStatusLayer) in front
    /// waits for the decision (an HTTP request through the layer only).
    signal: Option<AdmissionSignal>,
}

impl<H> Backpressure<H> {
    /// What ends a guarded request's wait, and its client key.
    fn exits(&self, context: &RequestContext<RoleServer>) -> Exits {
        Exits {
            ct: context.ct.clone(),
            disconnected: Disconnected::of(&context.extensions),
            client: self.options.client_key.key_of(context),
            signal: AdmissionSignal::of(context.extensions.get()),
        }
    }

    /// Guards `inner`'s `tools/call` with `limiter`, with default options.
    pub fn new(inner: H, limiter: Limiter) -> Self {
        Self::with_options(inner, limiter, BackpressureOptions::default())
    }

    /// Guards `inner` with `limiter` and `options`.
    pub fn with_options(inner: H, limiter: Limiter, options: BackpressureOptions) -> Self {
        let tasks = Arc::new(Tasks::new(options.max_task_holds));
        Self {
            inner,
            limiter,
            options,
            tasks,
        }
    }

    /// Has the wrapper ask the handler itself (its `tasks/get`, in the
    /// context of the call that made the task) about each task it holds
    /// whose end the handler does not report ([`TaskWatch`]) and that nobody
    /// asked about for the task's poll interval (`pollIntervalMs`, 5 s when
    /// absent, at least 50 ms): a terminal answer frees the slot
    /// ([`HoldEnd::OwnPoll`](crate::task_holds::HoldEnd::OwnPoll)), so a
    /// task whose client stopped polling does not keep its slot until its
    /// TTL. Needs a clone of the handler (its shared state, such as rmcp's
    /// `TaskManager`, behind an `Arc`); call it before serving.
    pub fn with_own_task_polls(self) -> Self
    where
        H: ServerHandler + Clone,
    {
        let handler = self.inner.clone();
        self.tasks.set_poller(Arc::new(move |task_id, context| {
            let handler = handler.clone();
            Box::pin(async move { handler.get_task(GetTaskParams::new(task_id), context).await })
        }));
        self
    }

    /// The task holds now: background tasks keeping their calls' slots, and
    /// the holds ended so far by cause (for metrics). Shared by every clone.
    pub fn task_holds(&self) -> TaskHoldsSnapshot {
        self.tasks.holds().snapshot()
    }

    /// The shared limiter (for metrics: [`Limiter::snapshot`]).
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The options in force.
    pub fn options(&self) -> &BackpressureOptions {
        &self.options
    }

    /// The wrapped handler.
    pub fn get_ref(&self) -> &H {
        &self.inner
    }

    /// The wrapped handler, mutably.
    pub fn get_mut(&mut self) -> &mut H {
        &mut self.inner
    }

    /// Unwraps the handler.
    pub fn into_inner(self) -> H {
        self.inner
    }

    /// Waits for a slot for a call of `tool` (or method) from the request's
    /// client, giving up if the client cancels or disconnects first (checked
    /// before the limiter: a request that arrives after its client left is
    /// never admitted).
    async fn admit(
        &self,
        exits: &Exits,
        tool: &str,
        continuation: bool,
    ) -> Result<Permit, Refusal> {
        let mut request = Request::new().tool(tool);
        if let Some(key) = &exits.client {
            request = request.client(key);
        }
        if continuation {
            request = request.continuation();
        }
        let disconnected = async {
            match &exits.disconnected {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let admitted = tokio::select! {
            biased;
            () = exits.ct.cancelled() => Err(Refusal::Cancelled),
            () = disconnected => {
                tracing::debug!("request not admitted: the client disconnected");
                Err(Refusal::Disconnected)
            }
            acquired = self.limiter.acquire_with(request) => acquired.map_err(|overload| {
                tracing::debug!(reason = %overload.reason, "request rejected: overloaded");
                Refusal::Overload(Box::new(overload))
            }),
        };
        // Recorded before the refusal is answered: the layer reads it when
        // the answer reaches the response body.
        if let Some(signal) = &exits.signal {
            signal.decide(match &admitted {
                Err(Refusal::Overload(overload)) => Decision::Refused {
                    retry_after: overload.retry_after,
                },
                _ => Decision::Pass,
            });
        }
        admitted
    }

    /// Runs admitted work, holding `permit`, honouring the cancel policy,
    /// and records the outcome (`outcome` classifies a result).
    async fn run<T>(
        &self,
        permit: Permit,
        ct: CancellationToken,
        work: impl Future<Output = Result<T, ErrorData>>,
        outcome: fn(&T) -> Outcome,
    ) -> Result<T, ErrorData> {
        self.run_keeping(permit, ct, work, outcome).await.0
    }

    /// As [`Self::run`], giving the permit back with the result (a task
    /// answer keeps it).
    async fn run_keeping<T>(
        &self,
        mut permit: Permit,
        ct: CancellationToken,
        work: impl Future<Output = Result<T, ErrorData>>,
        outcome: fn(&T) -> Outcome,
    ) -> (Result<T, ErrorData>, Permit) {
        let result = match self.options.cancel_policy {
            CancelPolicy::RunToCompletion => work.await,
            CancelPolicy::Stop => tokio::select! {
                biased;
                result = work => result,
                () = ct.cancelled() => Err(wire::cancelled()),
            },
        };
        permit.set_outcome(match &result {
            Ok(value) => outcome(value),
            Err(error) => error_outcome(error, self.options.error_code),
        });
        (result, permit)
    }

    /// The JSON-RPC answer to a refused request.
    fn refused(&self, refusal: Refusal) -> ErrorData {
        match refusal {
            Refusal::Overload(overload) => wire::to_error_data(&overload, self.options.error_code),
            Refusal::Cancelled => wire::cancelled(),
            Refusal::Disconnected => wire::disconnected(),
        }
    }

    /// Admits a call of `method`, then runs `work()` (built only once
    /// admitted), or refuses.
    async fn guard<T, F, Fut>(
        &self,
        guarded: bool,
        method: &str,
        exits: Exits,
        work: F,
    ) -> Result<T, ErrorData>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, ErrorData>>,
    {
        if !guarded {
            return work().await;
        }
        match self.admit(&exits, method, false).await {
            Ok(permit) => self.run(permit, exits.ct, work(), success).await,
            Err(refusal) => Err(self.refused(refusal)),
        }
    }
}

// === impl ServerHandler ===
//
// One method per method of rmcp's `ServerHandler`, in the trait's order. The
// guarded four go through `guard`; the rest forward as they are.

impl<H: ServerHandler> ServerHandler for Backpressure<H> {
    fn ping(
        &self,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<(), ErrorData>> + MaybeSendFuture + '_ {
        self.inner.ping(context)
    }

    fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<InitializeResult, ErrorData>> + MaybeSendFuture + '_ {
        self.inner.initialize(request, context)
    }

    fn negotiate_initialize(
        &self,
        request: &InitializeRequestParams,
    ) -> Result<InitializeResult, ErrorData> {
        self.inner.negotiate_initialize(request)
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        self.inner.supported_protocol_versions()
    }

    fn discover(
        &self,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<DiscoverResult, ErrorData>> + MaybeSendFuture + '_ {
        self.inner.discover(context)
    }

    fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<CompleteResult, ErrorData>> + MaybeSendFuture + '_ {
        let (guarded, exits) = (
            self.options.guarded.completion_complete,
            self.exits(&context),
        );
        self.guard(guarded, "completion/complete", exits, move || {
            self.inner.complete(request, context)
        })
    }

    fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<(), ErrorData>> + MaybeSendFuture + '_ {
        self.inner.set_level(request, context)
    }

    fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<GetPromptResponse, ErrorData>> + MaybeSendFuture + '_ {
        let (guarded, exits) = (self.options.guarded.prompts_get, self.exits(&context));
        self.guard(guarded, "prompts/get", exits, move || {
            self.inner.get_prompt(request, context)
        })
    }

    fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ListPromptsResult, ErrorData>> + MaybeSendFuture + '_ {
        self.inner.list_prompts(request, context)
    }

    fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ListResourcesResult, ErrorData>> + MaybeSendFuture + '_ {
        self.inner.list_resources(request, context)
    }

    fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ListResourceTemplatesResult, ErrorData>> + MaybeSendFuture + '_
    {
        self.inner.list_resource_templates(request, context)
    }

    fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ReadResourceResponse, ErrorData>> + MaybeSendFuture + '_ {
        let (guarded, exits) = (self.options.guarded.resources_read, self.exits(&context));
        self.guard(guarded, "resources/read", exits, move || {
            self.inner.read_resource(request, context)
        })
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        self.inner.accepted_subscription_filter(requested)
    }

    fn listen(
        &self,
        context: SubscriptionContext,
    ) -> impl Future<Output = Result<(), ErrorData>> + MaybeSendFuture + '_ {
        self.inner.listen(context)
    }

    #[allow(deprecated)]
    fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<(), ErrorData>> + MaybeSendFuture + '_ {
        self.inner.subscribe(request, context)
    }

    #[allow(deprecated)]
    fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<(), ErrorData>> + MaybeSendFuture + '_ {
        self.inner.unsubscribe(request, context)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        mut context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if !self.options.guarded.tools_call {
            return self.inner.call_tool(request, context).await;
        }
        let exits = self.exits(&context);
        let tool = request.name.clone();
        let continuation = is_continuation(&request);
        match self.admit(&exits, &tool, continuation).await {
            Ok(permit) => {
                let watch = TaskWatch::new();
                context.extensions.insert(watch.clone());
                let polled_in = self.tasks.polls().then(|| poll_context(&context));
                let work = self.inner.call_tool(request, context);
                let (result, permit) = self
                    .run_keeping(permit, exits.ct, work, call_tool_outcome)
                    .await;
                if let Ok(CallToolResponse::Task(created)) = &result {
                    self.tasks.hold(permit, &created.task, watch, polled_in);
                }
                result
            }
            Err(Refusal::Overload(overload))
                if self.options.overload_response == OverloadResponse::ToolResult =>
            {
                let failure = crate::ToolFailure::of(&overload);
                tracing::info!(
                    tool = %tool,
                    reason = %overload.reason,
                    scope = %overload.scope,
                    retry_after_ms = overload.data().retry_after_ms,
                    correlation_id = %failure.correlation_id,
                    "tools/call refused (answered as an isError tool result)"
                );
                Ok(wire::to_tool_result(&overload, &failure).into())
            }
            Err(refusal) => Err(self.refused(refusal)),
        }
    }

    fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ListToolsResult, ErrorData>> + MaybeSendFuture + '_ {
        self.inner.list_tools(request, context)
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.inner.get_tool(name)
    }

    fn on_custom_request(
        &self,
        request: CustomRequest,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<CustomResult, ErrorData>> + MaybeSendFuture + '_ {
        self.inner.on_custom_request(request, context)
    }

    fn on_cancelled(
        &self,
        notification: CancelledNotificationParam,
        context: NotificationContext<RoleServer>,
    ) -> impl Future<Output = ()> + MaybeSendFuture + '_ {
        self.inner.on_cancelled(notification, context)
    }

    fn on_progress(
        &self,
        notification: ProgressNotificationParam,
        context: NotificationContext<RoleServer>,
    ) -> impl Future<Output = ()> + MaybeSendFuture + '_ {
        self.inner.on_progress(notification, context)
    }

    fn on_initialized(
        &self,
        context: NotificationContext<RoleServer>,
    ) -> impl Future<Output = ()> + MaybeSendFuture + '_ {
        self.inner.on_initialized(context)
    }

    fn on_roots_list_changed(
        &self,
        context: NotificationContext<RoleServer>,
    ) -> impl Future<Output = ()> + MaybeSendFuture + '_ {
        self.inner.on_roots_list_changed(context)
    }

    fn on_custom_notification(
        &self,
        notification: CustomNotification,
        context: NotificationContext<RoleServer>,
    ) -> impl Future<Output = ()> + MaybeSendFuture + '_ {
        self.inner.on_custom_notification(notification, context)
    }

    fn get_info(&self) -> ServerConfig {
        self.inner.get_info()
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let task_id = request.task_id.clone();
        let result = self.inner.get_task(request, context).await;
        self.tasks.observe_get(
            &task_id,
            result.as_ref().map(|r| r.task.status().is_terminal()),
        );
        result
    }

    fn update_task(
        &self,
        request: UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<(), ErrorData>> + MaybeSendFuture + '_ {
        self.inner.update_task(request, context)
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let task_id = request.task_id.clone();
        let watched = self.tasks.cancel_requested(&task_id);
        let result = self.inner.cancel_task(request, context).await;
        self.tasks
            .observe_cancel(&task_id, watched, result.as_ref().map(|_| ()));
        result
    }

    fn list_skills(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ListSkillsResult, ErrorData>> + MaybeSendFuture + '_ {
        self.inner.list_skills(request, context)
    }

    fn get_skill(
        &self,
        request: GetSkillRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<GetSkillResult, ErrorData>> + MaybeSendFuture + '_ {
        self.inner.get_skill(request, context)
    }

    fn read_resource_directory(
        &self,
        request: ReadResourceDirectoryRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ReadResourceDirectoryResult, ErrorData>> + MaybeSendFuture + '_
    {
        self.inner.read_resource_directory(request, context)
    }
}

#[cfg(test)]
mod tests {
    use ::rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock};

    use super::{Outcome, call_tool_outcome, is_continuation};

    /// A refusal relayed from a guarded server further down, in the
    /// tool-result dialect, backs an adaptive limit off; the tool's own
    /// failure and a success do not.
    #[test]
    fn a_relayed_refusal_in_the_tool_result_dialect_is_a_drop() {
        let overload = crate::overload::test_overload(std::time::Duration::from_millis(5));
        let failure = crate::ToolFailure::of(&overload);
        let refused = super::wire::to_tool_result(&overload, &failure);
        assert_eq!(call_tool_outcome(&refused.into()), Outcome::Dropped);
        let failed = CallToolResult::error(vec![ContentBlock::text("division by zero")]);
        assert_eq!(call_tool_outcome(&failed.into()), Outcome::Ignore);
        let ok = CallToolResult::success(vec![]);
        assert_eq!(call_tool_outcome(&ok.into()), Outcome::Success);
    }

    #[test]
    fn a_call_with_input_responses_or_request_state_is_a_continuation() {
        let first = CallToolRequestParams::new("book");
        assert!(!is_continuation(&first));
        let with_state = CallToolRequestParams::new("book").with_request_state("opaque");
        assert!(is_continuation(&with_state));
        let with_responses: CallToolRequestParams = serde_json::from_value(serde_json::json!({
            "name": "book",
            "inputResponses": {"confirm": {"action": "accept", "content": {}}}
        }))
        .unwrap();
        assert!(is_continuation(&with_responses));
    }
}
