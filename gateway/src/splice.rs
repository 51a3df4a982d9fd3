//! Moving bytes between a TCP connection and a QUIC stream (or, for a
//! local target, another TCP connection), both ways, with
//! half-close carried across (a client that shuts its write side still gets
//! the whole response) and resets carried across. Memory is bounded by one
//! buffer per direction: a slow side slows the other through flow control.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::admission::Silence;
use crate::wire::code;

const BUF: usize = 256 * 1024;
/// The block TCP reads go into on their way to QUIC while bytes stream:
/// QUIC holds each block until its bytes are acknowledged, so thousands of
/// streams bursting at once each pin one; 64 KiB is what one read of
/// kernel TCP returns at most on loopback anyway.
const BLOCK: usize = 64 * 1024;
/// What a quiet connection reads with: only a burst (a read that fills
/// it) earns the large buffer, and a read that fills less than a quarter
/// of that gives it back, so idle streams hold no large buffer.
const SMALL: usize = 4 * 1024;

/// A byte source that can say when it has bytes, so that a quiet stream
/// waits holding no read buffer (tens of thousands of idle streams must
/// cost no buffer each).
pub trait Readable: AsyncRead + Unpin {
    /// Returns once a read would find bytes, end of stream or an error; at
    /// once where the source cannot tell.
    fn ready(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

impl Readable for OwnedReadHalf {
    async fn ready(&self) {
        let _ = self.readable().await;
    }
}

/// TLS may hold decrypted bytes the socket no longer shows: read at once.
impl Readable for tokio::io::ReadHalf<TlsTcp> {}

impl Readable for quinn::RecvStream {}

/// A read buffer that exists only while bytes flow: none while the source
/// is quiet, 4 KiB for a read, and 256 KiB only while reads fill it.
struct Adaptive {
    buf: Vec<u8>,
    /// The size the next read gets; 0 frees the buffer before waiting.
    next: usize,
}

impl Adaptive {
    fn new() -> Self {
        Adaptive {
            buf: Vec::new(),
            next: 0,
        }
    }

    /// Reads once from `from`; the bytes read (empty at end of stream).
    async fn read<R: Readable>(&mut self, from: &mut R) -> std::io::Result<&[u8]> {
        if self.next != self.buf.len() {
            self.buf = Vec::new();
        }
        if self.buf.is_empty() {
            from.ready().await;
            self.buf = vec![0u8; self.next.max(SMALL)];
        }
        let n = from.read(&mut self.buf).await?;
        let len = self.buf.len();
        self.next = match len {
            SMALL if n == SMALL => BUF,
            SMALL => 0,
            _ if n < BUF / 4 => 0,
            _ => BUF,
        };
        Ok(&self.buf[..n])
    }
}

/// Reads from TCP into memory handed to the QUIC stream as it is (it keeps
/// the bytes until they are acknowledged, so they are not copied again):
/// nothing while quiet, 4 KiB for a read, 64 KiB blocks once a read fills
/// what it had.
#[derive(Default)]
struct Owned {
    buf: bytes::BytesMut,
    large: bool,
}

impl Owned {
    /// The bytes of one read; `None` at end of stream.
    async fn read<R: Readable>(&mut self, from: &mut R) -> std::io::Result<Option<bytes::Bytes>> {
        if !self.large && self.buf.capacity() == 0 {
            from.ready().await;
        }
        let want = if self.large { BLOCK } else { SMALL };
        // Too little left of the last block (the rest is shared with bytes
        // not yet acknowledged): start a new block.
        if self.buf.capacity() < want / 4 {
            self.buf = bytes::BytesMut::with_capacity(want);
        }
        let room = self.buf.capacity();
        let n = from.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Ok(None);
        }
        self.large = if self.large {
            n >= BLOCK / 4
        } else {
            n == room
        };
        let data = self.buf.split().freeze();
        if !self.large {
            // Quiet: wait for the next bytes holding no block of our own
            // (QUIC frees this one once its bytes are acknowledged).
            self.buf = bytes::BytesMut::new();
        }
        Ok(Some(data))
    }
}

/// How one direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Clean end of stream, passed on as FIN.
    Finished,
    /// Reset or failed, passed on as a reset.
    Reset,
}

/// Byte counts of a finished splice.
#[derive(Debug, Clone, Copy, Default)]
pub struct Moved {
    pub tcp_to_quic: u64,
    pub quic_to_tcp: u64,
    pub reset: bool,
    /// Reset because nothing moved for the idle timeout (or, at the
    /// start, the first-byte timeout).
    pub idle: bool,
    /// Reset before any byte moved, to give its slot to a new client.
    pub reclaimed: bool,
}

impl Moved {
    /// How the stream ended, as its log line and metrics name it.
    pub fn outcome(&self) -> &'static str {
        match (self.reclaimed, self.idle, self.reset) {
            (true, _, _) => "reclaimed",
            (false, true, _) => "idle",
            (false, false, true) => "reset",
            (false, false, false) => "ok",
        }
    }
}

/// When bytes last moved either way, for the idle timeout.
#[derive(Debug)]
pub struct Activity<'a> {
    base: Instant,
    last_ms: AtomicU64,
    /// Whether any byte moved yet.
    moved: std::sync::atomic::AtomicBool,
    silence: Option<&'a Silence>,
}

/// The rules for a stream on which no byte has moved yet.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstByte<'a> {
    /// The stream is reset when no byte at all moved, either way, within
    /// this long of the start (`None`: no such limit).
    pub timeout: Option<Duration>,
    /// Where a new client may take the stream's slot meanwhile (an
    /// import at its concurrency limit).
    pub silence: Option<&'a Silence>,
}

/// A direction stopped because the stream as a whole ended.
const STOPPED: (End, u64) = (End::Reset, 0);

/// Why a stream that never moved a byte was ended.
enum Silent {
    TimedOut,
    Reclaimed,
}

impl<'a> Activity<'a> {
    fn new(silence: Option<&'a Silence>) -> Self {
        Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            moved: std::sync::atomic::AtomicBool::new(false),
            silence,
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
        if !self.moved.load(Ordering::Relaxed) {
            self.moved.store(true, Ordering::Relaxed);
            if let Some(silence) = self.silence {
                silence.spoke();
            }
        }
    }

    /// Returns once `first.timeout` passed with no byte moved, or a new
    /// client took the stream's slot; never, once a byte has moved.
    async fn ended_silent(&self, first: FirstByte<'_>) -> Silent {
        let timed_out = async {
            match first.timeout {
                Some(timeout) => tokio::time::sleep_until(self.base + timeout).await,
                None => std::future::pending().await,
            }
        };
        let reclaimed = async {
            match first.silence {
                Some(silence) => silence.reclaimed().await,
                None => std::future::pending().await,
            }
        };
        let why = tokio::select! {
            _ = timed_out => Silent::TimedOut,
            _ = reclaimed => Silent::Reclaimed,
        };
        if self.moved.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        why
    }

    /// Returns once nothing has moved for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let quiet = last.elapsed();
            if quiet >= timeout {
                return;
            }
            tokio::time::sleep(timeout - quiet).await;
        }
    }
}

/// TCP -> QUIC until EOF (then FIN) or error (then reset).
pub async fn tcp_to_quic<R: Readable>(
    tcp: &mut R,
    send: &mut quinn::SendStream,
    first: &[u8],
    activity: &Activity<'_>,
) -> (End, u64) {
    let mut moved = 0u64;
    if !first.is_empty() {
        if send.write_all(first).await.is_err() {
            return (End::Reset, 0);
        }
        moved += first.len() as u64;
    }
    let mut buf = Owned::default();
    loop {
        match buf.read(tcp).await {
            Ok(None) => {
                let _ = send.finish();
                return (End::Finished, moved);
            }
            Ok(Some(data)) => {
                activity.touch();
                let n = data.len() as u64;
                if send.write_chunk(data).await.is_err() {
                    return (End::Reset, moved);
                }
                moved += n;
            }
            Err(_) => {
                let _ = send.reset(code::RESET);
                return (End::Reset, moved);
            }
        }
    }
}

/// QUIC -> TCP until the stream finishes (then shut down TCP's write side)
/// or is reset (then the caller resets TCP). The stream's own chunks are
/// written as they are (one vectored write for many), not copied into a
/// buffer of ours first.
pub async fn quic_to_tcp<W: AsyncWrite + Unpin>(
    recv: &mut quinn::RecvStream,
    tcp: &mut W,
    first: &[u8],
    activity: &Activity<'_>,
) -> (End, u64) {
    let mut moved = 0u64;
    if !first.is_empty() {
        if tcp.write_all(first).await.is_err() {
            let _ = recv.stop(code::RESET);
            return (End::Reset, 0);
        }
        moved += first.len() as u64;
    }
    let mut chunks = Chunks::new();
    loop {
        match chunks.read(recv).await {
            Ok(Some(n)) => {
                activity.touch();
                if chunks.write_to(tcp).await.is_err() {
                    let _ = recv.stop(code::RESET);
                    return (End::Reset, moved);
                }
                moved += n as u64;
            }
            Ok(None) => {
                let _ = tcp.shutdown().await;
                return (End::Finished, moved);
            }
            Err(_) => return (End::Reset, moved),
        }
    }
}

/// Chunks read from a QUIC stream, few while the stream is quiet and up
/// to `MAX_CHUNKS` while it streams (the same rule as [`Adaptive`]).
struct Chunks {
    slots: Vec<bytes::Bytes>,
    filled: usize,
}

/// A chunk is about one packet's payload: 128 of them make one write of
/// about 160 KiB.
const MAX_CHUNKS: usize = 128;
const FEW_CHUNKS: usize = 4;

impl Chunks {
    fn new() -> Self {
        Chunks {
            slots: Vec::new(),
            filled: 0,
        }
    }

    /// Reads the next chunks; how many bytes they hold, `None` when the
    /// stream finished.
    async fn read(
        &mut self,
        from: &mut quinn::RecvStream,
    ) -> Result<Option<usize>, quinn::ReadError> {
        if self.slots.is_empty() {
            self.slots = vec![bytes::Bytes::new(); FEW_CHUNKS];
        }
        let Some(n) = from.read_chunks(&mut self.slots).await? else {
            return Ok(None);
        };
        self.filled = n;
        let bytes = self.slots[..n].iter().map(|c| c.len()).sum();
        Ok(Some(bytes))
    }

    /// Writes the chunks read, then resizes the slots for the next read.
    async fn write_to<W: AsyncWrite + Unpin>(&mut self, to: &mut W) -> std::io::Result<()> {
        let mut first = 0;
        while first < self.filled {
            // On the heap: an array here would sit in every stream's
            // future, idle or not.
            let slices: Vec<std::io::IoSlice<'_>> = self.slots[first..self.filled]
                .iter()
                .map(|c| std::io::IoSlice::new(c))
                .collect();
            let mut n = to.write_vectored(&slices).await?;
            drop(slices);
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while n > 0 {
                let chunk = &mut self.slots[first];
                if n >= chunk.len() {
                    n -= chunk.len();
                    *chunk = bytes::Bytes::new();
                    first += 1;
                } else {
                    bytes::Buf::advance(chunk, n);
                    n = 0;
                }
            }
        }
        // All slots filled: the stream is streaming, take more next time;
        // a quarter or less: quiet again, keep few.
        let slots = self.slots.len();
        if self.filled == slots && slots < MAX_CHUNKS {
            self.slots = vec![bytes::Bytes::new(); MAX_CHUNKS];
        } else if self.filled <= slots / 4 && slots > FEW_CHUNKS {
            self.slots = Vec::new();
        }
        self.filled = 0;
        Ok(())
    }
}

/// How a splice starts.
#[derive(Debug, Clone, Copy)]
pub struct SpliceOptions<'a> {
    pub first_to_quic: &'a [u8],
    pub first_to_tcp: &'a [u8],
    /// The TCP side already finished sending (its FIN went out earlier).
    pub tcp_finished: bool,
    /// A stream with no bytes either way for this long is reset.
    pub idle_timeout: Duration,
    pub first_byte: FirstByte<'a>,
}

/// Runs both directions on split halves; if either ends in a reset, or the
/// stream goes idle, both are stopped and `reset` is set (the caller resets
/// the TCP side, as only it owns both halves).
pub async fn run<R: Readable, W: AsyncWrite + Unpin>(
    tr: &mut R,
    tw: &mut W,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    opts: SpliceOptions<'_>,
) -> Moved {
    let activity = Activity::new(opts.first_byte.silence);
    if !opts.first_to_quic.is_empty() || !opts.first_to_tcp.is_empty() {
        activity.touch();
    }
    let (stop_up, stop_down) = (tokio::sync::Notify::new(), tokio::sync::Notify::new());
    let up = async {
        if opts.tcp_finished {
            return (End::Finished, 0);
        }
        let r = tokio::select! {
            r = tcp_to_quic(tr, send, opts.first_to_quic, &activity) => r,
            _ = stop_up.notified() => (End::Reset, 0),
        };
        if r.0 == End::Reset {
            stop_down.notify_one();
        }
        r
    };
    let down = async {
        let r = tokio::select! {
            r = quic_to_tcp(recv, tw, opts.first_to_tcp, &activity) => r,
            _ = stop_down.notified() => (End::Reset, 0),
        };
        if r.0 == End::Reset {
            stop_up.notify_one();
        }
        r
    };
    // Polled in place: handing `both` to another async fn would store the
    // two directions' futures twice in every stream's task.
    let both = async { tokio::join!(up, down) };
    let ((up_end, up_bytes), (down_end, down_bytes), idle, reclaimed) = tokio::select! {
        (u, d) = both => (u, d, false, false),
        _ = activity.idle_for(opts.idle_timeout) => (STOPPED, STOPPED, true, false),
        why = activity.ended_silent(opts.first_byte) => {
            (STOPPED, STOPPED, true, matches!(why, Silent::Reclaimed))
        }
    };
    let reset = idle || up_end == End::Reset || down_end == End::Reset;
    if reset {
        let _ = send.reset(code::RESET);
        let _ = recv.stop(code::RESET);
    }
    Moved {
        tcp_to_quic: up_bytes,
        quic_to_tcp: down_bytes,
        reset,
        idle,
        reclaimed,
    }
}

/// [`run`] on a whole TCP connection, resetting it when the splice ends
/// in a reset.
pub async fn splice(
    tcp: tokio::net::TcpStream,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    opts: SpliceOptions<'_>,
) -> Moved {
    let (mut tr, mut tw) = tcp.into_split();
    let moved = run(&mut tr, &mut tw, &mut send, &mut recv, opts).await;
    if moved.reset {
        reset_tcp(tr, tw);
    }
    moved
}

/// One TCP direction to another until EOF (then shut down the writer) or
/// an error.
async fn tcp_one_way<R: Readable, W: AsyncWrite + Unpin>(
    from: &mut R,
    to: &mut W,
    activity: &Activity<'_>,
) -> (End, u64) {
    let mut moved = 0u64;
    let mut buf = Adaptive::new();
    loop {
        match buf.read(from).await {
            Ok([]) => {
                let _ = to.shutdown().await;
                return (End::Finished, moved);
            }
            Ok(data) => {
                activity.touch();
                if to.write_all(data).await.is_err() {
                    return (End::Reset, moved);
                }
                moved += data.len() as u64;
            }
            Err(_) => return (End::Reset, moved),
        }
    }
}

/// A client spliced to a target in our own region (an import's local
/// target), with the same half-close, reset and idle rules as a tunnel
/// stream: `tcp_to_quic` counts client-to-target bytes (after `first`,
/// the client bytes read before), `quic_to_tcp` the answer. The target is
/// reset here; the caller resets the client when `reset` is set. Both are
/// reset by `first_byte`'s rules while no byte moved either way (`first`
/// counts as moved).
pub async fn tcp_to_tcp<R: Readable, W: AsyncWrite + Unpin>(
    cr: &mut R,
    cw: &mut W,
    target: tokio::net::TcpStream,
    first: &[u8],
    client_finished: bool,
    idle_timeout: Duration,
    first_byte: FirstByte<'_>,
) -> Moved {
    let (mut tr, mut tw) = target.into_split();
    let activity = Activity::new(first_byte.silence);
    if !first.is_empty() {
        activity.touch();
    }
    let (stop_up, stop_down) = (tokio::sync::Notify::new(), tokio::sync::Notify::new());
    let up = async {
        if tw.write_all(first).await.is_err() {
            stop_down.notify_one();
            return (End::Reset, 0);
        }
        if client_finished {
            let _ = tw.shutdown().await;
            return (End::Finished, 0);
        }
        let r = tokio::select! {
            r = tcp_one_way(cr, &mut tw, &activity) => r,
            _ = stop_up.notified() => (End::Reset, 0),
        };
        if r.0 == End::Reset {
            stop_down.notify_one();
        }
        r
    };
    let down = async {
        let r = tokio::select! {
            r = tcp_one_way(&mut tr, cw, &activity) => r,
            _ = stop_down.notified() => (End::Reset, 0),
        };
        if r.0 == End::Reset {
            stop_up.notify_one();
        }
        r
    };
    let both = async { tokio::join!(up, down) };
    let ((up_end, up_bytes), (down_end, down_bytes), idle, reclaimed) = tokio::select! {
        (u, d) = both => (u, d, false, false),
        _ = activity.idle_for(idle_timeout) => (STOPPED, STOPPED, true, false),
        why = activity.ended_silent(first_byte) => {
            (STOPPED, STOPPED, true, matches!(why, Silent::Reclaimed))
        }
    };
    let reset = idle || up_end == End::Reset || down_end == End::Reset;
    if reset {
        reset_tcp(tr, tw);
    }
    Moved {
        tcp_to_quic: up_bytes,
        quic_to_tcp: down_bytes,
        reset,
        idle,
        reclaimed,
    }
}

/// Closes a TCP connection with RST instead of FIN.
pub fn reset_tcp(read: OwnedReadHalf, write: OwnedWriteHalf) {
    // Dropping a write half sends FIN; forgetting it leaves the close to
    // the read half, which resets with a zero linger.
    write.forget();
    let _ = read.as_ref().set_zero_linger();
}

/// A client connection the splice can run on and reset: plain TCP, or TLS
/// over TCP (an import with workload mTLS).
pub trait ClientConn: Send + 'static {
    type Read: Readable + Send + 'static;
    type Write: AsyncWrite + Unpin + Send + 'static;
    fn split(self) -> (Self::Read, Self::Write);
    /// Closes with RST instead of FIN.
    fn reset(read: Self::Read, write: Self::Write);
}

impl ClientConn for tokio::net::TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;
    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
    fn reset(read: OwnedReadHalf, write: OwnedWriteHalf) {
        reset_tcp(read, write);
    }
}

type TlsTcp = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

impl ClientConn for TlsTcp {
    type Read = tokio::io::ReadHalf<TlsTcp>;
    type Write = tokio::io::WriteHalf<TlsTcp>;
    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
    fn reset(read: Self::Read, write: Self::Write) {
        let stream = read.unsplit(write);
        let _ = stream.get_ref().0.set_zero_linger();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair of real TCP sockets on loopback: (our read half,
    /// the far end that writes).
    async fn pair() -> (OwnedReadHalf, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let far = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (near, _) = listener.accept().await.unwrap();
        (near.into_split().0, far)
    }

    #[tokio::test]
    async fn a_quiet_stream_waits_holding_no_buffer() {
        let (mut read, mut far) = pair().await;
        let mut owned = Owned::default();
        far.write_all(b"hello").await.unwrap();
        let data = owned.read(&mut read).await.unwrap().unwrap();
        assert_eq!(&data[..], b"hello");
        assert_eq!(owned.buf.capacity(), 0, "a short read kept a block");

        let mut adaptive = Adaptive::new();
        far.write_all(b"again").await.unwrap();
        assert_eq!(adaptive.read(&mut read).await.unwrap(), b"again");
        // The buffer goes before the next wait: nothing is held while the
        // far end is silent.
        let waiting = tokio::time::timeout(Duration::from_millis(50), adaptive.read(&mut read));
        assert!(waiting.await.is_err(), "read returned with nothing sent");
        assert!(adaptive.buf.is_empty(), "a quiet read kept its buffer");
    }

    #[tokio::test]
    async fn a_burst_earns_the_large_buffer_and_gives_it_back() {
        let (mut read, mut far) = pair().await;
        let mut owned = Owned::default();
        far.write_all(&vec![1u8; 256 * 1024]).await.unwrap();
        let mut got = owned.read(&mut read).await.unwrap().unwrap().len();
        assert_eq!(
            got, SMALL,
            "the first read of a burst fills the small block"
        );
        assert!(owned.large, "a full small read did not ask for blocks");
        while got < 256 * 1024 {
            got += owned.read(&mut read).await.unwrap().unwrap().len();
        }
        far.write_all(b"x").await.unwrap();
        let data = owned.read(&mut read).await.unwrap().unwrap();
        assert_eq!(&data[..], b"x");
        assert!(!owned.large);
        assert_eq!(owned.buf.capacity(), 0);
    }
}
