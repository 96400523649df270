//! Transport behaviour over real UDP on loopback: mutual TLS, messaging, hostile frames,
//! reconnection.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_transport::{
    ClusterCa, ConnectError, RemoteError, RequestError, ServiceId, SystemClock, Transport,
    TransportEvent, close_code, wire,
};
use support::*;
use tokio::time::timeout;

const ECHO: ServiceId = ServiceId(100);
const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Ping {
    n: u64,
    text: String,
}

/// Serves ECHO on `t`: replies with the same value, n + 1.
fn serve_echo(t: &Transport) {
    let mut inbox = t.register(ECHO, 64);
    tokio::spawn(async move {
        while let Some(msg) = inbox.recv().await {
            let ping: Ping = match msg.decode() {
                Ok(p) => p,
                Err(e) => {
                    msg.reply_error(e.to_string());
                    continue;
                }
            };
            msg.reply(&Ping {
                n: ping.n + 1,
                text: ping.text,
            });
        }
    });
}

async fn echo(from: &Transport, to: &Transport, n: u64) -> Result<Ping, RequestError> {
    from.request(
        to.local_addr(),
        ECHO,
        &Ping {
            n,
            text: "hi".into(),
        },
        Duration::from_secs(5),
    )
    .await
}

#[tokio::test]
async fn mutual_tls_accepts_cluster_nodes_and_refuses_a_foreign_ca() {
    let ca = ClusterCa::generate("test").unwrap();
    let a = node(&ca, "a").await;
    let b = node(&ca, "b").await;
    let peer = a.connect(b.local_addr()).await.unwrap();
    assert_eq!(peer.name, "b", "the name comes from b's certificate");

    // Dialing by name checks the name against the certificate.
    let err = a
        .connect(shoal_transport::Peer::named("c", b.local_addr()))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::WrongPeer { .. }), "{err}");

    let foreign = ClusterCa::generate("foreign").unwrap();
    let f = node(&foreign, "f").await;
    let err = f.connect(b.local_addr()).await.unwrap_err();
    assert!(matches!(err, ConnectError::Failed { .. }), "{err}");
    let err = b.connect(f.local_addr()).await.unwrap_err();
    assert!(matches!(err, ConnectError::Failed { .. }), "{err}");
    assert!(
        b.connected_peers().iter().all(|p| p.name != "f"),
        "foreign node must never be connected: {:?}",
        b.connected_peers()
    );
}

#[tokio::test]
async fn a_client_without_certificate_is_refused() {
    let ca = ClusterCa::generate("test").unwrap();
    let b = node(&ca, "b").await;
    let mut events = b.events();

    // A raw QUIC client that trusts the CA but presents no certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::from_pem_slice(
                ca.cert_pem().as_bytes(),
            )
            .unwrap(),
        )
        .unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![shoal_transport::ALPN.to_vec()];
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    )));
    let outcome = async {
        let conn = client.connect(b.local_addr(), "b")?.await?;
        // TLS 1.3: the client may finish first; the server's refusal then closes it.
        Err::<(), Box<dyn std::error::Error>>(Box::new(conn.closed().await))
    };
    let err = timeout(WAIT, outcome).await.unwrap().unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "refusal should be about the certificate: {err}"
    );
    assert!(
        events.try_recv().is_err(),
        "no connection may be established"
    );
}

#[tokio::test]
async fn request_response_round_trip_and_typed_errors() {
    let ca = ClusterCa::generate("test").unwrap();
    let a = node(&ca, "a").await;
    let b = node(&ca, "b").await;
    serve_echo(&b);
    for n in 0..100 {
        assert_eq!(echo(&a, &b, n).await.unwrap().n, n + 1);
    }

    // Unknown service: a typed remote error, fast.
    let err = a
        .request::<_, Ping>(b.local_addr(), ServiceId(999), &1u8, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::Remote(RemoteError::UnknownService(999))),
        "{err}"
    );

    // A handler that drops the request answers NoReply; one that sits on it times out.
    let mut dropper = b.register(ServiceId(101), 8);
    let mut sitter = b.register(ServiceId(102), 8);
    tokio::spawn(async move {
        while let Some(m) = dropper.recv().await {
            drop(m);
        }
    });
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Some(m) = sitter.recv().await {
            kept.push(m);
        }
    });
    let err = a
        .request::<_, u8>(b.local_addr(), ServiceId(101), &1u8, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::Remote(RemoteError::NoReply)),
        "{err}"
    );
    let err = a
        .request::<_, u8>(
            b.local_addr(),
            ServiceId(102),
            &1u8,
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::Timeout(_)), "{err}");
    held.abort();

    // One-way messages arrive in order.
    let mut inbox = b.register(ServiceId(103), 1024);
    for n in 0..500u32 {
        a.send(b.local_addr(), ServiceId(103), &n).await.unwrap();
    }
    for n in 0..500u32 {
        let m = timeout(WAIT, inbox.recv()).await.unwrap().unwrap();
        assert_eq!(m.decode::<u32>().unwrap(), n);
        assert_eq!(m.from.name, "a");
    }

    // A message over the cap is refused locally, and nothing is sent.
    let big = vec![0u8; shoal_transport::DEFAULT_MAX_FRAME_SIZE + 1];
    let err = a
        .send(b.local_addr(), ServiceId(103), &big)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cap"), "{err}");
    assert_eq!(echo(&a, &b, 7).await.unwrap().n, 8);
}

/// Opens a raw connection to `target` with a valid cluster certificate and writes `bytes` on
/// a new uni stream; returns the error the connection closes with.
async fn hostile_stream(
    ca: &ClusterCa,
    target: &Transport,
    bytes: Vec<u8>,
) -> quinn::ConnectionError {
    let id = identity(ca, "mallory");
    let crypto = wire::client_crypto(&id, Arc::new(SystemClock)).unwrap();
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = client
        .connect(target.local_addr(), wire::ANY_PEER)
        .unwrap()
        .await
        .unwrap();
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&bytes).await.unwrap();
    let _ = s.finish();
    timeout(WAIT, conn.closed())
        .await
        .expect("connection must be closed by the peer")
}

fn app_code(err: &quinn::ConnectionError) -> Option<u32> {
    match err {
        quinn::ConnectionError::ApplicationClosed(c) => Some(c.error_code.into_inner() as u32),
        _ => None,
    }
}

#[tokio::test]
async fn oversize_and_garbage_frames_close_only_that_connection() {
    let ca = ClusterCa::generate("test").unwrap();
    let a = node(&ca, "a").await;
    let b = node(&ca, "b").await;
    serve_echo(&b);
    assert_eq!(echo(&a, &b, 1).await.unwrap().n, 2);

    // Oversize: a length prefix of 17 MiB.
    let mut bytes = vec![wire::STREAM_FRAMES];
    bytes.extend_from_slice(&(17u32 * 1024 * 1024).to_le_bytes());
    let err = hostile_stream(&ca, &b, bytes).await;
    assert_eq!(app_code(&err), Some(close_code::FRAME_TOO_LARGE), "{err}");
    assert!(err.to_string().contains("cap"), "reason is given: {err}");
    assert_eq!(echo(&a, &b, 2).await.unwrap().n, 3, "b still serves a");

    // Garbage: a well-sized frame whose body is not a frame.
    let mut bytes = vec![wire::STREAM_FRAMES];
    bytes.extend_from_slice(&6u32.to_le_bytes());
    bytes.extend_from_slice(&[0xff; 6]);
    let err = hostile_stream(&ca, &b, bytes).await;
    assert_eq!(app_code(&err), Some(close_code::MALFORMED), "{err}");
    assert_eq!(echo(&a, &b, 3).await.unwrap().n, 4, "b still serves a");

    // Garbage gossip and an unknown stream type.
    let err = hostile_stream(&ca, &b, vec![wire::STREAM_GOSSIP, 0xde, 0xad]).await;
    assert_eq!(app_code(&err), Some(close_code::MALFORMED), "{err}");
    let err = hostile_stream(&ca, &b, vec![0x7f, 1, 2, 3]).await;
    assert_eq!(app_code(&err), Some(close_code::PROTOCOL), "{err}");
    assert_eq!(echo(&a, &b, 4).await.unwrap().n, 5, "b still serves a");
    assert!(b.connected_peers().iter().any(|p| p.name == "a"));
}

#[tokio::test]
async fn reconnects_after_the_peer_restarts_gracefully_or_crashes() {
    let ca = ClusterCa::generate("test").unwrap();
    let a = node(&ca, "a").await;
    let sockets = Arc::new(CrashableSockets::default());
    let b_id = identity(&ca, "b");
    let b = bind_retrying(&ca, &b_id, "127.0.0.1:0".parse().unwrap(), sockets.clone()).await;
    let addr = b.local_addr();
    serve_echo(&b);
    assert_eq!(echo(&a, &b, 1).await.unwrap().n, 2);
    let mut events = a.events();

    // Graceful restart: b says goodbye, a sees it, then reaches the new b.
    b.shutdown().await;
    drop(b);
    wait_lost(&mut events, "b").await;
    let b = bind_retrying(&ca, &b_id, addr, sockets.clone()).await;
    serve_echo(&b);
    assert_eq!(echo(&a, &b, 10).await.unwrap().n, 11);

    // Crash: b vanishes without a word. When it comes back on the same address, its
    // stateless resets kill a's stale connection at once, and a redials.
    sockets.crash();
    drop(b);
    let b = bind_retrying(&ca, &b_id, addr, sockets.clone()).await;
    serve_echo(&b);
    let reason = wait_lost(&mut events, "b").await;
    assert!(
        reason.contains("reset"),
        "stale connection ends by stateless reset, not by idle timeout: {reason}"
    );
    assert_eq!(echo(&a, &b, 20).await.unwrap().n, 21);
}

#[tokio::test]
async fn shutdown_gives_the_port_back_while_the_handle_lives() {
    let ca = ClusterCa::generate("test").unwrap();
    let a = node(&ca, "a").await;
    let b = node(&ca, "b").await;
    serve_echo(&b);
    assert_eq!(echo(&a, &b, 1).await.unwrap().n, 2);
    let addr = a.local_addr();
    a.shutdown().await;
    // `a` is still alive here; before, its endpoint kept the socket until every handle
    // was dropped and every closing connection had drained.
    let rebound = std::net::UdpSocket::bind(addr);
    assert!(
        rebound.is_ok(),
        "port still held after shutdown: {rebound:?}"
    );
    drop(a);
}

async fn wait_lost(
    events: &mut tokio::sync::broadcast::Receiver<TransportEvent>,
    name: &str,
) -> String {
    timeout(WAIT, async {
        loop {
            if let TransportEvent::ConnectionLost { peer, reason } = events.recv().await.unwrap()
                && peer.name == name
            {
                return reason;
            }
        }
    })
    .await
    .expect("connection loss must be reported")
}

#[tokio::test]
async fn concurrent_dials_to_one_peer_share_one_connection() {
    let ca = ClusterCa::generate("test").unwrap();
    let a = node(&ca, "a").await;
    let b = node(&ca, "b").await;
    serve_echo(&b);
    let mut events = a.events();
    let mut tasks = Vec::new();
    for n in 0..32 {
        let (a, b) = (a.clone(), b.clone());
        tasks.push(tokio::spawn(async move { echo(&a, &b, n).await.unwrap() }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut connected = 0;
    while let Ok(e) = events.try_recv() {
        if matches!(e, TransportEvent::Connected { .. }) {
            connected += 1;
        }
    }
    assert_eq!(connected, 1, "32 concurrent requests, one dial");
}

#[tokio::test]
async fn unreachable_peer_fails_within_the_request_timeout() {
    let ca = ClusterCa::generate("test").unwrap();
    let a = node(&ca, "a").await;
    // Nothing listens there.
    let nowhere = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let started = tokio::time::Instant::now();
    let err = a
        .request::<_, u8>(nowhere, ECHO, &1u8, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}
