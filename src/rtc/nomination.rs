//! ICE **nomination**, answered the first time a viewer makes it.
//!
//! A browser is the controlling ICE agent and nominates in its very first connectivity check
//! (Chromium's "semi-aggressive" mode sets USE-CANDIDATE while it has no selected pair).
//! RFC 8445 §7.3.1.5 says the controlled agent answers that check, checks the pair back, and
//! takes it as nominated once its own check succeeds. The `webrtc` crate's controlled agent
//! (0.21.1, `rtc-ice` `agent_selector.rs`) checks back but neither answers the request nor
//! remembers the nomination, so nothing moves (DTLS included) until the browser's *next*
//! check, tens of milliseconds later in Chromium (BENCHMARKS.md, time to first frame).
//!
//! The fix lives at the socket, below the crate: each UDP socket remembers the last
//! nominating request the agent left unanswered, and when a success response to the agent's
//! own check arrives from the same address, hands the agent that request again. The pair has
//! now succeeded, so the agent selects it and answers, with the browser's original
//! transaction id: the browser's first check completes. Nothing is forged: the replayed
//! bytes are the peer's own, integrity and all.
//!
//! Only STUN packets (first byte 0 or 1 and the magic cookie) are looked at; RTP, RTCP and
//! DTLS pass through untouched.

use rtc::stun::attributes::ATTR_USE_CANDIDATE;
use rtc::stun::message::{is_stun_message, Message, BINDING_REQUEST, BINDING_SUCCESS};
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime,
    TokioRuntime, Transmit,
};

/// The runtime every peer connection is built with: tokio, with nomination-aware sockets.
pub fn runtime() -> Arc<dyn Runtime> {
    static RUNTIME: OnceLock<Arc<dyn Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| Arc::new(NominatingRuntime(TokioRuntime)))
        .clone()
}

/// [`TokioRuntime`] in everything but the UDP sockets it wraps.
#[derive(Debug)]
struct NominatingRuntime(TokioRuntime);

impl Runtime for NominatingRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.0.spawn(future)
    }

    fn spawn_reactor(
        &self,
        pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.0.spawn_reactor(pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        Ok(Arc::new(NominatingSocket {
            inner: self.0.wrap_udp_socket(socket)?,
            replay_due: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        }))
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.0.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.0.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.0.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.0.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.0.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.0.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.0.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.0.yield_now()
    }

    fn name(&self) -> &'static str {
        "tokio+nomination"
    }
}

/// A nominating Binding request the agent has not answered yet.
#[derive(Default)]
struct Request {
    from: Option<SocketAddr>,
    transaction_id: [u8; 12],
    bytes: Vec<u8>,
}

#[derive(Default)]
pub(crate) struct State {
    /// The last nomination the agent left unanswered (`from` is `None` when there is none).
    unanswered: Request,
    /// Reused to parse requests' attributes.
    parser: Message,
}

/// A UDP socket that replays an unanswered nomination once its pair has succeeded.
struct NominatingSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    /// The held request is due to go to the agent again (checked on every receive, so
    /// outside the lock).
    replay_due: AtomicBool,
    state: Mutex<State>,
}

impl fmt::Debug for NominatingSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NominatingSocket")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// A STUN message's type and transaction id.
pub(crate) type StunHeader = (u16, [u8; 12]);

/// STUN message type and transaction id, when `packet` is a STUN message (RFC 7983: first
/// byte 0..=3, then the magic cookie).
pub(crate) fn stun_header(packet: &[u8]) -> Option<StunHeader> {
    if packet.first().is_none_or(|b| *b > 3) || !is_stun_message(packet) {
        return None;
    }
    let typ = u16::from_be_bytes([packet[0], packet[1]]);
    let mut id = [0; 12];
    id.copy_from_slice(&packet[8..20]);
    Some((typ, id))
}

impl State {
    /// Looks at one received STUN message; `true` when the held request is now due for
    /// replay.
    pub(crate) fn on_received(
        &mut self,
        (typ, transaction_id): StunHeader,
        packet: &[u8],
        from: SocketAddr,
    ) -> bool {
        if typ == BINDING_REQUEST.value() {
            self.parser.raw.clear();
            self.parser.raw.extend_from_slice(packet);
            if self.parser.decode().is_ok() && self.parser.contains(ATTR_USE_CANDIDATE) {
                let r = &mut self.unanswered;
                r.from = Some(from);
                r.transaction_id = transaction_id;
                r.bytes.clear();
                r.bytes.extend_from_slice(packet);
            }
            false
        } else {
            // A success from the same address: the agent's own check of this pair succeeded.
            typ == BINDING_SUCCESS.value() && self.unanswered.from == Some(from)
        }
    }

    /// Looks at one STUN message the agent sends.
    pub(crate) fn on_sent(&mut self, (typ, transaction_id): StunHeader) {
        if typ == BINDING_SUCCESS.value()
            && self.unanswered.from.is_some()
            && transaction_id == self.unanswered.transaction_id
        {
            self.unanswered.from = None;
        }
    }

    /// Copies the held request into `buf`, filling `meta`; `false` when none is held (the
    /// agent answered it meanwhile) or it does not fit.
    pub(crate) fn take_replay(&mut self, buf: &mut [u8], meta: &mut RecvMeta) -> bool {
        let r = &mut self.unanswered;
        let Some(from) = r.from else {
            return false;
        };
        if buf.len() < r.bytes.len() {
            return false;
        }
        buf[..r.bytes.len()].copy_from_slice(&r.bytes);
        *meta = RecvMeta::default();
        meta.addr = from;
        meta.len = r.bytes.len();
        meta.stride = r.bytes.len();
        // Replayed once: if the agent still does not answer, the peer's next check will.
        r.from = None;
        metrics::counter!("whepcast_ice_nominations_replayed_total").increment(1);
        true
    }
}

impl AsyncUdpSocket for NominatingSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        if let (None, Some(header)) = (transmit.segment_size, stun_header(transmit.contents)) {
            if let Ok(mut state) = self.state.lock() {
                state.on_sent(header);
            }
        }
        self.inner.poll_send(cx, transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        // A replay goes first, right after the success response that made it due (the
        // driver polls again at once after every datagram).
        if self.replay_due.load(Ordering::Acquire) {
            if let (Some(buf), Some(m), Ok(mut state)) =
                (bufs.first_mut(), meta.first_mut(), self.state.lock())
            {
                self.replay_due.store(false, Ordering::Release);
                if state.take_replay(buf, m) {
                    return Poll::Ready(Ok(1));
                }
            }
        }
        let n = match self.inner.poll_recv(cx, bufs, meta) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        for i in 0..n {
            let m = meta[i];
            let data = &bufs[i][..m.len.min(bufs[i].len())];
            for d in data.chunks(m.stride.max(1)) {
                if let Some(header) = stun_header(d) {
                    if let Ok(mut state) = self.state.lock() {
                        if state.on_received(header, d, m.addr) {
                            self.replay_due.store(true, Ordering::Release);
                        }
                    }
                }
            }
        }
        Poll::Ready(Ok(n))
    }

    fn max_gso_segments(&self) -> usize {
        self.inner.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::message::Setter;
    use rtc::stun::textattrs::Username;

    fn request(use_candidate: bool) -> Vec<u8> {
        let mut m = Message::new();
        let mut setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(rtc::stun::message::TransactionId::new()),
            Box::new(Username::new(
                rtc::stun::attributes::ATTR_USERNAME,
                "a:b".into(),
            )),
        ];
        if use_candidate {
            setters.push(Box::new(
                rtc::ice::attributes::use_candidate::UseCandidateAttr::new(),
            ));
        }
        m.build(&setters).unwrap();
        m.raw
    }

    fn success_to(req: &[u8]) -> Vec<u8> {
        let mut m = Message::new();
        m.unmarshal_binary(req).unwrap();
        let mut r = Message::new();
        r.build(&[Box::new(m), Box::new(BINDING_SUCCESS)]).unwrap();
        r.raw
    }

    fn replay(state: &mut State) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = [0u8; 1500];
        let mut meta = RecvMeta::default();
        state
            .take_replay(&mut buf, &mut meta)
            .then(|| (buf[..meta.len].to_vec(), meta.addr))
    }

    /// What the socket does with a received datagram.
    fn recv(s: &mut State, packet: &[u8], from: SocketAddr) -> bool {
        stun_header(packet).is_some_and(|h| s.on_received(h, packet, from))
    }

    /// What the socket does with a datagram the agent sends.
    fn sent(s: &mut State, packet: &[u8]) {
        if let Some(h) = stun_header(packet) {
            s.on_sent(h);
        }
    }

    const PEER: &str = "127.0.0.1:5000";

    #[test]
    fn unanswered_nomination_is_replayed_after_the_pairs_own_check_succeeds() {
        let peer: SocketAddr = PEER.parse().unwrap();
        let mut s = State::default();
        let nomination = request(true);
        assert!(
            !recv(&mut s, &nomination, peer),
            "nothing before our check succeeds"
        );
        let our_check = request(false);
        sent(&mut s, &our_check);
        let elsewhere = "127.0.0.1:5001".parse().unwrap();
        assert!(
            !recv(&mut s, &success_to(&our_check), elsewhere),
            "a success from another address proves nothing"
        );
        assert!(recv(&mut s, &success_to(&our_check), peer));
        assert_eq!(replay(&mut s), Some((nomination, peer)));
        assert!(replay(&mut s).is_none(), "replayed once only");
    }

    #[test]
    fn answered_or_plain_checks_are_left_alone() {
        let peer: SocketAddr = PEER.parse().unwrap();
        let mut s = State::default();
        let nomination = request(true);
        recv(&mut s, &nomination, peer);
        sent(&mut s, &success_to(&nomination));
        assert!(
            !recv(&mut s, &success_to(&request(false)), peer),
            "the agent answered it"
        );
        assert!(replay(&mut s).is_none());

        recv(&mut s, &request(false), peer);
        assert!(
            !recv(&mut s, &success_to(&request(false)), peer),
            "no USE-CANDIDATE, nothing to replay"
        );

        // RTP and garbage are not STUN.
        assert!(!recv(&mut s, &[0x80; 40], peer));
        assert!(!recv(&mut s, &[0; 3], peer));
        assert!(replay(&mut s).is_none());
    }
}
