//! Answering a viewer's offer on a fresh peer connection: set the offer, add the viewer's
//! own track (a track binds to one connection), answer, wait for every candidate (WHEP
//! servers cannot trickle), and read back what was negotiated.

use super::{H264Choice, OfferError, RtcConfig, RtcError};
use std::sync::Arc;
use tokio::sync::watch;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

/// What answering gave.
pub struct Answered {
    /// The answer, with every candidate and `a=end-of-candidates`.
    pub sdp: String,
    /// The viewer's track; its packets must carry `ssrc` and `payload_type`.
    pub track: Arc<TrackLocalStaticRTP>,
    pub ssrc: u32,
    /// The payload type the viewer chose for H.264 (the offerer's number, not ours).
    pub payload_type: u8,
    /// The id the viewer gave the playout-delay header extension, if it offered it.
    pub playout_delay: Option<u8>,
}

/// Offer → answer on a fresh peer connection: the answer SDP (with every candidate), the
/// viewer's track, and what to stamp on its packets.
pub async fn answer(
    pc: &Arc<dyn PeerConnection>,
    choice: &H264Choice,
    offer_sdp: String,
    stream: &str,
    gathered: &mut watch::Receiver<bool>,
    config: &RtcConfig,
) -> Result<Answered, RtcError> {
    let bad = |e: rtc::shared::error::Error| OfferError::Malformed(e.to_string());
    let offer = RTCSessionDescription::offer(offer_sdp).map_err(bad)?;
    pc.set_remote_description(offer).await.map_err(bad)?;

    let (track, ssrc) = super::h264_track(stream, choice);
    let no_h264 = |e: rtc::shared::error::Error| {
        OfferError::NoH264(format!("the offer's video section cannot carry it ({e})"))
    };
    let sender = pc
        .add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .map_err(no_h264)?;
    let answer = pc.create_answer(None).await.map_err(no_h264)?;
    pc.set_local_description(answer)
        .await
        .map_err(RtcError::Answer)?;

    // The server cannot trickle in WHEP: the answer carries every candidate.
    let sdp = super::gathered_sdp(pc, gathered, config).await?;
    let params = sender.get_parameters().await.map_err(RtcError::Answer)?;
    let codec = super::negotiated_h264(&params.rtp_parameters.codecs)?;
    let playout_delay = params
        .rtp_parameters
        .header_extensions
        .iter()
        .find(|e| e.uri == super::PLAYOUT_DELAY_URI)
        .and_then(|e| u8::try_from(e.id).ok());
    Ok(Answered {
        sdp,
        track,
        ssrc,
        payload_type: codec.payload_type,
        playout_delay,
    })
}
