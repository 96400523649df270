//! The simulated network: directed links between hosts, with faults drawn from the run's
//! seed.
//!
//! Every datagram gets its fate when sent (lost, duplicated, delayed by latency, jitter, a
//! spike or a reordering delay) and is checked again when due: a partition made while it was
//! in flight drops it, a clogged link holds it until the clog clears. Delivery runs in
//! simulated time from one queue ordered by (due time, sequence number), so the same seed
//! delivers the same datagrams in the same order.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use shoal_transport::NodeRng;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::trace::Trace;
use crate::trace_event;

/// Faults of one directed link (or of the whole network, for the global defaults).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkFaults {
    /// Nothing passes (a partition).
    pub blocked: bool,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram arrives twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back long enough to be overtaken.
    pub reorder: f64,
    /// Probability of a latency spike.
    pub spike: f64,
    /// Datagrams are held (not dropped) until the clog clears.
    pub clogged: bool,
}

/// Timing of the network.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// One-way latency of every datagram.
    pub latency: Duration,
    /// Up to this much is added at random to each datagram.
    pub jitter: Duration,
    /// Up to this much is added on a spike.
    pub spike_delay: Duration,
    /// Up to this much is added to a reordered datagram.
    pub reorder_delay: Duration,
    /// Write every datagram to the trace (not only drops).
    pub trace_packets: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_micros(500),
            jitter: Duration::from_micros(200),
            spike_delay: Duration::from_millis(300),
            reorder_delay: Duration::from_millis(20),
            trace_packets: true,
        }
    }
}

/// Traffic counters of one host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStats {
    pub sent_packets: u64,
    pub sent_bytes: u64,
    pub delivered_packets: u64,
    pub delivered_bytes: u64,
    pub dropped_packets: u64,
}

struct Packet {
    src: SocketAddr,
    dst: SocketAddr,
    data: Vec<u8>,
}

struct Scheduled {
    at: Instant,
    seq: u64,
    packet: Packet,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Endpoint {
    id: u64,
    inbox: VecDeque<(SocketAddr, Vec<u8>)>,
    waker: Option<Waker>,
}

struct State {
    rng: NodeRng,
    trace: Trace,
    config: NetConfig,
    sockets: BTreeMap<SocketAddr, Endpoint>,
    next_socket_id: u64,
    links: BTreeMap<(IpAddr, IpAddr), LinkFaults>,
    global: LinkFaults,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    stats: BTreeMap<IpAddr, HostStats>,
}

/// The network. Cheap to clone.
#[derive(Clone)]
pub struct Net {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
}

impl Net {
    pub fn new(rng: NodeRng, trace: Trace, config: NetConfig) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                rng,
                trace,
                config,
                sockets: BTreeMap::new(),
                next_socket_id: 1,
                links: BTreeMap::new(),
                global: LinkFaults::default(),
                queue: BinaryHeap::new(),
                seq: 0,
                stats: BTreeMap::new(),
            })),
            wake: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds `addr`; returns the socket's id.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<u64> {
        let mut s = self.lock();
        if s.sockets.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is bound"),
            ));
        }
        let id = s.next_socket_id;
        s.next_socket_id += 1;
        s.sockets.insert(
            addr,
            Endpoint {
                id,
                inbox: VecDeque::new(),
                waker: None,
            },
        );
        Ok(id)
    }

    /// Releases `addr` if socket `id` still holds it.
    pub fn unbind(&self, addr: SocketAddr, id: u64) {
        let mut s = self.lock();
        if s.sockets.get(&addr).is_some_and(|e| e.id == id) {
            s.sockets.remove(&addr);
        }
    }

    /// Takes every socket of `ip` away at once, with whatever it had not read: a crash.
    pub fn kill_host(&self, ip: IpAddr) {
        let mut s = self.lock();
        s.sockets.retain(|addr, _| addr.ip() != ip);
    }

    fn bound(s: &State, addr: SocketAddr, id: u64) -> bool {
        s.sockets.get(&addr).is_some_and(|e| e.id == id)
    }

    /// Sends one datagram from socket `id` at `src`.
    pub fn send(&self, src: SocketAddr, id: u64, dst: SocketAddr, data: &[u8]) {
        let mut guard = self.lock();
        let s = &mut *guard;
        if !Self::bound(s, src, id) {
            return; // a dead incarnation's socket: nothing leaves a crashed host
        }
        let now = Instant::now();
        let stats = s.stats.entry(src.ip()).or_default();
        stats.sent_packets += 1;
        stats.sent_bytes += data.len() as u64;
        let link = s
            .links
            .get(&(src.ip(), dst.ip()))
            .cloned()
            .unwrap_or_default();
        let g = &s.global;
        let drop_reason = if link.blocked || g.blocked {
            Some("partition")
        } else if chance(&s.rng, link.loss.max(g.loss)) {
            Some("loss")
        } else {
            None
        };
        if let Some(reason) = drop_reason {
            s.stats.entry(src.ip()).or_default().dropped_packets += 1;
            trace_event!(
                s.trace,
                "net",
                "drop",
                "{src}->{dst} len={} reason={reason}",
                data.len()
            );
            return;
        }
        let copies = if chance(&s.rng, link.duplicate.max(g.duplicate)) {
            2
        } else {
            1
        };
        for copy in 0..copies {
            let mut delay = s.config.latency + scale(s.config.jitter, &s.rng);
            if chance(&s.rng, link.spike.max(g.spike)) {
                delay += scale(s.config.spike_delay, &s.rng);
            }
            if chance(&s.rng, link.reorder.max(g.reorder)) {
                delay += scale(s.config.reorder_delay, &s.rng);
            }
            if s.config.trace_packets || copy > 0 {
                trace_event!(
                    s.trace,
                    "net",
                    if copy == 0 { "send" } else { "dup" },
                    "{src}->{dst} len={} delay_us={}",
                    data.len(),
                    delay.as_micros()
                );
            }
            s.seq += 1;
            let seq = s.seq;
            s.queue.push(Reverse(Scheduled {
                at: now + delay,
                seq,
                packet: Packet {
                    src,
                    dst,
                    data: data.to_vec(),
                },
            }));
        }
        drop(guard);
        self.wake.notify_one();
    }

    /// Takes the next datagram for socket `id` at `addr`, or registers to be woken.
    pub fn poll_recv(
        &self,
        addr: SocketAddr,
        id: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Option<(SocketAddr, Vec<u8>)>> {
        let mut s = self.lock();
        match s.sockets.get_mut(&addr) {
            Some(e) if e.id == id => match e.inbox.pop_front() {
                Some(d) => Poll::Ready(Some(d)),
                None => {
                    e.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            },
            // Unbound (crashed): nothing will ever arrive.
            _ => Poll::Pending,
        }
    }

    /// Delivers datagrams as they fall due. Runs for the whole simulation.
    pub async fn run(self) {
        loop {
            let next = self.deliver_due();
            match next {
                Some(at) => {
                    tokio::select! {
                        biased;
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }

    /// Delivers everything due now; returns when the next datagram is due.
    fn deliver_due(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut guard = self.lock();
        let s = &mut *guard;
        let mut wakers = Vec::new();
        while let Some(Reverse(head)) = s.queue.peek() {
            if head.at > now {
                break;
            }
            let Some(Reverse(Scheduled { packet, .. })) = s.queue.pop() else {
                break;
            };
            let link = s
                .links
                .get(&(packet.src.ip(), packet.dst.ip()))
                .cloned()
                .unwrap_or_default();
            if link.blocked || s.global.blocked {
                s.stats.entry(packet.src.ip()).or_default().dropped_packets += 1;
                trace_event!(
                    s.trace,
                    "net",
                    "drop",
                    "{}->{} len={} reason=partition-in-flight",
                    packet.src,
                    packet.dst,
                    packet.data.len()
                );
                continue;
            }
            if link.clogged || s.global.clogged {
                s.seq += 1;
                let seq = s.seq;
                s.queue.push(Reverse(Scheduled {
                    at: now + Duration::from_millis(10),
                    seq,
                    packet,
                }));
                continue;
            }
            let Some(endpoint) = s.sockets.get_mut(&packet.dst) else {
                s.stats.entry(packet.src.ip()).or_default().dropped_packets += 1;
                trace_event!(
                    s.trace,
                    "net",
                    "drop",
                    "{}->{} len={} reason=no-listener",
                    packet.src,
                    packet.dst,
                    packet.data.len()
                );
                continue;
            };
            let len = packet.data.len() as u64;
            endpoint.inbox.push_back((packet.src, packet.data));
            if let Some(w) = endpoint.waker.take() {
                wakers.push(w);
            }
            let stats = s.stats.entry(packet.dst.ip()).or_default();
            stats.delivered_packets += 1;
            stats.delivered_bytes += len;
        }
        let next = s.queue.peek().map(|Reverse(h)| h.at);
        drop(guard);
        for w in wakers {
            w.wake();
        }
        next
    }

    /// Changes the faults of the directed link `from -> to`.
    pub fn update_link(&self, from: IpAddr, to: IpAddr, f: impl FnOnce(&mut LinkFaults)) {
        let mut s = self.lock();
        let link = s.links.entry((from, to)).or_default();
        f(link);
        if *link == LinkFaults::default() {
            s.links.remove(&(from, to));
        }
    }

    /// Changes the faults that apply to every link.
    pub fn update_global(&self, f: impl FnOnce(&mut LinkFaults)) {
        f(&mut self.lock().global);
    }

    /// Blocks every link between hosts of different groups, both ways. Hosts in no group are
    /// untouched.
    pub fn partition(&self, groups: &[Vec<IpAddr>]) {
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i == j {
                    continue;
                }
                for &x in a {
                    for &y in b {
                        if !groups[i].contains(&y) {
                            self.update_link(x, y, |l| l.blocked = true);
                        }
                    }
                }
            }
        }
    }

    /// Blocks every link from `from` hosts to `to` hosts (one way).
    pub fn block_one_way(&self, from: &[IpAddr], to: &[IpAddr]) {
        for &x in from {
            for &y in to {
                if x != y {
                    self.update_link(x, y, |l| l.blocked = true);
                }
            }
        }
    }

    /// Clears every fault: links and global.
    pub fn heal(&self) {
        let mut s = self.lock();
        s.links.clear();
        s.global = LinkFaults::default();
    }

    /// Whether any fault is in force.
    pub fn has_faults(&self) -> bool {
        let s = self.lock();
        !s.links.is_empty() || s.global != LinkFaults::default()
    }

    /// Whether the directed link is free of faults right now.
    pub fn link_clean(&self, from: IpAddr, to: IpAddr) -> bool {
        let s = self.lock();
        s.global == LinkFaults::default() && !s.links.contains_key(&(from, to))
    }

    pub fn stats(&self) -> BTreeMap<IpAddr, HostStats> {
        self.lock().stats.clone()
    }

    /// Hosts with a bound socket.
    pub fn hosts(&self) -> BTreeSet<IpAddr> {
        self.lock().sockets.keys().map(|a| a.ip()).collect()
    }
}

fn chance(rng: &NodeRng, p: f64) -> bool {
    p > 0.0 && (rng.below(1_000_000) as f64) < p * 1_000_000.0
}

fn scale(max: Duration, rng: &NodeRng) -> Duration {
    let micros = max.as_micros() as u64;
    if micros == 0 {
        Duration::ZERO
    } else {
        Duration::from_micros(rng.below(micros + 1))
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::new(IpAddr::from([10, 0, 0, i]), 7100)
    }

    fn net() -> Net {
        let trace = Trace::new(None).unwrap();
        let net = Net::new(NodeRng::seeded(1), trace, NetConfig::default());
        tokio::spawn(net.clone().run());
        net
    }

    /// Everything that arrives at `a` within `within`.
    async fn drain(net: &Net, a: SocketAddr, id: u64, within: Duration) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let deadline = Instant::now() + within;
        loop {
            let next = poll_fn(|cx| match net.poll_recv(a, id, cx) {
                Poll::Ready(Some(d)) => Poll::Ready(Some(d)),
                _ if Instant::now() >= deadline => Poll::Ready(None),
                _ => Poll::Pending,
            });
            tokio::select! {
                d = next => match d { Some((_, data)) => got.push(data), None => return got },
                _ = tokio::time::sleep_until(deadline) => return got,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn delivers_in_order_of_due_time_after_latency() {
        let net = net();
        let a = net.bind(addr(1)).unwrap();
        let b = net.bind(addr(2)).unwrap();
        let sent = Instant::now();
        for i in 0..10u8 {
            net.send(addr(1), a, addr(2), &[i]);
        }
        let got = drain(&net, addr(2), b, Duration::from_millis(50)).await;
        assert_eq!(got.len(), 10);
        assert!(sent.elapsed() >= NetConfig::default().latency);
        assert!(net.bind(addr(2)).is_err(), "an address binds once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_partition_drops_what_is_in_flight_and_one_way_blocks_one_way() {
        let net = net();
        let a = net.bind(addr(1)).unwrap();
        let b = net.bind(addr(2)).unwrap();
        net.send(addr(1), a, addr(2), b"in flight");
        net.partition(&[vec![addr(1).ip()], vec![addr(2).ip()]]);
        assert!(
            drain(&net, addr(2), b, Duration::from_millis(50))
                .await
                .is_empty()
        );
        net.heal();
        net.block_one_way(&[addr(1).ip()], &[addr(2).ip()]);
        net.send(addr(1), a, addr(2), b"blocked");
        net.send(addr(2), b, addr(1), b"allowed");
        assert!(
            drain(&net, addr(2), b, Duration::from_millis(50))
                .await
                .is_empty()
        );
        assert_eq!(
            drain(&net, addr(1), a, Duration::from_millis(50)).await,
            vec![b"allowed".to_vec()]
        );
        let stats = net.stats();
        assert_eq!(stats[&addr(1).ip()].dropped_packets, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn loss_duplication_clogging_and_crashes() {
        let net = net();
        let a = net.bind(addr(1)).unwrap();
        let b = net.bind(addr(2)).unwrap();
        net.update_global(|g| g.loss = 1.0);
        net.send(addr(1), a, addr(2), b"lost");
        assert!(
            drain(&net, addr(2), b, Duration::from_millis(20))
                .await
                .is_empty()
        );
        net.update_global(|g| {
            *g = LinkFaults {
                duplicate: 1.0,
                ..LinkFaults::default()
            }
        });
        net.send(addr(1), a, addr(2), b"twice");
        assert_eq!(
            drain(&net, addr(2), b, Duration::from_millis(50))
                .await
                .len(),
            2
        );
        net.heal();
        // A clog holds datagrams until it clears.
        net.update_link(addr(1).ip(), addr(2).ip(), |l| l.clogged = true);
        net.send(addr(1), a, addr(2), b"held");
        assert!(
            drain(&net, addr(2), b, Duration::from_millis(500))
                .await
                .is_empty()
        );
        net.update_link(addr(1).ip(), addr(2).ip(), |l| l.clogged = false);
        assert_eq!(
            drain(&net, addr(2), b, Duration::from_millis(50))
                .await
                .len(),
            1
        );
        // A crashed host neither sends nor receives, and its address is free again.
        net.kill_host(addr(1).ip());
        net.send(addr(1), a, addr(2), b"ghost");
        net.send(addr(2), b, addr(1), b"to nobody");
        assert!(
            drain(&net, addr(2), b, Duration::from_millis(50))
                .await
                .is_empty()
        );
        assert!(net.bind(addr(1)).is_ok());
    }
}
