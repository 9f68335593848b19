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
//!
//! A stream has one channel per rendition ([`Renditions`], best first); each viewer's sender
//! ([`send`]) follows one at a time and moves between them at keyframes as its link allows
//! ([`adapt`]). A rendition nobody follows has no subscriber, and the pipeline skips it.

mod adapt;
mod send;

pub use adapt::{Choice, Preference, Reading, Selector, UP_HEADROOM};
pub use send::{send, Readiness, Stamp, Viewer, Viewing};

use crate::config::Size;
use bytes::Bytes;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::header::Header;
use rtc::rtp::packetizer::Payloader;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// RTP payload budget per packet: 1200 bytes keeps every packet under common path MTUs
/// once SRTP, UDP, IP and TURN headers are added.
pub const RTP_MTU: usize = 1200;
/// Frames a viewer may fall behind before it is made to resynchronise (~0.25 s at 30 fps).
const CHANNEL_FRAMES: usize = 8;

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
    /// Cancelled when the stream has no more frames (shared by its renditions).
    ended: CancellationToken,
    /// The rate this rendition is encoded at, bits per second.
    bitrate: u32,
    /// Its picture size now, `width << 32 | height` (it follows the source's).
    size: AtomicU64,
    /// The rate the receiver's link carries, when one receiver decides it (a WHIP
    /// publisher's endpoint); 0: encode at `bitrate`.
    target_bps: AtomicU32,
    /// How young the last keyframe must be for a joiner to start from it, ms
    /// ([`START_FROM_LAST_KEYFRAME`] unless set).
    replay_ms: AtomicU64,
}

impl Shared {
    fn replay_window(&self) -> Duration {
        Duration::from_millis(self.replay_ms.load(Ordering::Relaxed))
    }
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

/// A stream's renditions as viewers see them: one [`Feed`] each, best (highest bit rate)
/// first.
#[derive(Clone)]
pub struct Renditions(Arc<[Feed]>);

/// A fan-out of one rendition: the pipeline keeps the [`Publisher`], viewers clone the
/// [`Feed`].
pub fn channel() -> (Publisher, Feed) {
    let (mut publishers, renditions) = ladder(&[0]);
    (publishers.remove(0), renditions.top().clone())
}

/// One fan-out per rendition, encoded at `bitrates` (best first), ending together.
pub fn ladder(bitrates: &[u32]) -> (Vec<Publisher>, Renditions) {
    let ended = CancellationToken::new();
    let shared: Vec<Arc<Shared>> = bitrates
        .iter()
        .map(|&bitrate| {
            Arc::new(Shared {
                tx: broadcast::channel(CHANNEL_FRAMES).0,
                since_keyframe: Mutex::new(Vec::new()),
                keyframe_wanted: AtomicBool::new(false),
                waker: OnceLock::new(),
                ended: ended.clone(),
                bitrate,
                size: AtomicU64::new(0),
                target_bps: AtomicU32::new(0),
                replay_ms: AtomicU64::new(START_FROM_LAST_KEYFRAME.as_millis() as u64),
            })
        })
        .collect();
    let publishers = shared
        .iter()
        .map(|s| Publisher { shared: s.clone() })
        .collect();
    let feeds: Vec<Feed> = shared.into_iter().map(|shared| Feed { shared }).collect();
    (publishers, Renditions(feeds.into()))
}

impl Renditions {
    /// The best rendition (the only one of a single-rendition stream).
    pub fn top(&self) -> &Feed {
        &self.0[0]
    }

    pub fn get(&self, index: usize) -> Option<&Feed> {
        self.0.get(index)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Feed> {
        self.0.iter()
    }

    /// Whether the stream has ended (end of input).
    pub fn is_ended(&self) -> bool {
        self.top().is_ended()
    }

    /// The rendition a viewer names: its size as `WxH` (`640x360`), its bit rate (`700k`),
    /// or its place in the list (`0` is the best).
    pub fn find(&self, name: &str) -> Option<usize> {
        let name = name.trim();
        if let Ok(i) = name.parse::<usize>() {
            return (i < self.len()).then_some(i);
        }
        if let Ok(size) = name.parse::<Size>() {
            return self.0.iter().position(|f| f.size() == size);
        }
        let rate = name.parse::<crate::config::Bitrate>().ok()?;
        self.0.iter().position(|f| f.bitrate() == rate.bps())
    }

    /// `WxH@RATE` for each rendition, best first (for messages and the API).
    pub fn labels(&self) -> Vec<String> {
        self.0.iter().map(Feed::label).collect()
    }
}

impl Publisher {
    /// The picture size of the frames published from now on.
    pub fn set_size(&self, size: Size) {
        self.shared.size.store(
            (size.width as u64) << 32 | size.height as u64,
            Ordering::Relaxed,
        );
    }

    /// Hands a frame to every viewer subscribed now.
    pub fn publish(&self, frame: MediaFrame) {
        let frame = Arc::new(frame);
        let mut since = lock(&self.shared.since_keyframe);
        if frame.keyframe {
            since.clear();
        }
        let window = self.shared.replay_window();
        let fresh = since.first().is_none_or(|k| k.captured.elapsed() < window);
        if !fresh {
            // Too old to start anyone from: free it (and stop collecting until the next IDR).
            since.clear();
        } else if frame.keyframe || !since.is_empty() {
            since.push(frame.clone());
        }
        // Err only means nobody is subscribed right now.
        let _ = self.shared.tx.send(frame);
    }

    /// The rate to encode at now, when the one receiver's link decides it
    /// ([`Feed::follow_link`]).
    pub fn target_bitrate(&self) -> Option<u32> {
        match self.shared.target_bps.load(Ordering::Relaxed) {
            0 => None,
            bps => Some(bps),
        }
    }

    /// How young the last keyframe must be for a joiner to start from it (and the frames
    /// since) instead of asking for a new one. A relay, whose publisher sends keyframes
    /// rarely and only when asked, keeps them longer than an encoder that makes one at will.
    pub fn set_replay_window(&self, window: Duration) {
        self.shared
            .replay_ms
            .store(window.as_millis() as u64, Ordering::Relaxed);
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
    /// The rate this rendition is encoded at, bits per second.
    pub fn bitrate(&self) -> u32 {
        self.shared.bitrate
    }

    /// Its picture size now.
    pub fn size(&self) -> Size {
        let v = self.shared.size.load(Ordering::Relaxed);
        Size {
            width: (v >> 32) as u32,
            height: v as u32,
        }
    }

    /// `WxH@RATE`, e.g. `640x360@625k`.
    pub fn label(&self) -> String {
        format!(
            "{}@{}",
            self.size(),
            crate::config::Bitrate(self.shared.bitrate)
        )
    }

    /// Viewers following this rendition now.
    pub fn viewers(&self) -> usize {
        self.shared.tx.receiver_count()
    }

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
        let window = self.shared.replay_window();
        let fresh = since.first().is_some_and(|k| k.captured.elapsed() < window);
        (if fresh { since.clone() } else { Vec::new() }, frames)
    }

    /// Asks the encoder to aim at `bps` (within this rendition's rate): for a stream whose
    /// only receiver is a WHIP endpoint, the encoder itself follows that link. `0` goes
    /// back to the rendition's rate.
    pub fn follow_link(&self, bps: u32) {
        self.shared.target_bps.store(bps, Ordering::Relaxed);
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
