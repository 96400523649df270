//! Services: how upper layers (membership, entities, replication) receive messages.
//!
//! A layer registers a [`ServiceId`] and gets a stream of [`Inbound`] messages, each either a
//! one-way message or a request that must be answered through [`Inbound::reply`]. A request
//! dropped without a reply is answered with [`RemoteError::NoReply`] at once, so the caller
//! does not wait for its timeout.

use std::net::SocketAddr;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::frame::{Frame, RemoteError, encode};

/// Identifies a service on the wire. Ids are assigned by the crates that define services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceId(pub u16);

impl std::fmt::Display for ServiceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A peer as seen on an established connection: the name its certificate proves and the
/// address its packets come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerInfo {
    pub name: String,
    pub addr: SocketAddr,
}

impl std::fmt::Display for PeerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// A message received for a service.
#[derive(Debug)]
pub struct Inbound {
    pub from: PeerInfo,
    pub service: ServiceId,
    pub body: Bytes,
    reply: Option<Replier>,
}

impl Inbound {
    pub(crate) fn new(
        from: PeerInfo,
        service: ServiceId,
        body: Bytes,
        reply: Option<Replier>,
    ) -> Self {
        Self {
            from,
            service,
            body,
            reply,
        }
    }

    /// Decodes the body as `T` (postcard).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, postcard::Error> {
        postcard::from_bytes(&self.body)
    }

    /// Whether the sender waits for a reply.
    pub fn is_request(&self) -> bool {
        self.reply.is_some()
    }

    /// Takes the reply handle of a request (None for one-way messages).
    pub fn take_replier(&mut self) -> Option<Replier> {
        self.reply.take()
    }

    /// Answers a request with `value`. One-way messages ignore it.
    pub fn reply<T: Serialize>(mut self, value: &T) {
        if let Some(r) = self.reply.take() {
            r.reply(value);
        }
    }

    /// Answers a request with an error message.
    pub fn reply_error(mut self, message: impl Into<String>) {
        if let Some(r) = self.reply.take() {
            r.fail(RemoteError::Handler(message.into()));
        }
    }
}

/// The way back to the requester. Answers at most once; if dropped unanswered it sends
/// [`RemoteError::NoReply`].
#[derive(Debug)]
pub struct Replier {
    id: u64,
    out: mpsc::Sender<Bytes>,
    max_frame: usize,
    done: bool,
}

impl Replier {
    pub(crate) fn new(id: u64, out: mpsc::Sender<Bytes>, max_frame: usize) -> Self {
        Self {
            id,
            out,
            max_frame,
            done: false,
        }
    }

    /// Sends `value` as the response.
    pub fn reply<T: Serialize>(mut self, value: &T) {
        self.done = true;
        let frame = match postcard::to_allocvec(value) {
            Ok(body) => Frame::Response {
                id: self.id,
                body: body.into(),
            },
            Err(e) => Frame::Failure {
                id: self.id,
                error: RemoteError::Handler(format!("reply could not be encoded: {e}")),
            },
        };
        self.push(frame);
    }

    /// Sends `error` as the response.
    pub fn fail(mut self, error: RemoteError) {
        self.done = true;
        self.push(Frame::Failure { id: self.id, error });
    }

    fn push(&self, frame: Frame) {
        let bytes = match encode(&frame, self.max_frame) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "reply does not fit in a frame; answering with an error");
                let failure = Frame::Failure {
                    id: self.id,
                    error: RemoteError::Handler(format!("reply too large: {e}")),
                };
                match encode(&failure, self.max_frame) {
                    Ok(b) => b,
                    Err(_) => return,
                }
            }
        };
        match self.out.try_send(bytes) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(bytes)) => {
                let out = self.out.clone();
                tokio::spawn(
                    async move {
                        let _ = out.send(bytes).await;
                    }
                    .in_current_span(),
                );
            }
        }
    }
}

impl Drop for Replier {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.push(Frame::Failure {
                id: self.id,
                error: RemoteError::NoReply,
            });
        }
    }
}
