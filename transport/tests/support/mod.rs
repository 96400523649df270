//! Helpers shared by the transport's integration tests.
#![allow(dead_code)]

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use shoal_transport::{
    ClusterCa, Environment, NodeIdentity, NodeRng, SocketProvider, SystemClock, Transport,
    TransportConfig, UdpSockets,
};

pub fn identity(ca: &ClusterCa, name: &str) -> NodeIdentity {
    let cert = ca.issue(name).unwrap();
    NodeIdentity::from_pem(ca.cert_pem(), &cert.cert_pem, &cert.key_pem, &SystemClock).unwrap()
}

pub fn fast_config(listen: SocketAddr) -> TransportConfig {
    let mut c = TransportConfig::new(listen);
    c.keep_alive = Duration::from_millis(200);
    c.idle_timeout = Duration::from_secs(3);
    c.connect_timeout = Duration::from_secs(2);
    c.backoff.initial = Duration::from_millis(20);
    c.backoff.max = Duration::from_millis(200);
    c
}

pub fn env_with(sockets: Arc<dyn SocketProvider>) -> Environment {
    Environment {
        sockets,
        clock: Arc::new(SystemClock),
        rng: NodeRng::from_os(),
    }
}

pub async fn node(ca: &ClusterCa, name: &str) -> Transport {
    Transport::bind(
        fast_config("127.0.0.1:0".parse().unwrap()),
        identity(ca, name),
        env_with(Arc::new(UdpSockets)),
    )
    .await
    .unwrap()
}

/// Real UDP sockets that a test can "crash": once crashed, the socket silently drops
/// everything sent and received, as a killed process would.
#[derive(Default)]
pub struct CrashableSockets {
    current: Mutex<Option<Arc<AtomicBool>>>,
}

impl CrashableSockets {
    pub fn crash(&self) {
        if let Some(dead) = self.current.lock().unwrap().take() {
            dead.store(true, Ordering::SeqCst);
        }
    }
}

impl SocketProvider for CrashableSockets {
    fn bind(&self, addr: SocketAddr) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let inner = UdpSockets.bind(addr)?;
        let dead = Arc::new(AtomicBool::new(false));
        *self.current.lock().unwrap() = Some(dead.clone());
        Ok(Arc::new(Crashable { inner, dead }))
    }
}

struct Crashable {
    inner: Arc<dyn AsyncUdpSocket>,
    dead: Arc<AtomicBool>,
}

impl fmt::Debug for Crashable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Crashable")
    }
}

impl AsyncUdpSocket for Crashable {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if self.dead.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(_)) if self.dead.load(Ordering::SeqCst) => continue,
                other => return other,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Binds `name` at `addr`, retrying while the previous incarnation still holds the port.
pub async fn bind_retrying(
    ca: &ClusterCa,
    id: &NodeIdentity,
    addr: SocketAddr,
    sockets: Arc<dyn SocketProvider>,
) -> Transport {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match Transport::bind(fast_config(addr), id.clone(), env_with(sockets.clone())).await {
            Ok(t) => return t,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = (&e, ca);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot rebind {addr}: {e}"),
        }
    }
}
