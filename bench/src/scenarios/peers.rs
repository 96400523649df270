//! The same counter work on raw tokio and on three actor libraries: a counter per key, created
//! on the first message to its key (looked up by its string key, as Shoal looks up an
//! entity), `Add(1)` told, `Get` asked. Each run builds its own runtime, as Shoal's does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::measure::runtime;

/// Where a run's messages go: `keys[i % keys.len()]` for message `i`.
pub struct Work<'a> {
    pub keys: &'a [String],
    pub messages: usize,
}

/// One baseline: a library doing the counter work.
pub struct Peer {
    pub name: &'static str,
    /// Messages per second for `Add(1)` tells, completion confirmed by asking every counter.
    pub tell: fn(&Work) -> f64,
    /// Latencies of sequential asks (one caller), or `None` if the library has no ask.
    pub ask: Option<fn(&Work) -> Vec<Duration>>,
    /// Asks per second with `concurrency` callers.
    pub ask_throughput: Option<fn(&Work, usize) -> f64>,
}

pub const PEERS: &[Peer] = &[
    Peer {
        name: "tokio mpsc",
        tell: tokio_tell,
        ask: Some(timed_asks::<mpsc::Sender<TokioMsg>>),
        ask_throughput: Some(ask_rate::<mpsc::Sender<TokioMsg>>),
    },
    Peer {
        name: "actix",
        tell: actix_tell,
        ask: None,
        ask_throughput: None,
    },
    Peer {
        name: "ractor",
        tell: ractor_tell,
        ask: Some(timed_asks::<ractor::ActorRef<RactorMsg>>),
        ask_throughput: Some(ask_rate::<ractor::ActorRef<RactorMsg>>),
    },
    Peer {
        name: "kameo",
        tell: kameo_tell,
        ask: Some(timed_asks::<kameo::actor::ActorRef<KameoCounter>>),
        ask_throughput: Some(ask_rate::<kameo::actor::ActorRef<KameoCounter>>),
    },
];

/// Finds the handle of `key`, creating it on first use.
fn route<'m, H>(map: &'m mut HashMap<String, H>, key: &str, make: impl FnOnce() -> H) -> &'m H {
    if !map.contains_key(key) {
        map.insert(key.to_string(), make());
    }
    &map[key]
}

fn expect_total(total: i64, w: &Work) {
    assert_eq!(total, w.messages as i64, "a baseline lost messages");
}

/// A counter handle that can be asked for its value.
trait AskCounter: Send + Sync + 'static {
    fn spawn() -> impl Future<Output = Self> + Send;
    fn get(&self) -> impl Future<Output = i64> + Send;
}

async fn counters<H: AskCounter>(w: &Work<'_>) -> Arc<HashMap<String, H>> {
    let mut map = HashMap::new();
    for k in w.keys {
        map.insert(k.clone(), H::spawn().await);
    }
    Arc::new(map)
}

/// Sequential asks from one caller, each timed.
fn timed_asks<H: AskCounter>(w: &Work) -> Vec<Duration> {
    runtime().block_on(async {
        let map = counters::<H>(w).await;
        let mut lat = Vec::with_capacity(w.messages);
        for i in 0..w.messages {
            let t = Instant::now();
            map[&w.keys[i % w.keys.len()]].get().await;
            lat.push(t.elapsed());
        }
        lat
    })
}

/// Asks per second from `concurrency` callers.
fn ask_rate<H: AskCounter>(w: &Work, concurrency: usize) -> f64 {
    runtime().block_on(async {
        let map = counters::<H>(w).await;
        let keys: Arc<Vec<String>> = Arc::new(w.keys.to_vec());
        let per = w.messages / concurrency;
        let t = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|c| {
                let (map, keys) = (map.clone(), keys.clone());
                tokio::spawn(async move {
                    for i in 0..per {
                        map[&keys[(c * 31 + i) % keys.len()]].get().await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("asker");
        }
        (per * concurrency) as f64 / t.elapsed().as_secs_f64()
    })
}

// ---- tokio: an mpsc channel into a task per key: the floor ----

enum TokioMsg {
    Add(i64),
    Get(oneshot::Sender<i64>),
}

fn tokio_counter() -> mpsc::Sender<TokioMsg> {
    let (tx, mut rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        let mut n = 0;
        while let Some(m) = rx.recv().await {
            match m {
                TokioMsg::Add(d) => n += d,
                TokioMsg::Get(r) => {
                    let _ = r.send(n);
                }
            }
        }
    });
    tx
}

async fn tokio_get(tx: &mpsc::Sender<TokioMsg>) -> i64 {
    let (r, rx) = oneshot::channel();
    tx.send(TokioMsg::Get(r)).await.expect("counter alive");
    rx.await.expect("counter answers")
}

impl AskCounter for mpsc::Sender<TokioMsg> {
    async fn spawn() -> Self {
        tokio_counter()
    }
    async fn get(&self) -> i64 {
        tokio_get(self).await
    }
}

fn tokio_tell(w: &Work) -> f64 {
    runtime().block_on(async {
        let mut map = HashMap::new();
        let t = Instant::now();
        for i in 0..w.messages {
            let tx = route(&mut map, &w.keys[i % w.keys.len()], tokio_counter);
            tx.send(TokioMsg::Add(1)).await.expect("counter alive");
        }
        let mut total = 0;
        for tx in map.values() {
            total += tokio_get(tx).await;
        }
        let rate = w.messages as f64 / t.elapsed().as_secs_f64();
        expect_total(total, w);
        rate
    })
}

// ---- actix: actors on its single-threaded arbiter ----

struct ActixCounter(i64);

impl actix::Actor for ActixCounter {
    type Context = actix::Context<Self>;
}

#[derive(actix::Message)]
#[rtype(result = "()")]
struct ActixAdd(i64);

#[derive(actix::Message)]
#[rtype(result = "i64")]
struct ActixGet;

impl actix::Handler<ActixAdd> for ActixCounter {
    type Result = ();
    fn handle(&mut self, m: ActixAdd, _: &mut Self::Context) {
        self.0 += m.0;
    }
}

impl actix::Handler<ActixGet> for ActixCounter {
    type Result = i64;
    fn handle(&mut self, _: ActixGet, _: &mut Self::Context) -> i64 {
        self.0
    }
}

fn actix_tell(w: &Work) -> f64 {
    use actix::Actor;
    actix::System::new().block_on(async {
        let mut map = HashMap::new();
        let t = Instant::now();
        for i in 0..w.messages {
            let addr = route(&mut map, &w.keys[i % w.keys.len()], || {
                ActixCounter(0).start()
            });
            addr.do_send(ActixAdd(1));
        }
        let mut total = 0;
        for addr in map.values() {
            total += addr.send(ActixGet).await.expect("counter answers");
        }
        let rate = w.messages as f64 / t.elapsed().as_secs_f64();
        expect_total(total, w);
        rate
    })
}

// ---- ractor ----

struct RactorCounter;

enum RactorMsg {
    Add(i64),
    Get(ractor::RpcReplyPort<i64>),
}

impl ractor::Actor for RactorCounter {
    type Msg = RactorMsg;
    type State = i64;
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ractor::ActorRef<Self::Msg>,
        _: (),
    ) -> Result<i64, ractor::ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ractor::ActorRef<Self::Msg>,
        msg: RactorMsg,
        n: &mut i64,
    ) -> Result<(), ractor::ActorProcessingErr> {
        match msg {
            RactorMsg::Add(d) => *n += d,
            RactorMsg::Get(r) => {
                let _ = r.send(*n);
            }
        }
        Ok(())
    }
}

async fn ractor_counter() -> ractor::ActorRef<RactorMsg> {
    ractor::Actor::spawn(None, RactorCounter, ())
        .await
        .expect("ractor spawns")
        .0
}

async fn ractor_get(a: &ractor::ActorRef<RactorMsg>) -> i64 {
    ractor::call!(a, RactorMsg::Get).expect("counter answers")
}

impl AskCounter for ractor::ActorRef<RactorMsg> {
    async fn spawn() -> Self {
        ractor_counter().await
    }
    async fn get(&self) -> i64 {
        ractor_get(self).await
    }
}

fn ractor_tell(w: &Work) -> f64 {
    runtime().block_on(async {
        let mut map: HashMap<String, ractor::ActorRef<RactorMsg>> = HashMap::new();
        let t = Instant::now();
        for i in 0..w.messages {
            let key = &w.keys[i % w.keys.len()];
            if !map.contains_key(key) {
                map.insert(key.clone(), ractor_counter().await);
            }
            map[key].cast(RactorMsg::Add(1)).expect("counter alive");
        }
        let mut total = 0;
        for a in map.values() {
            total += ractor_get(a).await;
        }
        let rate = w.messages as f64 / t.elapsed().as_secs_f64();
        expect_total(total, w);
        for a in map.values() {
            a.stop(None);
        }
        rate
    })
}

// ---- kameo ----

#[derive(kameo::Actor)]
struct KameoCounter(i64);

struct KameoAdd(i64);
struct KameoGet;

impl kameo::message::Message<KameoAdd> for KameoCounter {
    type Reply = ();
    async fn handle(
        &mut self,
        m: KameoAdd,
        _: &mut kameo::message::Context<Self, Self::Reply>,
    ) -> Self::Reply {
        self.0 += m.0;
    }
}

impl kameo::message::Message<KameoGet> for KameoCounter {
    type Reply = i64;
    async fn handle(
        &mut self,
        _: KameoGet,
        _: &mut kameo::message::Context<Self, Self::Reply>,
    ) -> i64 {
        self.0
    }
}

fn kameo_counter() -> kameo::actor::ActorRef<KameoCounter> {
    use kameo::actor::Spawn;
    KameoCounter::spawn(KameoCounter(0))
}

async fn kameo_get(a: &kameo::actor::ActorRef<KameoCounter>) -> i64 {
    a.ask(KameoGet).await.expect("counter answers")
}

fn kameo_tell(w: &Work) -> f64 {
    runtime().block_on(async {
        let mut map = HashMap::new();
        let t = Instant::now();
        for i in 0..w.messages {
            let a = route(&mut map, &w.keys[i % w.keys.len()], kameo_counter);
            a.tell(KameoAdd(1)).await.expect("counter alive");
        }
        let mut total = 0;
        for a in map.values() {
            total += kameo_get(a).await;
        }
        let rate = w.messages as f64 / t.elapsed().as_secs_f64();
        expect_total(total, w);
        rate
    })
}

impl AskCounter for kameo::actor::ActorRef<KameoCounter> {
    async fn spawn() -> Self {
        kameo_counter()
    }
    async fn get(&self) -> i64 {
        kameo_get(self).await
    }
}
