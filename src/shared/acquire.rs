//! Admission against a shared limit.

use std::sync::Arc;

use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use super::coordinator::{Coordinator, Reply, Wake};
use super::{FailMode, Lease};
use crate::limiter::{Limiter, Permit, Request};
use crate::overload::{Overload, OverloadReason, Scope};

/// Waits for a slot of the shared limit (see the [module docs](super)).
///
/// Cancel safe: dropping the future before Redis answered, or while the call
/// waits in the shared queue, takes it out of the queue (in the background,
/// one script call) and frees any slot handed to it meanwhile.
pub(crate) async fn acquire(
    limiter: &Limiter,
    coordinator: Arc<Coordinator>,
    request: Request<'_>,
) -> Result<Permit, Overload> {
    coordinator.settled().await;
    let mut ask = limiter.shared_ask(&request);
    // The queue timeout runs from the call's arrival, across asks.
    let deadline = {
        let now = Instant::now();
        now.checked_add(ask.queue_timeout)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
    };
    let mut first = true;
    loop {
        if !first {
            ask.queue_timeout = deadline.saturating_duration_since(Instant::now());
            if ask.queue_timeout.is_zero() {
                return Err(timed_out(limiter, &coordinator, &request));
            }
        }
        first = false;
        if coordinator.in_fallback() {
            match fallback(limiter, &coordinator, request).await {
                Some(answer) => return answer,
                None => continue,
            }
        }
        let (pending, woken) = coordinator.register();
        let Ok((reply, figures)) = coordinator.ask(pending.id(), &ask).await else {
            // Whatever Redis did with the request (maybe nothing), the
            // dropped guard undoes it.
            drop(pending);
            match fallback(limiter, &coordinator, request).await {
                Some(answer) => return answer,
                None => continue,
            }
        };
        match reply {
            Reply::Granted => {
                let id = pending.granted(ask);
                return Ok(limiter.leased(&request, Lease::new(coordinator, id)));
            }
            Reply::Rejected { reason, scope } => {
                pending.settled();
                let reason = match reason.as_str() {
                    "queue_full" => OverloadReason::QueueFull,
                    _ => OverloadReason::ConcurrencyLimit,
                };
                let scope = scope_of(&scope, ask.tool.as_deref().unwrap_or_default());
                return Err(limiter.shared_rejected(&request, reason, scope, figures));
            }
            Reply::Queued => {}
        }
        coordinator.waiting_started(pending.id());
        let mut waiting = Waiting {
            limiter,
            coordinator: &coordinator,
            done: false,
        };
        let woken = tokio::select! {
            biased;
            woken = woken => woken.ok(),
            () = sleep_until(deadline) => None,
        };
        let mut answered = true;
        let granted = match woken {
            Some(Wake::Granted) => true,
            Some(Wake::Lost) => {
                // Redis lost the place (a restart, a failover): ask again
                // for the time left, as a new arrival.
                waiting.done = true;
                drop(waiting);
                pending.settled();
                continue;
            }
            // Out of time: Redis has the last word (a slot may have been
            // handed over just as the deadline passed).
            None => match coordinator.cancel(pending.id()).await {
                Ok(granted) => granted,
                Err(_) => {
                    answered = false;
                    false
                }
            },
        };
        waiting.done = true;
        drop(waiting);
        if granted {
            let id = pending.granted(ask);
            return Ok(limiter.leased(&request, Lease::new(coordinator, id)));
        }
        if answered {
            pending.settled();
        } else {
            // An unanswered cancel stays armed in the guard: retried in the
            // background.
            drop(pending);
        }
        return Err(timed_out(limiter, &coordinator, &request));
    }
}

fn timed_out(limiter: &Limiter, coordinator: &Coordinator, request: &Request<'_>) -> Overload {
    limiter.shared_rejected(
        request,
        OverloadReason::QueueTimeout,
        Scope::Global,
        coordinator.figures(),
    )
}

/// Redis is unreachable: the fail mode decides. `None` when admission went
/// back to Redis while the call waited in the local fallback queue (or was
/// admitted there just after): then it asks Redis.
async fn fallback(
    limiter: &Limiter,
    coordinator: &Arc<Coordinator>,
    request: Request<'_>,
) -> Option<Result<Permit, Overload>> {
    match coordinator.fail() {
        FailMode::Open => {
            let mut recoveries = coordinator.recoveries();
            recoveries.borrow_and_update();
            if !coordinator.in_fallback() {
                return None;
            }
            let local = tokio::select! {
                biased;
                _ = recoveries.changed() => return None,
                local = limiter.acquire_local(request) => local,
            };
            let mut permit = match local {
                Ok(permit) => permit,
                Err(overload) => return Some(Err(overload)),
            };
            if !coordinator.in_fallback() {
                // Too late for the local share: Redis decides again.
                drop(permit);
                return None;
            }
            // Counted in Redis by the first sweep that reaches it.
            let id = coordinator.local_lease(limiter.shared_ask(&request));
            permit.attach_lease(Lease::new(coordinator.clone(), id));
            Some(Ok(permit))
        }
        FailMode::Closed => Some(Err(limiter.shared_rejected(
            &request,
            OverloadReason::SharedUnavailable,
            Scope::Global,
            coordinator.figures(),
        ))),
    }
}

fn scope_of(scope: &str, tool: &str) -> Scope {
    match scope {
        "tool" => Scope::Tool(tool.to_string()),
        "client" => Scope::Client,
        _ => Scope::Global,
    }
}

/// A call in the shared queue: counted as waiting until it has its answer,
/// and as cancelled in the queue if its caller leaves first.
struct Waiting<'a> {
    limiter: &'a Limiter,
    coordinator: &'a Coordinator,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.coordinator.waiting_ended();
        if !self.done {
            self.limiter.shared_cancelled();
        }
    }
}
