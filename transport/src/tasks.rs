//! Background tasks owned by a transport: aborted all at once when it goes away, which is
//! also how the simulator "crashes" a node.

use std::sync::Mutex;

use tokio::task::JoinHandle;
use tracing::{Instrument, Span};

#[derive(Debug)]
pub(crate) struct TaskSet {
    handles: Mutex<Vec<JoinHandle<()>>>,
    /// The span current when the transport was bound (the node's, when a node owns it), so
    /// the logs of every task say which node wrote them even with several in one process.
    span: Span,
}

impl TaskSet {
    /// An empty set whose tasks run in the current span.
    pub(crate) fn new() -> Self {
        Self {
            handles: Mutex::new(Vec::new()),
            span: Span::current(),
        }
    }

    /// Spawns `fut` on the current runtime and remembers it.
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(fut.instrument(self.span.clone()));
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        // Forget finished tasks now and then so the list stays proportional to live tasks.
        if handles.len() >= 64 && handles.len().is_power_of_two() {
            handles.retain(|h| !h.is_finished());
        }
        handles.push(handle);
    }

    /// Aborts every task; returns their handles, to wait for the tasks to be dropped.
    pub(crate) fn abort_all(&self) -> Vec<JoinHandle<()>> {
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        for h in &handles {
            h.abort();
        }
        handles
    }

    /// Aborts every task and waits until each is gone, with everything it held.
    pub(crate) async fn stop_all(&self) {
        for h in self.abort_all() {
            let _ = h.await;
        }
    }
}
