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
    let mut deadline = None;
    loop {
        if coordinator.in_fallback() {
            return fallback(limiter, &coordinator, request).await;
        }
        let (pending, woken) = coordinator.register();
        let Ok((reply, figures)) = coordinator.ask(pending.id(), &ask).await else {
            // Whatever Redis did with the request (maybe nothing), the
            // dropped guard undoes it.
            drop(pending);
            return fallback(limiter, &coordinator, request).await;
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
                let scope = scope_of(&scope, &ask.tool);
                return Err(limiter.shared_rejected(&request, reason, scope, figures));
            }
            Reply::Queued => {}
        }
        // Queued: the deadline runs from the first time the call queued.
        let deadline = *deadline.get_or_insert_with(|| {
            let now = Instant::now();
            now.checked_add(ask.queue_timeout)
                .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
        });
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
        let granted = match woken {
            Some(Wake::Granted) => true,
            Some(Wake::Lost) => {
                // Redis lost the place (a restart, a failover): ask again
                // for the time left, as a new arrival.
                waiting.done = true;
                drop(waiting);
                pending.settled();
                ask.queue_timeout = deadline.saturating_duration_since(Instant::now());
                if ask.queue_timeout.is_zero() {
                    return Err(timed_out(limiter, &coordinator, &request));
                }
                continue;
            }
            // Out of time: Redis has the last word (a slot may have been
            // handed over just as the deadline passed).
            None => matches!(coordinator.cancel(pending.id()).await, Ok(true)),
        };
        waiting.done = true;
        drop(waiting);
        if granted {
            let id = pending.granted(ask);
            return Ok(limiter.leased(&request, Lease::new(coordinator, id)));
        }
        // An unanswered cancel stays armed in the guard: retried in the
        // background.
        drop(pending);
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

/// Redis is unreachable: the fail mode decides.
async fn fallback(
    limiter: &Limiter,
    coordinator: &Arc<Coordinator>,
    request: Request<'_>,
) -> Result<Permit, Overload> {
    match coordinator.fail() {
        FailMode::Open => {
            let mut permit = limiter.acquire_local(request).await?;
            // Counted in Redis by the first sweep that reaches it.
            let id = coordinator.local_lease(limiter.shared_ask(&request));
            permit.attach_lease(Lease::new(coordinator.clone(), id));
            Ok(permit)
        }
        FailMode::Closed => Err(limiter.shared_rejected(
            &request,
            OverloadReason::SharedUnavailable,
            Scope::Global,
            coordinator.figures(),
        )),
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
