//! Frames of the data plane: a 4-byte little-endian length, then a postcard-encoded [`Frame`].
//!
//! Every uni stream starts with one byte that says what it carries: [`STREAM_GOSSIP`] (one
//! chitchat message, ended by FIN) or [`STREAM_FRAMES`] (a long-lived sequence of frames).
//! The length is checked against the frame-size cap before anything is allocated, so an
//! oversize or garbage frame costs four bytes to detect.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::service::ServiceId;

/// First byte of a stream carrying one gossip message.
pub const STREAM_GOSSIP: u8 = 1;
/// First byte of a stream carrying frames.
pub const STREAM_FRAMES: u8 = 2;

/// Default cap on one frame: 16 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// Why a request failed on the remote side, carried back in a [`Frame::Failure`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    #[error("the peer serves no service {0}")]
    UnknownService(u16),
    #[error("the peer's handler dropped the request without replying")]
    NoReply,
    #[error("the peer's handler is overloaded")]
    Overloaded,
    #[error("the peer's handler failed: {0}")]
    Handler(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Frame {
    /// One-way message.
    Message {
        service: ServiceId,
        body: Bytes,
    },
    /// A request; the answer carries the same id.
    Request {
        id: u64,
        service: ServiceId,
        body: Bytes,
    },
    Response {
        id: u64,
        body: Bytes,
    },
    Failure {
        id: u64,
        error: RemoteError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the {max}-byte cap")]
    TooLarge { len: usize, max: usize },
    #[error("undecodable frame: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("read failed: {0}")]
    Io(std::io::Error),
}

/// Encodes `frame` with its length prefix. Fails without side effects when it is over `max`.
pub(crate) fn encode(frame: &Frame, max: usize) -> Result<Bytes, FrameError> {
    let mut buf = postcard::to_extend(frame, vec![0u8; 4])?;
    let body_len = buf.len() - 4;
    if body_len > max {
        return Err(FrameError::TooLarge { len: body_len, max });
    }
    buf[..4].copy_from_slice(&(body_len as u32).to_le_bytes());
    Ok(Bytes::from(buf))
}

/// Reads one frame. `Ok(None)` on a clean end of stream between frames.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
    buf: &mut Vec<u8>,
) -> Result<Option<Frame>, FrameError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(FrameError::Io(e)),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    buf.clear();
    buf.resize(len, 0);
    reader.read_exact(buf).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(e)
        }
    })?;
    let (frame, rest) = postcard::take_from_bytes::<Frame>(buf)?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(
            postcard::Error::DeserializeBadEncoding,
        ));
    }
    Ok(Some(frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Frame {
        Frame::Request {
            id: 42,
            service: ServiceId(7),
            body: Bytes::from_static(b"hello"),
        }
    }

    #[tokio::test]
    async fn round_trip_several_frames() {
        let frames = vec![
            sample(),
            Frame::Response {
                id: 42,
                body: Bytes::new(),
            },
            Frame::Failure {
                id: 1,
                error: RemoteError::Handler("x".into()),
            },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend_from_slice(&encode(f, 1024).unwrap());
        }
        let mut reader = &wire[..];
        let mut buf = Vec::new();
        for f in &frames {
            assert_eq!(
                &read_frame(&mut reader, 1024, &mut buf)
                    .await
                    .unwrap()
                    .unwrap(),
                f
            );
        }
        assert!(
            read_frame(&mut reader, 1024, &mut buf)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn oversize_is_refused_before_allocation() {
        let wire = (u32::MAX).to_le_bytes();
        let mut buf = Vec::new();
        let err = read_frame(&mut &wire[..], 1024, &mut buf)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
        assert_eq!(buf.capacity(), 0);
        assert!(matches!(
            encode(&sample(), 3),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn garbage_and_truncation_are_errors() {
        let mut wire = 4u32.to_le_bytes().to_vec();
        wire.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        let mut buf = Vec::new();
        let err = read_frame(&mut &wire[..], 1024, &mut buf)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");
        let full = encode(&sample(), 1024).unwrap();
        let err = read_frame(&mut &full[..full.len() - 1], 1024, &mut buf)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Truncated), "{err}");
    }
}
