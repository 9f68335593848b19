//! Reading a viewer's SDP offer before any WebRTC state is created: is it SDP at all, does
//! it want video, and which of its H.264 formats can we send?
//!
//! The `webrtc` crate matches codecs by MIME type alone, so it would accept an offer whose
//! only H.264 is packetization-mode 0 or High profile. We pick the payload type ourselves and
//! register exactly that format, so what we answer is what we send.

use rtc::sdp::description::session::SessionDescription;
use std::io::Cursor;

/// Why an offer cannot be answered. Each message says what the client should change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OfferError {
    #[error("the body is not a valid SDP offer: {0}")]
    Malformed(String),
    #[error("the offer has no video section (m=video); WHEP viewers must offer to receive video")]
    NoVideo,
    #[error(
        "the offer's video section is {0}; it must be recvonly or sendrecv to receive the stream"
    )]
    NotReceiving(String),
    #[error(
        "the offer's video section is {0}; a WHIP publisher must offer sendonly (or sendrecv) video"
    )]
    NotSending(String),
    #[error(
        "the offer has no usable H.264: whepcast sends H.264 Constrained Baseline \
         (profile-level-id=42e01f) with packetization-mode=1; {0}"
    )]
    NoH264(String),
}

impl OfferError {
    /// `400` for what is not a usable offer at all, `422` for a valid offer we cannot serve.
    pub fn status(&self) -> http::StatusCode {
        match self {
            OfferError::Malformed(_) => http::StatusCode::BAD_REQUEST,
            OfferError::NoVideo
            | OfferError::NotReceiving(_)
            | OfferError::NotSending(_)
            | OfferError::NoH264(_) => http::StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

/// The H.264 format chosen from the offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H264Choice {
    pub payload_type: u8,
    /// The offer's `a=fmtp` line for that payload type, echoed in the answer.
    pub fmtp: String,
    /// The offer's `a=rtcp-fb` types for it (nack, nack pli, ccm fir, ...).
    pub rtcp_feedback: Vec<String>,
}

/// Which way the offerer wants video to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A viewer (WHEP): it receives, we send.
    ToOfferer,
    /// A publisher (WHIP): it sends, we receive.
    FromOfferer,
}

/// Checks a viewer's offer and picks the H.264 payload type to send.
pub fn choose_h264(sdp: &str) -> Result<H264Choice, OfferError> {
    choose_h264_for(sdp, Direction::ToOfferer)
}

/// Checks an offer and picks its best H.264 payload type, for video going `direction`.
/// Either way the format must be one a Constrained Baseline stream fits in, with
/// packetization-mode 1: what viewers decode, and what we repacketize.
pub fn choose_h264_for(sdp: &str, direction: Direction) -> Result<H264Choice, OfferError> {
    let desc = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| OfferError::Malformed(e.to_string()))?;
    if desc.media_descriptions.is_empty() {
        return Err(OfferError::Malformed("no m= sections".into()));
    }
    let fingerprint = desc.attribute("fingerprint").is_some()
        || desc
            .media_descriptions
            .iter()
            .any(|m| m.has_attribute("fingerprint"));
    if !fingerprint {
        return Err(OfferError::Malformed(
            "no a=fingerprint (DTLS); send the browser's complete offer".into(),
        ));
    }
    let video = desc
        .media_descriptions
        .iter()
        .find(|m| m.media_name.media == "video")
        .ok_or(OfferError::NoVideo)?;
    let ufrag = video.has_attribute("ice-ufrag") || desc.attribute("ice-ufrag").is_some();
    let pwd = video.has_attribute("ice-pwd") || desc.attribute("ice-pwd").is_some();
    if !ufrag || !pwd {
        return Err(OfferError::Malformed(
            "no a=ice-ufrag/a=ice-pwd; send the browser's complete offer".into(),
        ));
    }
    let (refused, error): (&[&str], fn(String) -> OfferError) = match direction {
        Direction::ToOfferer => (&["sendonly", "inactive"], OfferError::NotReceiving),
        Direction::FromOfferer => (&["recvonly", "inactive"], OfferError::NotSending),
    };
    for dir in refused {
        if video.has_attribute(dir) {
            return Err(error((*dir).into()));
        }
    }

    let mut best: Option<(u8, H264Choice)> = None;
    let mut seen = Vec::new();
    for (pt, codec) in video.codecs() {
        if !codec.name.eq_ignore_ascii_case("H264") || codec.clock_rate != 90_000 {
            continue;
        }
        seen.push(codec.fmtp.clone());
        let Some(rank) = rank_h264(&codec.fmtp) else {
            continue;
        };
        let better = match &best {
            None => true,
            Some((r, c)) => rank < *r || (rank == *r && pt < c.payload_type),
        };
        if better {
            best = Some((
                rank,
                H264Choice {
                    payload_type: pt,
                    fmtp: codec.fmtp.clone(),
                    rtcp_feedback: codec.rtcp_feedback.clone(),
                },
            ));
        }
    }
    match best {
        Some((_, choice)) => Ok(choice),
        None if seen.is_empty() => {
            Err(OfferError::NoH264("the offer lists no H.264 at all".into()))
        }
        None => Err(OfferError::NoH264(format!(
            "the offer's H.264 formats were: {}",
            seen.iter()
                .map(|f| if f.is_empty() {
                    "(no fmtp)".to_string()
                } else {
                    f.clone()
                })
                .collect::<Vec<_>>()
                .join(" | ")
        ))),
    }
}

/// Ranks an H.264 fmtp line: `Some(0)` is the best match for our stream; `None` means our
/// stream cannot be sent with it (packetization-mode 0, or a profile a Constrained Baseline
/// stream does not conform to).
pub(crate) fn rank_h264(fmtp: &str) -> Option<u8> {
    let mut mode = 0u8;
    let mut pli = "42001f".to_string(); // RFC 6184 default: Baseline, level 1.0 (we ignore level)
    for param in fmtp.split(';') {
        let Some((k, v)) = param.split_once('=') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "packetization-mode" => mode = v.trim().parse().ok()?,
            "profile-level-id" => pli = v.trim().to_ascii_lowercase(),
            _ => {}
        }
    }
    // Six hex digits, checked as bytes: slicing by byte index would panic on a peer's
    // multi-byte character (`a\u{e9}123` is six bytes too).
    if mode != 1 || pli.len() != 6 || !pli.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let [_, profile_idc, iop, _] = u32::from_str_radix(&pli, 16).ok()?.to_be_bytes();
    let (cs0, cs1) = (iop & 0x80 != 0, iop & 0x40 != 0);
    // RFC 6184 table 5: which profile_idc/constraint combinations are Constrained Baseline
    // (or a superset a Constrained Baseline stream conforms to: plain Baseline).
    match profile_idc {
        0x42 if cs1 => Some(0), // Constrained Baseline (42e0xx, 42c0xx)
        0x4d if cs0 => Some(1), // Main with constraint_set0: also Constrained Baseline
        0x58 if cs0 && cs1 => Some(1),
        0x42 => Some(2), // Baseline: a CB stream is valid Baseline
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn offer(video_lines: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96 97 98\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
             a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
             a=fingerprint:sha-256 00:11\r\na=setup:actpass\r\na=rtcp-mux\r\n{video_lines}"
        )
    }

    #[test]
    fn picks_constrained_baseline_mode_1() {
        let sdp = offer(
            "a=recvonly\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=0;profile-level-id=42e01f\r\n\
             a=rtpmap:97 H264/90000\r\na=fmtp:97 packetization-mode=1;profile-level-id=42001f\r\n\
             a=rtpmap:98 H264/90000\r\na=rtcp-fb:98 nack pli\r\na=fmtp:98 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n",
        );
        let c = choose_h264(&sdp).unwrap();
        assert_eq!(c.payload_type, 98);
        assert!(c.rtcp_feedback.iter().any(|f| f == "nack pli"));
    }

    #[test]
    fn refuses_high_only_and_mode_0_and_vp8() {
        let high = offer("a=recvonly\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;profile-level-id=640c1f\r\n");
        assert!(matches!(choose_h264(&high), Err(OfferError::NoH264(m)) if m.contains("640c1f")));
        let mode0 =
            offer("a=recvonly\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 profile-level-id=42e01f\r\n");
        assert!(matches!(choose_h264(&mode0), Err(OfferError::NoH264(_))));
        let vp8 = offer("a=recvonly\r\na=rtpmap:96 VP8/90000\r\n");
        assert!(matches!(choose_h264(&vp8), Err(OfferError::NoH264(m)) if m.contains("no H.264")));
    }

    #[test]
    fn multibyte_profile_level_id_is_refused_not_a_panic() {
        // Six bytes each, so a length check alone lets them through to byte slicing.
        for pli in [
            "a\u{e9}123",
            "4\u{20ac}1f",
            "\u{e9}\u{e9}\u{e9}",
            "42e01\u{7f}",
        ] {
            let sdp = offer(&format!(
                "a=recvonly\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;profile-level-id={pli}\r\n"
            ));
            assert!(
                matches!(choose_h264(&sdp), Err(OfferError::NoH264(m)) if m.contains(pli)),
                "{pli}"
            );
        }
    }

    #[test]
    fn refuses_garbage_and_sendonly() {
        assert!(matches!(
            choose_h264("hello"),
            Err(OfferError::Malformed(_))
        ));
        assert!(matches!(choose_h264(""), Err(OfferError::Malformed(_))));
        let s = offer("a=sendonly\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n");
        assert_eq!(
            choose_h264(&s),
            Err(OfferError::NotReceiving("sendonly".into()))
        );
        let truncated = &offer("a=recvonly\r\n")[..60];
        assert!(matches!(
            choose_h264(truncated),
            Err(OfferError::Malformed(_))
        ));
    }
}
