//! Stage 4b: **whep** — viewer sessions (draft-ietf-wish-whep, which takes its HTTP rules
//! for sessions, PATCH and Link headers from WHIP, RFC 9725).
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
//! * a *data channel* task when the viewer opened one ([`datachannel`]): frame capture
//!   times, clock pings, chat.
//!
//! `PATCH` on a session ([`Sessions::patch`]) trickles the viewer's candidates or restarts
//! ICE, with bodies in [`sdpfrag`] format.
//!
//! Closing always goes through `Sessions::close`, which removes the session from the map,
//! stops its tasks and calls `close()` on the peer connection (dropping one leaks it).

pub mod datachannel;
pub mod sdpfrag;

pub use datachannel::unix_ms;
pub use sdpfrag::{Fragment, FragmentError};

use crate::broadcast::Feed;
use crate::rtc::{self, H264Choice, OfferError, PortLease, RtcConfig, RtcError};
use bytes::Bytes;
use rtc_core::media_stream::MediaStreamTrack;
use rtc_core::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, broadcast::error::RecvError, mpsc, watch};
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::DataChannel;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::RTCIceCandidateInit;
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
/// Most candidates a viewer may trickle per ICE generation; a browser has a handful.
const MAX_TRICKLED: usize = 100;
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
    #[error("stream '{0}' has ended (its input finished)")]
    StreamEnded(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("stream '{name}' is full ({max} viewers); try again later")]
    Full { name: String, max: usize },
    #[error("could not set up the WebRTC session: {0}")]
    Rtc(#[from] RtcError),
    #[error("bad trickle-ice-sdpfrag: {0}")]
    Fragment(#[from] FragmentError),
    #[error("an ICE restart (new ice-ufrag/ice-pwd) needs If-Match: \"*\" or the session's current ETag")]
    PreconditionRequired,
    #[error("If-Match {given} does not match the session's ETag {current}; it changed with an ICE restart")]
    PreconditionFailed { given: String, current: String },
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
    /// What the frames come from, as the user wrote it (`pattern`, `screen:0`, ...).
    pub source: String,
    pub feed: Feed,
    viewers: Arc<AtomicUsize>,
    /// Chat lines and audience changes for the viewers' data channels (JSON).
    room: broadcast::Sender<Arc<str>>,
}

impl Stream {
    pub fn new(name: impl Into<String>, source: impl Into<String>, feed: Feed) -> Self {
        Self {
            name: name.into(),
            source: source.into(),
            feed,
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

struct Session {
    stream: Stream,
    pc: Arc<dyn PeerConnection>,
    handler: Arc<Handler>,
    cancel: CancellationToken,
    created: Instant,
    /// Changes with every ICE restart; `PATCH` is checked against it.
    etag: Mutex<String>,
    /// The viewer's current ICE username fragment: a `PATCH` with another one restarts ICE.
    remote_ufrag: Mutex<Option<String>>,
    /// One `PATCH` at a time per session.
    patching: tokio::sync::Mutex<()>,
    /// Candidates trickled in this ICE generation (capped: each one costs checks).
    trickled: AtomicUsize,
    /// Told when the viewer restarts ICE, so the supervisor gives it time to reconnect.
    restarted: Arc<tokio::sync::Notify>,
    /// The UDP port this session's sockets use, when ports come from a range.
    _port: Option<PortLease>,
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
        let (channel_tx, channel_rx) = mpsc::channel(1);
        let handler = Arc::new(Handler {
            state_tx,
            gathered_tx,
            ice_tx,
            channel_tx,
        });
        let remote_ufrag = sdpfrag::ufrag_of(&offer_sdp);
        let (pc, port) = rtc::new_peer_connection(&self.inner.rtc, &choice, handler.clone())
            .await
            .inspect_err(|e| {
                if matches!(e, RtcError::NoPorts(_)) {
                    metrics::counter!("whepcast_sessions_refused_total", "reason" => "no UDP port")
                        .increment(1);
                }
            })?;
        let setup = negotiate(
            &pc,
            &choice,
            offer_sdp,
            &stream.name,
            &mut gathered_rx,
            &self.inner.rtc,
        )
        .await;
        let (answer_sdp, track, stamp) = match setup {
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
            handler,
            cancel: self.inner.closing.child_token(),
            created: Instant::now(),
            etag: Mutex::new(etag.clone()),
            remote_ufrag: Mutex::new(remote_ufrag),
            patching: tokio::sync::Mutex::new(()),
            trickled: AtomicUsize::new(0),
            restarted: Arc::new(tokio::sync::Notify::new()),
            _port: port,
        });
        lock(&self.inner.map).insert(id.clone(), session.clone());
        tracing::debug!(session = %short(&id), "answered in {:?}", t0.elapsed());
        lock(&self.inner.counts).created += 1;
        metrics::counter!("whepcast_sessions_created_total", "stream" => stream.name.clone())
            .increment(1);
        let watching = stream.viewers.fetch_add(1, Ordering::Relaxed) + 1;
        stream.announce_viewers(watching);
        tracing::info!(
            stream = %stream.name, session = %short(&id),
            "viewer joined ({watching} watching {})", stream.name
        );

        let cancel = session.cancel.clone();
        tokio::spawn(send_media(
            stream.feed.clone(),
            track.clone(),
            stamp,
            (state_rx.clone(), ice_rx, t0),
            cancel.clone(),
        ));
        tokio::spawn(forward_keyframe_requests(
            track,
            stream.feed.clone(),
            cancel.clone(),
        ));
        tokio::spawn(datachannel::serve(
            datachannel::Viewer {
                session: short(&id).to_owned(),
                name: format!("viewer-{}", random_hex(2)),
                stream: stream.clone(),
            },
            channel_rx,
            cancel.clone(),
        ));
        tokio::spawn(supervise(
            self.clone(),
            id.clone(),
            (state_rx, session.restarted.clone()),
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
        // A PATCH in progress finishes before the connection goes (it then sees the cancel).
        let _no_patch = session.patching.lock().await;
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
        session.stream.announce_viewers(left);
        tracing::info!(
            stream = %session.stream.name, session = %short(id),
            "viewer left after {:.1}s ({reason}); {left} watching {}",
            session.created.elapsed().as_secs_f32(), session.stream.name
        );
        release_memory_soon();
        true
    }

    /// `PATCH` with a trickle-ice-sdpfrag body: adds the viewer's candidates, or restarts
    /// ICE when the fragment carries new credentials (WHIP, RFC 9725 section 4.3).
    ///
    /// `if_match` is the request's `If-Match`. A restart needs one (`"*"` or the current
    /// ETag), else [`WhepError::PreconditionRequired`]; a trickle may omit it (clients such
    /// as the `whip-whep` library only learn the ETag from a restart), but a stale one is
    /// [`WhepError::PreconditionFailed`].
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
        let _one_at_a_time = session.patching.lock().await;
        if session.cancel.is_cancelled() {
            // Closed (DELETE, reaped) while this PATCH waited its turn.
            return Err(WhepError::UnknownSession(short(id).to_string()));
        }
        let frag = Fragment::parse(body)?;
        // Check every candidate before adding any: a bad one must not leave the others in
        // the agent uncounted.
        frag.check_candidates()?;
        // New credentials mean a new ICE session (RFC 8840 4.4).
        let restart = frag.ufrag.is_some() && frag.ufrag != *lock(&session.remote_ufrag);
        check_if_match(if_match, restart, &lock(&session.etag))?;
        if restart {
            let (fragment, etag) = self.restart_ice(&session, &frag).await?;
            Ok(Patched::Restarted { fragment, etag })
        } else {
            let total = session.trickled.load(Ordering::Relaxed) + frag.candidates.len();
            if total > MAX_TRICKLED {
                return Err(FragmentError::TooManyTrickled(MAX_TRICKLED).into());
            }
            let added = add_candidates(&session.pc, &frag).await;
            session.trickled.fetch_add(added, Ordering::Relaxed);
            Ok(Patched::Trickled { added })
        }
    }

    /// ICE restart as answerer: the viewer's offer with the fragment's credentials, a new
    /// answer (new local credentials, candidates gathered again), the new ETag.
    async fn restart_ice(
        &self,
        session: &Session,
        frag: &Fragment,
    ) -> Result<(String, String), WhepError> {
        let (Some(ufrag), Some(pwd)) = (&frag.ufrag, &frag.pwd) else {
            return Err(FragmentError::HalfCredentials.into());
        };
        let pc = &session.pc;
        let other = |e: rtc_core::shared::error::Error| RtcError::Other(e.to_string());
        let offer = pc
            .remote_description()
            .await
            .ok_or_else(|| RtcError::Other("the session has no offer".into()))?;
        let offer = sdpfrag::restarted_offer(&offer.sdp, ufrag, pwd);
        let mut gathered = session.handler.gathered_tx.subscribe();
        session.handler.gathered_tx.send_replace(false);
        let bad = |e: rtc_core::shared::error::Error| OfferError::Malformed(e.to_string());
        pc.set_remote_description(RTCSessionDescription::offer(offer).map_err(bad)?)
            .await
            .map_err(bad)?;
        let answer = pc.create_answer(None).await.map_err(other)?;
        pc.set_local_description(answer).await.map_err(other)?;
        // From here the agent uses the new credentials: so does the session, whatever follows.
        let etag = format!("\"{}\"", random_hex(8));
        *lock(&session.etag) = etag.clone();
        *lock(&session.remote_ufrag) = Some(ufrag.clone());
        // A restart is how a viewer rescues a broken path: give it time to reconnect.
        session.restarted.notify_one();
        let _ = tokio::time::timeout(
            self.inner.rtc.gather_timeout,
            gathered.wait_for(|done| *done),
        )
        .await;
        let local = pc
            .local_description()
            .await
            .ok_or_else(|| RtcError::Other("no local description after the restart".into()))?;
        let local = rtc::advertise_candidates(&local.sdp, &self.inner.rtc.public_ips);
        let (m_line, mid) = sdpfrag::first_media(&local)
            .ok_or_else(|| RtcError::Other("the answer has no media section".into()))?;
        let fragment = sdpfrag::IceParams::from_sdp(&local).to_fragment(&m_line, &mid);
        // A new ICE generation: its trickle count starts from the fragment's candidates.
        let added = add_candidates(pc, frag).await;
        session.trickled.store(added, Ordering::Relaxed);
        metrics::counter!("whepcast_ice_restarts_total").increment(1);
        tracing::info!(stream = %session.stream.name, "ICE restarted");
        Ok((fragment, etag))
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

/// Checks a `PATCH`'s `If-Match` against the session's ETag `current` (see
/// [`Sessions::patch`]); `restart` when the fragment restarts ICE.
pub(crate) fn check_if_match(
    if_match: Option<&str>,
    restart: bool,
    current: &str,
) -> Result<(), WhepError> {
    match if_match.map(str::trim) {
        None if restart => Err(WhepError::PreconditionRequired),
        // `"*"` quoted is strictly an ETag, but some clients send it for the wildcard.
        None | Some("*") | Some("\"*\"") => Ok(()),
        Some(given) => {
            // Strong comparison (RFC 9110 13.1.1): a weak tag never matches.
            if given.split(',').any(|t| t.trim() == current) {
                Ok(())
            } else {
                Err(WhepError::PreconditionFailed {
                    given: given.chars().take(40).collect(),
                    current: current.to_owned(),
                })
            }
        }
    }
}

/// Adds a fragment's (already checked) candidates to the session's ICE agent, and passes on
/// end-of-candidates. Returns how many the agent took.
async fn add_candidates(pc: &Arc<dyn PeerConnection>, frag: &Fragment) -> usize {
    let mut added = 0;
    for (mid, candidate) in &frag.candidates {
        let init = RTCIceCandidateInit {
            candidate: candidate.clone(),
            sdp_mid: mid.clone(),
            username_fragment: frag.ufrag.clone(),
            ..Default::default()
        };
        match pc.add_ice_candidate(init).await {
            Ok(()) => added += 1,
            Err(e) => tracing::debug!("candidate not added: {e}"),
        }
    }
    if frag.end_of_candidates {
        // An empty candidate is end-of-candidates (RFC 8838).
        let _ = pc.add_ice_candidate(RTCIceCandidateInit::default()).await;
    }
    metrics::counter!("whepcast_trickle_candidates_total").increment(added as u64);
    added
}

/// What one viewer's packets carry that the shared ones do not.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    ssrc: u32,
    payload_type: u8,
    /// The id the viewer gave the playout-delay header extension, if it offered it.
    playout_delay: Option<u8>,
}

/// Playout delay "min 0, max 0" (RTP header extension, 12 + 12 bits in 10 ms units): render
/// each frame as soon as it is decoded, no smoothing buffer. Chromium keeps the last value
/// it saw, so it goes on the first packet of every keyframe, which every viewer starts with.
const PLAYOUT_DELAY_NONE: [u8; 3] = [0, 0, 0];

/// Offer → answer on a fresh peer connection. Returns the answer SDP (with every candidate),
/// the track, and what to stamp on its packets.
async fn negotiate(
    pc: &Arc<dyn PeerConnection>,
    choice: &H264Choice,
    offer_sdp: String,
    stream: &str,
    gathered: &mut watch::Receiver<bool>,
    config: &RtcConfig,
) -> Result<(String, Arc<TrackLocalStaticRTP>, Stamp), WhepError> {
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

    // The server cannot trickle in WHEP: the answer must carry every candidate, so wait for
    // gathering (bounded: a STUN/TURN server that does not answer must not hold the viewer).
    let gathered_in_time =
        tokio::time::timeout(config.gather_timeout, gathered.wait_for(|done| *done))
            .await
            .is_ok();
    if !gathered_in_time {
        tracing::warn!(
            "ICE gathering took over {:?} (is every --stun/--turn server reachable?); answering with the candidates found so far",
            config.gather_timeout
        );
    }
    let sdp = pc
        .local_description()
        .await
        .ok_or_else(|| RtcError::Other("no local description after answering".into()))?
        .sdp;
    let sdp = rtc::advertise_candidates(&sdp, &config.public_ips);

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
    let playout_delay = params
        .rtp_parameters
        .header_extensions
        .iter()
        .find(|e| e.uri == rtc::PLAYOUT_DELAY_URI)
        .and_then(|e| u8::try_from(e.id).ok());
    let stamp = Stamp {
        ssrc,
        payload_type: codec.payload_type,
        playout_delay,
    };
    Ok((sdp, track, stamp))
}

/// Sends the stream's packets to one viewer until cancelled or the connection is gone.
///
/// Starts only once the connection is up: packets written before DTLS has keyed SRTP are
/// dropped, and losing the first IDR would cost the viewer a whole keyframe interval.
async fn send_media(
    feed: Feed,
    track: Arc<TrackLocalStaticRTP>,
    stamp: Stamp,
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
            packet.header.ssrc = stamp.ssrc;
            packet.header.payload_type = stamp.payload_type;
            if let (0, true, Some(id)) = (i, frame.keyframe, stamp.playout_delay) {
                // An error (an id this header form cannot carry) only loses the hint.
                let _ = packet
                    .header
                    .set_extension(id, Bytes::from_static(&PLAYOUT_DELAY_NONE));
            }
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
    (mut states, restarted): (
        watch::Receiver<RTCPeerConnectionState>,
        Arc<tokio::sync::Notify>,
    ),
    feed: Feed,
    cancel: CancellationToken,
) {
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
            _ = cancel.cancelled() => return, // closed by DELETE or shutdown
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
    sessions.close(&id, reason).await;
}

/// Peer connection callbacks run on the connection's driver: only forward into channels.
struct Handler {
    state_tx: watch::Sender<RTCPeerConnectionState>,
    gathered_tx: watch::Sender<bool>,
    /// Set once ICE has connected (before DTLS).
    ice_tx: watch::Sender<bool>,
    /// Hands the viewer's data channel to its task (holding it here would keep the peer
    /// connection alive: the channel refers to it).
    channel_tx: mpsc::Sender<Arc<dyn DataChannel>>,
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
    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        // Only the first is served; later ones are dropped here.
        let _ = self.channel_tx.try_send(channel);
    }
}

/// A closed session's buffers (jitter and NACK histories, SCTP, DTLS) go back to glibc's
/// arenas, which keep them resident: after a burst of abandoned viewers RSS stayed ~10 MB up.
/// Shortly after sessions close (their tasks end moments later), hand the free pages back to
/// the OS. Coalesced: at most one trim per second, each well under a millisecond.
fn release_memory_soon() {
    static PENDING: AtomicBool = AtomicBool::new(false);
    if PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        PENDING.store(false, Ordering::Release);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns the allocator's own free pages to the kernel.
        unsafe {
            libc::malloc_trim(0);
        }
    });
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
