//! Test support: a whepcast server in-process on an ephemeral port, and a real WebRTC
//! viewer (webrtc-rs) that speaks WHEP over HTTP, depacketizes the H.264 it receives and
//! decodes it with OpenH264, reading back the frame number the pattern draws.

use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_H264};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCSessionDescription, SettingEngineBuilder,
};
use whepcast::config::{Bitrate, EncodeSettings, Size};
use whepcast::rtc::RtcConfig;
use whepcast::server::{ServeConfig, Server, StreamConfig};
use whepcast::source::{Barcode, OpenOptions, SourceSpec};

pub const WAIT: Duration = Duration::from_secs(20);

/// Encoder settings for tests (1.5 Mbit/s).
pub fn settings(size: Size, fps: u32, keyint: f32) -> EncodeSettings {
    EncodeSettings {
        size,
        fps,
        bitrate: Bitrate(1_500_000),
        keyint,
    }
}

/// A server running in this process until dropped.
pub struct TestServer {
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    pub done: Option<tokio::task::JoinHandle<()>>,
}

/// One pattern stream called `main`.
pub fn pattern_stream(size: &str, fps: u32, keyint: f32) -> StreamConfig {
    let size: Size = size.parse().unwrap();
    let opts = OpenOptions {
        size: Some(size),
        pixel_format: None,
    };
    StreamConfig::from_spec(
        "main",
        SourceSpec::Pattern,
        opts,
        settings(size, fps, keyint),
    )
}

impl TestServer {
    pub async fn start(size: &str, fps: u32, keyint: f32) -> Self {
        Self::with_streams(vec![pattern_stream(size, fps, keyint)]).await
    }

    /// A server carrying the given streams.
    pub async fn with_streams(streams: Vec<StreamConfig>) -> Self {
        Self::with_config(streams, |_| {}).await
    }

    /// A server carrying `streams`, its configuration adjusted by `adjust`.
    pub async fn with_config(
        streams: Vec<StreamConfig>,
        adjust: impl FnOnce(&mut ServeConfig),
    ) -> Self {
        let mut config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            streams,
            rtc: RtcConfig::for_listen_ip("127.0.0.1".parse().unwrap()),
            token: None,
            max_viewers: None,
            public: false,
            ingest_token: None,
        };
        adjust(&mut config);
        let server = Server::bind(config).await.expect("server starts");
        let addr = server.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .expect("server runs");
        });
        Self {
            base: format!("http://{addr}"),
            stop: Some(tx),
            done: Some(done),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `GET /api/streams`, parsed.
    pub async fn api(&self) -> serde_json::Value {
        api_at(&self.base).await
    }

    pub async fn active_sessions(&self) -> u64 {
        self.api().await["sessions"]["active"].as_u64().unwrap()
    }

    /// Waits until the server has `n` active sessions; fails after 5 s showing the API.
    pub async fn wait_for_sessions(&self, n: u64) {
        let reached = eventually(Duration::from_secs(5), || async {
            self.active_sessions().await == n
        })
        .await;
        assert!(
            reached,
            "sessions left behind (want {n}): {}",
            self.api().await
        );
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = tokio::time::timeout(WAIT, done).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// What a viewer has decoded so far.
#[derive(Default, Debug, Clone)]
pub struct Decoded {
    pub frames: u64,
    /// Decoded frames that were IDRs.
    pub keyframes: u64,
    pub size: Option<(usize, usize)>,
    /// Frame numbers read from the pattern's barcode, in decode order.
    pub numbers: Vec<u32>,
    pub first_frame_at: Option<Instant>,
    pub rtp_packets: u64,
    pub rtp_bytes: u64,
    /// Packets missing from the sequence-number run (lost, not yet recovered).
    pub rtp_gaps: u64,
    pub first_packet_at: Option<Instant>,
    /// The latest decoded picture.
    pub last: Option<Picture>,
    /// RTP timestamps of the decoded frames, in order.
    pub rtp_timestamps: Vec<u32>,
    /// RTP header extensions seen (id, value), each distinct one once (at most 4 per id).
    pub extensions: Vec<(u8, Vec<u8>)>,
    /// Packets that carried each header extension id.
    pub packets_with_extension: std::collections::BTreeMap<u8, u64>,
}

/// A decoded picture, tightly packed I420.
#[derive(Clone)]
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

impl std::fmt::Debug for Picture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let centre = self.mean(self.width / 2 - 8, self.height / 2 - 8, 16, 16);
        write!(
            f,
            "Picture {}x{}, centre YUV {centre:.0?}",
            self.width, self.height
        )
    }
}

impl Picture {
    fn copy(w: usize, h: usize, [y, u, v]: [&[u8]; 3], ys: usize, cs: usize) -> Self {
        let rows = |p: &[u8], stride: usize, w: usize, h: usize| {
            (0..h)
                .flat_map(|r| p[r * stride..r * stride + w].iter().copied())
                .collect()
        };
        Picture {
            width: w,
            height: h,
            y: rows(y, ys, w, h),
            u: rows(u, cs, w / 2, h / 2),
            v: rows(v, cs, w / 2, h / 2),
        }
    }

    /// Mean Y, U, V over a rectangle (in luma pixels).
    pub fn mean(&self, x: usize, y: usize, w: usize, h: usize) -> [f64; 3] {
        let mut sum = [0f64; 3];
        for r in y..y + h {
            for c in x..x + w {
                sum[0] += self.y[r * self.width + c] as f64;
                sum[1] += self.u[(r / 2) * (self.width / 2) + c / 2] as f64;
                sum[2] += self.v[(r / 2) * (self.width / 2) + c / 2] as f64;
            }
        }
        let n = (w * h) as f64;
        sum.map(|s| s / n)
    }

    /// PSNR of the luma plane against a reference luma plane of the same size, in dB.
    pub fn psnr_y(&self, reference: &[u8]) -> f64 {
        let mse = self
            .y
            .iter()
            .zip(reference)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum::<f64>()
            / self.y.len() as f64;
        10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10()
    }
}

/// BT.601 limited-range Y, U, V of an RGB colour (what whepcast's conversion produces).
pub fn yuv_of([r, g, b]: [u8; 3]) -> [f64; 3] {
    let (r, g, b) = (r as f64, g as f64, b as f64);
    [
        16.0 + 0.257 * r + 0.504 * g + 0.098 * b,
        128.0 - 0.148 * r - 0.291 * g + 0.439 * b,
        128.0 + 0.439 * r - 0.368 * g - 0.071 * b,
    ]
}

/// Whether two YUV colours are within `tol` on every channel.
pub fn close(a: [f64; 3], b: [f64; 3], tol: f64) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

struct ClientHandler {
    gathered: watch::Sender<bool>,
    track: Mutex<Option<oneshot::Sender<Arc<dyn TrackRemote>>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ClientHandler {
    async fn on_ice_gathering_state_change(&self, s: RTCIceGatheringState) {
        if s == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if let Some(tx) = self.track.lock().unwrap().take() {
            let _ = tx.send(track);
        }
    }
}

/// A WHEP viewer built on webrtc-rs.
pub struct Viewer {
    pub pc: Arc<dyn PeerConnection>,
    pub location: String,
    pub etag: Option<String>,
    pub decoded: watch::Receiver<Decoded>,
    pub started: Instant,
    track: Arc<Mutex<Option<Arc<dyn TrackRemote>>>>,
}

/// A peer connection set up as the tests' receiving side (H.264 PT 102, default
/// interceptors: NACK, reports, TWCC receiver), with its gathering state and first track.
pub async fn client_pc() -> (
    Arc<dyn PeerConnection>,
    watch::Receiver<bool>,
    oneshot::Receiver<Arc<dyn TrackRemote>>,
) {
    let mut media = MediaEngine::default();
    media
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_H264.to_string(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line:
                        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                            .into(),
                    rtcp_feedback: vec![],
                },
                payload_type: 102,
            },
            RtpCodecKind::Video,
        )
        .unwrap();
    // Offered like Chromium offers it.
    media
        .register_header_extension(
            rtc::rtp_transceiver::rtp_sender::RTCRtpHeaderExtensionCapability {
                uri: whepcast::rtc::PLAYOUT_DELAY_URI.into(),
            },
            RtpCodecKind::Video,
            None,
        )
        .unwrap();
    let registry =
        rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors(
            rtc::interceptor::Registry::new(),
            &mut media,
        )
        .unwrap();
    let (gathered_tx, gathered_rx) = watch::channel(false);
    let (track_tx, track_rx) = oneshot::channel();
    let handler = Arc::new(ClientHandler {
        gathered: gathered_tx,
        track: Mutex::new(Some(track_tx)),
    });
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_ice_connection_attempts(Some(Duration::from_millis(20)), None)
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .with_handler(handler)
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .build()
        .await
        .unwrap();
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    (pc, gathered_rx, track_rx)
}

/// Builds the client-side peer connection and its recvonly offer.
pub async fn offer() -> (
    Arc<dyn PeerConnection>,
    String,
    oneshot::Receiver<Arc<dyn TrackRemote>>,
) {
    let (pc, sdp, track, _) = offer_with_channel(None).await;
    (pc, sdp, track)
}

/// Like [`offer`], and with a data channel labelled `label` when given (as the page does).
pub async fn offer_with_channel(
    label: Option<&str>,
) -> (
    Arc<dyn PeerConnection>,
    String,
    oneshot::Receiver<Arc<dyn TrackRemote>>,
    Option<Arc<dyn webrtc::data_channel::DataChannel>>,
) {
    let (pc, mut gathered_rx, track_rx) = client_pc().await;
    pc.add_transceiver_from_kind(
        RtpCodecKind::Video,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let channel = match label {
        Some(l) => Some(pc.create_data_channel(l, None).await.unwrap()),
        None => None,
    };
    let offer = pc.create_offer(None).await.unwrap();
    pc.set_local_description(offer).await.unwrap();
    let _ = tokio::time::timeout(WAIT, gathered_rx.wait_for(|d| *d)).await;
    let sdp = pc.local_description().await.unwrap().sdp;
    (pc, sdp, track_rx, channel)
}

impl Viewer {
    /// Connects to `endpoint` (full URL) and starts decoding.
    pub async fn connect(endpoint: &str) -> Viewer {
        Self::connect_with(endpoint, true).await
    }

    /// Connects; with `decode` false it only counts RTP (load benchmarks).
    pub async fn connect_with(endpoint: &str, decode: bool) -> Viewer {
        let (pc, sdp, track_rx) = offer().await;
        Self::post_offer(endpoint, pc, sdp, track_rx, decode).await
    }

    /// POSTs `sdp` (the offer of `pc`, possibly edited) and starts receiving.
    pub async fn post_offer(
        endpoint: &str,
        pc: Arc<dyn PeerConnection>,
        sdp: String,
        track_rx: oneshot::Receiver<Arc<dyn TrackRemote>>,
        decode: bool,
    ) -> Viewer {
        let started = Instant::now();
        let res = reqwest::Client::new()
            .post(endpoint)
            .header("Content-Type", "application/sdp")
            .body(sdp)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "POST {endpoint}");
        assert_eq!(res.headers()["content-type"], "application/sdp");
        let location = res.headers()["location"].to_str().unwrap().to_string();
        let etag = res
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_string());
        let answer = res.text().await.unwrap();
        pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
            .await
            .unwrap();

        let (dec_tx, dec_rx) = watch::channel(Decoded::default());
        let track_slot = Arc::new(Mutex::new(None));
        let slot = track_slot.clone();
        tokio::spawn(async move {
            let Ok(Ok(track)) = tokio::time::timeout(WAIT, track_rx).await else {
                return;
            };
            *slot.lock().unwrap() = Some(track.clone());
            receive(track, dec_tx, decode).await;
        });
        Viewer {
            pc,
            location,
            etag,
            decoded: dec_rx,
            started,
            track: track_slot,
        }
    }

    /// Waits until `pred` holds for what was decoded, or panics after [`WAIT`].
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Decoded) -> bool) -> Decoded {
        let got = match tokio::time::timeout(WAIT, self.decoded.wait_for(|d| pred(d))).await {
            Ok(Ok(d)) => Some(d.clone()),
            _ => None,
        };
        got.unwrap_or_else(|| {
            panic!(
                "viewer never got {what}; decoded so far: {:?}",
                *self.decoded.borrow()
            )
        })
    }

    /// Waits until `count` (frames, frame numbers read, ...) grows by `more` from now: the
    /// video is still flowing.
    pub async fn wait_for_more(
        &mut self,
        what: &str,
        count: impl Fn(&Decoded) -> usize,
        more: usize,
    ) -> Decoded {
        let from = count(&self.decoded.borrow());
        self.wait_for(what, |d| count(d) >= from + more).await
    }

    /// Sends a Picture Loss Indication to the server.
    pub async fn send_pli(&self) {
        let track = self.track.lock().unwrap().clone().expect("track arrived");
        send_pli(&track).await;
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

/// Sends a Picture Loss Indication for `track`'s stream to its sender.
pub async fn send_pli(track: &Arc<dyn TrackRemote>) {
    let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
    track
        .write_rtcp(vec![Box::new(PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: ssrc,
        })])
        .await
        .unwrap();
}

/// Depacketizes RTP into access units and decodes them.
pub async fn receive(track: Arc<dyn TrackRemote>, out: watch::Sender<Decoded>, decode: bool) {
    let mut last_seq: Option<u16> = None;
    let mut depack = H264Packet::default();
    let mut decoder = openh264::decoder::Decoder::new().unwrap();
    let mut au: Vec<u8> = Vec::new();
    let mut state = Decoded::default();
    let mut size = None;
    while let Some(ev) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(pkt) = ev else {
            continue;
        };
        state.rtp_packets += 1;
        state.rtp_bytes += pkt.payload.len() as u64 + 12;
        state.first_packet_at.get_or_insert_with(Instant::now);
        let seq = pkt.header.sequence_number;
        if let Some(prev) = last_seq {
            let step = seq.wrapping_sub(prev);
            if step > 1 && step < 0x8000 {
                state.rtp_gaps += step as u64 - 1;
            }
        }
        last_seq = Some(seq);
        for e in &pkt.header.extensions {
            *state.packets_with_extension.entry(e.id).or_default() += 1;
            let seen = (e.id, e.payload.to_vec());
            let of_id = state.extensions.iter().filter(|(i, _)| *i == e.id).count();
            if !state.extensions.contains(&seen) && of_id < 4 {
                state.extensions.push(seen);
            }
        }
        if !decode {
            if state.rtp_packets % 64 == 0 {
                out.send_replace(state.clone());
            }
            continue;
        }
        if let Ok(bytes) = depack.depacketize(&pkt.payload) {
            au.extend_from_slice(&bytes);
        }
        if !pkt.header.marker {
            continue;
        }
        if let Ok(Some(yuv)) = decoder.decode(&au) {
            use openh264::formats::YUVSource;
            let (w, h) = yuv.dimensions();
            let (ys, us, _) = yuv.strides();
            if size.map(|(sw, sh, _)| (sw, sh)) != Some((w, h)) {
                size = Some((
                    w,
                    h,
                    Barcode::for_size(Size::new(w as u32, h as u32).unwrap()),
                ));
            }
            if let Some((_, _, Some(code))) = size {
                if let Some((n, _ms)) = code.read(yuv.y(), ys) {
                    state.numbers.push(n);
                }
            }
            state.last = Some(Picture::copy(w, h, [yuv.y(), yuv.u(), yuv.v()], ys, us));
            state.rtp_timestamps.push(pkt.header.timestamp);
            state.frames += 1;
            if whepcast::encode::nal_units(&au).any(|u| u.first().is_some_and(|b| b & 0x1f == 5)) {
                state.keyframes += 1;
            }
            state.size = Some((w, h));
            state.first_frame_at.get_or_insert_with(Instant::now);
            out.send_replace(state.clone());
        }
        au.clear();
    }
}

/// Raw POST to the WHEP endpoint: (status, headers, body).
pub async fn post(
    url: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = reqwest::Client::new().post(url).body(body);
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    respond(req).await
}

/// Sends `req`: (status, headers, body).
pub async fn respond(req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, String) {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.text().await.unwrap())
}

/// The body of `GET url`.
pub async fn get_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Polls `f` every 100 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Starts `whepcast serve ARGS --listen 127.0.0.1:0` and returns it with its base URL.
pub fn spawn_serve(args: &[&str], env: &[(&str, &str)], stdin: Stdio) -> (Running, String) {
    spawn_serve_feeding(args, env, stdin, |_| {})
}

/// Like [`spawn_serve`], calling `feed` with the child before waiting for its URL (a source
/// reading standard input needs its header before the server can start).
pub fn spawn_serve_feeding(
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Stdio,
    feed: impl FnOnce(&mut Child),
) -> (Running, String) {
    // option_env: examples/watch.rs includes this file too, and examples get no binary path.
    let mut cmd = Command::new(option_env!("CARGO_BIN_EXE_whepcast").unwrap_or("whepcast"));
    cmd.arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("whepcast starts");
    feed(&mut child);
    let mut child = Running(child);
    let base = read_url(&mut child.0);
    (child, base)
}

/// Reads stdout until a line with an http:// URL; returns it without a trailing slash.
pub fn read_url(child: &mut Child) -> String {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!("exited before printing its URL");
        }
        if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            return url.trim_end_matches('/').to_string();
        }
    }
}

/// A child process that is stopped (SIGTERM) when dropped, so a failing test leaves no
/// server behind.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, which it keeps until we wait for it.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

pub fn stop(child: Running) {
    drop(child);
}

/// The sum of the values of every `/metrics` line that starts with `name` (a metric name,
/// or a name with its labels); 0 when there is none.
pub async fn metric(base: &str, name: &str) -> f64 {
    get_text(&format!("{base}/metrics"))
        .await
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `GET {base}/api/streams`, parsed (for a server in another process).
pub async fn api_at(base: &str) -> serde_json::Value {
    serde_json::from_str(&get_text(&format!("{base}/api/streams")).await).unwrap()
}

/// A stream `name` whose pictures come from a WHIP publisher; its waiting picture is `size`.
pub fn whip_stream(name: &str, size: &str) -> StreamConfig {
    let size: Size = size.parse().unwrap();
    let opts = OpenOptions {
        size: Some(size),
        pixel_format: None,
    };
    StreamConfig::from_spec(name, SourceSpec::Whip, opts, settings(size, 15, 2.0))
}

/// A publisher's sendonly H.264 offer (webrtc-rs, like any WHIP client), and its connection.
pub async fn publisher_offer() -> (Arc<dyn PeerConnection>, String) {
    use rtc::media_stream::MediaStreamTrack;
    use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
    use webrtc::media_stream::track_local::{static_rtp::TrackLocalStaticRTP, TrackLocal};
    let (pc, mut gathered, _) = client_pc().await;
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "test".into(),
        "video".into(),
        "test".into(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(1234),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: MIME_TYPE_H264.to_string(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line:
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    )));
    pc.add_transceiver_from_track(
        track as Arc<dyn TrackLocal>,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec!["test".into()],
            send_encodings: vec![],
        }),
    )
    .await
    .unwrap();
    let offer = pc.create_offer(None).await.unwrap();
    pc.set_local_description(offer).await.unwrap();
    let _ = tokio::time::timeout(WAIT, gathered.wait_for(|d| *d)).await;
    let sdp = pc.local_description().await.unwrap().sdp;
    (pc, sdp)
}
