//! The offering side of a peer connection: we send one H.264 track to a WHIP endpoint
//! (RFC 9725), so we make the offer and the endpoint answers.
//!
//! What the offer must say that the crate does not write: `a=rtcp-mux-only` in the bundled
//! section (RFC 9725 section 4.2: client and server MUST). The transceiver is `sendonly`
//! (`add_track` would make it sendrecv). Our H.264 is the only codec registered, so it is
//! the only one offered.

use super::{H264Choice, OfferError, RtcConfig, RtcError};
use std::sync::Arc;
use tokio::sync::watch;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

/// The payload type we offer H.264 with (the answer may not renumber it, but we read the
/// negotiated one anyway).
pub const PAYLOAD_TYPE: u8 = 102;

/// The one format we offer: Constrained Baseline, packetization-mode 1, as we encode.
pub fn h264_offer() -> H264Choice {
    H264Choice {
        payload_type: PAYLOAD_TYPE,
        fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into(),
        rtcp_feedback: vec![],
    }
}

/// An offer made, waiting for its answer.
pub struct Offered {
    /// The offer to POST: every host candidate and `a=rtcp-mux-only`.
    pub sdp: String,
    /// The track to write our packets to; they must carry `ssrc`.
    pub track: Arc<TrackLocalStaticRTP>,
    pub ssrc: u32,
}

/// What the endpoint's answer settled.
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    /// The payload type to stamp (ours, unless the answer renumbered it).
    pub payload_type: u8,
    /// Whether the endpoint sends transport-wide feedback (GCC), or only reports and REMB.
    pub twcc: bool,
}

/// Adds a send-only H.264 track to `pc` and makes the offer, with every host candidate
/// gathered (so an endpoint that ignores trickle still gets them).
pub async fn offer(
    pc: &Arc<dyn PeerConnection>,
    stream: &str,
    gathered: &mut watch::Receiver<bool>,
    config: &RtcConfig,
) -> Result<Offered, RtcError> {
    let (track, ssrc) = super::h264_track(stream, &h264_offer());
    pc.add_transceiver_from_track(
        track.clone() as Arc<dyn TrackLocal>,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![stream.to_string()],
            send_encodings: vec![],
        }),
    )
    .await
    .map_err(RtcError::Setup)?;
    let sdp = make_offer(pc, gathered, config).await?;
    Ok(Offered { sdp, track, ssrc })
}

/// A new offer on `pc` (the first, or after `restart_ice`): set as local, candidates
/// gathered (bounded by `config.gather_timeout`), `a=rtcp-mux-only` added.
pub async fn make_offer(
    pc: &Arc<dyn PeerConnection>,
    gathered: &mut watch::Receiver<bool>,
    config: &RtcConfig,
) -> Result<String, RtcError> {
    let offer = pc.create_offer(None).await.map_err(RtcError::Setup)?;
    pc.set_local_description(offer)
        .await
        .map_err(RtcError::Setup)?;
    let sdp = super::gathered_sdp(pc, gathered, config).await?;
    Ok(with_rtcp_mux_only(&sdp))
}

/// Applies the endpoint's answer and reads back what it settled. An answer that does not
/// take our H.264 (or is not SDP) is the endpoint's fault: [`OfferError`].
pub async fn accept(pc: &Arc<dyn PeerConnection>, answer: String) -> Result<Accepted, RtcError> {
    let bad = |e: rtc::shared::error::Error| OfferError::Malformed(e.to_string());
    let twcc = answer
        .lines()
        .any(|l| l.starts_with("a=rtcp-fb:") && l.contains(" transport-cc"));
    let desc = RTCSessionDescription::answer(answer).map_err(bad)?;
    pc.set_remote_description(desc).await.map_err(bad)?;
    let mut payload_type = PAYLOAD_TYPE;
    for t in pc.get_transceivers().await {
        let Ok(Some(sender)) = t.sender().await else {
            continue;
        };
        let params = sender.get_parameters().await.map_err(RtcError::Answer)?;
        let codec = super::negotiated_h264(&params.rtp_parameters.codecs)?;
        payload_type = codec.payload_type;
    }
    Ok(Accepted { payload_type, twcc })
}

/// `sdp` with `a=rtcp-mux-only` after each `a=rtcp-mux` (RFC 8858; WHIP requires it in
/// every bundled media section).
pub fn with_rtcp_mux_only(sdp: &str) -> String {
    if sdp.contains("a=rtcp-mux-only") {
        return sdp.to_owned();
    }
    let mut out = String::with_capacity(sdp.len() + 32);
    for line in sdp.lines().map(|l| l.trim_end_matches('\r')) {
        out.push_str(line);
        out.push_str("\r\n");
        if line == "a=rtcp-mux" {
            out.push_str("a=rtcp-mux-only\r\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtcp_mux_only_follows_rtcp_mux_once() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtcp-mux\r\na=rtcp-rsize\r\n";
        let out = with_rtcp_mux_only(sdp);
        assert_eq!(
            out,
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtcp-mux\r\na=rtcp-mux-only\r\na=rtcp-rsize\r\n"
        );
        assert_eq!(with_rtcp_mux_only(&out), out);
    }
}
