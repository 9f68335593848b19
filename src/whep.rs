//! Stage 4b: **whep** — viewer sessions (draft-ietf-wish-whep / RFC 9725).
//!
//! A session is born from an SDP offer and lives until the viewer sends DELETE, its
//! connection fails, it never connects, or it goes silent. Each session owns:
//!
//! * a peer connection with one `TrackLocalStaticRTP` (a track binds to one connection);
//! * a *sender* task: takes the shared packets from the stream's [`Feed`], stamps this
//!   viewer's SSRC / payload type / sequence number, and writes them — the only per-viewer
//!   work besides SRTP;
//! * a *feedback* task: turns PLI/FIR from the viewer into a (rate-limited) keyframe request;
//! * a *supervisor* task: watches connection state and closes the session when it should.
//!
//! Closing always goes through [`Sessions::close`], which removes the session from the map,
//! stops its tasks and calls `close()` on the peer connection (dropping one leaks it).

use crate::broadcast::Feed;
use crate::rtc::{self, H264Choice, OfferError, RtcConfig, RtcError};
use rtc_core::media_stream::MediaStreamTrack;
use rtc_core::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast::error::RecvError, watch};
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceConnectionState, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription,
};

use ::rtc as rtc_core;

/// A session that has not connected by then is closed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After ICE reports `Disconnected`, how long a viewer has to come back.
pub const DISCONNECT_GRACE: Duration = Duration::from_secs(2);
/// Packets sent back to back before the sender yields for a millisecond (~60 KB).
const BURST_PACKETS: usize = 50;
/// Longest we wait for our own ICE candidates (host candidates take milliseconds).
const GATHER_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a WHEP request failed. `http` turns each into a status code and plain-text message.
#[derive(Debug, thiserror::Error)]
pub enum WhepError {
    #[error(transparent)]
    Offer(#[from] OfferError),
    #[error("no session {0}; it ended or never existed")]
    UnknownSession(String),
    #[error("no stream named '{name}'; streams here: {known}")]
    UnknownStream { name: String, known: String },
    #[error("stream '{0}' has ended (its input finished)")]
    StreamEnded(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("stream '{name}' is full ({max} viewers); try again later")]
    Full { name: String, max: usize },
    #[error("could not set up the WebRTC session: {0}")]
    Rtc(#[from] RtcError),
}

/// What a viewer gets back for its offer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub session_id: String,
    pub sdp: String,
    pub etag: String,
}

/// One stream viewers can join.
#[derive(Clone)]
pub struct Stream {
    pub name: String,
    /// What the frames come from, as the user wrote it (`pattern`, `screen:0`, ...).
    pub source: String,
    pub feed: Feed,
    viewers: Arc<AtomicUsize>,
}

impl Stream {
    pub fn new(name: impl Into<String>, source: impl Into<String>, feed: Feed) -> Self {
        Self {
            name: name.into(),
            source: source.into(),
            feed,
            viewers: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Viewers currently connected or connecting.
    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }
}

struct Session {
    stream: Stream,
    pc: Arc<dyn PeerConnection>,
    cancel: CancellationToken,
    created: Instant,
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
    max_viewers: Option<usize>,
    streams: Vec<Stream>,
    map: Mutex<HashMap<String, Arc<Session>>>,
    counts: Mutex<SessionCounts>,
    closing: CancellationToken,
}

impl Sessions {
    /// Sessions for `streams`; `max_viewers` caps each stream.
    pub fn new(rtc: RtcConfig, streams: Vec<Stream>, max_viewers: Option<usize>) -> Self {
        Self {
            inner: Arc::new(Inner {
                rtc,
                max_viewers,
                streams,
                map: Mutex::new(HashMap::new()),
                counts: Mutex::new(SessionCounts::default()),
                closing: CancellationToken::new(),
            }),
        }
    }

    pub fn streams(&self) -> &[Stream] {
        &self.inner.streams
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
    pub async fn create(&self, stream: &str, offer_sdp: String) -> Result<Answer, WhepError> {
        if self.inner.closing.is_cancelled() {
            return Err(WhepError::ShuttingDown);
        }
        let stream = self.stream(stream)?.clone();
        if stream.feed.is_ended() {
            return Err(WhepError::StreamEnded(stream.name));
        }
        if let Some(max) = self.inner.max_viewers {
            if stream.viewers() >= max {
                return Err(WhepError::Full {
                    name: stream.name,
                    max,
                });
            }
        }
        let t0 = Instant::now();
        // Refuse what we cannot serve before any socket is bound.
        let choice = rtc::choose_h264(&offer_sdp)?;

        let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
        let (gathered_tx, mut gathered_rx) = watch::channel(false);
        let (ice_tx, ice_rx) = watch::channel(false);
        let handler = Arc::new(Handler {
            state_tx,
            gathered_tx,
            ice_tx,
        });
        let pc = rtc::new_peer_connection(&self.inner.rtc, &choice, handler).await?;
        let setup = negotiate(&pc, &choice, offer_sdp, &stream.name, &mut gathered_rx).await;
        let (answer_sdp, track, ssrc, payload_type) = match setup {
            Ok(v) => v,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };

        let id = random_hex(16);
        let etag = format!("\"{}\"", random_hex(8));
        let session = Arc::new(Session {
            stream: stream.clone(),
            pc,
            cancel: self.inner.closing.child_token(),
            created: Instant::now(),
        });
        lock(&self.inner.map).insert(id.clone(), session.clone());
        tracing::debug!(session = %short(&id), "answered in {:?}", t0.elapsed());
        lock(&self.inner.counts).created += 1;
        metrics::counter!("whepcast_sessions_created_total", "stream" => stream.name.clone())
            .increment(1);
        let watching = stream.viewers.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(
            stream = %stream.name, session = %short(&id),
            "viewer joined ({watching} watching {})", stream.name
        );

        let cancel = session.cancel.clone();
        tokio::spawn(send_media(
            stream.feed.clone(),
            track.clone(),
            (ssrc, payload_type),
            (state_rx.clone(), ice_rx, t0),
            cancel.clone(),
        ));
        tokio::spawn(forward_keyframe_requests(
            track,
            stream.feed.clone(),
            cancel.clone(),
        ));
        tokio::spawn(supervise(
            self.clone(),
            id.clone(),
            state_rx,
            stream.feed.clone(),
            cancel,
        ));

        Ok(Answer {
            session_id: id,
            sdp: answer_sdp,
            etag,
        })
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
        if let Err(e) = session.pc.close().await {
            tracing::debug!("closing peer connection: {e}");
        }
        lock(&self.inner.counts).closed += 1;
        metrics::counter!(
            "whepcast_sessions_closed_total",
            "stream" => session.stream.name.clone(),
            "reason" => reason.to_string()
        )
        .increment(1);
        let left = session.stream.viewers.fetch_sub(1, Ordering::Relaxed) - 1;
        tracing::info!(
            stream = %session.stream.name, session = %short(id),
            "viewer left after {:.1}s ({reason}); {left} watching {}",
            session.created.elapsed().as_secs_f32(), session.stream.name
        );
        true
    }

    /// Closes every session and refuses new ones (shutdown).
    pub async fn close_all(&self) {
        self.inner.closing.cancel();
        let ids: Vec<String> = lock(&self.inner.map).keys().cloned().collect();
        for id in ids {
            self.close(&id, "server shutting down").await;
        }
    }
}

/// Offer → answer on a fresh peer connection. Returns the answer SDP (with every candidate),
/// the track, and the SSRC and payload type to stamp on packets.
async fn negotiate(
    pc: &Arc<dyn PeerConnection>,
    choice: &H264Choice,
    offer_sdp: String,
    stream: &str,
    gathered: &mut watch::Receiver<bool>,
) -> Result<(String, Arc<TrackLocalStaticRTP>, u32, u8), WhepError> {
    let bad = |e: rtc_core::shared::error::Error| OfferError::Malformed(e.to_string());
    let offer = RTCSessionDescription::offer(offer_sdp).map_err(bad)?;
    pc.set_remote_description(offer).await.map_err(bad)?;

    let ssrc = rand::random::<u32>();
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("whepcast-{stream}"),
        format!("video-{}", random_hex(4)),
        stream.to_string(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: rtc::h264_codec(choice).rtp_codec,
            ..Default::default()
        }],
    )));
    let no_h264 = |e: rtc_core::shared::error::Error| {
        OfferError::NoH264(format!("the offer's video section cannot carry it ({e})"))
    };
    let sender = pc
        .add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .map_err(no_h264)?;
    let answer = pc.create_answer(None).await.map_err(no_h264)?;
    pc.set_local_description(answer)
        .await
        .map_err(|e| RtcError::Other(e.to_string()))?;

    // Non-trickle WHEP: the answer must carry every candidate, so wait for gathering.
    let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.wait_for(|done| *done)).await;
    let sdp = pc
        .local_description()
        .await
        .ok_or_else(|| RtcError::Other("no local description after answering".into()))?
        .sdp;

    let params = sender
        .get_parameters()
        .await
        .map_err(|e| RtcError::Other(e.to_string()))?;
    let codec = params
        .rtp_parameters
        .codecs
        .first()
        .ok_or_else(|| OfferError::NoH264("no codec was negotiated".into()))?;
    if !codec
        .rtp_codec
        .sdp_fmtp_line
        .contains("packetization-mode=1")
    {
        return Err(OfferError::NoH264(format!(
            "negotiated '{}' instead",
            codec.rtp_codec.sdp_fmtp_line
        ))
        .into());
    }
    Ok((sdp, track, ssrc, codec.payload_type))
}

/// Sends the stream's packets to one viewer until cancelled or the connection is gone.
///
/// Starts only once the connection is up: packets written before DTLS has keyed SRTP are
/// dropped, and losing the first IDR would cost the viewer a whole keyframe interval.
async fn send_media(
    feed: Feed,
    track: Arc<TrackLocalStaticRTP>,
    (ssrc, payload_type): (u32, u8),
    (mut state, ice, t0): (
        watch::Receiver<RTCPeerConnectionState>,
        watch::Receiver<bool>,
        Instant,
    ),
    cancel: CancellationToken,
) {
    // Ask for the IDR as soon as ICE is up, so encoding it overlaps the DTLS handshake; the
    // frames wait in this viewer's receiver until SRTP is keyed.
    let mut ice = ice;
    tokio::select! {
        _ = cancel.cancelled() => return,
        up = ice.wait_for(|up| *up) => if up.is_err() { return },
    }
    tracing::debug!("ICE connected {:?} after the offer", t0.elapsed());
    let mut frames = feed.subscribe();
    feed.request_keyframe();
    let bytes_sent = metrics::counter!("whepcast_bytes_sent_total");
    let packets_sent = metrics::counter!("whepcast_packets_sent_total");
    tokio::select! {
        _ = cancel.cancelled() => return,
        up = state.wait_for(|s| *s == RTCPeerConnectionState::Connected) => {
            if up.is_err() {
                return;
            }
        }
    }
    tracing::debug!("connected {:?} after the offer", t0.elapsed());
    let mut seq: u16 = rand::random();
    // A decoder can only start at an IDR; until one arrives, P-frames are useless to it.
    let mut need_keyframe = true;
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => return,
            f = frames.recv() => f,
        };
        let frame = match frame {
            Ok(f) => f,
            Err(RecvError::Lagged(n)) => {
                metrics::counter!("whepcast_viewer_frames_skipped_total").increment(n);
                tracing::debug!("viewer fell {n} frames behind; resyncing on next keyframe");
                need_keyframe = true;
                feed.request_keyframe();
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if need_keyframe {
            if !frame.keyframe {
                continue;
            }
            need_keyframe = false;
            tracing::debug!(
                "keyframe {} going out {:?} after the offer",
                frame.number,
                t0.elapsed()
            );
        }
        for (i, shared) in frame.packets.iter().enumerate() {
            if i > 0 && i % BURST_PACKETS == 0 {
                // A big frame (an IDR of a detailed screen) would otherwise leave in one burst
                // of hundreds of packets and overflow the receive buffers on its way; spread
                // it in bursts of BURST_PACKETS, 1 ms apart. Small frames go out at once.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let mut packet = shared.clone();
            packet.header.ssrc = ssrc;
            packet.header.payload_type = payload_type;
            packet.header.sequence_number = seq;
            seq = seq.wrapping_add(1);
            let len = packet.payload.len() as u64 + 12;
            // The write waits when the connection's queue is full; a session closed meanwhile
            // must not leave this task (and its receiver, which keeps the encoder busy) behind.
            let written = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                r = track.write_rtp(packet) => r,
            };
            // Fails only once the connection is closed; the supervisor reaps it.
            if written.is_err() {
                return;
            }
            bytes_sent.increment(len);
            packets_sent.increment(1);
        }
    }
}

/// Turns the viewer's PLI/FIR into keyframe requests. Ends with the session (or when the
/// track is unbound), so it never outlives it holding the track.
async fn forward_keyframe_requests(
    track: Arc<TrackLocalStaticRTP>,
    feed: Feed,
    cancel: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            e = track.poll() => e,
        };
        let Some(event) = event else { return };
        if let TrackLocalEvent::OnRtcpPacket(packets) = event {
            if packets
                .iter()
                .any(|p| rtc::keyframe::is_keyframe_request(p.as_ref()))
            {
                feed.request_keyframe();
            }
        }
    }
}

/// Closes the session when its connection fails, never comes up, or stays disconnected.
async fn supervise(
    sessions: Sessions,
    id: String,
    mut states: watch::Receiver<RTCPeerConnectionState>,
    feed: Feed,
    cancel: CancellationToken,
) {
    let mut deadline = Some(tokio::time::Instant::now() + CONNECT_TIMEOUT);
    let mut ever_connected = false;
    let reason = loop {
        let timer = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return, // closed by DELETE or shutdown
            _ = feed.ended() => break "stream ended",
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
                        deadline = None;
                    }
                    RTCPeerConnectionState::Disconnected => {
                        deadline = Some(tokio::time::Instant::now() + DISCONNECT_GRACE);
                    }
                    RTCPeerConnectionState::Failed => break "connection failed",
                    RTCPeerConnectionState::Closed => break "connection closed",
                    _ => {}
                }
            }
        }
    };
    sessions.close(&id, reason).await;
}

/// Peer connection callbacks run on the connection's driver: only forward into channels.
struct Handler {
    state_tx: watch::Sender<RTCPeerConnectionState>,
    gathered_tx: watch::Sender<bool>,
    /// Set once ICE has connected (before DTLS).
    ice_tx: watch::Sender<bool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
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
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these short locks cannot leave the map inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `n` random bytes as hex (session ids: 128 bits, unguessable).
fn random_hex(n: usize) -> String {
    use std::fmt::Write;
    (0..n).fold(String::with_capacity(n * 2), |mut s, _| {
        let _ = write!(s, "{:02x}", rand::random::<u8>());
        s
    })
}

/// The first 8 characters of a session id, enough to follow it in logs.
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}
