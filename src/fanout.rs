//! Stage: **fanout** — every encoded frame, packetized once, to every viewer.
//!
//! The pipeline publishes each frame as one `Arc<MediaFrame>` into a bounded
//! [`tokio::sync::broadcast`] channel ([`Publisher`]); each viewer holds a [`Feed`] and runs
//! [`send`], which copies only the 12-byte RTP header of each packet (its own SSRC, payload
//! type and sequence number: a [`Stamp`]); the payload is a refcounted [`bytes::Bytes`].
//! Only SRTP and the socket write stay per viewer.
//!
//! Nobody waits on anybody: a viewer that falls behind the channel lags, skips to the next
//! keyframe and asks for one, while the encoder and the other viewers carry on. Viewers ask
//! for keyframes through the [`Feed`]; the pipeline merges and rate-limits the requests.

use bytes::Bytes;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::header::Header;
use rtc::rtp::packetizer::Payloader;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;

/// RTP payload budget per packet: 1200 bytes keeps every packet under common path MTUs
/// once SRTP, UDP, IP and TURN headers are added.
pub const RTP_MTU: usize = 1200;
/// Frames a viewer may fall behind before it is made to resynchronise (~0.25 s at 30 fps).
const CHANNEL_FRAMES: usize = 8;
/// Packets sent back to back before the sender yields for a millisecond (~60 KB).
const BURST_PACKETS: usize = 50;

/// One encoded picture as RTP packets, shared by every viewer.
///
/// The packets' SSRC, payload type and sequence number are left at zero: each viewer's
/// sender stamps its own.
#[derive(Debug)]
pub struct MediaFrame {
    pub number: u64,
    pub keyframe: bool,
    pub captured: Instant,
    pub packets: Vec<rtc::rtp::Packet>,
    /// The data channel's `frame` message (JSON): number, RTP timestamp, capture time in
    /// Unix ms. Made once by the pipeline, sent as is to every viewer with a data channel.
    pub meta: String,
}

/// At most one forced IDR per this long, however many viewers join or ask (the pipeline
/// enforces it: every IDR costs every viewer picture quality at a fixed bit rate).
pub const MIN_FORCED_IDR_GAP: Duration = Duration::from_millis(200);

/// A joining viewer starts from the last keyframe (and the frames since, sent to it alone)
/// when that keyframe is younger than this, instead of asking for a new one: inside the
/// rate limit on forced IDRs a new one could be this long away. Joins close together then
/// cost no extra IDRs and wait for none (BENCHMARKS.md, crowded joins).
pub const START_FROM_LAST_KEYFRAME: Duration = MIN_FORCED_IDR_GAP;

struct Shared {
    tx: broadcast::Sender<Arc<MediaFrame>>,
    /// The last keyframe and every frame published since, while that keyframe is younger
    /// than [`START_FROM_LAST_KEYFRAME`] (empty otherwise). Frames are sent to `tx` under
    /// this lock, so a joiner's copy and its subscription neither miss nor repeat a frame.
    since_keyframe: Mutex<Vec<Arc<MediaFrame>>>,
    keyframe_wanted: AtomicBool,
    /// The pipeline thread, woken when a viewer asks for a keyframe while it idles.
    waker: OnceLock<std::thread::Thread>,
    /// Cancelled when the stream has no more frames.
    ended: CancellationToken,
}

/// The pipeline's end of a stream's fan-out.
pub struct Publisher {
    shared: Arc<Shared>,
}

/// A viewer's end: subscribe to frames, ask for keyframes, learn that the stream ended.
#[derive(Clone)]
pub struct Feed {
    shared: Arc<Shared>,
}

/// A new fan-out: the pipeline keeps the [`Publisher`], viewers clone the [`Feed`].
pub fn channel() -> (Publisher, Feed) {
    let shared = Arc::new(Shared {
        tx: broadcast::channel(CHANNEL_FRAMES).0,
        since_keyframe: Mutex::new(Vec::new()),
        keyframe_wanted: AtomicBool::new(false),
        waker: OnceLock::new(),
        ended: CancellationToken::new(),
    });
    (
        Publisher {
            shared: shared.clone(),
        },
        Feed { shared },
    )
}

impl Publisher {
    /// Hands a frame to every viewer subscribed now.
    pub fn publish(&self, frame: MediaFrame) {
        let frame = Arc::new(frame);
        let mut since = lock(&self.shared.since_keyframe);
        if frame.keyframe {
            since.clear();
        }
        let fresh = since
            .first()
            .is_none_or(|k| k.captured.elapsed() < START_FROM_LAST_KEYFRAME);
        if !fresh {
            // Too old to start anyone from: free it (and stop collecting until the next IDR).
            since.clear();
        } else if frame.keyframe || !since.is_empty() {
            since.push(frame.clone());
        }
        // Err only means nobody is subscribed right now.
        let _ = self.shared.tx.send(frame);
    }

    /// Whether anyone is subscribed.
    pub fn watched(&self) -> bool {
        self.shared.tx.receiver_count() > 0
    }

    /// Whether a keyframe was asked for and not yet answered.
    pub fn keyframe_wanted(&self) -> bool {
        self.shared.keyframe_wanted.load(Ordering::Acquire)
    }

    /// Takes the pending keyframe request, if any.
    pub fn take_keyframe_request(&self) -> bool {
        self.shared.keyframe_wanted.swap(false, Ordering::AcqRel)
    }

    /// A keyframe went out: every request so far is answered.
    pub fn keyframe_sent(&self) {
        self.shared.keyframe_wanted.store(false, Ordering::Release);
    }

    /// `thread` is unparked whenever a viewer asks for a keyframe.
    pub fn wake_on_request(&self, thread: std::thread::Thread) {
        let _ = self.shared.waker.set(thread);
    }

    /// No more frames will come: viewers' sessions end, new ones are refused.
    pub fn end(&self) {
        self.shared.ended.cancel();
    }
}

impl Feed {
    /// A receiver of every frame from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<MediaFrame>> {
        self.shared.tx.subscribe()
    }

    /// For a joining viewer: a receiver of every frame from now on and, when the last
    /// keyframe is younger than [`START_FROM_LAST_KEYFRAME`], that keyframe and every frame
    /// since, to send before them (empty otherwise: ask for a keyframe).
    pub fn subscribe_from_keyframe(
        &self,
    ) -> (Vec<Arc<MediaFrame>>, broadcast::Receiver<Arc<MediaFrame>>) {
        let since = lock(&self.shared.since_keyframe);
        let frames = self.shared.tx.subscribe();
        let fresh = since
            .first()
            .is_some_and(|k| k.captured.elapsed() < START_FROM_LAST_KEYFRAME);
        (if fresh { since.clone() } else { Vec::new() }, frames)
    }

    /// Asks for an IDR soon. Requests are merged and rate-limited by the pipeline.
    pub fn request_keyframe(&self) {
        self.shared.keyframe_wanted.store(true, Ordering::Release);
        if let Some(t) = self.shared.waker.get() {
            t.unpark();
        }
    }

    /// Whether the stream has ended (end of input).
    pub fn is_ended(&self) -> bool {
        self.shared.ended.is_cancelled()
    }

    /// Resolves when the stream ends.
    pub async fn ended(&self) {
        self.shared.ended.cancelled().await
    }
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

/// Sends the stream's packets to one viewer until cancelled or the connection is gone.
///
/// Starts only once the connection is up: packets written before DTLS has keyed SRTP are
/// dropped, and losing the first IDR would cost the viewer a whole keyframe interval.
pub async fn send(
    feed: Feed,
    track: Arc<TrackLocalStaticRTP>,
    stamp: Stamp,
    ready: Readiness,
    cancel: CancellationToken,
) {
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
    // A decoder can only start at an IDR; until one arrives, P-frames are useless to it.
    let mut need_keyframe = true;
    loop {
        let frame = match backlog.next() {
            Some(f) => Ok(f),
            None => tokio::select! {
                _ = cancel.cancelled() => return,
                f = frames.recv() => f,
            },
        };
        let frame = match frame {
            Ok(f) => f,
            Err(RecvError::Lagged(n)) => {
                metrics::counter!("whepcast_viewer_frames_skipped_total").increment(n);
                tracing::debug!("viewer fell {n} frames behind; resyncing on next keyframe");
                need_keyframe = true;
                feed.request_keyframe();
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if need_keyframe {
            if !frame.keyframe {
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
        for (i, shared) in frame.packets.iter().enumerate() {
            if i > 0 && i % BURST_PACKETS == 0 {
                // A big frame (an IDR of a detailed screen) would otherwise leave in one burst
                // of hundreds of packets and overflow the receive buffers on its way; spread
                // it in bursts of BURST_PACKETS, 1 ms apart. Small frames go out at once.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let mut packet = shared.clone();
            packet.header.ssrc = stamp.ssrc;
            packet.header.payload_type = stamp.payload_type;
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
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Milliseconds since the Unix epoch, with sub-millisecond precision.
pub fn unix_ms(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// Splits an encoded frame into RTP packets (RFC 6184: single NAL units, FU-A fragments, SPS
/// and PPS aggregated in a STAP-A) with the `rtc` crate's payloader. SSRC, payload type and
/// sequence number are left at zero for each viewer to stamp.
#[derive(Default)]
pub struct Packetizer {
    payloader: H264Payloader,
}

impl Packetizer {
    /// Packets for one Annex B access unit; the last one carries the marker bit.
    pub fn packetize(&mut self, annexb: &[u8], timestamp: u32) -> Vec<rtc::rtp::Packet> {
        let data = Bytes::copy_from_slice(annexb);
        let payloads = self
            .payloader
            .payload(RTP_MTU - 12, &data)
            .unwrap_or_default();
        let last = payloads.len().saturating_sub(1);
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| rtc::rtp::Packet {
                header: Header {
                    version: 2,
                    marker: i == last,
                    timestamp,
                    ..Default::default()
                },
                payload,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(number: u64, keyframe: bool, age: Duration) -> MediaFrame {
        MediaFrame {
            number,
            keyframe,
            captured: Instant::now() - age,
            packets: Vec::new(),
            meta: String::new(),
        }
    }

    #[test]
    fn a_joiner_starts_from_a_recent_keyframe_and_misses_nothing_after_it() {
        let (publisher, feed) = channel();
        let _watcher = feed.subscribe();
        // Nothing before the first keyframe is kept: no decoder could start there.
        publisher.publish(frame(1, false, Duration::ZERO));
        publisher.publish(frame(2, true, Duration::from_millis(60)));
        publisher.publish(frame(3, false, Duration::from_millis(30)));
        let (backlog, mut live) = feed.subscribe_from_keyframe();
        let numbers: Vec<u64> = backlog.iter().map(|f| f.number).collect();
        assert_eq!(numbers, [2, 3]);
        publisher.publish(frame(4, false, Duration::ZERO));
        assert_eq!(live.try_recv().map(|f| f.number).ok(), Some(4));
    }

    #[test]
    fn a_keyframe_older_than_the_window_is_not_replayed_nor_kept() {
        let (publisher, feed) = channel();
        let old = START_FROM_LAST_KEYFRAME + Duration::from_millis(1);
        publisher.publish(frame(1, true, old));
        let (backlog, _live) = feed.subscribe_from_keyframe();
        assert!(backlog.is_empty());
        publisher.publish(frame(2, false, Duration::ZERO));
        assert!(lock(&feed.shared.since_keyframe).is_empty());
    }
}
