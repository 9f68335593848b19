//! Answering a WHIP publisher's offer: we receive its one H.264 video track.
//!
//! Only the H.264 format chosen from the offer is registered, so the answer accepts just
//! that (an audio section, which we do not take, is answered rejected). The connection
//! sends NACKs for lost packets, receiver reports and transport-wide feedback, so the
//! publisher's own congestion control adapts to the path ([`super::Role::Receive`]).

use super::{OfferError, RtcConfig, RtcError};
use std::sync::Arc;
use tokio::sync::watch;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

/// Offer → answer (with every candidate) on a fresh receiving connection.
pub async fn answer(
    pc: &Arc<dyn PeerConnection>,
    offer_sdp: String,
    gathered: &mut watch::Receiver<bool>,
    config: &RtcConfig,
) -> Result<String, RtcError> {
    let bad = |e: rtc::shared::error::Error| OfferError::Malformed(e.to_string());
    let offer = RTCSessionDescription::offer(offer_sdp).map_err(bad)?;
    pc.set_remote_description(offer).await.map_err(bad)?;
    let no_h264 = |e: rtc::shared::error::Error| {
        OfferError::NoH264(format!("the offer's video section cannot carry it ({e})"))
    };
    let answer = pc.create_answer(None).await.map_err(no_h264)?;
    pc.set_local_description(answer)
        .await
        .map_err(RtcError::Answer)?;
    // Like WHEP, a WHIP server cannot trickle: the answer carries every candidate.
    let sdp = super::gathered_sdp(pc, gathered, config).await?;
    if !sdp.lines().any(|l| l.trim_end() == "a=recvonly") {
        return Err(OfferError::NoH264("the answer would not receive any video".into()).into());
    }
    Ok(super::publish::with_rtcp_mux_only(&sdp))
}
