//! The future of [`Limiter::acquire_with`]: a small state machine rather than
//! an `async fn`, so that a parked waiter's future holds only what waiting
//! needs — its place in the queue and its deadline timer — and not the
//! request descriptor or the (large) rejection of the admission step.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Sleep, sleep_until};

use super::admission::Limiter;
use super::permit::Permit;
use super::request::Request;
use super::waiter::Waiter;
use crate::overload::Overload;

pin_project! {
    /// Waits for a slot; see [`Limiter::acquire_with`].
    #[must_use = "futures do nothing unless polled"]
    pub(crate) struct Acquire<'a> {
        limiter: &'a Limiter,
        #[pin]
        step: Step<'a>,
    }
}

pin_project! {
    #[project = StepProj]
    enum Step<'a> {
        /// Not polled yet: nothing has happened.
        Start { request: Request<'a> },
        /// Queued: the first of a hand-over, a rejection or the deadline wins
        /// (checked in that order).
        Waiting { waiter: Waiter<'a>, #[pin] deadline: Sleep },
        /// Answered.
        Done,
    }
}

impl<'a> Acquire<'a> {
    pub(crate) fn new(limiter: &'a Limiter, request: Request<'a>) -> Self {
        Self {
            limiter,
            step: Step::Start { request },
        }
    }
}

impl Future for Acquire<'_> {
    type Output = Result<Permit, Overload>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let limiter = *this.limiter;
        loop {
            match this.step.as_mut().project() {
                StepProj::Start { request } => match limiter.admit(request) {
                    Ok(answer) => {
                        this.step.set(Step::Done);
                        return Poll::Ready(answer.map_err(|overload| *overload));
                    }
                    Err((key, deadline)) => this.step.set(Step::Waiting {
                        waiter: Waiter::new(limiter.shared(), key),
                        deadline: sleep_until(deadline),
                    }),
                },
                StepProj::Waiting { waiter, deadline } => {
                    let decided = match Pin::new(&mut *waiter).poll(cx) {
                        Poll::Ready(decided) => decided,
                        Poll::Pending => match deadline.poll(cx) {
                            Poll::Ready(()) => waiter.time_out(),
                            Poll::Pending => return Poll::Pending,
                        },
                    };
                    this.step.set(Step::Done);
                    return Poll::Ready(limiter.decided(decided).map_err(|overload| *overload));
                }
                StepProj::Done => panic!("`acquire` future polled after it completed"),
            }
        }
    }
}
