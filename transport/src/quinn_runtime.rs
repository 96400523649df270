//! quinn's runtime: tokio's, with quinn's own tasks (connection drivers, the endpoint driver)
//! run inside the node's span, so quinn's logs say which node wrote them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use quinn::{AsyncTimer, AsyncUdpSocket, Runtime, TokioRuntime};
use tracing::{Instrument, Span};

#[derive(Debug)]
pub(crate) struct SpannedRuntime {
    span: Span,
}

impl SpannedRuntime {
    /// A runtime whose tasks run in the current span.
    pub(crate) fn current() -> Self {
        Self {
            span: Span::current(),
        }
    }
}

impl Runtime for SpannedRuntime {
    fn new_timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>> {
        TokioRuntime.new_timer(at)
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        tokio::spawn(future.instrument(self.span.clone()));
    }

    fn wrap_udp_socket(
        &self,
        sock: std::net::UdpSocket,
    ) -> std::io::Result<Arc<dyn AsyncUdpSocket>> {
        TokioRuntime.wrap_udp_socket(sock)
    }

    fn now(&self) -> Instant {
        TokioRuntime.now()
    }
}
