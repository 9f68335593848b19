//! One viewer's sender: the frames of the rendition it is on, stamped with its own SSRC,
//! payload type and sequence numbers, moving between renditions at keyframes.
//!
//! Switching keeps one continuous track: the same SSRC, sequence numbers that go on, and RTP
//! timestamps that only grow (every rendition stamps the same capture clock; a keyframe that
//! shares a timestamp with the frame just sent from the old rendition goes one tick later).
//! The picture size changes at the new rendition's IDR, which carries its SPS and PPS.

use super::adapt::{Preference, Reading, Selector};
use super::{Feed, MediaFrame, Renditions};
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;

/// Video waiting in the viewer's pacer beyond this is not worth sending after: the sender
/// skips to the next keyframe (and a lower rendition) instead of adding delay.
pub const MAX_QUEUE_DELAY: Duration = Duration::from_millis(400);
/// Queueing on the network path beyond this: the link carries less than is sent, whatever
/// the estimate says yet; move down.
pub const MAX_PATH_QUEUEING: Duration = Duration::from_millis(200);
/// A switch whose keyframe has not come by then asks again.
const SWITCH_RETRY: Duration = Duration::from_secs(1);
/// Bytes of one filler packet (a probe's padding).
const FILLER_BYTES: usize = 1100;
/// Most filler packets after one frame.
const MAX_FILLERS: usize = 40;

/// A filler-data NAL unit (H.264 type 12, RFC 6184 single NAL unit packet): decoders skip
/// it, so it pads a frame to probe whether the link carries more. Made once, shared.
fn filler() -> Bytes {
    static FILLER: OnceLock<Bytes> = OnceLock::new();
    FILLER
        .get_or_init(|| {
            let mut nal = vec![0xFF; FILLER_BYTES];
            nal[0] = 0x0C; // forbidden_zero 0, nal_ref_idc 0, type 12 (filler data)
            nal[FILLER_BYTES - 1] = 0x80; // rbsp trailing bits
            Bytes::from(nal)
        })
        .clone()
}

/// When a viewer's connection can take media: [`send`] subscribes once ICE is up (so the
/// IDR it asks for is encoded during the DTLS handshake) and writes once SRTP is keyed.
pub struct Readiness {
    pub ice_up: watch::Receiver<bool>,
    pub connected: watch::Receiver<bool>,
    /// When the viewer's offer arrived (for the logs).
    pub since: Instant,
}

/// What one viewer's packets carry that the shared ones do not.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub ssrc: u32,
    pub payload_type: u8,
    /// The id the viewer gave the playout-delay header extension, if it offered it.
    pub playout_delay: Option<u8>,
}

/// Playout delay "min 0, max 0" (RTP header extension, 12 + 12 bits in 10 ms units): render
/// each frame as soon as it is decoded, no smoothing buffer. Chromium keeps the last value
/// it saw, so it goes on the first packet of every keyframe, which every viewer starts with.
const PLAYOUT_DELAY_NONE: [u8; 3] = [0, 0, 0];

/// What one viewer is getting: for the API, and for its keyframe requests (which go to the
/// rendition it is on).
#[derive(Debug, Default)]
pub struct Viewing {
    current: AtomicUsize,
    switches: AtomicU64,
}

impl Viewing {
    /// The rendition the viewer is on (0 is the best).
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// Times it moved between renditions.
    pub fn switches(&self) -> u64 {
        self.switches.load(Ordering::Relaxed)
    }
}

/// Everything one viewer's sender needs besides the stream.
pub struct Viewer {
    pub track: Arc<TrackLocalStaticRTP>,
    pub stamp: Stamp,
    pub ready: Readiness,
    pub preference: Preference,
    /// Reads the connection's link: estimate and pacer.
    pub link: Box<dyn Fn() -> Reading + Send + Sync>,
    pub viewing: Arc<Viewing>,
    /// Every frame sent to the viewer goes here too (its data channel's frame times).
    pub sent: broadcast::Sender<Arc<MediaFrame>>,
}

/// Where the next frame came from.
enum Next {
    Current(Result<Arc<MediaFrame>, RecvError>),
    Switching(Result<Arc<MediaFrame>, RecvError>),
}

/// A switch under way: the rendition's frames are read until its first keyframe.
struct Pending {
    index: usize,
    frames: broadcast::Receiver<Arc<MediaFrame>>,
    asked: Instant,
}

/// Sends the stream's packets to one viewer until cancelled or the connection is gone.
///
/// Starts only once the connection is up: packets written before DTLS has keyed SRTP are
/// dropped, and losing the first IDR would cost the viewer a whole keyframe interval.
pub async fn send(renditions: Renditions, viewer: Viewer, cancel: CancellationToken) {
    let Viewer {
        track,
        stamp,
        ready,
        preference,
        link,
        viewing,
        sent,
    } = viewer;
    // Ask for the IDR as soon as ICE is up, so encoding it overlaps the DTLS handshake; the
    // frames wait in this viewer's receiver until SRTP is keyed.
    let Readiness {
        mut ice_up,
        mut connected,
        since,
    } = ready;
    tokio::select! {
        _ = cancel.cancelled() => return,
        up = ice_up.wait_for(|up| *up) => if up.is_err() { return },
    }
    tracing::debug!("ICE connected {:?} after the offer", since.elapsed());
    let rates = renditions.iter().map(Feed::bitrate).collect();
    let mut selector = Selector::new(rates, preference, link().estimate_bps, Instant::now());
    let mut current = selector.current();
    viewing.current.store(current, Ordering::Relaxed);
    let Some(feed) = renditions.get(current) else {
        return;
    };
    // Within the keyframe rate limit a new IDR could be 200 ms away; a recent one, with the
    // frames since, starts this viewer at once and costs no encode.
    let (backlog, mut frames) = feed.subscribe_from_keyframe();
    let replaying = !backlog.is_empty();
    if replaying {
        metrics::counter!("whepcast_keyframes_replayed_total").increment(1);
    } else {
        feed.request_keyframe();
    }
    let mut backlog = backlog.into_iter();
    let bytes_sent = metrics::counter!("whepcast_bytes_sent_total");
    let packets_sent = metrics::counter!("whepcast_packets_sent_total");
    tokio::select! {
        _ = cancel.cancelled() => return,
        up = connected.wait_for(|up| *up) => if up.is_err() { return },
    }
    tracing::debug!("connected {:?} after the offer", since.elapsed());
    let mut seq: u16 = rand::random();
    let mut last_timestamp: Option<u32> = None;
    let mut pending: Option<Pending> = None;
    let mut last_sent = Instant::now();
    // Probe bytes not sent yet (less than a filler packet).
    let mut owed = 0.0f64;
    // A decoder can only start at an IDR; until one arrives, P-frames are useless to it.
    let mut need_keyframe = true;
    loop {
        let next = match backlog.next() {
            Some(f) => Next::Current(Ok(f)),
            None => tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                f = async {
                    match pending.as_mut() {
                        Some(p) => p.frames.recv().await,
                        None => std::future::pending().await,
                    }
                } => Next::Switching(f),
                f = frames.recv() => Next::Current(f),
            },
        };
        let frame = match next {
            Next::Switching(Ok(f)) if f.keyframe => {
                // The new rendition's keyframe: it replaces the old one from here on.
                let Some(p) = pending.take() else { continue };
                metrics::counter!(
                    "whepcast_rendition_switches_total",
                    "direction" => if p.index < current { "up" } else { "down" }
                )
                .increment(1);
                tracing::debug!(
                    "rendition {} -> {} ({}) after {:?}",
                    current,
                    p.index,
                    renditions.get(p.index).map(Feed::label).unwrap_or_default(),
                    p.asked.elapsed()
                );
                frames = p.frames;
                current = p.index;
                viewing.current.store(current, Ordering::Relaxed);
                viewing.switches.fetch_add(1, Ordering::Relaxed);
                backlog = Vec::new().into_iter();
                need_keyframe = false;
                f
            }
            // Frames before its first keyframe are of no use to the viewer yet.
            Next::Switching(Ok(_)) | Next::Switching(Err(RecvError::Lagged(_))) => continue,
            Next::Switching(Err(RecvError::Closed)) | Next::Current(Err(RecvError::Closed)) => {
                return
            }
            Next::Current(Ok(f)) => f,
            Next::Current(Err(RecvError::Lagged(n))) => {
                metrics::counter!("whepcast_viewer_frames_skipped_total").increment(n);
                tracing::debug!("viewer fell {n} frames behind; resyncing on next keyframe");
                need_keyframe = true;
                if let Some(f) = renditions.get(current) {
                    f.request_keyframe();
                }
                continue;
            }
        };

        // Once per frame: does the link still carry this rendition?
        let reading = link();
        let backlog = reading.pacer_delay > MAX_QUEUE_DELAY;
        let congested = backlog || reading.queueing > MAX_PATH_QUEUEING;
        let want = selector.pick(Instant::now(), &reading, congested);
        if want == current {
            pending = None;
        } else if pending.as_ref().is_none_or(|p| p.index != want) {
            if let Some(f) = renditions.get(want) {
                pending = Some(Pending {
                    index: want,
                    frames: f.subscribe(),
                    asked: Instant::now(),
                });
                f.request_keyframe();
            }
        } else if let Some(p) = pending
            .as_mut()
            .filter(|p| p.asked.elapsed() > SWITCH_RETRY)
        {
            p.asked = Instant::now();
            if let Some(f) = renditions.get(p.index) {
                f.request_keyframe();
            }
        }
        if backlog && !need_keyframe {
            // Seconds of video would wait in the pacer: drop frames until a keyframe instead
            // (of the lower rendition, if one was chosen above).
            metrics::counter!("whepcast_viewer_congestion_skips_total").increment(1);
            need_keyframe = true;
            if pending.is_none() {
                if let Some(f) = renditions.get(current) {
                    f.request_keyframe();
                }
            }
        }
        if need_keyframe {
            if !frame.keyframe || backlog {
                continue;
            }
            need_keyframe = false;
            tracing::debug!(
                "keyframe {} going out {:?} after the offer{}",
                frame.number,
                since.elapsed(),
                if replaying { " (replayed)" } else { "" }
            );
        }
        // Timestamps only grow, across a switch too.
        let mut timestamp = frame.packets.first().map_or(0, |p| p.header.timestamp);
        if let Some(last) = last_timestamp {
            if (timestamp.wrapping_sub(last) as i32) <= 0 {
                timestamp = last.wrapping_add(1);
            }
        }
        last_timestamp = Some(timestamp);
        // While probing for the next rendition, filler after the frame makes up the rate.
        let now = Instant::now();
        let gap = now
            .duration_since(last_sent)
            .clamp(Duration::from_millis(10), Duration::from_millis(100));
        last_sent = now;
        let fillers = match selector.probe_bps(now) {
            Some(bps) => {
                // Bytes owed to the probe's rate, carried over so that whole packets add up
                // to it.
                let frame_bytes: usize = frame.packets.iter().map(|p| p.payload.len()).sum();
                owed = (owed + bps as f64 / 8.0 * gap.as_secs_f64() - frame_bytes as f64)
                    .clamp(0.0, (MAX_FILLERS * FILLER_BYTES) as f64);
                let n = (owed / FILLER_BYTES as f64) as usize;
                owed -= (n * FILLER_BYTES) as f64;
                n
            }
            None => {
                owed = 0.0;
                0
            }
        };
        let last = frame.packets.len().saturating_sub(1);
        let extra = (0..fillers).map(|_| rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                ..Default::default()
            },
            payload: filler(),
        });
        for (i, mut packet) in frame.packets.iter().cloned().chain(extra).enumerate() {
            packet.header.ssrc = stamp.ssrc;
            packet.header.payload_type = stamp.payload_type;
            packet.header.timestamp = timestamp;
            // The access unit ends with its last filler, if any.
            packet.header.marker = i == last + fillers;
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
        if fillers > 0 {
            metrics::counter!("whepcast_probe_bytes_total")
                .increment((fillers * FILLER_BYTES) as u64);
        }
        // Nobody listening (no data channel) is fine.
        let _ = sent.send(frame);
    }
}
