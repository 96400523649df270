//! Group commit: one committer per stripe takes every write queued while the previous batch
//! was syncing and makes them durable together, so a busy node pays one sync for many
//! writes. Submitting never waits (it is called under a shard's lock, which keeps the order
//! of a shard's writes); waiting for durability is the caller's choice.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{ReplicaStore, StoreError, Write};

/// Writes per batch at most (bounds one transaction's size and latency).
const MAX_BATCH: usize = 8192;

/// Told when a batch is durable (or failed).
pub type Callback = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

enum Done {
    Nobody,
    Channel(oneshot::Sender<Result<(), StoreError>>),
    /// Run by the committer right after the sync: no task per write.
    Call(Callback),
}

impl Done {
    fn finish(self, result: Result<(), StoreError>) {
        match self {
            Done::Nobody => {}
            Done::Channel(tx) => {
                let _ = tx.send(result);
            }
            Done::Call(f) => f(result),
        }
    }
}

struct Job {
    writes: Vec<Write>,
    done: Done,
}

/// Handle on the committers. Cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    stripes: Arc<Vec<mpsc::UnboundedSender<Job>>>,
}

/// Resolves when the writes are durable (or failed).
pub type Durable = oneshot::Receiver<Result<(), StoreError>>;

impl GroupCommit {
    /// Starts one committer per stripe of `store`; `spawn` runs them (the node's runtime
    /// spawns them so that they die with it, as on a crash).
    pub fn start(
        store: Arc<dyn ReplicaStore>,
        mut spawn: impl FnMut(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>),
    ) -> Self {
        let stripes = (0..store.stripes())
            .map(|stripe| {
                let (tx, rx) = mpsc::unbounded_channel();
                spawn(Box::pin(committer(store.clone(), stripe, rx)));
                tx
            })
            .collect();
        Self {
            stripes: Arc::new(stripes),
        }
    }

    /// The stripe `shard` lives in.
    pub fn stripe_of(&self, shard: u32) -> usize {
        shard as usize % self.stripes.len()
    }

    /// Queues writes of one stripe; the receiver resolves once they are durable.
    pub fn submit(&self, stripe: usize, writes: Vec<Write>) -> Durable {
        let (tx, rx) = oneshot::channel();
        self.enqueue(stripe, writes, Done::Channel(tx));
        rx
    }

    /// Queues writes; `then` runs (on the committer) once they are durable or failed.
    pub fn submit_then(&self, stripe: usize, writes: Vec<Write>, then: Callback) {
        self.enqueue(stripe, writes, Done::Call(then));
    }

    /// Queues writes nobody waits for (they are still ordered with the others).
    pub fn submit_detached(&self, stripe: usize, writes: Vec<Write>) {
        self.enqueue(stripe, writes, Done::Nobody);
    }

    fn enqueue(&self, stripe: usize, writes: Vec<Write>, done: Done) {
        if let Err(mpsc::error::SendError(job)) = self.stripes[stripe].send(Job { writes, done }) {
            job.done
                .finish(Err(StoreError::Io("the node is stopping".into())));
        }
    }
}

async fn committer(
    store: Arc<dyn ReplicaStore>,
    stripe: usize,
    mut rx: mpsc::UnboundedReceiver<Job>,
) {
    while let Some(first) = rx.recv().await {
        let mut writes = first.writes;
        let mut waiters = vec![first.done];
        while writes.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => {
                    writes.extend(job.writes);
                    waiters.push(job.done);
                }
                Err(_) => break,
            }
        }
        let result = store.write(stripe, writes).await;
        for w in waiters {
            w.finish(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::EntityRef;
    use crate::storage::{MemStore, Record, Version};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn writes_queued_during_a_sync_share_the_next_one() {
        let mem = Arc::new(MemStore::new(Duration::from_millis(10)));
        let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
        let b2 = batches.clone();
        mem.set_observer(Arc::new(move |w: &[Write]| {
            b2.lock().unwrap().push(w.len());
        }));
        let gc = GroupCommit::start(mem.clone(), |f| {
            tokio::spawn(f);
        });
        let write = |seq: u64| {
            vec![Write::Entity {
                shard: 0,
                entity: EntityRef {
                    kind: "kv".into(),
                    id: format!("k{seq}"),
                },
                record: Record {
                    version: Version { epoch: 1, seq },
                    state: None,
                },
            }]
        };
        let first = gc.submit(0, write(1));
        tokio::task::yield_now().await;
        let rest: Vec<_> = (2..=50).map(|s| gc.submit(0, write(s))).collect();
        first.await.unwrap().unwrap();
        for r in rest {
            r.await.unwrap().unwrap();
        }
        assert_eq!(*batches.lock().unwrap(), vec![1, 49]);
    }
}
