//! Stage: **rtc** — one WebRTC peer connection per viewer, set up to answer a WHEP offer
//! fast and to send one H.264 track.
//!
//! What the `webrtc` crate needs told (each checked on this machine): register the exact
//! H.264 format we send; bind loopback explicitly (a wildcard skips it); disable mDNS (it
//! would bind port 5353 per connection); check ICE every 5 ms instead of 200 ms (the
//! interval shows up in the time to first frame; BENCHMARKS.md); answer a browser's first nominating check (`nomination`); and
//! forward PLI/FIR with our own interceptor.

pub mod answer;
pub mod cc;
pub mod ice;
pub mod ingest;
pub mod keyframe;
pub mod nomination;
pub mod offer;
pub mod publish;
pub mod tap;

use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::interceptor_registry::configure_rtcp_reports;
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_H264};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceServer, SettingEngineBuilder,
};

pub use answer::{answer, Answered};
pub use ice::{advertise_candidates, IceConfigError, IceServer, PortLease, PortPool};
pub use offer::{choose_h264, choose_h264_for, Direction, H264Choice, OfferError};

/// The playout-delay RTP header extension: a sender's hint of how long a receiver may hold
/// frames to smooth playback (we say: not at all).
pub const PLAYOUT_DELAY_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";

/// Why a viewer's peer connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RtcError {
    #[error(transparent)]
    Offer(#[from] OfferError),
    #[error("could not set up the peer connection: {0}")]
    Setup(#[source] rtc::shared::error::Error),
    #[error("the server is out of {0}; try again shortly")]
    Exhausted(Resource),
    #[error("could not answer the offer: {0}")]
    Answer(#[source] rtc::shared::error::Error),
    #[error("the peer connection has no local description after answering")]
    NoLocalDescription,
    #[error("the session has no offer to restart ICE from")]
    NoRemoteDescription,
    #[error("the answer has no media section")]
    NoMedia,
    #[error("every UDP port in {0} is in use by a session; try again when one ends")]
    NoPorts(String),
    #[error("cannot make the DTLS certificate: {0}")]
    Certificate(String),
}

impl RtcError {
    /// The HTTP status a failed setup answers with: the offer's fault is a 4xx, running out
    /// of ports a `503` (try again), anything else a `500`.
    pub fn status(&self) -> http::StatusCode {
        match self {
            RtcError::Offer(e) => e.status(),
            RtcError::NoPorts(_) | RtcError::Exhausted(_) => http::StatusCode::SERVICE_UNAVAILABLE,
            _ => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What a server can run out of while setting up a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// Open files: the process or system limit (`ulimit -n`).
    FileDescriptors,
    /// Memory or socket buffers.
    Memory,
    /// Local UDP ports.
    Ports,
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Resource::FileDescriptors => "file descriptors (sockets; ulimit -n)",
            Resource::Memory => "memory for sockets",
            Resource::Ports => "local UDP ports",
        })
    }
}

impl From<rtc::shared::error::Error> for RtcError {
    /// Running out of something is the server's state, not a bug: it becomes
    /// [`RtcError::Exhausted`] (a `503`), anything else [`RtcError::Setup`].
    fn from(e: rtc::shared::error::Error) -> Self {
        match exhausted(&e) {
            Some(r) => RtcError::Exhausted(r),
            None => RtcError::Setup(e),
        }
    }
}

/// Which resource an error says ran out, from the OS error in its chain (or, where the
/// crate kept only the text, the `(os error N)` it ends with).
fn exhausted(e: &(dyn std::error::Error + 'static)) -> Option<Resource> {
    let from_code = |code: i32| match code {
        libc::EMFILE | libc::ENFILE => Some(Resource::FileDescriptors),
        libc::ENOBUFS | libc::ENOMEM => Some(Resource::Memory),
        libc::EADDRINUSE => Some(Resource::Ports),
        _ => None,
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(code) = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error())
        {
            return from_code(code);
        }
        cause = c.source();
    }
    let text = e.to_string();
    let code = text.rsplit_once("(os error ")?.1.split(')').next()?;
    from_code(code.parse().ok()?)
}

/// How the server's side of every peer connection is set up.
#[derive(Debug, Clone)]
pub struct RtcConfig {
    /// Local addresses to bind UDP sockets on (port 0 = ephemeral). A wildcard IP means every
    /// non-loopback interface.
    pub udp_addrs: Vec<SocketAddr>,
    /// STUN/TURN servers: the server's own ICE agent uses them, and viewers are told about
    /// them (WHEP `Link` headers).
    pub ice_servers: Vec<IceServer>,
    /// Public addresses of a 1:1 NAT in front of this host: advertised as extra host
    /// candidates with the same ports.
    pub public_ips: Vec<IpAddr>,
    /// When set, each session's sockets take their port from this pool.
    pub ports: Option<Arc<PortPool>>,
    /// Inbound silence after which ICE reports `Disconnected`.
    pub disconnected_after: Duration,
    /// Longest an answer waits for server-reflexive and relay candidates (host candidates
    /// take milliseconds; a STUN/TURN server that does not answer would hold every answer).
    pub gather_timeout: Duration,
}

impl RtcConfig {
    /// Candidate addresses that follow the HTTP listen address: a specific IP binds just that
    /// IP; a wildcard binds every interface *and* loopback, so a viewer on the same machine
    /// (or in a loopback-only namespace) can always connect.
    pub fn for_listen_ip(ip: IpAddr) -> Self {
        let udp_addrs = if ip.is_unspecified() {
            vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            ]
        } else {
            vec![SocketAddr::new(ip, 0)]
        };
        Self {
            udp_addrs,
            ice_servers: vec![],
            public_ips: vec![],
            ports: None,
            disconnected_after: Duration::from_secs(4),
            gather_timeout: Duration::from_secs(1),
        }
    }
}

/// The local description once gathering is complete, or once `config.gather_timeout` has
/// passed (a STUN/TURN server that does not answer must hold nobody), with the 1:1 NAT's
/// addresses advertised. WHEP and WHIP servers cannot trickle, and our WHIP offers carry
/// every candidate too (for endpoints that take no trickle).
pub(crate) async fn gathered_sdp(
    pc: &Arc<dyn PeerConnection>,
    gathered: &mut tokio::sync::watch::Receiver<bool>,
    config: &RtcConfig,
) -> Result<String, RtcError> {
    if tokio::time::timeout(config.gather_timeout, gathered.wait_for(|done| *done))
        .await
        .is_err()
    {
        tracing::warn!(
            "ICE gathering took over {:?} (is every --stun/--turn server reachable?); going on with the candidates found so far",
            config.gather_timeout
        );
    }
    let sdp = pc
        .local_description()
        .await
        .ok_or(RtcError::NoLocalDescription)?
        .sdp;
    Ok(advertise_candidates(&sdp, &config.public_ips))
}

/// The H.264 format a sender negotiated (the first of `codecs`), refused unless it is
/// packetization-mode 1: the crate matches codecs by MIME type alone.
pub(crate) fn negotiated_h264(
    codecs: &[RTCRtpCodecParameters],
) -> Result<&RTCRtpCodecParameters, OfferError> {
    let codec = codecs
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
        )));
    }
    Ok(codec)
}

/// Bytes a viewer's data channel may have in flight: ~300 frame messages. Small on purpose:
/// a capture time that waited seconds in a queue is worse than none.
pub const DATA_CHANNEL_BUFFER: usize = 32 * 1024;

/// The H.264 codec parameters we register for a viewer, from the format chosen in its offer.
pub fn h264_codec(choice: &H264Choice) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_string(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: choice.fmtp.clone(),
            rtcp_feedback: vec![],
        },
        payload_type: choice.payload_type,
    }
}

/// A new track of stream `stream` sending `choice` with a random SSRC (a track binds to one
/// peer connection: each viewer or publishing session gets its own), and that SSRC.
pub(crate) fn h264_track(
    stream: &str,
    choice: &H264Choice,
) -> (
    Arc<webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP>,
    u32,
) {
    use rtc::media_stream::MediaStreamTrack;
    use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
    let ssrc = rand::random::<u32>();
    let track = webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP::new(
        MediaStreamTrack::new(
            format!("whepcast-{stream}"),
            format!("video-{:08x}", rand::random::<u32>()),
            stream.to_string(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: h264_codec(choice).rtp_codec,
                ..Default::default()
            }],
        ),
    );
    (Arc::new(track), ssrc)
}

/// The DTLS certificate every session presents, made once: generating an ECDSA key per
/// viewer would add milliseconds to every answer. Sharing it is safe — the certificate only
/// binds the DTLS handshake to the fingerprint in the SDP answer the viewer received.
pub fn shared_certificate() -> Result<RTCCertificate, RtcError> {
    static CERT: OnceLock<RTCCertificate> = OnceLock::new();
    if let Some(c) = CERT.get() {
        return Ok(c.clone());
    }
    let provider =
        rtc::crypto::default_provider().map_err(|e| RtcError::Certificate(e.to_string()))?;
    let params = CertificateParams::new(vec!["whepcast".to_owned()])
        .map_err(|e| RtcError::Certificate(e.to_string()))?;
    let cert = RTCCertificate::generate(
        provider.crypto(),
        rtc::crypto::SignatureScheme::EcdsaP256Sha256,
        params,
    )?;
    Ok(CERT.get_or_init(|| cert).clone())
}

/// Which side of the offer/answer exchange our peer connection is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A WHEP viewer offered; we answer with what its offer allows.
    Answer,
    /// We offer (WHIP publishing): we cannot know what the endpoint's estimator speaks, so
    /// we offer both transport-wide feedback and REMB and use what is answered.
    Offer,
    /// A WHIP publisher offered; we answer and receive: NACKs for lost packets, receiver
    /// reports and transport-wide feedback (so the publisher's own estimator adapts).
    Receive,
}

/// Builds a peer connection that sends `choice`, answering an offer or making one. With a
/// port range, its sockets take a port leased from it; the lease must live as long as the
/// connection.
pub async fn new_peer_connection(
    config: &RtcConfig,
    choice: &H264Choice,
    role: Role,
    handler: Arc<dyn PeerConnectionEventHandler>,
    link: &Arc<cc::Link>,
    bounds: cc::Bounds,
) -> Result<(Arc<dyn PeerConnection>, Option<PortLease>), RtcError> {
    let build = |handler, addrs| build(config, choice, role, handler, addrs, link, bounds);
    let Some(pool) = &config.ports else {
        let pc = build(handler, config.udp_addrs.clone()).await?;
        return Ok((pc, None));
    };
    // A port can be held by another program: try a few before giving up.
    let mut last = None;
    for _ in 0..pool.len().min(8) {
        let lease = pool
            .lease()
            .ok_or_else(|| RtcError::NoPorts(pool.to_string()))?;
        let addrs = config
            .udp_addrs
            .iter()
            .map(|a| SocketAddr::new(a.ip(), lease.port()))
            .collect();
        match build(handler.clone(), addrs).await {
            Ok(pc) => return Ok((pc, Some(lease))),
            Err(e) => {
                tracing::debug!("UDP port {} unusable: {e}", lease.port());
                last = Some(e);
            }
        }
    }
    // Every port tried is still bound (a session closing, another program): same as full.
    if let Some(e) = last {
        tracing::warn!("no usable UDP port in {pool}: {e}");
    }
    Err(RtcError::NoPorts(pool.to_string()))
}

/// The crate logs each failed bind and reports only that no socket is left; binding one
/// ourselves tells whether that was because something ran out.
fn why_no_socket(addrs: &[SocketAddr]) -> Option<Resource> {
    addrs
        .iter()
        .find_map(|a| std::net::UdpSocket::bind(a).err())
        .and_then(|e| exhausted(&e))
}

async fn build(
    config: &RtcConfig,
    choice: &H264Choice,
    role: Role,
    handler: Arc<dyn PeerConnectionEventHandler>,
    udp_addrs: Vec<SocketAddr>,
    link: &Arc<cc::Link>,
    bounds: cc::Bounds,
) -> Result<Arc<dyn PeerConnection>, RtcError> {
    let mut media = MediaEngine::default();
    media.register_codec(h264_codec(choice), RtpCodecKind::Video)?;
    media.register_feedback(
        RTCPFeedback {
            typ: "ccm".into(),
            parameter: "fir".into(),
        },
        RtpCodecKind::Video,
    );
    media.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: PLAYOUT_DELAY_URI.into(),
        },
        RtpCodecKind::Video,
        None,
    )?;
    // Sender reports; NACK responder, congestion control and pacing (`cc`: GCC when the
    // viewer sends transport-wide feedback); then our PLI/FIR tap.
    let registry = configure_rtcp_reports(Registry::new());
    let feedback = match role {
        Role::Answer if choice.rtcp_feedback.iter().any(|f| f == "transport-cc") => {
            cc::Feedback::Twcc
        }
        Role::Answer => cc::Feedback::Reports,
        Role::Offer => cc::Feedback::Either,
        Role::Receive => cc::Feedback::Twcc,
    };
    let registry = match role {
        Role::Receive => {
            // NACK generator and responder, reports, TWCC receiver (and their feedback).
            rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors(
                Registry::new(),
                &mut media,
            )?
        }
        Role::Answer | Role::Offer => cc::register(registry, &mut media, link, bounds, feedback)?
            .with(Slot::from(keyframe::SLOT), keyframe::requests()),
    };

    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        // Answering, check every 5 ms (RFC 8445's floor for Ta), still giving up on a silent
        // pair after 500 ms: Chromium starts DTLS only once our check reaches it after
        // nomination, so the interval shows up whole in the time to first frame. Offering (to
        // a WHIP endpoint, maybe across the world), 20 ms and 2 s: a busy or far endpoint
        // must not see every pair given up before it answers.
        .with_ice_connection_attempts(
            Some(Duration::from_millis(if role == Role::Offer {
                20
            } else {
                5
            })),
            Some(100),
        )
        .with_ice_timeouts(
            Some(config.disconnected_after),
            Some(Duration::from_secs(5)),
            Some(Duration::from_secs(1)),
        )
        .build();
    let rtc_config = RTCConfigurationBuilder::new()
        .with_certificates(vec![shared_certificate()?])
        .with_ice_servers(
            config
                .ice_servers
                .iter()
                .filter_map(IceServer::for_agent)
                .collect::<Vec<RTCIceServer>>(),
        )
        .build();

    let addrs = udp_addrs.clone();
    let builder = PeerConnectionBuilder::new()
        .with_configuration(rtc_config)
        .with_media_engine(media)
        .with_setting_engine(settings)
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_udp_addrs(udp_addrs);
    let builder = match role {
        // Answers a viewer's first, nominating check (see `nomination`) instead of waiting
        // for its next one. An offerer is the controlling agent: it nominates.
        Role::Answer | Role::Receive => builder.with_runtime(nomination::runtime()),
        Role::Offer => builder,
    };
    let pc = builder
        // Data channel messages (frame metadata, chat) queue at most this much for a slow
        // viewer; beyond it they are dropped rather than buffered without bound.
        .with_data_channel_send_buffer_limit(DATA_CHANNEL_BUFFER)
        .build()
        .await
        .map_err(|e| match RtcError::from(e) {
            RtcError::Setup(e) => match why_no_socket(&addrs) {
                Some(r) => RtcError::Exhausted(r),
                None => RtcError::Setup(e),
            },
            other => other,
        })?;
    Ok(Arc::new(pc))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Running out of descriptors, buffers or ports is a 503 naming the cause, wherever the
    /// OS error sits: wrapped as a source, or only in the text.
    #[test]
    fn running_out_is_a_503_naming_what_ran_out() {
        let wrapped = |code| {
            RtcError::from(rtc::shared::error::Error::from(
                std::io::Error::from_raw_os_error(code),
            ))
        };
        for (code, what) in [
            (libc::EMFILE, Resource::FileDescriptors),
            (libc::ENFILE, Resource::FileDescriptors),
            (libc::ENOBUFS, Resource::Memory),
            (libc::EADDRINUSE, Resource::Ports),
        ] {
            let e = wrapped(code);
            assert!(
                matches!(e, RtcError::Exhausted(r) if r == what),
                "{code}: {e}"
            );
            assert_eq!(e.status(), http::StatusCode::SERVICE_UNAVAILABLE);
            assert!(e.to_string().contains(&what.to_string()));
        }
        let text = RtcError::from(rtc::shared::error::Error::Other(
            "bind 127.0.0.1:0: Too many open files (os error 24)".into(),
        ));
        assert!(
            matches!(text, RtcError::Exhausted(Resource::FileDescriptors)),
            "{text}"
        );
        let other = wrapped(libc::EACCES);
        assert!(matches!(other, RtcError::Setup(_)), "{other}");
        assert_eq!(other.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
    }
}
