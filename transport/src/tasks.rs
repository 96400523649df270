//! Background tasks owned by a transport: aborted all at once when it goes away, which is
//! also how the simulator "crashes" a node.

use std::sync::Mutex;

use tokio::task::AbortHandle;

#[derive(Debug, Default)]
pub(crate) struct TaskSet {
    handles: Mutex<Vec<AbortHandle>>,
}

impl TaskSet {
    /// Spawns `fut` on the current runtime and remembers it.
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(fut).abort_handle();
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        // Forget finished tasks now and then so the list stays proportional to live tasks.
        if handles.len() >= 64 && handles.len().is_power_of_two() {
            handles.retain(|h| !h.is_finished());
        }
        handles.push(handle);
    }

    pub(crate) fn abort_all(&self) {
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        for h in handles {
            h.abort();
        }
    }
}
