//! Stage: **relay** — a WHIP publisher's H.264 to every viewer, without decoding it.
//!
//! The ingest session ([`crate::whip::ingest`]) hands each RTP packet it receives to the
//! relay's thread, which puts the access units back together (depacketizing FU-A and
//! STAP-A), and packetizes each once more, our way (1200-byte packets, SPS and PPS in a
//! STAP-A): the publisher's extensions, padding and retransmission streams stay behind. The
//! frames go to the stream's [`fanout`] like an encoder's, so viewers get their own SSRC,
//! payload type and sequence numbers as for any stream.
//!
//! * **Timestamps** are moved onto the stream's own clock at each publisher's first IDR: a
//!   publisher that comes back (or a new one) continues the timeline instead of jumping back.
//! * **Keyframes**: viewers' requests become a PLI to the publisher (merged, at most one per
//!   [`PLI_GAP`], none while one is outstanding); while anyone watches, a PLI every keyint,
//!   so a late joiner finds a recent IDR (kept by the fan-out for [`REPLAY_WINDOW`]).
//! * **Loss**: a gap in sequence numbers drops the frame and everything until the next IDR
//!   (a viewer cannot decode past a hole), and asks the publisher for one.
//! * **Standby**: with no publisher, viewers see a "waiting for the publisher" picture
//!   ([`crate::source::standby`]) at [`STANDBY_FPS`], encoded by our own encoder into the
//!   same fan-out, so they stay connected and the stream resumes without reconnecting.
//! * **Lower renditions** (the ladder, as for any stream): only while someone receives
//!   one, the publisher's frames are decoded once (from an IDR on), scaled, and encoded
//!   once per lower rendition watched; the best rendition stays the publisher's own.

use crate::config::{EncodeSettings, Ladder, Rung, Size};
use crate::encode::{nal_units, Colour, Encoder};
use crate::fanout::{self, MediaFrame, Packetizer, Publisher};
use crate::frame::{I420Frame, Scaler};
use crate::pipeline::Status;
use crate::source::standby::Standby;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// At most one PLI to the publisher per this long.
pub const PLI_GAP: Duration = Duration::from_millis(300);
/// A PLI not answered by an IDR within this long may be sent again.
const PLI_PATIENCE: Duration = Duration::from_secs(1);
/// A joiner starts from the last IDR (and the frames since) when it is younger than this.
pub const REPLAY_WINDOW: Duration = Duration::from_millis(1500);
/// The waiting picture's frame rate.
pub const STANDBY_FPS: u32 = 5;
/// The waiting picture's bit rate: it barely changes.
const STANDBY_BITRATE: u32 = 300_000;
/// Packets the ingest session may get ahead of the relay thread by.
const INBOX: usize = 4096;
/// How often the thread looks at keyframe requests when no packet wakes it.
const POLL: Duration = Duration::from_millis(20);
/// RTP's clock for video.
const RTP_CLOCK: u64 = 90_000;

/// What an ingest session tells the relay.
pub enum Event {
    /// A publisher connected; `pli` asks it for an IDR.
    Started {
        session: u64,
        pli: Box<dyn Fn() + Send>,
    },
    /// One of its RTP packets.
    Packet {
        session: u64,
        packet: rtc::rtp::Packet,
    },
    /// It left (DELETE, or its connection died).
    Ended { session: u64 },
}

/// The ingest side's handle: sends events to the relay thread.
#[derive(Clone)]
pub struct Inlet {
    tx: SyncSender<Event>,
}

impl Inlet {
    /// Hands an event over; packets are dropped (and so seen as lost) when the relay is
    /// behind, never queued without bound.
    pub fn send(&self, event: Event) {
        match self.tx.try_send(event) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(e)) => {
                if !matches!(e, Event::Packet { .. }) {
                    // Session changes must arrive: wait for room.
                    let _ = self.tx.send(e);
                }
            }
        }
    }
}

/// A running relay. Dropping it stops its thread.
pub struct Relay {
    status: Status,
    inlet: Inlet,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Starts the relay of stream `name`; `settings` give the waiting picture's size (until a
    /// publisher shows its own) and the periodic keyframe interval.
    pub fn start(name: &str, settings: EncodeSettings, ladder: &Ladder) -> std::io::Result<Self> {
        let rungs = ladder.rungs(settings.size, settings.bitrate);
        let status = Status::relayed(name, "whip", settings, rungs);
        for p in status.publishers() {
            p.set_replay_window(REPLAY_WINDOW);
        }
        let (tx, rx) = mpsc::sync_channel(INBOX);
        let state = State::new(name, status.clone(), settings);
        let span = tracing::info_span!("stream", name = %name);
        let thread = std::thread::Builder::new()
            .name("whepcast-relay".into())
            .spawn(move || {
                let _span = span.entered();
                state.run(rx)
            })?;
        for p in status.publishers() {
            p.wake_on_request(thread.thread().clone());
        }
        Ok(Self {
            status,
            inlet: Inlet { tx },
            thread: Some(thread),
        })
    }

    pub fn status(&self) -> Status {
        self.status.clone()
    }

    pub fn inlet(&self) -> Inlet {
        self.inlet.clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.status.stopped().cancel();
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// The publisher now sending.
struct Current {
    session: u64,
    pli: Box<dyn Fn() + Send>,
    /// The access unit being put together, Annex B.
    unit: Vec<u8>,
    /// Its RTP timestamp (the publisher's clock).
    unit_ts: Option<u32>,
    last_seq: Option<u16>,
    /// Dropping frames until the next IDR (at the start, and after a loss).
    waiting_for_idr: bool,
    /// Publisher clock + offset = the stream's clock (set at its first IDR).
    offset: Option<u32>,
    last_pli: Option<Instant>,
    /// A PLI sent and not yet answered by an IDR.
    pli_outstanding: Option<Instant>,
    last_idr: Option<Instant>,
    size: Option<Size>,
    /// How its pictures' colours are to be read (its SPS), for the lower renditions.
    colour: Colour,
    depacketizer: H264Packet,
}

/// A lower rendition made from the decoded publisher's frames.
struct Lower {
    rung: Rung,
    encoder: Option<Encoder>,
    /// What its encoder signals.
    colour: Colour,
    scaled: Option<I420Frame>,
    packetizer: Packetizer,
    watched: bool,
    last_key: Option<Instant>,
}

struct State {
    status: Status,
    /// Renditions 1.. (0 is the publisher's own).
    lower: Vec<Lower>,
    /// Decodes the publisher's frames while a lower rendition is watched.
    decoder: Option<openh264::decoder::Decoder>,
    /// Whether the decoder has had an IDR since it started (it can decode what follows).
    decoding: bool,
    decoded: Option<I420Frame>,
    scaler: Scaler,
    settings: EncodeSettings,
    current: Option<Current>,
    packetizer: Packetizer,
    /// The waiting picture and its encoder (made when first needed).
    standby: Standby,
    standby_encoder: Option<Encoder>,
    next_standby: Instant,
    /// Whether the standby picture has been sent since the last publisher frame (cutting
    /// to it needs an IDR).
    on_standby: bool,
    number: u64,
    started: Instant,
    /// The last RTP timestamp sent (the stream's clock).
    last_ts: u32,
}

impl State {
    fn new(name: &str, status: Status, settings: EncodeSettings) -> Self {
        let lower = status.rungs()[1..]
            .iter()
            .map(|&rung| Lower {
                rung,
                encoder: None,
                colour: Colour::Bt601,
                scaled: None,
                packetizer: Packetizer::default(),
                watched: false,
                last_key: None,
            })
            .collect();
        Self {
            standby: Standby::new(settings.size, name),
            lower,
            decoder: None,
            decoding: false,
            decoded: None,
            scaler: Scaler::default(),
            status,
            settings,
            current: None,
            packetizer: Packetizer::default(),
            standby_encoder: None,
            next_standby: Instant::now(),
            on_standby: false,
            number: 0,
            started: Instant::now(),
            last_ts: 0,
        }
    }

    fn run(mut self, inbox: Receiver<Event>) {
        let stop = self.status.stopped().clone();
        while !stop.is_cancelled() {
            let wait = if self.current.as_ref().is_some_and(|c| c.offset.is_some()) {
                POLL
            } else {
                self.next_standby
                    .saturating_duration_since(Instant::now())
                    .min(POLL)
            };
            match inbox.recv_timeout(wait) {
                Ok(event) => self.on_event(event),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // Drain what else is waiting before looking at the clock.
            while let Ok(event) = inbox.try_recv() {
                self.on_event(event);
            }
            self.keyframe_policy();
            self.standby_if_due();
            self.status.tick();
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Started { session, pli } => {
                tracing::info!("publisher connected (session {session})");
                self.current = Some(Current {
                    session,
                    pli,
                    unit: Vec::with_capacity(256 * 1024),
                    unit_ts: None,
                    last_seq: None,
                    waiting_for_idr: true,
                    offset: None,
                    last_pli: None,
                    pli_outstanding: None,
                    last_idr: None,
                    size: None,
                    colour: Colour::Bt601,
                    depacketizer: H264Packet::default(),
                });
                self.ask_for_idr();
            }
            Event::Ended { session } => {
                if self.current.as_ref().is_some_and(|c| c.session == session) {
                    tracing::info!(
                        "publisher left (session {session}); showing the waiting picture"
                    );
                    let size = self.current.as_ref().and_then(|c| c.size);
                    self.current = None;
                    if let Some(size) = size {
                        // The waiting picture takes the publisher's last size.
                        self.settings.size = size;
                    }
                    self.next_standby = Instant::now();
                }
            }
            Event::Packet { session, packet } => {
                if self.current.as_ref().is_some_and(|c| c.session == session) {
                    self.on_packet(packet);
                }
            }
        }
    }

    fn on_packet(&mut self, packet: rtc::rtp::Packet) {
        let Some(c) = self.current.as_mut() else {
            return;
        };
        let seq = packet.header.sequence_number;
        if let Some(last) = c.last_seq {
            let step = seq.wrapping_sub(last);
            if step == 0 || step >= 0x8000 {
                // A duplicate or a late retransmission: its frame is gone already.
                return;
            }
            if step > 1 {
                // A hole: the frame and those after it until an IDR cannot be decoded.
                metrics::counter!("whepcast_relay_lost_packets_total").increment(step as u64 - 1);
                c.unit.clear();
                c.unit_ts = None;
                c.waiting_for_idr = true;
            }
        }
        c.last_seq = Some(seq);
        if c.unit_ts.is_some_and(|ts| ts != packet.header.timestamp) {
            // A new frame began without the last one's marker: it was cut short.
            c.unit.clear();
            c.waiting_for_idr = true;
        }
        c.unit_ts = Some(packet.header.timestamp);
        match c.depacketizer.depacketize(&packet.payload) {
            Ok(bytes) => c.unit.extend_from_slice(&bytes),
            Err(_) => {
                // Not H.264 we can read (or a fragment's start was lost).
                c.unit.clear();
                c.waiting_for_idr = true;
            }
        }
        if packet.header.marker {
            let ts = packet.header.timestamp;
            self.on_unit(ts);
        }
        if self.current.as_ref().is_some_and(|c| c.waiting_for_idr) {
            self.ask_for_idr();
        }
    }

    /// A whole access unit arrived: send it on, unless it cannot be decoded yet.
    fn on_unit(&mut self, publisher_ts: u32) {
        let (now_ts, last_ts) = (self.clock_ts(), self.last_ts);
        let Some(c) = self.current.as_mut() else {
            return;
        };
        c.unit_ts = None;
        let keyframe = nal_units(&c.unit).any(|n| n.first().is_some_and(|b| b & 0x1f == 5));
        if c.unit.is_empty() || (c.waiting_for_idr && !keyframe) {
            c.unit.clear();
            return;
        }
        if keyframe {
            c.waiting_for_idr = false;
            c.pli_outstanding = None;
            c.last_idr = Some(Instant::now());
            if let Some(size) = sps_size(&c.unit) {
                c.size = Some(size);
            }
            if let Some(colour) = sps_colour(&c.unit) {
                c.colour = colour;
            }
        }
        let offset = *c.offset.get_or_insert_with(|| {
            // The publisher's first frame goes on our timeline where it is now, after
            // whatever was sent before (the waiting picture, an earlier publisher).
            now_ts
                .max(last_ts.wrapping_add(1))
                .wrapping_sub(publisher_ts)
        });
        let ts = publisher_ts.wrapping_add(offset);
        let size = c.size.unwrap_or(self.settings.size);
        let unit = std::mem::take(&mut c.unit);
        let started = Instant::now();
        let packets = self.packetizer.packetize(&unit, ts);
        self.send(0, packets, keyframe, ts, size, started);
        self.lower_renditions(&unit, keyframe, ts);
        if let Some(c) = self.current.as_mut() {
            c.unit = unit;
            c.unit.clear();
        }
        self.on_standby = false;
    }

    /// Decodes the publisher's frame (while a lower rendition is watched) and encodes it
    /// once for each lower rendition someone receives.
    fn lower_renditions(&mut self, unit: &[u8], keyframe: bool, ts: u32) {
        let publishers = self.status.publishers();
        if !publishers[1..].iter().any(Publisher::watched) {
            self.decoding = false;
            for l in &mut self.lower {
                l.watched = false;
            }
            return;
        }
        if !self.decoding {
            if !keyframe {
                // A decoder starts at an IDR: ask the publisher for one.
                self.ask_for_idr();
                return;
            }
            match openh264::decoder::Decoder::new() {
                Ok(d) => self.decoder = Some(d),
                Err(e) => {
                    tracing::error!("cannot make a decoder for the lower renditions: {e}");
                    return;
                }
            }
            self.decoding = true;
        }
        let started = Instant::now();
        let Some(decoder) = self.decoder.as_mut() else {
            return;
        };
        let picture = match decoder.decode(unit) {
            Ok(Some(yuv)) => {
                use openh264::formats::YUVSource;
                let (w, h) = yuv.dimensions();
                let Ok(size) = Size::new(w as u32 & !1, h as u32 & !1) else {
                    return;
                };
                let frame = self.decoded.get_or_insert_with(|| I420Frame::new(size));
                if frame.size() != size {
                    *frame = I420Frame::new(size);
                }
                let (ys, us, _) = yuv.strides();
                if let Err(e) = frame.fill_from_i420([yuv.y(), yuv.u(), yuv.v()], ys, us) {
                    tracing::warn!("decoded picture unusable: {e}");
                    return;
                }
                frame
            }
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("decoding the publisher's frame failed: {e}; waiting for an IDR");
                self.decoding = false;
                self.ask_for_idr();
                return;
            }
        };
        let decode_time = started.elapsed();
        let settings = self.settings;
        let colour = self.current.as_ref().map_or(Colour::Bt601, |c| c.colour);
        for (i, l) in self.lower.iter_mut().enumerate() {
            let index = i + 1;
            let publisher = &publishers[index];
            if !publisher.watched() {
                l.watched = false;
                continue;
            }
            let t0 = Instant::now();
            let size = l.rung.size_for(picture.size());
            let scaled = l.scaled.get_or_insert_with(|| I420Frame::new(size));
            if let Err(e) = self.scaler.scale(picture, scaled, size) {
                tracing::error!("cannot scale to {size}: {e}");
                continue;
            }
            if l.encoder.as_ref().is_none_or(|e| e.settings().size != size) || l.colour != colour {
                let s = EncodeSettings {
                    size,
                    bitrate: l.rung.bitrate,
                    ..settings
                };
                // The decoded planes are the publisher's: so is how to read their colours.
                l.colour = colour;
                match Encoder::with_colour(s, colour) {
                    Ok(e) => l.encoder = Some(e),
                    Err(e) => {
                        tracing::error!("cannot encode at {size}: {e}");
                        continue;
                    }
                }
            }
            let Some(encoder) = l.encoder.as_mut() else {
                continue;
            };
            let asked = publisher.take_keyframe_request()
                && l.last_key
                    .is_none_or(|t| t.elapsed() >= fanout::MIN_FORCED_IDR_GAP);
            if !std::mem::replace(&mut l.watched, true) || asked {
                encoder.force_keyframe();
            }
            match encoder.encode(scaled) {
                Ok(out) => {
                    let key = out.keyframe;
                    if key {
                        l.last_key = Some(Instant::now());
                    }
                    let packets = l.packetizer.packetize(out.annexb, ts);
                    // Each rendition's cost includes the one decode it shares.
                    publish_frame(
                        &self.status,
                        index,
                        packets,
                        key,
                        ts,
                        size,
                        t0.elapsed() + decode_time,
                        self.number,
                    );
                }
                Err(e) => tracing::error!("encoding rendition {size} failed: {e}"),
            }
        }
    }

    /// Hands a packetized frame of rendition `index` to its viewers.
    fn send(
        &mut self,
        index: usize,
        packets: Vec<rtc::rtp::Packet>,
        keyframe: bool,
        ts: u32,
        size: Size,
        started: Instant,
    ) {
        self.number += 1;
        self.last_ts = ts;
        publish_frame(
            &self.status,
            index,
            packets,
            keyframe,
            ts,
            size,
            started.elapsed(),
            self.number,
        );
    }

    /// The stream's clock now, in RTP units.
    fn clock_ts(&self) -> u32 {
        (self.started.elapsed().as_micros() as u64 * RTP_CLOCK / 1_000_000) as u32
    }

    /// Viewers' requests, and the periodic PLI while anyone watches.
    fn keyframe_policy(&mut self) {
        let publishers = self.status.publishers();
        let wanted = publishers[0].take_keyframe_request();
        let watched = publishers.iter().any(Publisher::watched);
        if self.current.is_none() {
            // On the waiting picture, any rendition's request is answered by its IDR.
            // Every request is taken (not short-circuited): each is answered by this IDR.
            let mut lower = false;
            for p in &publishers[1..] {
                lower |= p.take_keyframe_request();
            }
            if (wanted || lower) && self.standby_encoder.is_some() {
                if let Some(e) = self.standby_encoder.as_mut() {
                    e.force_keyframe();
                }
                self.next_standby = Instant::now();
            }
            return;
        }
        let periodic = Duration::from_secs_f32(self.settings.keyint.max(0.5));
        match self.current.as_mut() {
            Some(c) if c.offset.is_some() => {
                let due = watched && c.last_idr.is_none_or(|t| t.elapsed() >= periodic);
                if wanted || due {
                    self.ask_for_idr();
                }
            }
            _ => {}
        }
    }

    /// A PLI to the publisher, unless one went out lately or is still unanswered.
    fn ask_for_idr(&mut self) {
        let Some(c) = self.current.as_mut() else {
            return;
        };
        let recent = c.last_pli.is_some_and(|t| t.elapsed() < PLI_GAP);
        let waiting = c
            .pli_outstanding
            .is_some_and(|t| t.elapsed() < PLI_PATIENCE);
        if recent || waiting {
            return;
        }
        c.last_pli = Some(Instant::now());
        c.pli_outstanding = Some(Instant::now());
        metrics::counter!("whepcast_relay_pli_sent_total").increment(1);
        (c.pli)();
    }

    /// The waiting picture while no publisher's frames flow (and someone watches).
    fn standby_if_due(&mut self) {
        if self.current.as_ref().is_some_and(|c| c.offset.is_some()) {
            return;
        }
        let now = Instant::now();
        if now < self.next_standby {
            return;
        }
        self.next_standby = now + Duration::from_secs(1) / STANDBY_FPS;
        if !self.status.publishers().iter().any(Publisher::watched) {
            self.on_standby = false;
            return;
        }
        let size = self.settings.size;
        let encoder = match self.standby_encoder.take() {
            Some(e) if e.settings().size == size => e,
            _ => {
                let settings = EncodeSettings {
                    size,
                    fps: STANDBY_FPS,
                    bitrate: crate::config::Bitrate(STANDBY_BITRATE),
                    keyint: 1.0,
                };
                match Encoder::new(settings) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::error!("cannot encode the waiting picture at {size}: {e}");
                        return;
                    }
                }
            }
        };
        let mut encoder = encoder;
        if !self.on_standby {
            // Cutting over from a publisher (or to the first viewer): start with an IDR.
            encoder.force_keyframe();
        }
        let ts = self.clock_ts().max(self.last_ts.wrapping_add(1));
        let picture = self.standby.next(size);
        let started = Instant::now();
        match encoder.encode(picture) {
            Ok(out) => {
                let keyframe = out.keyframe;
                let packets = self.packetizer.packetize(out.annexb, ts);
                // Every rendition shows the same waiting picture (it costs next to nothing).
                for index in 1..self.status.publishers().len() {
                    publish_frame(
                        &self.status,
                        index,
                        packets.clone(),
                        keyframe,
                        ts,
                        size,
                        Duration::ZERO,
                        self.number + 1,
                    );
                }
                self.send(0, packets, keyframe, ts, size, started);
                self.on_standby = true;
                // The lower renditions start again from an IDR when the publisher is back.
                self.decoding = false;
                for l in &mut self.lower {
                    l.watched = false;
                }
            }
            Err(e) => tracing::error!("encoding the waiting picture failed: {e}"),
        }
        self.standby_encoder = Some(encoder);
    }
}

/// Hands a packetized frame to rendition `index`'s viewers, and counts it.
#[allow(clippy::too_many_arguments)]
fn publish_frame(
    status: &Status,
    index: usize,
    packets: Vec<rtc::rtp::Packet>,
    keyframe: bool,
    ts: u32,
    size: Size,
    busy: Duration,
    number: u64,
) {
    let bytes: u64 = packets.iter().map(|p| p.payload.len() as u64).sum();
    let meta = format!(
        "{{\"type\":\"frame\",\"n\":{number},\"rtp\":{ts},\"captured_ms\":{:.3},\"keyframe\":{keyframe}}}",
        fanout::unix_ms(SystemTime::now())
    );
    status.relayed_frame(index, bytes, keyframe, size, busy);
    let Some(publisher) = status.publishers().get(index) else {
        return;
    };
    if keyframe {
        publisher.keyframe_sent();
    }
    publisher.publish(MediaFrame {
        number,
        keyframe,
        captured: Instant::now(),
        packets,
        meta,
    });
}

/// The SPS of an access unit, if it has one we can read.
fn sps(annexb: &[u8]) -> Option<h264_reader::nal::sps::SeqParameterSet> {
    use h264_reader::nal::sps::SeqParameterSet;
    let sps = nal_units(annexb).find(|n| n.first().is_some_and(|b| b & 0x1f == 7))?;
    let rbsp = h264_reader::rbsp::decode_nal(sps).ok()?;
    SeqParameterSet::from_bits(h264_reader::rbsp::BitReader::new(&rbsp[..])).ok()
}

/// The picture size an access unit's SPS gives, if it has one we can read.
pub fn sps_size(annexb: &[u8]) -> Option<Size> {
    let (w, h) = sps(annexb)?.pixel_dimensions().ok()?;
    Size::new(w & !1, h & !1).ok()
}

/// How an access unit's SPS says its colours are to be read (BT.601 limited when it does not
/// say: what decoders assume for SD and what our own encoder writes).
pub fn sps_colour(annexb: &[u8]) -> Option<Colour> {
    let sps = sps(annexb)?;
    let signal = sps.vui_parameters.and_then(|v| v.video_signal_type);
    Some(match signal {
        None => Colour::Bt601,
        Some(s) => {
            let d = s.colour_description.as_ref();
            Colour::from_signal(
                s.video_full_range_flag,
                d.map(|d| d.transfer_characteristics),
                d.map(|d| d.matrix_coefficients),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::I420Frame;
    use std::sync::Arc;

    #[test]
    fn reads_the_size_and_colours_from_our_own_sps() {
        for size in ["320x240", "1280x720", "642x362"] {
            let size: Size = size.parse().unwrap();
            let mut enc = Encoder::new(EncodeSettings {
                size,
                ..Default::default()
            })
            .unwrap();
            let out = enc.encode(&I420Frame::new(size)).unwrap();
            assert_eq!(sps_size(out.annexb), Some(size));
            let full = Encoder::with_colour(
                EncodeSettings {
                    size,
                    ..Default::default()
                },
                Colour::Srgb,
            )
            .unwrap()
            .encode(&I420Frame::new(size))
            .map(|o| sps_colour(o.annexb))
            .unwrap();
            assert_eq!(full, Some(Colour::Srgb));
        }
        assert_eq!(sps_size(&[0, 0, 0, 1, 0x67, 0xff]), None);
        assert_eq!(sps_size(b""), None);
    }

    #[test]
    fn the_inlet_never_blocks_on_packets() {
        let (tx, _rx) = mpsc::sync_channel(1);
        let inlet = Inlet { tx };
        for _ in 0..10 {
            inlet.send(Event::Packet {
                session: 1,
                packet: rtc::rtp::Packet::default(),
            });
        }
    }

    /// Drives a relay with packets of real encoded frames, as a publisher would send them.
    #[test]
    fn relays_frames_from_the_first_idr_and_drops_after_a_hole_until_the_next() {
        let settings = EncodeSettings {
            size: "320x240".parse().unwrap(),
            fps: 30,
            keyint: 60.0,
            ..Default::default()
        };
        let relay = Relay::start("t", settings, &Ladder::Single).unwrap();
        let feeds = relay.status().feeds();
        let mut frames = feeds.top().subscribe();
        let plis = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let p = plis.clone();
        relay.inlet().send(Event::Started {
            session: 7,
            pli: Box::new(move || {
                p.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }),
        });
        let mut enc = Encoder::new(settings).unwrap();
        let mut pat = crate::source::Pattern::new(settings.size);
        let mut packetizer = Packetizer::default();
        let mut seq = 1000u16;
        let mut send = |n: u64, drop_one: bool, keyframe: bool, enc: &mut Encoder| {
            use crate::source::Source;
            let mut frame = I420Frame::new(settings.size);
            let info = crate::source::FrameInfo {
                number: n,
                wall: SystemTime::now(),
            };
            pat.fill(&mut frame, info).unwrap();
            if keyframe {
                enc.force_keyframe();
            }
            let out = enc.encode(&frame).unwrap();
            let mut packets = packetizer.packetize(out.annexb, 3000 * n as u32 + 12345);
            for (i, mut p) in packets.drain(..).enumerate() {
                p.header.sequence_number = seq;
                seq = seq.wrapping_add(1);
                if drop_one && i == 0 {
                    continue;
                }
                relay.inlet().send(Event::Packet {
                    session: 7,
                    packet: p,
                });
            }
        };
        let mut got = Vec::new();
        let mut recv = |frames: &mut tokio::sync::broadcast::Receiver<Arc<MediaFrame>>| {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_millis(300) {
                match frames.try_recv() {
                    Ok(f) => got.push((f.keyframe, f.packets[0].header.timestamp)),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        };
        // Frames 0..5: the first is an IDR (a new encoder's first frame).
        for n in 0..5 {
            send(n, false, false, &mut enc);
        }
        // Frame 5 loses a packet: it and 6 are dropped; 7 is an IDR again.
        send(5, true, false, &mut enc);
        send(6, false, false, &mut enc);
        send(7, false, true, &mut enc);
        send(8, false, false, &mut enc);
        recv(&mut frames);
        // Before the publisher's first IDR, viewers get the waiting picture (on the stream's
        // clock); the publisher's frames are those 3000 ticks apart.
        let first = got
            .windows(2)
            .position(|w| w[1].1.wrapping_sub(w[0].1) == 3000)
            .expect("publisher frames");
        assert!(
            first == 0 || got[0].0,
            "the waiting picture starts with an IDR"
        );
        let got = got.split_off(first);
        let keys: Vec<bool> = got.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [true, false, false, false, false, true, false],
            "frames relayed (keyframe?) {got:?}"
        );
        // One PLI at the start, one after the hole (spaced by more than PLI_GAP? not
        // necessarily: the hole came within it, so the second may be merged).
        assert!(plis.load(std::sync::atomic::Ordering::Relaxed) >= 1);
        // Timestamps keep the publisher's spacing and only grow.
        for w in got.windows(2) {
            assert!(w[1].1.wrapping_sub(w[0].1) < 0x8000_0000, "{got:?}");
        }
        assert_eq!(got[1].1.wrapping_sub(got[0].1), 3000);
    }
}
