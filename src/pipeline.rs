//! Stage: **pipeline** — source → encode → packetize, once per frame, paced by a clock.
//!
//! A pacing thread, driven by a monotonic clock, draws (or captures) each frame; an encoding
//! thread encodes the previous one meanwhile ([`crate::encode::Worker`]), so on two cores a
//! frame costs the slower of the two, not their sum. Each frame is encoded once, split into
//! RTP packets once, and published to the stream's [`fanout`].
//!
//! When encoding falls behind the clock, frame slots are dropped rather than queued (latency
//! never grows). With no viewers at all the pipeline keeps time but neither draws nor
//! encodes. Keyframes: every `keyint` seconds, for a viewer that joins or asks (merged,
//! at most one per [`fanout::MIN_FORCED_IDR_GAP`]; a joiner inside that gap starts from the
//! last IDR instead), and after a pause.

use crate::config::{EncodeSettings, Ladder, Rung, Size};
use crate::encode::{self, EncodeError, Encoder};
use crate::fanout::{self, MediaFrame, Packetizer, Publisher, Renditions};
use crate::frame::{Canvas, I420Frame, Scaler};
use crate::source::{Fill, FrameInfo, Source, SourceError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// With an unchanging source, still encode a frame this often.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// H.264 over RTP always uses a 90 kHz clock.
const RTP_CLOCK: u64 = 90_000;
/// While a stream stays overloaded, how often the log says so again.
const OVERLOAD_REPEAT: Duration = Duration::from_secs(10);

/// Counters for `/api/streams` and the logs.
#[derive(Debug, Default)]
pub struct Stats {
    /// New pictures the source produced (read from its input, drawn, captured).
    pub frames_in: AtomicU64,
    pub frames_encoded: AtomicU64,
    /// Frame slots skipped because the pipeline was behind the clock.
    pub frames_dropped: AtomicU64,
    pub keyframes: AtomicU64,
    pub forced_keyframes: AtomicU64,
    pub bytes_encoded: AtomicU64,
    /// Frames encoded per second over the last second, times 1000.
    pub current_fps_milli: AtomicU64,
    /// Current picture size, `width << 32 | height` (a screen can be resized).
    size: AtomicU64,
    /// When the pipeline last completed a tick, in ms since it started (liveness).
    last_tick_ms: AtomicU64,
    /// Share of the last second the pipeline spent drawing, encoding and packetizing, ‰.
    pub load_permille: AtomicU64,
    /// Whether the pipeline could not keep up over the last second (it dropped frames).
    pub overloaded: AtomicBool,
}

impl Stats {
    fn set_size(&self, size: Size) {
        self.size.store(
            (size.width as u64) << 32 | size.height as u64,
            Ordering::Relaxed,
        );
    }

    /// The size being encoded now.
    pub fn size(&self) -> Size {
        let v = self.size.load(Ordering::Relaxed);
        Size {
            width: (v >> 32) as u32,
            height: v as u32,
        }
    }
}

/// Counters of one rendition.
#[derive(Debug, Default)]
pub struct RenditionStats {
    pub frames_encoded: AtomicU64,
    pub bytes_encoded: AtomicU64,
    pub keyframes: AtomicU64,
    /// Time spent scaling and encoding it, ns.
    pub busy_ns: AtomicU64,
}

/// One rendition of a running stream, for the API and `/metrics`.
pub struct RenditionStatus<'a> {
    pub index: usize,
    pub feed: &'a fanout::Feed,
    pub stats: &'a RenditionStats,
}

struct Shared {
    /// Where each rendition's frames go, and where keyframe requests come from; best first.
    publishers: Vec<Publisher>,
    renditions: Renditions,
    /// Per rendition, in the same order.
    rendition_stats: Vec<RenditionStats>,
    rungs: Vec<Rung>,
    name: String,
    /// What the frames come from, as the user wrote it (`pattern`, `screen:0`, ...).
    label: String,
    /// Time the encoding thread spent since the pacing thread last looked (for `load`).
    encode_busy_ns: AtomicU64,
    /// Cancelled when the stream is dropped: the pacing loop ends, and a source waiting for
    /// input stops waiting.
    stop: CancellationToken,
    /// What is wrong with the source now, if anything (for `/healthz`).
    problem: std::sync::Mutex<Option<String>>,
    stats: Stats,
    settings: EncodeSettings,
    started: Instant,
}

impl Shared {
    /// Whether any rendition has a viewer.
    fn watched(&self) -> bool {
        self.publishers.iter().any(Publisher::watched)
    }

    /// Whether a viewer of any rendition waits for a keyframe.
    fn keyframe_wanted(&self) -> bool {
        self.publishers.iter().any(Publisher::keyframe_wanted)
    }

    /// No more frames: every rendition's viewers are told.
    fn end(&self) {
        for p in &self.publishers {
            p.end();
        }
    }
}

/// A running stream: its pacing and encoding threads. Dropping it stops them.
pub struct Pipeline {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A cheap handle on a running pipeline's settings, counters and health.
#[derive(Clone)]
pub struct Status {
    shared: Arc<Shared>,
}

/// Opens a source; run on the pipeline thread, since some sources (X11) cannot move threads.
/// It is given the stream's stop signal: a source waiting for input stops waiting with it.
pub type OpenSource =
    Box<dyn FnOnce(&CancellationToken) -> Result<Box<dyn Source>, SourceError> + Send>;

/// Why a stream could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error(transparent)]
    Settings(#[from] crate::config::ConfigError),
    #[error("cannot start the pipeline thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the pipeline thread ended while starting (see the log above)")]
    ThreadDied,
}

/// Fits the encoder settings to an opened source — its size, and the frame rate it dictates
/// if any — and builds the encoder. `serve` and `encode` both go through here.
pub fn prepare(
    source: Box<dyn Source>,
    mut settings: EncodeSettings,
) -> Result<(Box<dyn Source>, Encoder, EncodeSettings), StartError> {
    settings.size = source.size();
    if let Some(fps) = source.native_fps() {
        settings.fps = (fps.round() as u32).clamp(1, 120);
    }
    settings.validate()?;
    let encoder = Encoder::new(settings)?;
    Ok((source, encoder, settings))
}

impl Pipeline {
    /// Starts the pipeline thread: opens the source there, sets up the encoder for the size
    /// (and, for inputs that dictate one, the frame rate) the source has, and starts pacing.
    /// `settings.size` is ignored; the source decides it. Returns once the source is open.
    pub fn start(
        name: &str,
        label: impl Into<String>,
        open: OpenSource,
        settings: EncodeSettings,
        ladder: &Ladder,
    ) -> Result<Self, StartError> {
        let encode_seconds =
            metrics::histogram!("whepcast_encode_seconds", "stream" => name.to_string());
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let (shared_tx, shared_rx) = std::sync::mpsc::sync_channel::<Arc<Shared>>(1);
        let span = tracing::info_span!("stream", name = %name);
        let stop = CancellationToken::new();
        let source_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("whepcast-pipeline".into())
            .spawn(move || {
                let _span = span.entered();
                let opened = open(&source_stop)
                    .map_err(StartError::from)
                    .and_then(|source| prepare(source, settings));
                let (source, encoder, settings) = match opened {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(settings));
                let Ok(shared) = shared_rx.recv() else {
                    return;
                };
                let stage = EncodeStage::new(shared.clone(), encode_seconds, encoder);
                Pacer {
                    shared,
                    source,
                    // Made at the source's size when first drawn into.
                    canvas: Canvas::new(Size {
                        width: 0,
                        height: 0,
                    }),
                    size: settings.size,
                    frames_in: 0,
                }
                .run(stage)
            })
            .map_err(StartError::Thread)?;
        let settings = match ready_rx.recv() {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(StartError::ThreadDied);
            }
        };
        let rungs = ladder.rungs(settings.size, settings.bitrate);
        let rates: Vec<u32> = rungs.iter().map(|r| r.bitrate.bps()).collect();
        let (publishers, renditions) = fanout::ladder(&rates);
        for (p, rung) in publishers.iter().zip(&rungs) {
            p.wake_on_request(thread.thread().clone());
            p.set_size(rung.size_for(settings.size));
        }
        let shared = Arc::new(Shared {
            rendition_stats: publishers
                .iter()
                .map(|_| RenditionStats::default())
                .collect(),
            rungs,
            publishers,
            renditions,
            name: name.to_owned(),
            label: label.into(),
            encode_busy_ns: AtomicU64::new(0),
            stop,
            problem: std::sync::Mutex::new(None),
            stats: Stats::default(),
            settings,
            started: Instant::now(),
        });
        shared.stats.set_size(settings.size);
        // The thread is waiting for this; it cannot fail while the thread lives.
        let _ = shared_tx.send(shared.clone());
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// The stream's renditions, best first, for viewers.
    pub fn renditions(&self) -> Renditions {
        self.shared.renditions.clone()
    }

    /// Settings, counters and health, for the API and `/metrics`.
    pub fn status(&self) -> Status {
        Status {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shared.stop.cancel();
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            // Ends within a frame interval, or a source's stop check (file::STOP_CHECK) when
            // it waits for input; the encoding thread is joined by the pacing thread.
            let _ = t.join();
        }
    }
}

impl Status {
    /// The status of a stream whose frames arrive encoded ([`crate::relay`]): renditions
    /// `rungs` (the first is the publisher's own), whose [`Publisher`]s the relay feeds.
    pub(crate) fn relayed(
        name: &str,
        label: &str,
        settings: EncodeSettings,
        rungs: Vec<Rung>,
    ) -> Self {
        let rates: Vec<u32> = rungs.iter().map(|r| r.bitrate.bps()).collect();
        let (publishers, renditions) = fanout::ladder(&rates);
        for (p, rung) in publishers.iter().zip(&rungs) {
            p.set_size(rung.size_for(settings.size));
        }
        let shared = Arc::new(Shared {
            rendition_stats: rungs.iter().map(|_| RenditionStats::default()).collect(),
            rungs,
            publishers,
            renditions,
            name: name.to_owned(),
            label: label.to_owned(),
            encode_busy_ns: AtomicU64::new(0),
            stop: CancellationToken::new(),
            problem: std::sync::Mutex::new(None),
            stats: Stats::default(),
            settings,
            started: Instant::now(),
        });
        shared.stats.set_size(settings.size);
        Self { shared }
    }

    /// The fan-outs the relay publishes to, best first.
    pub(crate) fn publishers(&self) -> &[Publisher] {
        &self.shared.publishers
    }

    /// The renditions' rungs, best first.
    pub(crate) fn rungs(&self) -> &[Rung] {
        &self.shared.rungs
    }

    /// Renditions for viewers.
    pub(crate) fn feeds(&self) -> Renditions {
        self.shared.renditions.clone()
    }

    /// Counts one frame sent on in rendition `index` (`bytes` of payload, an IDR or not,
    /// `busy`: time spent making it) at `size`.
    pub(crate) fn relayed_frame(
        &self,
        index: usize,
        bytes: u64,
        keyframe: bool,
        size: Size,
        busy: Duration,
    ) {
        let stats = &self.shared.stats;
        let Some(own) = self.shared.rendition_stats.get(index) else {
            return;
        };
        own.frames_encoded.fetch_add(1, Ordering::Relaxed);
        own.bytes_encoded.fetch_add(bytes, Ordering::Relaxed);
        own.busy_ns
            .fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
        stats.bytes_encoded.fetch_add(bytes, Ordering::Relaxed);
        if keyframe {
            own.keyframes.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.publishers[index].set_size(size);
        if index == 0 {
            stats.frames_in.fetch_add(1, Ordering::Relaxed);
            stats.frames_encoded.fetch_add(1, Ordering::Relaxed);
            if keyframe {
                stats.keyframes.fetch_add(1, Ordering::Relaxed);
            }
            if stats.size() != size {
                stats.set_size(size);
            }
        }
    }

    /// The relay is alive (for `/healthz`).
    pub(crate) fn tick(&self) {
        let ms = self.shared.started.elapsed().as_millis() as u64;
        self.shared.stats.last_tick_ms.store(ms, Ordering::Relaxed);
    }

    /// Cancelled when the server drops the stream.
    pub(crate) fn stopped(&self) -> &CancellationToken {
        &self.shared.stop
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    pub fn settings(&self) -> &EncodeSettings {
        &self.shared.settings
    }

    /// `Ok` while the source is producing frames; otherwise why not.
    pub fn health(&self) -> Result<(), String> {
        if self.is_ended() {
            return Err("the stream has ended".into());
        }
        let problem = self
            .shared
            .problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(p) = problem {
            return Err(p);
        }
        let now = self.shared.started.elapsed().as_millis() as u64;
        let last = self.shared.stats.last_tick_ms.load(Ordering::Relaxed);
        let allowed = (self.shared.settings.frame_interval().as_millis() as u64 * 3).max(3000);
        if now.saturating_sub(last) > allowed && now > allowed {
            return Err(format!(
                "no frame from the source for {:.1} s",
                now.saturating_sub(last) as f64 / 1000.0
            ));
        }
        Ok(())
    }

    /// Whether the source has ended (end of input).
    pub fn is_ended(&self) -> bool {
        self.shared.renditions.is_ended()
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// What the frames come from, as the user wrote it.
    pub fn label(&self) -> &str {
        &self.shared.label
    }

    /// The stream's renditions, best first, with their counters.
    pub fn renditions(&self) -> impl Iterator<Item = RenditionStatus<'_>> {
        self.shared
            .renditions
            .iter()
            .zip(&self.shared.rendition_stats)
            .enumerate()
            .map(|(index, (feed, stats))| RenditionStatus { index, feed, stats })
    }

    /// Time since the pipeline started.
    pub fn uptime(&self) -> Duration {
        self.shared.started.elapsed()
    }
}

/// Everything the pacing thread owns: the clock, the source, and the picture it draws into.
/// Encoding runs on a second thread ([`EncodeStage`] behind an [`encode::Worker`]), so the
/// next picture is drawn while this one is encoded.
struct Pacer {
    shared: Arc<Shared>,
    source: Box<dyn Source>,
    /// The source's canvas. Sources may draw only what changed, so they always get this same
    /// buffer; what changed is copied to the encoder's buffer. (Those that fill any frame
    /// ([`Source::fills_any_frame`]) draw into the encoder's buffers instead.)
    canvas: Canvas,
    /// The size last drawn, to notice changes.
    size: Size,
    frames_in: u64,
}

/// What the pacing thread tells the encoding thread with each picture.
struct Job {
    number: u64,
    captured: Instant,
    /// First frame after nobody was watching: encode an IDR.
    resumed: bool,
}

/// The encoding half of the pipeline: per rendition a scaler, encoder, packetizer and
/// keyframe policy.
struct EncodeStage {
    shared: Arc<Shared>,
    encode_seconds: metrics::Histogram,
    renditions: Vec<RenditionEncoder>,
    scaler: Scaler,
}

/// One rendition's encoder state. Its encoder is made when a viewer first needs it.
struct RenditionEncoder {
    rung: Rung,
    encoder: Option<Encoder>,
    packetizer: Packetizer,
    /// The source picture scaled to this rendition's size (reused frame to frame).
    scaled: Option<I420Frame>,
    last_key: Option<Instant>,
    /// Whether it had a viewer at the last frame: one that gains one starts with an IDR.
    watched: bool,
}

impl Pacer {
    /// Paces the source, with `stage` encoding on its own thread.
    fn run(mut self, mut stage: EncodeStage) {
        let worker =
            match encode::Worker::spawn("whepcast-encode", move |frame: &I420Frame, job: Job| {
                stage.process(frame, job)
            }) {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!("cannot start the encoding thread: {e}");
                    self.shared.end();
                    return;
                }
            };
        self.pace(&worker);
        // Frames already handed over are still encoded and sent before the stream ends.
        worker.finish();
        tracing::debug!("pipeline stopped after {} frames", self.frames_in);
        self.shared.end();
    }

    /// Draws a picture per frame slot and hands it to `worker`, until the source ends or
    /// the stream is stopped.
    fn pace(&mut self, worker: &encode::Worker<Job>) {
        let interval = self.shared.settings.frame_interval();
        let start = self.shared.started;
        let mut next_due = Instant::now();
        let mut slot: u64 = 0;
        let mut idle = true;
        let mut last_encode = Instant::now();
        let mut last_error: Option<Instant> = None;
        let (mut window_start, mut window_frames) = (Instant::now(), 0u64);
        let mut window_dropped = 0u64;
        let mut busy_in_window = Duration::ZERO;
        let mut last_warning: Option<Instant> = None;
        while !self.shared.stop.is_cancelled() {
            let now = Instant::now();
            if now < next_due {
                if idle && self.shared.watched() {
                    // First viewer after a pause: its IDR now, not at the next tick.
                    next_due = now;
                } else {
                    // Woken early by `request_keyframe` (unpark) or a spurious wakeup: re-check.
                    std::thread::park_timeout(next_due - now);
                    continue;
                }
            }
            let late = now.saturating_duration_since(next_due);
            if late >= interval {
                // More than a whole frame late: skip the slots we missed instead of
                // queueing them, so what viewers see stays current.
                let behind = (late.as_secs_f64() / interval.as_secs_f64()) as u64;
                self.shared
                    .stats
                    .frames_dropped
                    .fetch_add(behind, Ordering::Relaxed);
                slot += behind;
                next_due += interval.mul_f64(behind as f64);
            }
            let number = slot;
            slot += 1;
            next_due += interval;
            let since = window_start.elapsed();
            if since >= Duration::from_secs(1) {
                let encoded = self.shared.stats.frames_encoded.load(Ordering::Relaxed);
                let fps_milli = (encoded - window_frames) * 1_000_000 / since.as_millis() as u64;
                self.shared
                    .stats
                    .current_fps_milli
                    .store(fps_milli, Ordering::Relaxed);
                let dropped = self.shared.stats.frames_dropped.load(Ordering::Relaxed);
                // The slower of the two threads sets the pace.
                let encoding =
                    Duration::from_nanos(self.shared.encode_busy_ns.swap(0, Ordering::Relaxed));
                self.report_load(
                    busy_in_window.max(encoding).as_secs_f64() / since.as_secs_f64(),
                    dropped - window_dropped,
                    fps_milli,
                    &mut last_warning,
                );
                (window_start, window_frames) = (Instant::now(), encoded);
                window_dropped = dropped;
                busy_in_window = Duration::ZERO;
            }

            self.tick(start);
            let watching = self.shared.watched();
            if !watching && !self.source.drain_when_idle() {
                // Nobody watching: keep time, spend nothing. The first viewer asks for an IDR.
                idle = true;
                continue;
            }
            // A buffer for the encoder first: while the encoder is behind, this waits, and
            // the picture drawn next is the current one, not one that aged in a queue.
            let size = self.source.size();
            let mut buffer = if watching {
                match worker.take(size) {
                    Some(b) => Some(b),
                    None => {
                        tracing::error!("the encoding thread stopped");
                        break;
                    }
                }
            } else {
                None
            };

            let busy = Instant::now();
            let captured = busy;
            // Sources that fill any frame draw straight into the encoder's buffer.
            let direct = self.source.fills_any_frame();
            let into = buffer.as_mut().filter(|_| direct);
            let drawn = self.draw(number, size, into, &mut last_error);
            busy_in_window += busy.elapsed();
            let mut resumed = false;
            let encode = match drawn {
                Drawn::Ended => break,
                Drawn::Failed => false,
                Drawn::Picture(fill) => {
                    if watching {
                        resumed = std::mem::take(&mut idle);
                        // Nothing new and nobody needs a keyframe: skip. A heartbeat frame
                        // now and then keeps players from deciding the stream froze.
                        resumed
                            || fill == Fill::New
                            || self.shared.keyframe_wanted()
                            || last_encode.elapsed() >= HEARTBEAT
                    } else {
                        // Read only to keep the input flowing (a pipe must not stall its
                        // producer).
                        idle = true;
                        false
                    }
                }
            };
            let Some(mut buffer) = buffer else {
                continue;
            };
            if !encode {
                worker.put_back(buffer);
                continue;
            }
            last_encode = Instant::now();
            if !direct {
                let copy = Instant::now();
                self.canvas.stage(&mut buffer);
                busy_in_window += copy.elapsed();
            }
            let job = Job {
                number,
                captured,
                resumed,
            };
            if !worker.submit(buffer, job) {
                tracing::error!("the encoding thread stopped");
                break;
            }
        }
    }

    /// Draws slot `number` into `into`, or into the canvas (a new one if the source changed
    /// size).
    fn draw(
        &mut self,
        number: u64,
        size: Size,
        into: Option<&mut I420Frame>,
        last_error: &mut Option<Instant>,
    ) -> Drawn {
        if self.size != size {
            tracing::info!("source is now {size}; restarting the encoder");
            self.size = size;
            self.shared.stats.set_size(size);
        }
        let info = FrameInfo {
            number,
            wall: SystemTime::now(),
        };
        let on_canvas = into.is_none();
        let target = match into {
            Some(frame) => frame,
            None => self.canvas.frame_mut(size),
        };
        let fill = match self.source.fill(target, info) {
            Ok(Fill::Ended) => {
                tracing::info!("source ended after {} frames", self.frames_in);
                return Drawn::Ended;
            }
            Ok(fill) => fill,
            Err(e) => {
                if on_canvas {
                    // It may have written part of a picture: buffers must not trust the canvas
                    // history past this point.
                    self.canvas.drew(None);
                }
                if last_error.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(5)) {
                    tracing::warn!("source failed: {e}");
                    *last_error = Some(Instant::now());
                }
                self.set_problem(Some(e.to_string()));
                return Drawn::Failed;
            }
        };
        // A blocked read (a silent pipe) stops the ticks: that is what health watches.
        self.tick(self.shared.started);
        self.set_problem(self.source.problem());
        if fill == Fill::New {
            if on_canvas {
                self.canvas.drew(self.source.changed());
            }
            self.frames_in += 1;
            self.shared.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        }
        Drawn::Picture(fill)
    }

    /// Publishes the last second's load, and says so in the log when the pipeline cannot
    /// keep up: once when it starts, every 10 s while it lasts, once when it is over.
    fn report_load(
        &self,
        load: f64,
        dropped: u64,
        fps_milli: u64,
        last_warning: &mut Option<Instant>,
    ) {
        let stats = &self.shared.stats;
        stats
            .load_permille
            .store((load * 1000.0) as u64, Ordering::Relaxed);
        // One late slot can be a hiccup (another process, a page fault); two a second is not.
        let over = dropped >= 2;
        let was = stats.overloaded.swap(over, Ordering::Relaxed);
        let settings = &self.shared.settings;
        if over && (!was || last_warning.is_none_or(|t| t.elapsed() >= OVERLOAD_REPEAT)) {
            tracing::warn!(
                "overloaded: encoding {:.1} of {} fps at {} ({dropped} frames dropped in the last second, pipeline busy {:.0}% of the time); viewers get fewer frames but no extra delay. Lower --size or --fps to fix it",
                fps_milli as f64 / 1000.0,
                settings.fps,
                stats.size(),
                load * 100.0
            );
            *last_warning = Some(Instant::now());
        } else if was && !over {
            tracing::info!("keeping up again at {} fps", settings.fps);
        }
    }

    fn tick(&self, start: Instant) {
        let ms = start.elapsed().as_millis() as u64;
        self.shared.stats.last_tick_ms.store(ms, Ordering::Relaxed);
    }

    fn set_problem(&self, problem: Option<String>) {
        let mut slot = self
            .shared
            .problem
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *slot != problem {
            *slot = problem;
        }
    }
}

/// What drawing a frame slot gave.
enum Drawn {
    Picture(Fill),
    Failed,
    Ended,
}

impl EncodeStage {
    fn new(shared: Arc<Shared>, encode_seconds: metrics::Histogram, encoder: Encoder) -> Self {
        let mut first = Some(encoder);
        let renditions = shared
            .rungs
            .iter()
            .map(|&rung| {
                // The encoder made for the source fits the first rendition when that is the
                // source's size at the stream's rate (the default ladder).
                let encoder = first.take().filter(|e| {
                    let s = e.settings();
                    rung.size_for(s.size) == s.size && rung.bitrate == s.bitrate
                });
                RenditionEncoder {
                    rung,
                    encoder,
                    packetizer: Packetizer::default(),
                    scaled: None,
                    last_key: None,
                    watched: false,
                }
            })
            .collect();
        Self {
            shared,
            encode_seconds,
            renditions,
            scaler: Scaler::default(),
        }
    }

    /// Encodes one picture in every rendition someone receives (an IDR where one was asked
    /// for), packetizes each once and sends it to that rendition's viewers.
    fn process(&mut self, frame: &I420Frame, job: Job) {
        let busy = Instant::now();
        let stats = &self.shared.stats;
        let mut encoded_any = false;
        let mut keyframe_any = false;
        for (i, r) in self.renditions.iter_mut().enumerate() {
            let publisher = &self.shared.publishers[i];
            if !publisher.watched() {
                r.watched = false;
                continue;
            }
            let started = Instant::now();
            let size = r.rung.size_for(frame.size());
            let picture = if size == frame.size() {
                frame
            } else {
                let scaled = r.scaled.get_or_insert_with(|| I420Frame::new(size));
                match self.scaler.scale(frame, scaled, size) {
                    Ok(()) => &*scaled,
                    Err(e) => {
                        tracing::error!("cannot scale to {size}: {e}");
                        continue;
                    }
                }
            };
            if r.encoder.as_ref().is_none_or(|e| e.settings().size != size) {
                let settings = EncodeSettings {
                    size,
                    bitrate: r.rung.bitrate,
                    ..self.shared.settings
                };
                match Encoder::new(settings) {
                    Ok(e) => r.encoder = Some(e),
                    Err(e) => {
                        tracing::error!("cannot encode at {size}: {e}");
                        continue;
                    }
                }
            }
            let Some(encoder) = r.encoder.as_mut() else {
                continue;
            };
            if let Some(target) = publisher.target_bitrate() {
                // A change under 5 % is noise in the estimate, not worth re-planning for.
                let now = encoder.bitrate() as f64;
                if (target as f64 - now).abs() > now * 0.05 {
                    if let Err(e) = encoder.set_bitrate(target) {
                        tracing::warn!("cannot change the bit rate to {target}: {e}");
                    }
                }
            }
            if !std::mem::replace(&mut r.watched, true) || job.resumed {
                // Its first viewer (after a pause) starts here.
                encoder.force_keyframe();
                publisher.keyframe_sent();
                r.last_key = Some(Instant::now());
            } else if r
                .last_key
                .is_none_or(|t| t.elapsed() >= fanout::MIN_FORCED_IDR_GAP)
                && publisher.take_keyframe_request()
            {
                encoder.force_keyframe();
                stats.forced_keyframes.fetch_add(1, Ordering::Relaxed);
            }
            let media = match encode_one(
                encoder,
                &mut r.packetizer,
                picture,
                job.number,
                job.captured,
                self.shared.started,
            ) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!("encoding frame {} at {size} failed: {e}", job.number);
                    continue;
                }
            };
            let own = &self.shared.rendition_stats[i];
            own.frames_encoded.fetch_add(1, Ordering::Relaxed);
            let bytes: u64 = media.packets.iter().map(|p| p.payload.len() as u64).sum();
            own.bytes_encoded.fetch_add(bytes, Ordering::Relaxed);
            stats.bytes_encoded.fetch_add(bytes, Ordering::Relaxed);
            encoded_any = true;
            if media.keyframe {
                tracing::debug!(
                    "keyframe {} at {size} took {:?}",
                    job.number,
                    started.elapsed()
                );
                own.keyframes.fetch_add(1, Ordering::Relaxed);
                keyframe_any = true;
                r.last_key = Some(job.captured);
                // Everyone subscribed now gets this IDR; earlier requests are answered.
                publisher.keyframe_sent();
            }
            own.busy_ns
                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            publisher.set_size(size);
            publisher.publish(media);
        }
        if encoded_any {
            stats.frames_encoded.fetch_add(1, Ordering::Relaxed);
        }
        if keyframe_any {
            stats.keyframes.fetch_add(1, Ordering::Relaxed);
        }
        let took = busy.elapsed();
        self.shared
            .encode_busy_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        self.encode_seconds.record(took.as_secs_f64());
    }
}

/// Encodes `frame` and packetizes it once.
fn encode_one(
    encoder: &mut Encoder,
    packetizer: &mut Packetizer,
    frame: &I420Frame,
    number: u64,
    captured: Instant,
    start: Instant,
) -> Result<MediaFrame, EncodeError> {
    let out = encoder.encode(frame)?;
    let keyframe = out.keyframe;
    // Every rendition stamps the same capture clock: a viewer can switch between them.
    let timestamp = ((captured - start).as_micros() as u64 * RTP_CLOCK / 1_000_000) as u32;
    let packets = packetizer.packetize(out.annexb, timestamp);
    let captured_wall = SystemTime::now()
        .checked_sub(captured.elapsed())
        .unwrap_or_else(SystemTime::now);
    let meta = format!(
        "{{\"type\":\"frame\",\"n\":{number},\"rtp\":{timestamp},\"captured_ms\":{:.3},\"keyframe\":{keyframe}}}",
        fanout::unix_ms(captured_wall)
    );
    Ok(MediaFrame {
        number,
        keyframe,
        captured,
        packets,
        meta,
    })
}
