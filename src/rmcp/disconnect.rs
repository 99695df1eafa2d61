//! Telling the wrapper that a client is gone: a transport adaptor, and the
//! `serve` methods that put it in place.

use std::borrow::Cow;
use std::future::Future;

use ::rmcp::model::{Extensions, GetExtensions, JsonRpcMessage};
use ::rmcp::service::{
    RunningService, RxJsonRpcMessage, ServerInitializeError, ServiceExt, TxJsonRpcMessage,
};
use ::rmcp::transport::{IntoTransport, Transport};
use ::rmcp::{RoleServer, ServerHandler};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::Backpressure;

/// A server transport that tells [`Backpressure`] the moment its client is
/// gone, so that calls still waiting for a slot leave the queue at once.
///
/// rmcp does not cancel anything when a transport's input ends (stdin closed,
/// a Streamable HTTP session deleted or timed out): it stops reading, then
/// waits up to 5 s for the responses of the requests in flight, and only then
/// cancels them. Behind a plain transport, a call queued in the limiter during
/// those 5 s is admitted as soon as a slot frees and starts work for a client
/// that has left.
///
/// Behind a `DisconnectAware` transport, every request it receives carries a
/// signal that fires when [`receive`](Transport::receive) reports the end of
/// the input (or the transport is closed or dropped). A guarded request still
/// queued then leaves the queue at once — counted in
/// [`cancelled_in_queue`](crate::MetricsSnapshot::cancelled_in_queue), never
/// admitted — and is answered with an error, which rmcp delivers if the
/// transport can still write (a client that only closed its end of stdin
/// still reads stdout). A request already running is left alone: its response
/// can still be delivered during rmcp's drain, and rmcp cancels it when the
/// drain ends — once every response in flight is written, at the first one
/// that cannot be written (the client is entirely gone), or after 5 s — and
/// the [`CancelPolicy`](super::CancelPolicy) then applies.
///
/// [`Backpressure::serve`] and [`Backpressure::serve_with_ct`] put one around
/// their transport. Wrap a transport yourself when serving some other way —
/// `rmcp::serve_server`, `rmcp::service::serve_directly`, or the transports a
/// Streamable HTTP `SessionManager` creates — with [`DisconnectAware::new`].
/// Requests received through any other transport wait in the queue as before.
///
/// ```no_run
/// use mcp_backpressure::rmcp::{Backpressure, DisconnectAware};
/// # use mcp_backpressure::{Limiter, LimiterConfig};
/// # #[derive(Clone)]
/// # struct MyServer;
/// # impl rmcp::ServerHandler for MyServer {}
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let limiter = Limiter::new(LimiterConfig::new(5))?;
/// let transport = DisconnectAware::new(rmcp::transport::async_rw::AsyncRwTransport::new_server(
///     tokio::io::stdin(),
///     tokio::io::stdout(),
/// ));
/// let server = rmcp::serve_server(Backpressure::new(MyServer, limiter), transport).await?;
/// server.waiting().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct DisconnectAware<T> {
    inner: T,
    gone: CancellationToken,
    /// Fires `gone` when the transport is dropped without being closed.
    _on_drop: DropGuard,
}

/// The extension [`DisconnectAware`] puts on every request it receives: fires
/// when the transport's input has ended. Private, so that no one else can
/// attach one.
#[derive(Clone, Debug)]
pub(crate) struct Disconnected(CancellationToken);

impl Disconnected {
    /// The signal of the transport that received the request with
    /// `extensions`, if it was a [`DisconnectAware`] one.
    pub(crate) fn of(extensions: &Extensions) -> Option<CancellationToken> {
        extensions.get::<Self>().map(|d| d.0.clone())
    }
}

impl<T> DisconnectAware<T> {
    /// Wraps `transport`. Anything that implements `Transport<RoleServer>`
    /// can be wrapped; for what rmcp only turns into a transport when serving
    /// (such as the `(stdin, stdout)` pair of `rmcp::transport::stdio()`),
    /// call [`IntoTransport::into_transport`] first, or let
    /// [`Backpressure::serve`] do it.
    pub fn new(transport: T) -> Self {
        let gone = CancellationToken::new();
        Self {
            inner: transport,
            _on_drop: gone.clone().drop_guard(),
            gone,
        }
    }

    /// The wrapped transport.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Whether the client is gone: the input ended, or the transport was
    /// closed.
    pub fn is_disconnected(&self) -> bool {
        self.gone.is_cancelled()
    }
}

impl<T: Transport<RoleServer>> Transport<RoleServer> for DisconnectAware<T> {
    type Error = T::Error;

    fn name() -> Cow<'static, str> {
        T::name()
    }

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    /// The wrapped transport's next message; a request gets the disconnect
    /// signal attached. The end of the input fires the signal.
    ///
    /// # Cancel safety
    ///
    /// As cancel safe as the wrapped transport's `receive`: a message is
    /// stamped only once received, and the signal fires only on `None`.
    fn receive(&mut self) -> impl Future<Output = Option<RxJsonRpcMessage<RoleServer>>> + Send {
        let received = self.inner.receive();
        let gone = &self.gone;
        async move {
            let Some(mut message) = received.await else {
                gone.cancel();
                return None;
            };
            if let JsonRpcMessage::Request(request) = &mut message {
                request
                    .request
                    .extensions_mut()
                    .insert(Disconnected(gone.clone()));
            }
            Some(message)
        }
    }

    /// Fires the disconnect signal, then closes the wrapped transport.
    ///
    /// # Cancel safety
    ///
    /// The signal has fired by the time the future is first polled; the rest
    /// is the wrapped transport's `close`.
    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.gone.cancel();
        self.inner.close()
    }
}

impl<H: ServerHandler> Backpressure<H> {
    /// Serves this handler over `transport` (performs the `initialize`
    /// handshake, then runs rmcp's service loop), with the transport wrapped
    /// in a [`DisconnectAware`]: when the client disconnects, its calls still
    /// waiting in the queue leave it at once instead of being admitted during
    /// rmcp's shutdown drain.
    ///
    /// This inherent method takes precedence over rmcp's
    /// [`ServiceExt::serve`], so `Backpressure::new(server, limiter)
    /// .serve(rmcp::transport::stdio())` uses it. Generic code that only
    /// knows `H: ServerHandler`, and an explicit `ServiceExt::serve(server,
    /// transport)`, get rmcp's method and a transport that is not
    /// disconnect-aware: wrap it with [`DisconnectAware::new`] there.
    ///
    /// # Errors
    ///
    /// What rmcp's `serve` returns: the handshake failed or the transport
    /// closed first.
    ///
    /// # Cancel safety
    ///
    /// Like rmcp's `serve`: dropping the future abandons the handshake and
    /// drops the transport; nothing is left behind in the limiter.
    pub async fn serve<T, E, A>(
        self,
        transport: T,
    ) -> Result<RunningService<RoleServer, Self>, ServerInitializeError>
    where
        T: IntoTransport<RoleServer, E, A>,
        E: std::error::Error + Send + Sync + 'static,
    {
        self.serve_with_ct(transport, CancellationToken::new())
            .await
    }

    /// [`serve`](Self::serve), with rmcp's cancellation token: cancelling
    /// `ct` ends the service (see rmcp's [`ServiceExt::serve_with_ct`]).
    ///
    /// # Errors
    ///
    /// What rmcp's `serve_with_ct` returns: the handshake failed, the
    /// transport closed first, or `ct` was cancelled first.
    ///
    /// # Cancel safety
    ///
    /// Like rmcp's `serve_with_ct`: dropping the future abandons the
    /// handshake and drops the transport; nothing is left behind in the
    /// limiter.
    pub async fn serve_with_ct<T, E, A>(
        self,
        transport: T,
        ct: CancellationToken,
    ) -> Result<RunningService<RoleServer, Self>, ServerInitializeError>
    where
        T: IntoTransport<RoleServer, E, A>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let transport = DisconnectAware::new(transport.into_transport());
        ServiceExt::serve_with_ct(self, transport, ct).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use serde_json::json;

    use super::*;

    /// Hands out scripted messages, then reports the end of its input.
    struct Scripted(VecDeque<RxJsonRpcMessage<RoleServer>>);

    impl Transport<RoleServer> for Scripted {
        type Error = std::io::Error;

        fn send(
            &mut self,
            _item: TxJsonRpcMessage<RoleServer>,
        ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
            std::future::ready(Ok(()))
        }

        async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
            self.0.pop_front()
        }

        async fn close(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    fn scripted(messages: &[serde_json::Value]) -> DisconnectAware<Scripted> {
        let parsed = messages
            .iter()
            .map(|m| serde_json::from_value(m.clone()).expect("a client message"))
            .collect();
        DisconnectAware::new(Scripted(parsed))
    }

    fn signal(message: &RxJsonRpcMessage<RoleServer>) -> Option<CancellationToken> {
        match message {
            JsonRpcMessage::Request(request) => Disconnected::of(request.request.extensions()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn requests_carry_the_signal_and_the_end_of_input_fires_it() {
        let mut transport = scripted(&[
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x"}}),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        ]);
        let call = transport.receive().await.expect("the call");
        let token = signal(&call).expect("a request carries the signal");
        assert!(!token.is_cancelled());
        let notification = transport.receive().await.expect("the notification");
        assert!(
            matches!(notification, JsonRpcMessage::Notification(_)),
            "{notification:?}"
        );
        assert!(!transport.is_disconnected());
        assert!(transport.receive().await.is_none());
        assert!(transport.is_disconnected());
        assert!(token.is_cancelled(), "the end of input fires the signal");
    }

    #[tokio::test]
    async fn closing_or_dropping_the_transport_fires_it() {
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
        let mut closed = scripted(std::slice::from_ref(&call));
        let token = signal(&closed.receive().await.unwrap()).unwrap();
        closed.close().await.unwrap();
        assert!(token.is_cancelled());

        let mut dropped = scripted(&[call]);
        let token = signal(&dropped.receive().await.unwrap()).unwrap();
        drop(dropped);
        assert!(token.is_cancelled());
    }

    #[test]
    fn a_request_from_elsewhere_has_no_signal() {
        assert!(Disconnected::of(&Extensions::default()).is_none());
    }
}
