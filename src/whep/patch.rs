//! What a `PATCH` changes on a session (RFC 9725 section 4.3, which WHEP follows): the
//! peer's trickled candidates, or a new ICE session (an ICE restart) and with it the ETag.
//! WHEP viewer sessions and WHIP publisher sessions ([`crate::whip::ingest`]) share it.

use super::sdpfrag::{self, Fragment, FragmentError};
use super::{random_hex, Patched, WhepError};
use crate::rtc::{self, OfferError, RtcConfig, RtcError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use webrtc::peer_connection::{PeerConnection, RTCIceCandidateInit, RTCSessionDescription};

/// Most candidates a peer may trickle per ICE generation; a browser has a handful.
const MAX_TRICKLED: usize = 100;

/// A session's peer connection and its ICE state as PATCH sees it.
pub(crate) struct IceSession {
    pub(crate) pc: Arc<dyn PeerConnection>,
    /// The connection's gathering state (a restart gathers again).
    gathered: watch::Sender<bool>,
    /// Changes with every ICE restart; `PATCH` is checked against it.
    etag: Mutex<String>,
    /// The peer's current ICE username fragment: a `PATCH` with another one restarts ICE.
    remote_ufrag: Mutex<Option<String>>,
    /// One `PATCH` at a time per session.
    patching: tokio::sync::Mutex<()>,
    /// Candidates trickled in this ICE generation (capped: each one costs checks).
    trickled: AtomicUsize,
    /// Told when the peer restarts ICE, so the session's supervisor gives it time.
    pub(crate) restarted: Arc<tokio::sync::Notify>,
}

impl IceSession {
    /// `remote_ufrag`: the offer's ICE username fragment.
    pub(crate) fn new(
        pc: Arc<dyn PeerConnection>,
        gathered: watch::Sender<bool>,
        remote_ufrag: Option<String>,
    ) -> Self {
        Self {
            pc,
            gathered,
            etag: Mutex::new(format!("\"{}\"", random_hex(8))),
            remote_ufrag: Mutex::new(remote_ufrag),
            patching: tokio::sync::Mutex::new(()),
            trickled: AtomicUsize::new(0),
            restarted: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// The session's current ETag (quoted).
    pub(crate) fn etag(&self) -> String {
        lock(&self.etag).clone()
    }

    /// Closes the connection, after a `PATCH` in progress (which then sees the session
    /// cancelled).
    pub(crate) async fn close(&self) {
        let _no_patch = self.patching.lock().await;
        if let Err(e) = self.pc.close().await {
            tracing::debug!("closing peer connection: {e}");
        }
    }

    /// Adds the fragment's candidates, or restarts ICE when it carries new credentials.
    ///
    /// `if_match` is the request's `If-Match`. A restart needs one (`"*"` or the current
    /// ETag), else [`WhepError::PreconditionRequired`]; a trickle may omit it (clients such
    /// as the `whip-whep` library only learn the ETag from a restart), but a stale one is
    /// [`WhepError::PreconditionFailed`]. `id` names the session in errors and logs.
    pub(crate) async fn patch(
        &self,
        if_match: Option<&str>,
        body: &[u8],
        cancel: &CancellationToken,
        config: &RtcConfig,
        id: &str,
    ) -> Result<Patched, WhepError> {
        let _one_at_a_time = self.patching.lock().await;
        if cancel.is_cancelled() {
            // Closed (DELETE, reaped) while this PATCH waited its turn.
            return Err(WhepError::UnknownSession(super::short(id).to_string()));
        }
        let frag = Fragment::parse(body)?;
        // Check every candidate before adding any: a bad one must not leave the others in
        // the agent uncounted.
        frag.check_candidates()?;
        // New credentials mean a new ICE session (RFC 8840 4.4).
        let restart = frag.ufrag.is_some() && frag.ufrag != *lock(&self.remote_ufrag);
        check_if_match(if_match, restart, &lock(&self.etag))?;
        if restart {
            let (fragment, etag) = self.restart_ice(&frag, config).await?;
            Ok(Patched::Restarted { fragment, etag })
        } else {
            let total = self.trickled.load(Ordering::Relaxed) + frag.candidates.len();
            if total > MAX_TRICKLED {
                return Err(FragmentError::TooManyTrickled(MAX_TRICKLED).into());
            }
            let added = add_candidates(&self.pc, &frag).await;
            self.trickled.fetch_add(added, Ordering::Relaxed);
            Ok(Patched::Trickled { added })
        }
    }

    /// ICE restart as answerer: the peer's offer with the fragment's credentials, a new
    /// answer (new local credentials, candidates gathered again), the new ETag.
    async fn restart_ice(
        &self,
        frag: &Fragment,
        config: &RtcConfig,
    ) -> Result<(String, String), WhepError> {
        let (Some(ufrag), Some(pwd)) = (&frag.ufrag, &frag.pwd) else {
            return Err(FragmentError::HalfCredentials.into());
        };
        let pc = &self.pc;
        let offer = pc
            .remote_description()
            .await
            .ok_or(RtcError::NoRemoteDescription)?;
        let offer = sdpfrag::restarted_offer(&offer.sdp, ufrag, pwd);
        let mut gathered = self.gathered.subscribe();
        self.gathered.send_replace(false);
        let bad = |e: ::rtc::shared::error::Error| OfferError::Malformed(e.to_string());
        pc.set_remote_description(RTCSessionDescription::offer(offer).map_err(bad)?)
            .await
            .map_err(bad)?;
        let answer = pc.create_answer(None).await.map_err(RtcError::Answer)?;
        pc.set_local_description(answer)
            .await
            .map_err(RtcError::Answer)?;
        // From here the agent uses the new credentials: so does the session, whatever follows.
        let etag = format!("\"{}\"", random_hex(8));
        *lock(&self.etag) = etag.clone();
        *lock(&self.remote_ufrag) = Some(ufrag.clone());
        // A restart is how a peer rescues a broken path: give it time to reconnect.
        self.restarted.notify_one();
        let _ = tokio::time::timeout(config.gather_timeout, gathered.wait_for(|done| *done)).await;
        let local = pc
            .local_description()
            .await
            .ok_or(RtcError::NoLocalDescription)?;
        let local = rtc::advertise_candidates(&local.sdp, &config.public_ips);
        let (m_line, mid) = sdpfrag::first_media(&local).ok_or(RtcError::NoMedia)?;
        let fragment = sdpfrag::IceParams::from_sdp(&local).to_fragment(&m_line, &mid);
        // A new ICE generation: its trickle count starts from the fragment's candidates.
        let added = add_candidates(pc, frag).await;
        self.trickled.store(added, Ordering::Relaxed);
        metrics::counter!("whepcast_ice_restarts_total").increment(1);
        tracing::info!("ICE restarted");
        Ok((fragment, etag))
    }
}

/// Checks a `PATCH`'s `If-Match` against the session's ETag `current` (see
/// [`IceSession::patch`]); `restart` when the fragment restarts ICE.
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
