//! Stage: **whep** — viewer sessions (draft-ietf-wish-whep, which takes its HTTP rules
//! for sessions, PATCH and Link headers from WHIP, RFC 9725).
//!
//! A session is born from an SDP offer and lives until the viewer sends DELETE, its
//! connection fails, it never connects, or it goes silent. Each session owns:
//!
//! * a peer connection with one track, answered by [`crate::rtc::answer()`];
//! * a *sender* task ([`crate::fanout::send`]): the stream's packets with this viewer's
//!   SSRC, payload type and sequence numbers;
//! * a *feedback* task ([`crate::rtc::keyframe::forward`]): PLI/FIR from the viewer become
//!   keyframe requests on the stream's [`Feed`] (the pipeline rate-limits them);
//! * a *supervisor* task: watches connection state and closes the session when it should;
//! * a *data channel* task when the viewer opened one ([`datachannel`]): frame capture
//!   times, clock pings, chat.
//!
//! `PATCH` on a session ([`Sessions::patch`]) trickles the viewer's candidates or restarts
//! ICE, with bodies in [`sdpfrag`] format.
//!
//! Closing always goes through `Sessions::close`, which removes the session from the map,
//! stops its tasks and calls `close()` on the peer connection (dropping one leaks it).

pub mod datachannel;
mod patch;
pub mod sdpfrag;

pub(crate) use patch::{check_if_match, IceSession};
pub use sdpfrag::{Fragment, FragmentError};

use crate::fanout::{self, Feed, Preference, Renditions};
use crate::rtc::{self, OfferError, PortLease, RtcConfig, RtcError};
use crate::shutdown::Shutdown;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::DataChannel;
use webrtc::peer_connection::{
    PeerConnectionEventHandler, RTCIceConnectionState, RTCIceGatheringState, RTCPeerConnectionState,
};

/// A session that has not connected by then is closed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After ICE reports `Disconnected`, how long a viewer has to come back.
pub const DISCONNECT_GRACE: Duration = Duration::from_secs(2);
/// Chat lines and audience changes a slow viewer's data channel may fall behind by.
const ROOM_BACKLOG: usize = 64;

/// Why a WHEP request failed. `http` turns each into a status code and plain-text message.
#[derive(Debug, thiserror::Error)]
pub enum WhepError {
    #[error(transparent)]
    Offer(#[from] OfferError),
    #[error("no session {0}; it ended or never existed")]
    UnknownSession(String),
    #[error("no stream named '{name}'; streams here: {known}")]
    UnknownStream { name: String, known: String },
    #[error("stream '{0}' already has a publisher; it must leave (DELETE its session) before another can publish")]
    Busy(String),
    #[error("stream '{0}' has ended (its input finished)")]
    StreamEnded(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("stream '{name}' is full ({max} viewers); try again later")]
    Full { name: String, max: usize },
    #[error(
        "the server is at its capacity of {0} viewers (what its file-descriptor limit, \
         ulimit -n, allows); try again later"
    )]
    AtCapacity(usize),
    #[error("could not set up the WebRTC session: {0}")]
    Rtc(#[from] RtcError),
    #[error("stream '{stream}' has no rendition '{given}'; it has {known} (name one by its size, its bit rate or its place, 0 being the best)")]
    UnknownRendition {
        stream: String,
        given: String,
        known: String,
    },
    #[error("max_bitrate '{0}' is not a bit rate; write e.g. 800k or 1.5M")]
    BadMaxBitrate(String),
    #[error("bad trickle-ice-sdpfrag: {0}")]
    Fragment(#[from] FragmentError),
    #[error("an ICE restart (new ice-ufrag/ice-pwd) needs If-Match: \"*\" or the session's current ETag")]
    PreconditionRequired,
    #[error("If-Match {given} does not match the session's ETag {current}; it changed with an ICE restart")]
    PreconditionFailed { given: String, current: String },
}

impl WhepError {
    /// The HTTP status this answers with (WHEP is HTTP: the session layer knows them).
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            WhepError::Offer(e) => e.status(),
            WhepError::Rtc(e) => e.status(),
            WhepError::UnknownSession(_) | WhepError::UnknownStream { .. } => S::NOT_FOUND,
            WhepError::StreamEnded(_) => S::GONE,
            WhepError::Busy(_) => S::CONFLICT,
            WhepError::ShuttingDown | WhepError::Full { .. } | WhepError::AtCapacity(_) => {
                S::SERVICE_UNAVAILABLE
            }
            WhepError::Fragment(_)
            | WhepError::UnknownRendition { .. }
            | WhepError::BadMaxBitrate(_) => S::BAD_REQUEST,
            WhepError::PreconditionRequired => S::PRECONDITION_REQUIRED,
            WhepError::PreconditionFailed { .. } => S::PRECONDITION_FAILED,
        }
    }
}

/// What a viewer gets back for its offer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub session_id: String,
    pub sdp: String,
    pub etag: String,
}

/// What a `PATCH` did.
#[derive(Debug, Clone)]
pub enum Patched {
    /// Candidates were added (`204`).
    Trickled { added: usize },
    /// ICE restarted: the server's new fragment and the session's new ETag (`200`).
    Restarted { fragment: String, etag: String },
}

/// One stream viewers can join.
#[derive(Clone)]
pub struct Stream {
    pub name: String,
    /// Its renditions, best first.
    pub renditions: Renditions,
    viewers: Arc<AtomicUsize>,
    /// Chat lines and audience changes for the viewers' data channels (JSON).
    room: broadcast::Sender<Arc<str>>,
}

impl Stream {
    pub fn new(name: impl Into<String>, renditions: Renditions) -> Self {
        Self {
            name: name.into(),
            renditions,
            viewers: Arc::new(AtomicUsize::new(0)),
            room: broadcast::channel(ROOM_BACKLOG).0,
        }
    }

    /// Tells every data channel of this stream (nobody listening is fine).
    pub(crate) fn announce(&self, json: String) {
        let _ = self.room.send(Arc::from(json));
    }

    fn announce_viewers(&self, count: usize) {
        self.announce(serde_json::json!({"type": "viewers", "count": count}).to_string());
    }

    /// Viewers currently connected or connecting.
    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }
}

/// How many viewers a server takes; beyond them a viewer gets `503` + `Retry-After`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Most viewers per stream (`--max-viewers`).
    pub per_stream: Option<usize>,
    /// Most sessions of all streams together: what the process's file-descriptor limit
    /// allows (see [`crate::server::session_capacity`]).
    pub total: Option<usize>,
}

/// Takes one from `count` unless it has reached `max`.
fn take_one(count: &AtomicUsize, max: Option<usize>) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            max.is_none_or(|max| n < max).then_some(n + 1)
        })
        .is_ok()
}

/// A viewer's place in the server and in a stream's audience, taken before a session is set
/// up (before any await, so concurrent offers cannot all pass the caps). Dropped unkept
/// (the setup failed), it is given back.
struct Seat<'a> {
    stream: &'a Stream,
    total: &'a AtomicUsize,
    kept: bool,
}

impl<'a> Seat<'a> {
    /// Takes a seat, or says why there is none (counting viewers still connecting).
    fn take(stream: &'a Stream, total: &'a AtomicUsize, limits: Limits) -> Result<Self, WhepError> {
        if !take_one(total, limits.total) {
            metrics::counter!("whepcast_sessions_refused_total", "reason" => "capacity")
                .increment(1);
            return Err(WhepError::AtCapacity(limits.total.unwrap_or_default()));
        }
        if !take_one(&stream.viewers, limits.per_stream) {
            total.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("whepcast_sessions_refused_total", "reason" => "full").increment(1);
            return Err(WhepError::Full {
                name: stream.name.clone(),
                max: limits.per_stream.unwrap_or_default(),
            });
        }
        Ok(Self {
            stream,
            total,
            kept: false,
        })
    }

    /// The session now holds the seat (its close gives it back). Returns the audience.
    fn keep(mut self) -> usize {
        self.kept = true;
        self.stream.viewers()
    }
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.stream.viewers.fetch_sub(1, Ordering::AcqRel);
            self.total.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

struct Session {
    stream: Stream,
    /// The peer connection and what PATCH changes on it (ICE credentials, ETag).
    ice: IceSession,
    cancel: CancellationToken,
    created: Instant,
    /// The UDP port this session's sockets use, when ports come from a range.
    _port: Option<PortLease>,
    /// What the viewer's link carries (estimate, loss, round trip).
    link: Arc<rtc::cc::Link>,
    /// The rendition it is on.
    viewing: Arc<fanout::Viewing>,
}

/// One viewer as `/api/streams` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ViewerReport {
    /// The first 8 characters of its session id.
    pub session: String,
    pub rendition: String,
    pub rendition_index: usize,
    pub switches: u64,
    /// `gcc` (transport-wide feedback) or `loss` (receiver reports only).
    pub estimator: &'static str,
    pub estimate_bps: u64,
    /// What arrives at the viewer (transport-wide feedback only).
    pub arriving_bps: u64,
    /// The estimate as far as arrivals bear it out (what moving up is decided on).
    pub proven_bps: u64,
    pub pacing_bps: u64,
    pub queued_packets: usize,
    /// Packets the pacer refused (its queue was full).
    pub pacer_refused: u64,
    /// Queueing delay on the path, ms.
    pub queueing_ms: f64,
    pub loss: f64,
    pub rtt_ms: Option<f64>,
    pub connected_s: f64,
}

/// A viewer's wishes from its request's query: `rendition=640x360` (or a bit rate, or an
/// index), `max_bitrate=800k`, `insist=1` (keep the rendition whatever the link).
#[derive(Debug, Clone, Default)]
pub struct Wishes {
    pub rendition: Option<String>,
    pub max_bitrate: Option<String>,
    pub insist: bool,
}

impl Wishes {
    /// Checked against the stream's renditions.
    pub fn preference(&self, stream: &Stream) -> Result<Preference, WhepError> {
        let mut p = Preference {
            insist: self.insist,
            ..Default::default()
        };
        if let Some(r) = self.rendition.as_deref().filter(|r| *r != "auto") {
            let index = stream
                .renditions
                .find(r)
                .ok_or_else(|| WhepError::UnknownRendition {
                    stream: stream.name.clone(),
                    given: r.chars().take(40).collect(),
                    known: stream.renditions.labels().join(", "),
                })?;
            p.choice = fanout::Choice::Fixed(index);
        }
        if let Some(m) = &self.max_bitrate {
            let rate: crate::config::Bitrate = m
                .parse()
                .map_err(|_| WhepError::BadMaxBitrate(m.chars().take(40).collect()))?;
            p.max_bitrate = Some(rate.bps());
        }
        Ok(p)
    }
}

/// Counters over the server's lifetime.
#[derive(Debug, Default, serde::Serialize, Clone, Copy)]
pub struct SessionCounts {
    pub created: u64,
    pub closed: u64,
    pub active: usize,
}

/// All viewer sessions of all streams.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    rtc: RtcConfig,
    limits: Limits,
    /// Sessions of every stream, counting those being set up.
    seated: AtomicUsize,
    streams: Vec<Stream>,
    map: Mutex<HashMap<String, Arc<Session>>>,
    counts: Mutex<SessionCounts>,
    shutdown: Shutdown,
}

impl Sessions {
    /// Sessions for `streams`, within `limits`; their tasks run under `shutdown`.
    pub fn new(rtc: RtcConfig, streams: Vec<Stream>, limits: Limits, shutdown: Shutdown) -> Self {
        Self {
            inner: Arc::new(Inner {
                rtc,
                limits,
                seated: AtomicUsize::new(0),
                streams,
                map: Mutex::new(HashMap::new()),
                counts: Mutex::new(SessionCounts::default()),
                shutdown,
            }),
        }
    }

    pub fn streams(&self) -> &[Stream] {
        &self.inner.streams
    }

    /// The STUN/TURN servers viewers are told about.
    pub fn ice_servers(&self) -> &[rtc::IceServer] {
        &self.inner.rtc.ice_servers
    }

    pub fn stream(&self, name: &str) -> Result<&Stream, WhepError> {
        self.inner
            .streams
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| WhepError::UnknownStream {
                name: name.to_string(),
                known: self
                    .inner
                    .streams
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    pub fn counts(&self) -> SessionCounts {
        let mut c = *lock(&self.inner.counts);
        c.active = lock(&self.inner.map).len();
        c
    }

    /// Answers a viewer's offer for `stream` and starts sending to it.
    pub async fn create(
        &self,
        stream: &str,
        offer_sdp: String,
        wishes: &Wishes,
    ) -> Result<Answer, WhepError> {
        if self.inner.shutdown.is_started() {
            return Err(WhepError::ShuttingDown);
        }
        let stream = self.stream(stream)?.clone();
        if stream.renditions.is_ended() {
            return Err(WhepError::StreamEnded(stream.name));
        }
        let preference = wishes.preference(&stream)?;
        // The seat is taken before the first await, so concurrent offers cannot all pass the
        // cap; it is given back if anything below fails.
        let seat = Seat::take(&stream, &self.inner.seated, self.inner.limits)?;
        let t0 = Instant::now();
        // Refuse what we cannot serve before any socket is bound.
        let choice = rtc::choose_h264(&offer_sdp)?;

        let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
        let (gathered_tx, mut gathered_rx) = watch::channel(false);
        let (ice_tx, ice_rx) = watch::channel(false);
        let (connected_tx, connected_rx) = watch::channel(false);
        let (channel_tx, channel_rx) = mpsc::channel(1);
        let handler = Arc::new(Handler {
            state_tx,
            gathered_tx,
            ice_tx,
            connected_tx,
            channel_tx,
        });
        let remote_ufrag = sdpfrag::ufrag_of(&offer_sdp);
        let link = Arc::new(rtc::cc::Link::default());
        let bounds = bounds(&stream.renditions);
        let (pc, port) = rtc::new_peer_connection(
            &self.inner.rtc,
            &choice,
            rtc::Role::Answer,
            handler.clone(),
            &link,
            bounds,
        )
        .await
        .inspect_err(|e| {
            if matches!(e, RtcError::NoPorts(_)) {
                metrics::counter!("whepcast_sessions_refused_total", "reason" => "no UDP port")
                    .increment(1);
            }
        })?;
        let answered = match rtc::answer(
            &pc,
            &choice,
            offer_sdp,
            &stream.name,
            &mut gathered_rx,
            &self.inner.rtc,
        )
        .await
        {
            Ok(v) => v,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e.into());
            }
        };

        let id = random_hex(16);
        let ice = IceSession::new(pc, handler.gathered_tx.clone(), remote_ufrag);
        let etag = ice.etag();
        let session = Arc::new(Session {
            stream: stream.clone(),
            ice,
            cancel: self.inner.shutdown.token().child_token(),
            created: Instant::now(),
            _port: port,
            link: link.clone(),
            viewing: Arc::new(fanout::Viewing::default()),
        });
        lock(&self.inner.map).insert(id.clone(), session.clone());
        // The session holds the seat from here; `close` gives it back.
        let watching = seat.keep();
        tracing::debug!(session = %short(&id), "answered in {:?}", t0.elapsed());
        lock(&self.inner.counts).created += 1;
        metrics::counter!("whepcast_sessions_created_total", "stream" => stream.name.clone())
            .increment(1);
        stream.announce_viewers(watching);
        tracing::info!(
            stream = %stream.name, session = %short(&id),
            "viewer joined ({watching} watching {})", stream.name
        );

        let cancel = session.cancel.clone();
        let stamp = fanout::Stamp {
            ssrc: answered.ssrc,
            payload_type: answered.payload_type,
            playout_delay: answered.playout_delay,
        };
        let ready = fanout::Readiness {
            ice_up: ice_rx,
            connected: connected_rx,
            since: t0,
        };
        let tasks = &self.inner.shutdown;
        let (sent, _) = broadcast::channel(8);
        let viewer = fanout::Viewer {
            track: answered.track.clone(),
            stamp,
            ready,
            preference,
            link: Box::new(move || reading(&link)),
            viewing: session.viewing.clone(),
            sent: sent.clone(),
        };
        tasks.spawn(fanout::send(
            stream.renditions.clone(),
            viewer,
            cancel.clone(),
        ));
        // A viewer's keyframe requests go to the rendition it is on.
        let (renditions, viewing) = (stream.renditions.clone(), session.viewing.clone());
        tasks.spawn(rtc::keyframe::forward(
            answered.track,
            cancel.clone(),
            move || {
                if let Some(f) = renditions.get(viewing.current()) {
                    f.request_keyframe();
                }
            },
        ));
        tasks.spawn(datachannel::serve(
            datachannel::Viewer {
                session: short(&id).to_owned(),
                name: format!("viewer-{}", random_hex(2)),
                stream: stream.clone(),
                frames: sent.subscribe(),
                link: session.link.clone(),
                viewing: session.viewing.clone(),
            },
            channel_rx,
            cancel.clone(),
        ));
        tasks.spawn(supervise(
            self.clone(),
            id.clone(),
            state_rx,
            session.ice.restarted.clone(),
            stream.renditions.top().clone(),
            cancel,
        ));

        Ok(Answer {
            session_id: id,
            sdp: answered.sdp,
            etag,
        })
    }

    /// The viewers of `stream` now: rendition, estimate, loss, round trip.
    pub fn viewers(&self, stream: &str) -> Vec<ViewerReport> {
        let sessions: Vec<(String, Arc<Session>)> = lock(&self.inner.map)
            .iter()
            .filter(|(_, s)| s.stream.name == stream)
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect();
        sessions
            .into_iter()
            .map(|(id, s)| {
                let index = s.viewing.current();
                ViewerReport {
                    session: short(&id).to_owned(),
                    rendition: s
                        .stream
                        .renditions
                        .get(index)
                        .map(|f| f.label())
                        .unwrap_or_default(),
                    rendition_index: index,
                    switches: s.viewing.switches(),
                    estimator: s.link.estimator(),
                    estimate_bps: s.link.estimate_bps(),
                    arriving_bps: s.link.arriving_bps(),
                    proven_bps: reading(&s.link).proven_bps(),
                    pacing_bps: s.link.pacing_bps(),
                    queued_packets: s.link.queued_packets(),
                    pacer_refused: s.link.refused_packets(),
                    queueing_ms: s.link.queueing().as_secs_f64() * 1000.0,
                    loss: s.link.loss(),
                    rtt_ms: s.link.rtt().map(|d| d.as_secs_f64() * 1000.0),
                    connected_s: s.created.elapsed().as_secs_f64(),
                }
            })
            .collect()
    }

    /// Ends a session at the viewer's request (`DELETE`).
    pub async fn delete(&self, id: &str) -> Result<(), WhepError> {
        if self.close(id, "DELETE").await {
            Ok(())
        } else {
            Err(WhepError::UnknownSession(short(id).to_string()))
        }
    }

    /// Removes and closes a session. Returns false if it was already gone.
    async fn close(&self, id: &str, reason: &str) -> bool {
        let Some(session) = lock(&self.inner.map).remove(id) else {
            return false;
        };
        session.cancel.cancel();
        // A PATCH in progress finishes before the connection goes (it then sees the cancel).
        session.ice.close().await;
        lock(&self.inner.counts).closed += 1;
        metrics::counter!(
            "whepcast_sessions_closed_total",
            "stream" => session.stream.name.clone(),
            "reason" => reason.to_string()
        )
        .increment(1);
        self.inner.seated.fetch_sub(1, Ordering::AcqRel);
        let left = session.stream.viewers.fetch_sub(1, Ordering::AcqRel) - 1;
        session.stream.announce_viewers(left);
        tracing::info!(
            stream = %session.stream.name, session = %short(id),
            "viewer left after {:.1}s ({reason}); {left} watching {}",
            session.created.elapsed().as_secs_f32(), session.stream.name
        );
        true
    }

    /// `PATCH` with a trickle-ice-sdpfrag body: adds the viewer's candidates, or restarts
    /// ICE (see [`IceSession::patch`]).
    pub async fn patch(
        &self,
        id: &str,
        if_match: Option<&str>,
        body: &[u8],
    ) -> Result<Patched, WhepError> {
        let session = lock(&self.inner.map)
            .get(id)
            .cloned()
            .ok_or_else(|| WhepError::UnknownSession(short(id).to_string()))?;
        session
            .ice
            .patch(if_match, body, &session.cancel, &self.inner.rtc, id)
            .await
    }

    /// Closes every session and refuses new ones (shutdown).
    pub async fn close_all(&self) {
        self.inner.shutdown.start();
        let ids: Vec<String> = lock(&self.inner.map).keys().cloned().collect();
        for id in ids {
            self.close(&id, "server shutting down").await;
        }
    }
}

/// Closes the session when [`watch_connection`] says it should end.
async fn supervise(
    sessions: Sessions,
    id: String,
    states: watch::Receiver<RTCPeerConnectionState>,
    restarted: Arc<tokio::sync::Notify>,
    feed: Feed,
    cancel: CancellationToken,
) {
    if let Some(reason) = watch_connection(states, &restarted, &feed, &cancel).await {
        sessions.close(&id, reason).await;
    }
}

/// Why a session should end: its connection failed, never came up within
/// [`CONNECT_TIMEOUT`], stayed disconnected past [`DISCONNECT_GRACE`], or its stream ended.
/// `None` when `cancel` came first (closed by DELETE or shutdown).
pub(crate) async fn watch_connection(
    mut states: watch::Receiver<RTCPeerConnectionState>,
    restarted: &tokio::sync::Notify,
    feed: &Feed,
    cancel: &CancellationToken,
) -> Option<&'static str> {
    let mut deadline = Some(tokio::time::Instant::now() + CONNECT_TIMEOUT);
    let mut ever_connected = false;
    // While an ICE restart is under way, a failed or disconnected path is expected.
    let mut restarting = false;
    let reason = loop {
        let timer = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = feed.ended() => break "stream ended",
            _ = restarted.notified() => {
                restarting = true;
                deadline = Some(tokio::time::Instant::now() + CONNECT_TIMEOUT);
            }
            _ = timer => break if ever_connected {
                "viewer went silent"
            } else {
                "never connected"
            },
            changed = states.changed() => {
                if changed.is_err() {
                    break "connection closed";
                }
                match *states.borrow_and_update() {
                    RTCPeerConnectionState::Connected => {
                        ever_connected = true;
                        restarting = false;
                        deadline = None;
                    }
                    RTCPeerConnectionState::Disconnected if !restarting => {
                        deadline = Some(tokio::time::Instant::now() + DISCONNECT_GRACE);
                    }
                    RTCPeerConnectionState::Failed if !restarting => break "connection failed",
                    RTCPeerConnectionState::Closed => break "connection closed",
                    _ => {}
                }
            }
        }
    };
    Some(reason)
}

/// Peer connection callbacks run on the connection's driver: only forward into channels.
struct Handler {
    state_tx: watch::Sender<RTCPeerConnectionState>,
    gathered_tx: watch::Sender<bool>,
    /// Set once ICE has connected (before DTLS).
    ice_tx: watch::Sender<bool>,
    /// Set once the connection is up (DTLS done, SRTP keyed).
    connected_tx: watch::Sender<bool>,
    /// Hands the viewer's data channel to its task (holding it here would keep the peer
    /// connection alive: the channel refers to it).
    channel_tx: mpsc::Sender<Arc<dyn DataChannel>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            self.connected_tx.send_replace(true);
        }
        self.state_tx.send_replace(state);
    }
    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        if matches!(
            state,
            RTCIceConnectionState::Connected | RTCIceConnectionState::Completed
        ) {
            self.ice_tx.send_replace(true);
        }
    }
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered_tx.send_replace(true);
        }
    }
    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        // Only the first is served; later ones are dropped here.
        let _ = self.channel_tx.try_send(channel);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these short locks cannot leave the map inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `n` random bytes as hex (session ids: 128 bits, unguessable).
pub(crate) fn random_hex(n: usize) -> String {
    use std::fmt::Write;
    (0..n).fold(String::with_capacity(n * 2), |mut s, _| {
        let _ = write!(s, "{:02x}", rand::random::<u8>());
        s
    })
}

/// What the viewer's sender reads of its link, once per frame.
pub(crate) fn reading(link: &rtc::cc::Link) -> fanout::Reading {
    fanout::Reading {
        // A receiver's REMB caps the estimate (aiortc's; a media server's room limit).
        estimate_bps: link.target_bps(),
        pacer_delay: link.queue_delay(),
        queueing: link.queueing(),
        arriving_bps: link.arriving_bps(),
    }
}

/// Where a viewer's estimate starts and the range it stays in: it starts on the best
/// rendition (a link that cannot carry it shows within a second and the viewer moves down),
/// and never aims far above the best rendition's rate.
fn bounds(renditions: &Renditions) -> rtc::cc::Bounds {
    let top = renditions.top().bitrate() as f64;
    let bottom = renditions.iter().last().map_or(top, |f| f.bitrate() as f64);
    rtc::cc::Bounds {
        start_bps: top * fanout::UP_HEADROOM,
        // Nothing lower can be sent: the pacer must carry at least the lowest rendition.
        min_bps: bottom,
        max_bps: top * 2.0,
    }
}

/// The first 8 characters of a session id, enough to follow it in logs.
pub(crate) fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use RTCPeerConnectionState as S;

    /// A connection whose states the test sets, on a paused clock.
    struct Rig {
        states: watch::Sender<RTCPeerConnectionState>,
        restarted: Arc<tokio::sync::Notify>,
        publisher: fanout::Publisher,
        cancel: CancellationToken,
        verdict: tokio::task::JoinHandle<Option<&'static str>>,
        t0: tokio::time::Instant,
    }

    fn rig() -> Rig {
        let (states, rx) = watch::channel(S::New);
        let restarted = Arc::new(tokio::sync::Notify::new());
        let (publisher, feed) = fanout::channel();
        let cancel = CancellationToken::new();
        let (r, c) = (restarted.clone(), cancel.clone());
        let verdict = tokio::spawn(async move { watch_connection(rx, &r, &feed, &c).await });
        Rig {
            states,
            restarted,
            publisher,
            cancel,
            verdict,
            t0: tokio::time::Instant::now(),
        }
    }

    async fn at(ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    impl Rig {
        /// The verdict, and how long after the start it came (the states, restart and
        /// stream stay open meanwhile: dropping them would be news of their own).
        async fn verdict(self) -> (Option<&'static str>, Duration) {
            let Rig {
                states,
                restarted,
                publisher,
                verdict,
                t0,
                ..
            } = self;
            let v = verdict.await.unwrap();
            drop((states, restarted, publisher));
            (v, t0.elapsed())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_viewer_that_never_connects_is_closed_after_the_connect_timeout() {
        let r = rig();
        r.states.send_replace(S::Connecting);
        assert_eq!(
            r.verdict().await,
            (Some("never connected"), CONNECT_TIMEOUT)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_disconnect_gets_the_grace_and_a_return_within_it_is_forgiven() {
        let r = rig();
        at(100).await;
        r.states.send_replace(S::Connected);
        at(60_000).await; // connected: no deadline however long it lasts
        r.states.send_replace(S::Disconnected);
        at(1_500).await;
        r.states.send_replace(S::Connected); // back within the grace
        at(30_000).await;
        r.states.send_replace(S::Disconnected);
        let (verdict, took) = r.verdict().await;
        assert_eq!(verdict, Some("viewer went silent"));
        assert_eq!(
            took,
            Duration::from_millis(100 + 60_000 + 1_500 + 30_000) + DISCONNECT_GRACE
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failure_ends_at_once_unless_an_ice_restart_is_under_way() {
        let r = rig();
        r.states.send_replace(S::Connected);
        at(1_000).await;
        r.restarted.notify_one();
        at(10).await;
        r.states.send_replace(S::Failed); // expected while restarting
        at(5_000).await;
        r.states.send_replace(S::Connected); // the restart worked
        at(1_000).await;
        r.states.send_replace(S::Failed);
        let (verdict, took) = r.verdict().await;
        assert_eq!(verdict, Some("connection failed"));
        assert_eq!(took, Duration::from_millis(7_010));
    }

    #[tokio::test(start_paused = true)]
    async fn an_ice_restart_gets_a_fresh_connect_timeout() {
        let r = rig();
        r.states.send_replace(S::Connected);
        at(2_000).await;
        r.restarted.notify_one();
        at(10).await;
        r.states.send_replace(S::Disconnected); // no grace deadline while restarting
        let (verdict, took) = r.verdict().await;
        assert_eq!(verdict, Some("viewer went silent"));
        assert_eq!(took, Duration::from_millis(2_000) + CONNECT_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn the_stream_ending_or_a_delete_end_the_watch() {
        let r = rig();
        r.states.send_replace(S::Connected);
        at(500).await;
        r.publisher.end();
        assert_eq!(r.verdict().await.0, Some("stream ended"));
        let r = rig();
        r.states.send_replace(S::Connected);
        r.cancel.cancel();
        assert_eq!(r.verdict().await.0, None);
    }
}
