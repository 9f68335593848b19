//! Answering a viewer's offer on a fresh peer connection: set the offer, add the viewer's
//! own track (a track binds to one connection), answer, wait for every candidate (WHEP
//! servers cannot trickle), and read back what was negotiated.

use super::{H264Choice, OfferError, RtcConfig, RtcError};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
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

    let ssrc = rand::random::<u32>();
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("whepcast-{stream}"),
        format!("video-{:08x}", rand::random::<u32>()),
        stream.to_string(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: super::h264_codec(choice).rtp_codec,
            ..Default::default()
        }],
    )));
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
        .ok_or(RtcError::NoLocalDescription)?
        .sdp;
    let sdp = super::advertise_candidates(&sdp, &config.public_ips);

    let params = sender.get_parameters().await.map_err(RtcError::Answer)?;
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
