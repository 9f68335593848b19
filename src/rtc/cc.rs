//! Congestion control for one viewer: how much its link carries, and a pacer that keeps to it.
//!
//! Built from `rtc-interceptor`'s parts, one chain per peer connection:
//!
//! - **Chromium** (offers `transport-cc`): the TWCC sender numbers every packet, the CC
//!   interceptor joins the viewer's feedback to what left, and its GCC estimator (delay and
//!   loss) gives the estimate. We wrap the estimator ([`Published`]) to publish the estimate
//!   where the viewer's sender reads it, and to ask the pacer for [`PACING_FACTOR`] times it
//!   (the crate paces at exactly the estimate, so a keyframe would trickle out over a second).
//! - **Anyone else** (aiortc: receiver reports and REMB only): [`Receipts`] reads the loss
//!   fraction of each receiver report and any REMB and keeps a loss-based estimate (grow
//!   while under 2 % loss, shrink by half the loss over 10 %), as GCC's loss half does.
//! - **Both**: the crate's pacer, wrapped ([`ObservedPacer`]) so the sender can see its
//!   queue and skip to a keyframe rather than let seconds of video wait in it; and
//!   [`Receipts`] measures round-trip time and loss from receiver reports for the API.
//!
//! Everything lands in a [`Link`]: atomics written by the connection's driver, read once per
//! frame by the viewer's sender and by `/api/streams`.

use super::tap::{Hooks, PassThrough, Tap};
use rtc::interceptor::{
    Attribute, BandwidthEstimator, CongestionControlBuilder, EstimatorStats, Gcc,
    NackResponderBuilder, NackResponderInterceptor, PacerBuilder, PacerInterceptor, Packet,
    PacketReport, Registry, Slot, TaggedPacket, TwccSenderBuilder,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpHeaderExtensionCapability, RtpCodecKind, TYPE_RTCP_FB_GOOG_REMB,
    TYPE_RTCP_FB_NACK, TYPE_RTCP_FB_TRANSPORT_CC,
};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The pacer sends at this many times the estimate: fast enough that a keyframe leaves in
/// a fraction of a second, slow enough that it does not arrive at the bottleneck as one
/// burst (libwebrtc's pacing factor).
pub const PACING_FACTOR: f64 = 2.5;
/// Packets the pacer may hold; the sender skips to a keyframe long before (by time, see
/// `fanout`), so this only bounds memory.
const PACER_QUEUE_LIMIT: usize = 2048;
/// Retransmissions are sent only while the pacer holds less than this: a lost packet
/// resent behind seconds of queue arrives too late to be shown, and resending it only adds
/// to the queue (the viewer asks for a keyframe instead, which it gets).
pub const MAX_RETRANSMIT_QUEUE: Duration = Duration::from_millis(150);

/// Where [`Receipts`] sits: after the built-in readers, before the keyframe tap that drops
/// what the application does not need.
const RECEIPTS_SLOT: usize = 13_500;

/// What one viewer's connection knows about its link. Written by the connection's
/// interceptors, read by the viewer's sender (once per frame) and the API.
#[derive(Debug, Default)]
pub struct Link {
    /// Bits per second the link is estimated to carry; 0 until known.
    estimate_bps: AtomicU64,
    /// Bits per second the pacer releases at.
    pacing_bps: AtomicU64,
    /// Packets waiting in the pacer.
    queued: AtomicUsize,
    /// Packets the pacer refused (its queue was full).
    refused: AtomicU64,
    /// Share of packets lost, ‰ (transport-wide feedback, else receiver reports).
    loss_permille: AtomicU32,
    /// Round-trip time from receiver reports, µs; 0 until measured.
    rtt_us: AtomicU32,
    /// How much longer packets take to arrive now than the least they took lately: the
    /// queue building up somewhere on the path, µs (transport-wide feedback only).
    queueing_us: AtomicU32,
    /// Bits per second arriving at the viewer over the last half second (transport-wide
    /// feedback only; 0 otherwise): what the link is known to carry, where the estimate is
    /// a guess.
    arriving_bps: AtomicU64,
    /// Whether the viewer sends transport-wide feedback (GCC runs) or only reports.
    twcc: AtomicBool,
    /// The receiver's own estimate (REMB), bits per second; 0 until one came.
    remb_bps: AtomicU64,
}

impl Link {
    pub fn estimate_bps(&self) -> u64 {
        self.estimate_bps.load(Relaxed)
    }
    pub fn pacing_bps(&self) -> u64 {
        self.pacing_bps.load(Relaxed)
    }
    pub fn queued_packets(&self) -> usize {
        self.queued.load(Relaxed)
    }
    /// Packets the pacer refused because its queue was full.
    pub fn refused_packets(&self) -> u64 {
        self.refused.load(Relaxed)
    }
    /// Fraction of packets lost recently (0.0-1.0).
    pub fn loss(&self) -> f64 {
        self.loss_permille.load(Relaxed) as f64 / 1000.0
    }
    /// Bits per second arriving at the viewer lately; 0 when unknown.
    pub fn arriving_bps(&self) -> u64 {
        self.arriving_bps.load(Relaxed)
    }
    /// Queueing delay on the path (see the field).
    pub fn queueing(&self) -> Duration {
        Duration::from_micros(self.queueing_us.load(Relaxed) as u64)
    }
    pub fn rtt(&self) -> Option<Duration> {
        match self.rtt_us.load(Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us as u64)),
        }
    }
    /// `"gcc"` (transport-wide feedback) or `"loss"` (receiver reports only).
    pub fn estimator(&self) -> &'static str {
        if self.twcc.load(Relaxed) {
            "gcc"
        } else {
            "loss"
        }
    }
    /// The last REMB the receiver sent (its estimate, or a cap it sets), if any.
    pub fn remb_bps(&self) -> Option<u64> {
        match self.remb_bps.load(Relaxed) {
            0 => None,
            bps => Some(bps),
        }
    }
    /// What to send at: the estimate, and no more than the receiver's REMB says.
    pub fn target_bps(&self) -> u64 {
        let estimate = self.estimate_bps();
        self.remb_bps().map_or(estimate, |remb| estimate.min(remb))
    }
    /// Says whether transport-wide feedback was negotiated (an offerer learns it from the
    /// answer): without it, receiver reports and REMB keep the estimate.
    pub fn set_twcc(&self, twcc: bool) {
        self.twcc.store(twcc, Relaxed);
    }
    /// How long what waits in the pacer takes to leave.
    pub fn queue_delay(&self) -> Duration {
        let pacing = self.pacing_bps();
        if pacing == 0 {
            return Duration::ZERO;
        }
        let bits = (self.queued_packets() * crate::fanout::RTP_MTU * 8) as f64;
        Duration::from_secs_f64(bits / pacing as f64)
    }
    fn set_estimate(&self, bps: f64) {
        self.estimate_bps.store(bps.max(0.0) as u64, Relaxed);
    }
}

/// The rates a viewer's estimate starts at and stays within.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Where the estimate starts: a viewer starts on the best rendition this fits.
    pub start_bps: f64,
    pub min_bps: f64,
    pub max_bps: f64,
}

/// What the receiver will tell us about its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// Transport-wide feedback on every packet: GCC estimates.
    Twcc,
    /// Receiver reports (loss) and REMB only: a loss-based estimate capped by REMB.
    Reports,
    /// Not known yet (we offer): both are negotiated if the answer takes them, and the
    /// estimate comes from whichever arrives ([`Link::set_twcc`] once the answer is in).
    Either,
}

/// Registers congestion control for the feedback a receiver gives, plus the observed
/// pacer. Call after the codec is registered (feedback is attached to registered codecs
/// only).
pub fn register(
    registry: Registry,
    media: &mut MediaEngine,
    link: &Arc<Link>,
    bounds: Bounds,
    feedback: Feedback,
) -> Result<Registry, rtc::shared::error::Error> {
    let twcc = feedback != Feedback::Reports;
    link.twcc.store(feedback == Feedback::Twcc, Relaxed);
    // Loss repair: NACK (and PLI) feedback, answered from a send history while it can help.
    for parameter in ["", "pli"] {
        media.register_feedback(
            RTCPFeedback {
                typ: TYPE_RTCP_FB_NACK.into(),
                parameter: parameter.into(),
            },
            RtpCodecKind::Video,
        );
    }
    link.set_estimate(bounds.start_bps);
    let pacing = bounds.start_bps * PACING_FACTOR;
    link.pacing_bps.store(pacing as u64, Relaxed);
    let mut registry = registry
        .with(
            Slot::NackResponder,
            GatedNack {
                inner: NackResponderBuilder::new().build(),
                hooks: NackGate(link.clone()),
            },
        )
        .with(
            Slot::Pacer,
            ObservedPacer {
                inner: PacerBuilder::new()
                    .with_target_bitrate(pacing)
                    .with_queue_limit(PACER_QUEUE_LIMIT)
                    .build(),
                hooks: ShowQueue(link.clone()),
            },
        )
        .with(
            Slot::from(RECEIPTS_SLOT),
            ReadReports::new(link.clone(), bounds),
        );
    if twcc {
        media.register_feedback(
            RTCPFeedback {
                typ: TYPE_RTCP_FB_TRANSPORT_CC.into(),
                parameter: String::new(),
            },
            RtpCodecKind::Video,
        );
        media.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: rtc::sdp::extmap::TRANSPORT_CC_URI.into(),
            },
            RtpCodecKind::Video,
            None,
        )?;
        let gcc = Gcc::new(bounds.start_bps, bounds.min_bps, bounds.max_bps);
        registry = registry
            .with(
                Slot::CongestionControl,
                CongestionControlBuilder::new(Published::new(gcc, link.clone())).build(),
            )
            .with(Slot::TwccSender, TwccSenderBuilder::new().build());
    }
    if feedback != Feedback::Twcc {
        media.register_feedback(
            RTCPFeedback {
                typ: TYPE_RTCP_FB_GOOG_REMB.into(),
                parameter: String::new(),
            },
            RtpCodecKind::Video,
        );
    }
    Ok(registry)
}

/// An estimator that publishes what it estimates into a [`Link`], and gives the pacer
/// [`PACING_FACTOR`] times that.
///
/// It also watches what GCC reacts to late: the one-way delay of each packet against the
/// least seen lately (the path's queue) and the rate at which packets arrive. When the queue
/// passes [`QUEUE_CAP_DELAY`] (before a bottleneck's buffer overflows, which GCC's delay
/// detector often waits for), the estimate is capped at 85 % of what arrives, and the cap is
/// lifted gradually (+8 % each 200 ms) once the queue is gone.
pub struct Published<E> {
    inner: E,
    link: Arc<Link>,
    /// (when, lost, total) per recent report batch: the loss window.
    batches: VecDeque<(Instant, u32, u32)>,
    /// Departure instants are measured from this (made before any packet leaves).
    epoch: Instant,
    /// Least one-way delay (arrival minus departure, clocks unaligned) in this window and
    /// the last one, s; the baseline the queueing delay is measured from.
    min_now: f64,
    min_before: f64,
    window_start: Option<Instant>,
    /// (arrival s, bytes) of recent arrivals, for the rate they arrive at.
    arrivals: VecDeque<(f64, usize)>,
    cap: Option<(f64, Instant)>,
}

/// How far back the published loss fraction looks.
const LOSS_WINDOW: Duration = Duration::from_secs(1);
/// The delay baseline is the least of this long and the one before (it follows route changes).
const BASELINE_WINDOW: Duration = Duration::from_secs(5);
/// Arrivals over this long give the arriving rate.
const RATE_WINDOW: f64 = 0.5;
/// Queueing delay beyond which the estimate is capped to what arrives.
pub const QUEUE_CAP_DELAY: Duration = Duration::from_millis(100);

impl<E: BandwidthEstimator> Published<E> {
    pub fn new(inner: E, link: Arc<Link>) -> Self {
        Self {
            inner,
            link,
            batches: VecDeque::with_capacity(32),
            epoch: Instant::now(),
            min_now: f64::INFINITY,
            min_before: f64::INFINITY,
            window_start: None,
            arrivals: VecDeque::with_capacity(1024),
            cap: None,
        }
    }

    /// The estimate: GCC's, under the delay cap if one is set.
    fn estimate(&self) -> f64 {
        let gcc = self.inner.target_bitrate();
        self.cap.map_or(gcc, |(cap, _)| gcc.min(cap))
    }

    fn publish(&self) {
        self.link.set_estimate(self.estimate());
    }

    /// Loss over the last second of feedback.
    fn count_loss(&mut self, now: Instant, reports: &[PacketReport]) {
        let lost = reports.iter().filter(|r| !r.arrived).count() as u32;
        self.batches.push_back((now, lost, reports.len() as u32));
        while self
            .batches
            .front()
            .is_some_and(|(t, ..)| now.duration_since(*t) > LOSS_WINDOW)
        {
            self.batches.pop_front();
        }
        let (lost, total) = self
            .batches
            .iter()
            .fold((0, 0), |(l, t), (_, bl, bt)| (l + bl, t + bt));
        if let Some(permille) = (lost * 1000).checked_div(total) {
            self.link.loss_permille.store(permille, Relaxed);
        }
    }

    /// Queueing delay and arriving rate from the reports; sets or lifts the cap.
    fn watch_delay(&mut self, now: Instant, reports: &[PacketReport]) {
        let epoch = self.epoch;
        let window_start = *self.window_start.get_or_insert(now);
        if now.duration_since(window_start) > BASELINE_WINDOW {
            self.min_before = self.min_now;
            self.min_now = f64::INFINITY;
            self.window_start = Some(now);
        }
        let mut last_owd = None;
        for r in reports {
            let Some(arrival) = r.arrival else { continue };
            let arrival = arrival.as_secs_f64();
            let departure = r.departure.saturating_duration_since(epoch).as_secs_f64();
            let owd = arrival - departure;
            self.min_now = self.min_now.min(owd);
            last_owd = Some(owd);
            if self.arrivals.len() == self.arrivals.capacity() {
                self.arrivals.pop_front();
            }
            self.arrivals.push_back((arrival, r.size));
        }
        let Some(owd) = last_owd else { return };
        let newest = self.arrivals.back().map_or(0.0, |a| a.0);
        while self
            .arrivals
            .front()
            .is_some_and(|a| newest - a.0 > RATE_WINDOW)
        {
            self.arrivals.pop_front();
        }
        let queueing = (owd - self.min_now.min(self.min_before)).max(0.0);
        self.link
            .queueing_us
            .store((queueing * 1e6).min(u32::MAX as f64) as u32, Relaxed);
        let bytes: usize = self.arrivals.iter().map(|a| a.1).sum();
        let arriving = bytes as f64 * 8.0 / RATE_WINDOW;
        self.link.arriving_bps.store(arriving as u64, Relaxed);
        if queueing > QUEUE_CAP_DELAY.as_secs_f64() {
            let cap = self.cap.map_or(f64::INFINITY, |c| c.0).min(0.85 * arriving);
            self.cap = Some((cap, now));
        } else if let Some((cap, since)) = self.cap {
            if now.duration_since(since) >= Duration::from_millis(200) {
                let lifted = cap * 1.08;
                self.cap = (lifted < self.inner.target_bitrate()).then_some((lifted, now));
            }
        }
    }
}

impl<E: BandwidthEstimator> BandwidthEstimator for Published<E> {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.inner.on_reports(now, reports);
        if !reports.is_empty() {
            self.count_loss(now, reports);
            self.watch_delay(now, reports);
        }
        self.publish();
    }

    fn target_bitrate(&self) -> f64 {
        // What the CC interceptor hands the pacer.
        self.estimate() * PACING_FACTOR
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now);
        self.publish();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.inner.stats()
    }
}

/// The crate's pacer, publishing its queue and rate into the [`Link`].
pub type ObservedPacer = Tap<PacerInterceptor, ShowQueue>;

/// Publishes the pacer's queue and rate into the [`Link`] after each thing it does.
pub struct ShowQueue(Arc<Link>);

impl Hooks<PacerInterceptor> for ShowQueue {
    /// Within its budget the pacer lets a packet go the moment it is written: pacing spreads
    /// bursts, it must not delay every frame by the driver's wake-ups (measured: glass-to-glass
    /// 35 ms against 16 without a pacer, before this).
    fn timeout_on_write(&self) -> bool {
        true
    }

    fn after(&mut self, pacer: &PacerInterceptor) {
        self.0.queued.store(pacer.queued(), Relaxed);
        self.0.refused.store(pacer.dropped(), Relaxed);
        self.0
            .pacing_bps
            .store(pacer.pacer().target_bitrate() as u64, Relaxed);
    }
}

/// The crate's NACK responder, asked only while a retransmission can still arrive in time
/// ([`MAX_RETRANSMIT_QUEUE`]).
pub type GatedNack = Tap<NackResponderInterceptor, NackGate>;

/// Drops NACKs (and counts them) while the pacer holds more than [`MAX_RETRANSMIT_QUEUE`].
pub struct NackGate(Arc<Link>);

impl Hooks<NackResponderInterceptor> for NackGate {
    fn read(&mut self, msg: &mut TaggedPacket) -> bool {
        if let Packet::Rtcp(packets) = &mut msg.message.packet {
            if self.0.queue_delay() > MAX_RETRANSMIT_QUEUE {
                let before = packets.len();
                packets.retain(|p| !p.as_any().is::<TransportLayerNack>());
                let refused = (before - packets.len()) as u64;
                if refused > 0 {
                    metrics::counter!("whepcast_nacks_refused_total").increment(refused);
                }
            }
        }
        true
    }
}

/// Reads receiver reports (loss, round-trip time) and REMB. For a viewer without
/// transport-wide feedback it also keeps the estimate: loss-based, capped by REMB.
pub type Receipts = Tap<PassThrough, ReadReports>;

/// What [`Receipts`] keeps.
pub struct ReadReports {
    link: Arc<Link>,
    bounds: Bounds,
    loss_based: f64,
    remb: Option<f64>,
    last_update: Option<Instant>,
}

/// Loss under which the fallback estimate grows, and over which it shrinks (GCC's loss half).
const LOW_LOSS: f64 = 0.02;
const HIGH_LOSS: f64 = 0.10;

impl ReadReports {
    fn new(link: Arc<Link>, bounds: Bounds) -> Receipts {
        Tap {
            inner: PassThrough::default(),
            hooks: Self {
                link,
                bounds,
                loss_based: bounds.start_bps,
                remb: None,
                last_update: None,
            },
        }
    }

    fn on_report(&mut self, now: Instant, rr: &ReceiverReport) {
        for r in &rr.reports {
            if let Some(rtt) = round_trip(SystemTime::now(), r.last_sender_report, r.delay) {
                self.link
                    .rtt_us
                    .store(rtt.as_micros().min(u32::MAX as u128) as u32, Relaxed);
            }
            let loss = r.fraction_lost as f64 / 256.0;
            if !self.estimates() {
                continue;
            }
            self.link
                .loss_permille
                .store((loss * 1000.0) as u32, Relaxed);
            // One step per report (about a second apart); a report right after another
            // says nothing new about the rate just set.
            if self
                .last_update
                .is_some_and(|t| now.duration_since(t) < Duration::from_millis(300))
            {
                continue;
            }
            self.last_update = Some(now);
            self.loss_based = next_loss_based(self.loss_based, loss)
                .clamp(self.bounds.min_bps, self.bounds.max_bps);
            self.publish();
        }
    }

    /// Whether this interceptor owns the estimate (no GCC on this connection).
    fn estimates(&self) -> bool {
        !self.link.twcc.load(Relaxed)
    }

    fn publish(&self) {
        let estimate = match self.remb {
            Some(remb) => self.loss_based.min(remb),
            None => self.loss_based,
        };
        self.link.set_estimate(estimate);
    }
}

/// GCC's loss-based rule: +5 % under 2 % loss, −loss/2 over 10 %, hold in between.
pub fn next_loss_based(rate: f64, loss: f64) -> f64 {
    if loss < LOW_LOSS {
        rate * 1.05
    } else if loss > HIGH_LOSS {
        rate * (1.0 - 0.5 * loss)
    } else {
        rate
    }
}

/// Round-trip time from a reception report block (RFC 3550 §6.4.1): now − LSR − DLSR, all
/// in 1/65536 s. `None` before the viewer has seen a sender report.
pub fn round_trip(now: SystemTime, lsr: u32, dlsr: u32) -> Option<Duration> {
    if lsr == 0 {
        return None;
    }
    let unix = now.duration_since(UNIX_EPOCH).ok()?;
    // NTP: seconds since 1900 in the high 32 bits, fraction in the low; the middle 32 bits.
    let ntp_secs = unix.as_secs() + 2_208_988_800;
    let frac = ((unix.subsec_nanos() as u64) << 32) / 1_000_000_000;
    let middle = (((ntp_secs << 32) | frac) >> 16) as u32;
    let rtt = middle.wrapping_sub(lsr).wrapping_sub(dlsr);
    // A wrapped (negative) value means clocks disagree or the report is bogus.
    (rtt < 0x8000_0000).then(|| Duration::from_micros(rtt as u64 * 1_000_000 / 65_536))
}

impl Hooks<PassThrough> for ReadReports {
    fn read(&mut self, msg: &mut TaggedPacket) -> bool {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for p in packets {
                let any = p.as_any();
                if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                    self.on_report(msg.now, rr);
                } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                    if remb.bitrate.is_finite() && remb.bitrate > 0.0 {
                        self.link.remb_bps.store(remb.bitrate as u64, Relaxed);
                        self.remb = Some(remb.bitrate as f64);
                        if self.estimates() {
                            self.publish();
                        }
                    }
                }
            }
        }
        true
    }
}

/// Whether an RTCP packet on the read leg carries what the chain attached for later
/// interceptors (the estimate): such a packet must reach the end of the chain.
pub fn carries_attributes(msg: &TaggedPacket) -> bool {
    msg.message
        .get(&Attribute::TargetBitrateChanged {
            bits_per_second: 0.0,
        })
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_time_comes_from_the_report_block() {
        let now = SystemTime::now();
        // A sender report sent 120 ms ago, held 20 ms by the viewer: RTT 100 ms.
        let sent = now - Duration::from_millis(120);
        let unix = sent.duration_since(UNIX_EPOCH).unwrap();
        let frac = ((unix.subsec_nanos() as u64) << 32) / 1_000_000_000;
        let lsr = ((((unix.as_secs() + 2_208_988_800) << 32) | frac) >> 16) as u32;
        let dlsr = 20 * 65_536 / 1000;
        let rtt = round_trip(now, lsr, dlsr).unwrap();
        assert!((rtt.as_millis() as i64 - 100).abs() <= 1, "{rtt:?}");
        assert_eq!(round_trip(now, 0, 0), None, "no sender report seen yet");
        // A report from the future (bogus or a clock step) gives nothing, not four days.
        assert_eq!(round_trip(now, lsr.wrapping_add(65_536 * 10), 0), None);
    }

    /// Packets of 1200 bytes, one every `gap`, from `first`; each arrives `delay(i)` after it
    /// left (on the viewer's clock, which starts 1000 s apart from ours).
    fn reports(
        t0: Instant,
        first: u64,
        n: u64,
        gap: Duration,
        delay: impl Fn(u64) -> Duration,
    ) -> Vec<PacketReport> {
        (first..first + n)
            .map(|i| {
                let sent = gap * i as u32;
                PacketReport {
                    ssrc: 1,
                    id: i,
                    rtp_sequence_number: i as u16,
                    is_twcc: true,
                    twcc_sequence_number: i as u16,
                    size: 1200,
                    arrived: true,
                    departure: t0 + sent,
                    arrival: Some(Duration::from_secs(1000) + sent + delay(i)),
                    ecn: Default::default(),
                }
            })
            .collect()
    }

    /// A path that starts queueing (a bottleneck's buffer filling) caps the estimate to
    /// what arrives well before anything is lost; once the queue is gone the cap lifts.
    #[test]
    fn a_queue_on_the_path_caps_the_estimate_to_what_arrives_and_then_lifts() {
        let link = Arc::new(Link::default());
        let t0 = Instant::now();
        let mut e = Published::new(Gcc::new(3e6, 2e5, 5e6), link.clone());
        // 1.2 Mbit/s (a 1200-byte packet each 8 ms), 20 ms of path delay, no queue.
        let gap = Duration::from_millis(8);
        let mut next = 0;
        for batch in 0..10u32 {
            let r = reports(t0, next, 12, gap, |_| Duration::from_millis(20));
            next += 12;
            e.on_reports(t0 + Duration::from_millis(100) * (batch + 1), &r);
        }
        assert!(
            link.queueing() < Duration::from_millis(5),
            "{:?}",
            link.queueing()
        );
        let arriving = link.arriving_bps() as f64;
        assert!((arriving - 1.2e6).abs() < 0.15e6, "arriving {arriving}");
        let free = link.estimate_bps();
        // The queue grows by 4 ms a packet: 150 ms within 40 packets.
        let start = next;
        for batch in 10..14u32 {
            let r = reports(t0, next, 12, gap, |i| {
                Duration::from_millis(20 + 4 * (i - start))
            });
            next += 12;
            e.on_reports(t0 + Duration::from_millis(100) * (batch + 1), &r);
        }
        assert!(link.queueing() > QUEUE_CAP_DELAY, "{:?}", link.queueing());
        let capped = link.estimate_bps() as f64;
        assert!(capped <= 0.85 * 1.3e6, "capped at {capped}, was {free}");
        assert!(
            e.target_bitrate() <= capped * PACING_FACTOR + 1.0,
            "the pacer follows"
        );
        // The queue drains; the cap lifts step by step, not at once.
        let mut seen = vec![capped];
        for batch in 14..40u32 {
            let r = reports(t0, next, 12, gap, |_| Duration::from_millis(20));
            next += 12;
            e.on_reports(t0 + Duration::from_millis(100) * (batch + 1), &r);
            seen.push(link.estimate_bps() as f64);
        }
        assert!(link.queueing() < Duration::from_millis(5));
        assert!(seen.windows(2).all(|w| w[1] >= w[0] - 1.0), "{seen:?}");
        assert!(seen[1] < seen[0] * 1.2, "no jump back: {seen:?}");
        assert!(*seen.last().unwrap() > capped * 2.0, "lifted: {seen:?}");
    }

    #[test]
    fn the_pacer_queue_is_read_as_time() {
        let link = Link::default();
        link.pacing_bps.store(960_000, Relaxed);
        link.queued.store(100, Relaxed);
        assert_eq!(link.queue_delay(), Duration::from_secs(1));
        assert_eq!(Link::default().queue_delay(), Duration::ZERO);
    }

    #[test]
    fn the_loss_based_estimate_grows_holds_and_shrinks() {
        assert!(next_loss_based(1e6, 0.0) > 1e6);
        assert_eq!(next_loss_based(1e6, 0.05), 1e6);
        assert!((next_loss_based(1e6, 0.5) - 750_000.0).abs() < 1.0);
    }
}
