//! The transport's ceiling: two bare quinn endpoints on loopback with Shoal's window sizes,
//! carrying length-prefixed frames on plain streams, no Shoal code in between.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

use crate::measure::runtime;

/// Two bare quinn endpoints on loopback, with Shoal's window sizes.
pub struct BareQuinn {
    rt: tokio::runtime::Runtime,
    server: quinn::Endpoint,
    conn: quinn::Connection,
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(quinn::VarInt::from_u32(8 * 1024 * 1024));
    t.receive_window(quinn::VarInt::from_u32(32 * 1024 * 1024));
    t.send_window(32 * 1024 * 1024);
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(1024));
    Arc::new(t)
}

impl BareQuinn {
    pub fn start() -> anyhow::Result<Self> {
        let rt = runtime();
        let (server, conn) = rt.block_on(async {
            let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
            let cert_der = cert.cert.der().clone();
            let key =
                rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
            let mut server_config =
                quinn::ServerConfig::with_single_cert(vec![cert_der.clone()], key)?;
            server_config.transport_config(transport_config());
            let server = quinn::Endpoint::server(server_config, ([127, 0, 0, 1], 0).into())?;
            let mut roots = rustls::RootCertStore::empty();
            roots.add(cert_der)?;
            let mut client_config = quinn::ClientConfig::with_root_certificates(Arc::new(roots))?;
            client_config.transport_config(transport_config());
            let mut client = quinn::Endpoint::client(([127, 0, 0, 1], 0).into())?;
            client.set_default_client_config(client_config);
            let accepting = server.clone();
            tokio::spawn(async move {
                if let Some(incoming) = accepting.accept().await
                    && let Ok(conn) = incoming.await
                {
                    serve(conn).await;
                }
            });
            let conn = client.connect(server.local_addr()?, "localhost")?.await?;
            anyhow::Ok((server, conn))
        })?;
        Ok(Self { rt, server, conn })
    }

    /// Messages per second: `n` frames of `len` bytes on one uni stream, written in batches
    /// as Shoal's writer does, until the server has read them all.
    pub fn tell(&self, n: usize, len: usize) -> anyhow::Result<f64> {
        self.rt.block_on(async {
            let frame = frame_of(len);
            let t = Instant::now();
            let mut s = self.conn.open_uni().await?;
            s.write_all(&(n as u64).to_le_bytes()).await?;
            let flush_at = (256 * len).min(1 << 20);
            let mut batch = Vec::with_capacity(flush_at + len);
            for i in 0..n {
                batch.extend_from_slice(&frame);
                if batch.len() >= flush_at || i + 1 == n {
                    s.write_all(&batch).await?;
                    batch.clear();
                }
            }
            s.finish()?;
            // The server answers on a uni stream of its own once it read everything.
            let done = async {
                let mut done = self.conn.accept_uni().await?;
                done.read_u8().await?;
                anyhow::Ok(())
            };
            tokio::time::timeout(Duration::from_secs(120), done)
                .await
                .map_err(|_| {
                    anyhow::anyhow!("the bare quinn server did not confirm {n} frames")
                })??;
            Ok(n as f64 / t.elapsed().as_secs_f64())
        })
    }

    /// Seconds to move `bytes` in 1 MiB frames on one stream, until the server read them.
    pub fn bulk(&self, bytes: usize) -> anyhow::Result<f64> {
        const CHUNK: usize = 1 << 20;
        let t = Instant::now();
        self.tell(bytes.div_ceil(CHUNK), CHUNK + 4)?;
        Ok(t.elapsed().as_secs_f64())
    }

    /// Sequential request/response round trips of `len`-byte frames on one bidi stream.
    pub fn timed_asks(&self, n: usize, len: usize) -> anyhow::Result<Vec<Duration>> {
        self.rt.block_on(async {
            let (mut tx, rx) = self.conn.open_bi().await?;
            let mut rx = BufReader::new(rx);
            let frame = frame_of(len);
            let mut buf = vec![0u8; len];
            let mut lat = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                tx.write_all(&frame).await?;
                rx.read_exact(&mut buf).await?;
                lat.push(t.elapsed());
            }
            tx.finish()?;
            lat.sort();
            Ok(lat)
        })
    }

    /// Round trips per second with `callers` callers, each on its own bidi stream.
    pub fn ask_rate(&self, n: usize, len: usize, callers: usize) -> anyhow::Result<f64> {
        let per = n / callers;
        self.rt.block_on(async {
            let t = Instant::now();
            let tasks: Vec<_> = (0..callers)
                .map(|_| {
                    let conn = self.conn.clone();
                    tokio::spawn(async move {
                        let (mut tx, rx) = conn.open_bi().await?;
                        let mut rx = BufReader::new(rx);
                        let frame = frame_of(len);
                        let mut buf = vec![0u8; len];
                        for _ in 0..per {
                            tx.write_all(&frame).await?;
                            rx.read_exact(&mut buf).await?;
                        }
                        tx.finish()?;
                        anyhow::Ok(())
                    })
                })
                .collect();
            for task in tasks {
                task.await??;
            }
            Ok((per * callers) as f64 / t.elapsed().as_secs_f64())
        })
    }

    pub fn stop(self) {
        self.conn.close(0u32.into(), b"done");
        self.server.close(0u32.into(), b"done");
    }
}

/// A frame of `len` bytes: a 4-byte length prefix and a body.
fn frame_of(len: usize) -> Vec<u8> {
    let mut f = vec![7u8; len.max(4)];
    f[..4].copy_from_slice(&((len.max(4) - 4) as u32).to_le_bytes());
    f
}

/// The server side: uni streams are counted floods (answered with one byte on a uni stream
/// when all frames were read); bidi streams echo every frame.
async fn serve(conn: quinn::Connection) {
    let uni = {
        let conn = conn.clone();
        async move {
            while let Ok(s) = conn.accept_uni().await {
                let conn = conn.clone();
                tokio::spawn(async move {
                    let mut r = BufReader::with_capacity(64 * 1024, s);
                    let n = r.read_u64_le().await? as usize;
                    let mut buf = Vec::new();
                    for _ in 0..n {
                        let len = r.read_u32_le().await? as usize;
                        buf.resize(len, 0);
                        r.read_exact(&mut buf).await?;
                    }
                    let mut done = conn.open_uni().await?;
                    done.write_u8(1).await?;
                    done.finish()?;
                    anyhow::Ok(())
                });
            }
        }
    };
    let bi = async move {
        while let Ok((mut tx, rx)) = conn.accept_bi().await {
            tokio::spawn(async move {
                let mut r = BufReader::new(rx);
                let mut buf = Vec::new();
                while let Ok(len) = r.read_u32_le().await {
                    buf.resize(len as usize, 0);
                    r.read_exact(&mut buf).await?;
                    tx.write_all(&len.to_le_bytes()).await?;
                    tx.write_all(&buf).await?;
                }
                anyhow::Ok(())
            });
        }
    };
    tokio::join!(uni, bi);
}
