//! A publishing session that lasts: offer, POST, answer, send the stream; restart ICE when
//! the path fails; POST again (with backoff) when the endpoint is gone or restarted; DELETE
//! the session when told to stop or the stream ends.
//!
//! The endpoint's feedback drives the stream: PLI/FIR ask the pipeline for an IDR (which
//! rate-limits them), and with [`PublishConfig::follow_link`] the encoder's bit rate follows
//! the link estimate (GCC from transport-wide feedback, or loss and REMB), as OBS does: the
//! endpoint is then the only receiver, so the encoder itself can adapt.

use super::client::{Client, Patched, Session, WhipError};
use crate::fanout::{self, Renditions};
use crate::rtc::{self, cc, RtcConfig, RtcError};
use crate::whep::sdpfrag::{self, Fragment, IceParams};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateInit,
    RTCIceConnectionState, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
};

/// A session that has not connected by then is given up and published again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an ICE restart may take to bring the path back.
const RESTART_TIMEOUT: Duration = Duration::from_secs(4);
/// Inbound silence after which the path counts as lost: short, since restarting costs one
/// PATCH and the endpoint may have restarted (it then forgets us and goes silent).
const SILENCE: Duration = Duration::from_millis(1500);
/// Without a connection this long after the answer, try the endpoint's `Link` servers.
const TRY_LINK_SERVERS_AFTER: Duration = Duration::from_secs(3);
/// Waits between attempts: from the first, doubling to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A session that stayed up this long resets the backoff.
const STABLE: Duration = Duration::from_secs(10);
/// How often the encoder's rate is set from the link estimate.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// Following the link, a rendition is kept while the estimate is at least this share of its
/// rate (its encoder spends what the link carries); below, a smaller picture is sent.
const FOLLOW_FLOOR: f64 = 0.6;

/// What publishing needs besides the stream.
#[derive(Clone)]
pub struct PublishConfig {
    /// The stream's name (the offer's media stream id).
    pub name: String,
    /// Our side of the peer connection: local addresses, our own STUN/TURN servers.
    pub rtc: RtcConfig,
    /// Whether the encoder's rate follows this link (only when nobody else watches).
    pub follow_link: bool,
}

/// Why one attempt ended without an error.
enum Ended {
    /// Told to stop (Ctrl-C, SIGTERM, the server shutting down).
    Cancelled,
    /// The stream has no more frames.
    InputOver,
    /// The path failed and could not be restarted, or the endpoint forgot the session.
    Lost { connected_for: Option<Duration> },
}

/// Publishes `renditions` to the endpoint until `cancel` or the end of the stream.
/// Returns an error only when retrying cannot help (a refused token, a refused offer).
pub async fn publish(
    client: Client,
    renditions: Renditions,
    config: PublishConfig,
    cancel: CancellationToken,
) -> Result<(), WhipError> {
    let mut backoff = BACKOFF_FIRST;
    let mut attempt = 0u32;
    // Whether the endpoint ever took our offer (and so our token).
    let mut published = false;
    loop {
        attempt += 1;
        let wait = match session(&client, &renditions, &config, &cancel).await {
            Ok(Ended::Cancelled | Ended::InputOver) => return Ok(()),
            Ok(Ended::Lost { connected_for }) => {
                published = true;
                if connected_for.is_some_and(|d| d >= STABLE) {
                    backoff = BACKOFF_FIRST;
                    attempt = 0;
                }
                // Straight back: the endpoint is likely there (it restarted, or the path
                // changed); failures from here on back off.
                Duration::ZERO
            }
            // A token the endpoint took before is not wrong now: some servers (Janus's
            // WHIP front) answer 403 while they still hold our previous session.
            Err(e @ WhipError::Unauthorized { status: 403, .. }) if published => {
                let wait = backoff;
                tracing::warn!(
                    "publishing to {}: attempt {attempt} refused ({e}); it took this token before, retrying in {:.1}s",
                    client.endpoint(),
                    wait.as_secs_f32()
                );
                backoff = (backoff * 2).min(BACKOFF_MAX);
                jitter(wait)
            }
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => {
                let wait = e.retry_after().unwrap_or(backoff).max(backoff / 2);
                tracing::warn!(
                    "publishing to {}: attempt {attempt} failed: {e}; retrying in {:.1}s",
                    client.endpoint(),
                    wait.as_secs_f32()
                );
                backoff = (backoff * 2).min(BACKOFF_MAX);
                jitter(wait)
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = renditions.top().ended() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// `d` give or take 20 %, so publishers that lost one endpoint do not all come back at once.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.8 + rand::random::<f64>() * 0.4)
}

/// One session: set up, send until it ends, clean up (DELETE, close) whatever happened.
async fn session(
    client: &Client,
    renditions: &Renditions,
    config: &PublishConfig,
    cancel: &CancellationToken,
) -> Result<Ended, WhipError> {
    let (handler, mut events) = Handler::pair();
    let link = Arc::new(cc::Link::default());
    let mut rtc_config = config.rtc.clone();
    rtc_config.disconnected_after = SILENCE;
    let choice = rtc::publish::h264_offer();
    let (pc, _port) = rtc::new_peer_connection(
        &rtc_config,
        &choice,
        rtc::Role::Offer,
        handler,
        &link,
        bounds(renditions, config.follow_link),
    )
    .await
    .map_err(local)?;
    let result = run(
        client,
        renditions,
        config,
        &rtc_config,
        cancel,
        &pc,
        &link,
        &mut events,
    )
    .await;
    if let Err(e) = pc.close().await {
        tracing::debug!("closing the publishing connection: {e}");
    }
    result
}

/// The session on a built connection (the caller closes it).
#[allow(clippy::too_many_arguments)]
async fn run(
    client: &Client,
    renditions: &Renditions,
    config: &PublishConfig,
    rtc_config: &RtcConfig,
    cancel: &CancellationToken,
    pc: &Arc<dyn PeerConnection>,
    link: &Arc<cc::Link>,
    events: &mut Events,
) -> Result<Ended, WhipError> {
    let t0 = Instant::now();
    let offered = rtc::publish::offer(pc, &config.name, &mut events.gathered, rtc_config)
        .await
        .map_err(local)?;
    let mut session = client.post(&offered.sdp).await?;
    let accepted = match rtc::publish::accept(pc, session.answer.clone()).await {
        Ok(a) => a,
        Err(e) => {
            let _ = client.delete(&session.url).await;
            return Err(WhipError::Rejected {
                status: 201,
                message: format!("its answer cannot be used: {e}"),
            });
        }
    };
    link.set_twcc(accepted.twcc);
    if !*events.gathered.borrow() {
        // Gathering outlasted the offer (a slow STUN/TURN server): trickle the rest.
        tokio::spawn(trickle_late(
            client.clone(),
            pc.clone(),
            events.gathered.clone(),
            session.clone(),
            offered.sdp.clone(),
            cancel.child_token(),
        ));
    }
    tracing::info!(
        "publishing to {}: session {} ({}), connecting",
        client.endpoint(),
        session.url.path(),
        if accepted.twcc {
            "transport-wide feedback"
        } else {
            "REMB and reports"
        }
    );

    let media = cancel.child_token();
    let _stop_media = media.clone().drop_guard();
    let viewing = Arc::new(fanout::Viewing::default());
    let (sent, _) = broadcast::channel(1);
    let reader = link.clone();
    let follow = config.follow_link;
    tokio::spawn(fanout::send(
        renditions.clone(),
        fanout::Viewer {
            track: offered.track.clone(),
            stamp: fanout::Stamp {
                ssrc: offered.ssrc,
                payload_type: accepted.payload_type,
                playout_delay: None,
            },
            ready: fanout::Readiness {
                ice_up: events.ice_up.clone(),
                connected: events.connected.clone(),
                since: t0,
            },
            preference: fanout::Preference::default(),
            link: Box::new(move || {
                let mut reading = crate::whep::reading(&reader);
                if follow {
                    // The encoder follows the estimate down to FOLLOW_FLOOR of a rendition's
                    // rate before a smaller picture is worth it.
                    reading.estimate_bps = (reading.estimate_bps as f64 / FOLLOW_FLOOR) as u64;
                }
                reading
            }),
            viewing: viewing.clone(),
            sent,
        },
        media.clone(),
    ));
    let (keyframes, on) = (renditions.clone(), viewing.clone());
    tokio::spawn(rtc::keyframe::forward(
        offered.track,
        media.clone(),
        move || {
            if let Some(f) = keyframes.get(on.current()) {
                f.request_keyframe();
            }
        },
    ));
    if config.follow_link {
        tokio::spawn(follow_link(
            renditions.clone(),
            link.clone(),
            viewing.clone(),
            media.clone(),
        ));
    }

    let ended = supervise(
        client,
        renditions,
        rtc_config,
        cancel,
        pc,
        events,
        &mut session,
    )
    .await;
    if config.follow_link {
        for f in renditions.iter() {
            f.follow_link(0);
        }
    }
    if matches!(ended, Ok(Ended::Cancelled | Ended::InputOver)) || ended.is_err() {
        // Free the endpoint's session now rather than when its ICE times out.
        match tokio::time::timeout(Duration::from_secs(3), client.delete(&session.url)).await {
            Ok(Ok(())) => tracing::info!("publishing session {} deleted", session.url.path()),
            Ok(Err(e)) => tracing::warn!("DELETE of the publishing session failed: {e}"),
            Err(_) => tracing::warn!("DELETE of the publishing session timed out"),
        }
    } else {
        // Lost: the endpoint may have forgotten it, but tell it in case it has not.
        let (c, url) = (client.clone(), session.url.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(3), c.delete(&url)).await;
        });
    }
    ended
}

/// Watches the connection until the session should end; restarts ICE when the path fails.
async fn supervise(
    client: &Client,
    renditions: &Renditions,
    rtc_config: &RtcConfig,
    cancel: &CancellationToken,
    pc: &Arc<dyn PeerConnection>,
    events: &mut Events,
    session: &mut Session,
) -> Result<Ended, WhipError> {
    let answered = Instant::now();
    let mut connected_at: Option<Instant> = None;
    let mut deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    let mut link_servers_tried = session.ice_servers.is_empty();
    let lost = |at: Option<Instant>| Ended::Lost {
        connected_for: at.map(|t| t.elapsed()),
    };
    loop {
        let link_timer = async {
            if link_servers_tried || connected_at.is_some() {
                std::future::pending().await
            } else {
                tokio::time::sleep_until((answered + TRY_LINK_SERVERS_AFTER).into()).await
            }
        };
        let broken = tokio::select! {
            _ = cancel.cancelled() => return Ok(Ended::Cancelled),
            _ = renditions.top().ended() => return Ok(Ended::InputOver),
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!("publishing: no connection to the endpoint within {CONNECT_TIMEOUT:?}");
                return Ok(lost(connected_at));
            }
            _ = link_timer => {
                // Our own candidates did not reach the endpoint: use its STUN/TURN servers.
                link_servers_tried = true;
                tracing::info!(
                    "publishing: not connected after {TRY_LINK_SERVERS_AFTER:?}; trying the endpoint's {} ICE server(s)",
                    session.ice_servers.len()
                );
                let current = pc.get_configuration().await;
                let with_links = RTCConfigurationBuilder::new()
                    .with_certificates(current.certificates().to_vec())
                    .with_ice_servers(
                        rtc_config
                            .ice_servers
                            .iter()
                            .chain(&session.ice_servers)
                            .filter_map(rtc::IceServer::for_agent)
                            .collect(),
                    )
                    .build();
                if let Err(e) = pc.set_configuration(with_links).await {
                    tracing::warn!("cannot use the endpoint's ICE servers: {e}");
                    continue;
                }
                true
            }
            changed = events.state.changed() => {
                if changed.is_err() {
                    return Ok(lost(connected_at));
                }
                let state = *events.state.borrow_and_update();
                match state {
                    RTCPeerConnectionState::Connected => {
                        if connected_at.is_none() {
                            tracing::info!(
                                "publishing to {}: connected in {:.0} ms",
                                client.endpoint(),
                                answered.elapsed().as_secs_f64() * 1000.0
                            );
                        }
                        connected_at.get_or_insert_with(Instant::now);
                        deadline = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
                        false
                    }
                    RTCPeerConnectionState::Disconnected | RTCPeerConnectionState::Failed => true,
                    RTCPeerConnectionState::Closed => return Ok(lost(connected_at)),
                    _ => false,
                }
            }
        };
        if !broken {
            continue;
        }
        tracing::warn!("publishing: the path to the endpoint failed; restarting ICE");
        match restart_ice(client, rtc_config, pc, events, session).await {
            Ok(()) => {
                deadline = tokio::time::Instant::now() + RESTART_TIMEOUT;
                metrics::counter!("whepcast_publish_ice_restarts_total").increment(1);
            }
            Err(e) => {
                tracing::warn!("publishing: ICE restart refused ({e}); publishing anew");
                return Ok(lost(connected_at));
            }
        }
    }
}

/// ICE restart as offerer (RFC 9725 section 4.3.2): new credentials and candidates, PATCH
/// with `If-Match: "*"`, apply the endpoint's new credentials and candidates.
async fn restart_ice(
    client: &Client,
    rtc_config: &RtcConfig,
    pc: &Arc<dyn PeerConnection>,
    events: &mut Events,
    session: &mut Session,
) -> Result<(), WhipError> {
    pc.restart_ice()
        .await
        .map_err(|e| local(RtcError::Setup(e)))?;
    events.gathered_tx.send_replace(false);
    let offer = rtc::publish::make_offer(pc, &mut events.gathered, rtc_config)
        .await
        .map_err(local)?;
    let (m_line, mid) = sdpfrag::first_media(&offer).ok_or_else(|| local(RtcError::NoMedia))?;
    let fragment = IceParams::from_sdp(&offer).to_fragment(&m_line, &mid);
    let Patched::Restarted { fragment, etag } = client.patch(&session.url, &fragment, "*").await?
    else {
        return Err(WhipError::Protocol(
            "the endpoint took the restart PATCH without answering new credentials".into(),
        ));
    };
    let theirs = Fragment::parse(fragment.as_bytes())
        .map_err(|e| WhipError::Protocol(format!("its restart fragment: {e}")))?;
    let (Some(ufrag), Some(pwd)) = (&theirs.ufrag, &theirs.pwd) else {
        return Err(WhipError::Protocol(
            "its restart fragment has no ice-ufrag/ice-pwd".into(),
        ));
    };
    let answer = sdpfrag::restarted_offer(&session.answer, ufrag, pwd);
    let desc = RTCSessionDescription::answer(answer.clone())
        .map_err(|e| WhipError::Protocol(format!("its restart answer: {e}")))?;
    pc.set_remote_description(desc)
        .await
        .map_err(|e| WhipError::Protocol(format!("its restart answer: {e}")))?;
    for (mid, candidate) in &theirs.candidates {
        let init = RTCIceCandidateInit {
            candidate: candidate.clone(),
            sdp_mid: mid.clone(),
            username_fragment: Some(ufrag.clone()),
            ..Default::default()
        };
        if let Err(e) = pc.add_ice_candidate(init).await {
            tracing::debug!("endpoint candidate not added: {e}");
        }
    }
    let _ = pc.add_ice_candidate(RTCIceCandidateInit::default()).await;
    session.answer = answer;
    if etag.is_some() {
        session.etag = etag;
    }
    Ok(())
}

/// How long late candidates are waited for.
const TRICKLE_WAIT: Duration = Duration::from_secs(10);

/// Once gathering completes, PATCHes the candidates the offer did not carry (RFC 9725
/// section 4.3.1: `If-Match` with the session's ETag). An endpoint that takes no trickle
/// answers 4xx: logged once, not an error (the offer's candidates may be enough).
async fn trickle_late(
    client: Client,
    pc: Arc<dyn PeerConnection>,
    mut gathered: watch::Receiver<bool>,
    session: Session,
    offer: String,
    stop: CancellationToken,
) {
    let done = tokio::select! {
        _ = stop.cancelled() => return,
        r = tokio::time::timeout(TRICKLE_WAIT, gathered.wait_for(|d| *d)) => r.is_ok(),
    };
    let Some(local) = pc.local_description().await else {
        return;
    };
    let Some(fragment) = late_candidates(&offer, &local.sdp, done) else {
        return;
    };
    let tag = session.etag.as_deref().unwrap_or("*");
    match client.patch(&session.url, &fragment, tag).await {
        Ok(_) => tracing::info!("publishing: trickled the candidates gathered after the offer"),
        Err(e) => tracing::info!("publishing: the endpoint took no trickled candidates ({e})"),
    }
}

/// The trickle fragment for the candidates of `local` that `offer` did not carry (with
/// end-of-candidates when gathering is `done`), or `None` when there are none.
pub fn late_candidates(offer: &str, local: &str, done: bool) -> Option<String> {
    let sent = IceParams::from_sdp(offer);
    let now = IceParams::from_sdp(local);
    let late: Vec<String> = now
        .candidates
        .into_iter()
        .filter(|c| !sent.candidates.contains(c))
        .collect();
    if late.is_empty() {
        return None;
    }
    let (m_line, mid) = sdpfrag::first_media(local)?;
    let params = IceParams {
        candidates: late,
        ..now
    };
    let mut fragment = params.to_fragment(&m_line, &mid);
    if !done {
        fragment = fragment.replace("a=end-of-candidates\r\n", "");
    }
    Some(fragment)
}

/// Sets the rate of the rendition being sent from the link estimate until `stop`.
async fn follow_link(
    renditions: Renditions,
    link: Arc<cc::Link>,
    viewing: Arc<fanout::Viewing>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(FOLLOW_EVERY);
    let mut last_log = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // The estimate covers everything sent (probes, retransmissions): leave room.
        let target = (link.target_bps() as f64 * 0.9) as u32;
        let current = viewing.current();
        let mut rate = 0;
        for (i, feed) in renditions.iter().enumerate() {
            if i == current && target > 0 {
                rate = target.min(feed.bitrate());
                feed.follow_link(rate);
            } else {
                feed.follow_link(0);
            }
        }
        if last_log.elapsed() >= Duration::from_secs(10) {
            last_log = Instant::now();
            let label = renditions
                .get(current)
                .map(|f| f.label())
                .unwrap_or_default();
            tracing::info!(
                "publishing: link estimate {} kbit/s{}, sending {label} at up to {} kbit/s, loss {:.1}%, rtt {}",
                link.estimate_bps() / 1000,
                link.remb_bps().map(|r| format!(" (REMB {} kbit/s)", r / 1000)).unwrap_or_default(),
                rate / 1000,
                link.loss() * 100.0,
                link.rtt().map(|d| format!("{:.0} ms", d.as_secs_f64() * 1000.0)).unwrap_or_else(|| "-".into()),
            );
        }
    }
}

/// The estimate's range. Following the link, the encoder goes as low as the link needs;
/// riding renditions, no lower than the lowest one.
fn bounds(renditions: &Renditions, follow_link: bool) -> cc::Bounds {
    let top = renditions.top().bitrate() as f64;
    let bottom = renditions.iter().last().map_or(top, |f| f.bitrate() as f64);
    cc::Bounds {
        start_bps: top,
        min_bps: if follow_link {
            crate::encode::MIN_BITRATE as f64
        } else {
            bottom
        },
        max_bps: top * 1.5,
    }
}

/// A local failure (sockets, the WebRTC stack): worth retrying, it is not the endpoint's.
fn local(e: RtcError) -> WhipError {
    WhipError::Unavailable {
        status: 0,
        message: format!("setting up our side failed: {e}"),
        retry_after: None,
    }
}

/// The connection's events, as watch channels (callbacks only forward).
struct Events {
    state: watch::Receiver<RTCPeerConnectionState>,
    gathered: watch::Receiver<bool>,
    gathered_tx: watch::Sender<bool>,
    ice_up: watch::Receiver<bool>,
    connected: watch::Receiver<bool>,
}

struct Handler {
    state: watch::Sender<RTCPeerConnectionState>,
    gathered: watch::Sender<bool>,
    ice_up: watch::Sender<bool>,
    connected: watch::Sender<bool>,
}

impl Handler {
    fn pair() -> (Arc<dyn PeerConnectionEventHandler>, Events) {
        let (state, state_rx) = watch::channel(RTCPeerConnectionState::New);
        let (gathered, gathered_rx) = watch::channel(false);
        let (ice_up, ice_rx) = watch::channel(false);
        let (connected, connected_rx) = watch::channel(false);
        let events = Events {
            state: state_rx,
            gathered: gathered_rx,
            gathered_tx: gathered.clone(),
            ice_up: ice_rx,
            connected: connected_rx,
        };
        let handler = Arc::new(Handler {
            state,
            gathered,
            ice_up,
            connected,
        });
        (handler, events)
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            self.connected.send_replace(true);
        }
        self.state.send_replace(state);
    }
    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        if matches!(
            state,
            RTCIceConnectionState::Connected | RTCIceConnectionState::Completed
        ) {
            self.ice_up.send_replace(true);
        }
    }
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_candidates_the_offer_lacked_are_trickled() {
        let offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n";
        assert_eq!(late_candidates(offer, offer, true), None);
        let local = format!(
            "{offer}a=candidate:2 1 udp 1694498815 203.0.113.9 40000 typ srflx raddr 127.0.0.1 rport 5000\r\n"
        );
        let frag = late_candidates(offer, &local, true).unwrap();
        let parsed = Fragment::parse(frag.as_bytes()).unwrap();
        assert_eq!(parsed.candidates.len(), 1);
        assert!(parsed.candidates[0].1.contains("srflx"));
        assert!(parsed.end_of_candidates);
        assert_eq!(parsed.ufrag.as_deref(), Some("abcd"));
        let partial = late_candidates(offer, &local, false).unwrap();
        assert!(
            !Fragment::parse(partial.as_bytes())
                .unwrap()
                .end_of_candidates
        );
    }
}
