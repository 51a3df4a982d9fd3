//! Reading and writing strait frames on QUIC streams, with the size limit
//! and timeout that keep a slow or hostile peer from holding resources.

use std::time::Duration;

use bytes::BytesMut;
use strait_core::frame::{self, FrameError, Message, Status, StatusCode};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("no complete frame within {0:?}")]
    Timeout(Duration),
    #[error("stream ended before a complete frame")]
    Eof,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
}

/// Reads one frame from `recv`, buffering in `buf`; bytes after the frame
/// stay in `buf`.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Result<Message, WireError> {
    let read = async {
        loop {
            if let Some(msg) = frame::decode(buf)? {
                return Ok(msg);
            }
            // quinn's own chunk, not an array here: this future lives
            // inside every stream's task for the stream's whole life, and
            // 4 KiB in it were 4 KiB per idle stream.
            match recv.read_chunk(64 * 1024, true).await? {
                Some(chunk) => buf.extend_from_slice(&chunk.bytes),
                None => return Err(WireError::Eof),
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| WireError::Timeout(timeout))?
}

/// Writes one frame.
pub async fn write_frame(send: &mut quinn::SendStream, msg: &Message) -> Result<(), WireError> {
    let mut buf = BytesMut::new();
    frame::encode(msg, &mut buf)?;
    send.write_all(&buf).await?;
    Ok(())
}

/// Application error codes on QUIC streams and connections.
pub mod code {
    use quinn::VarInt;
    /// Stream: the client side of the byte stream was reset.
    pub const RESET: VarInt = VarInt::from_u32(1);
    /// Stream: the peer broke the protocol (bad frame, timeout).
    pub const PROTOCOL: VarInt = VarInt::from_u32(2);
    /// Stream: refused (status already sent).
    pub const REFUSED: VarInt = VarInt::from_u32(3);
    /// Stream: the exporting side gave up before it touched its target, so
    /// nothing was forwarded and the importing side may replay.
    pub const NOT_FORWARDED: VarInt = VarInt::from_u32(4);
    /// Stream: the tunnel was found dead; the bytes may or may not have
    /// reached the target.
    pub const TUNNEL_LOST: VarInt = VarInt::from_u32(5);
    /// Connection: a tunnel to this gateway already exists.
    pub const DUPLICATE: VarInt = VarInt::from_u32(10);
    /// Connection: the gateway is shutting down.
    pub const SHUTDOWN: VarInt = VarInt::from_u32(11);
    /// Connection: HELLO was missing or did not match the certificate.
    pub const BAD_HELLO: VarInt = VarInt::from_u32(12);
    /// The deny list names the peer's certificate.
    pub const REVOKED: VarInt = VarInt::from_u32(13);
    /// Connection: a newer connection from the same peer replaced it.
    pub const REPLACED: VarInt = VarInt::from_u32(14);
    /// Connection: Down and silent; its streams are reset.
    pub const DEAD: VarInt = VarInt::from_u32(15);
    /// Connection: the peer's trust domain is no longer federated.
    pub const NOT_FEDERATED: VarInt = VarInt::from_u32(16);

    /// Whether a stream reset or stop with `code` proves that the exporting
    /// side did not forward anything to its target.
    pub fn proves_not_forwarded(code: VarInt) -> bool {
        code == NOT_FORWARDED || code == REFUSED
    }
}

/// Answers a stream with a refusal: proof that nothing was forwarded.
pub async fn refuse(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    code_: StatusCode,
    message: String,
) {
    let _ = write_frame(
        send,
        &Message::Status(Status {
            code: code_,
            message,
        }),
    )
    .await;
    let _ = send.finish();
    let _ = recv.stop(code::REFUSED);
}
