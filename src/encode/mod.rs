//! Stage: **encode** I420 frames to H.264 with OpenH264, once for every viewer.
//!
//! OpenH264's defaults suit offline files, not live video, so every setting that matters is
//! explicit here: bitrate rate control at the asked rate, no frame skipping (a skipped frame is a stutter),
//! the real frame rate (rate control divides by it), an IDR every `keyint` seconds, and
//! Baseline profile so the SPS matches the `profile-level-id=42e01f` we signal.

use crate::config::EncodeSettings;
use crate::frame::I420Frame;
use openh264::encoder::{
    BitRate, Complexity, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Level, Profile,
    RateControlMode, SpsPpsStrategy, UsageType, VuiConfig,
};
use openh264::OpenH264API;

pub mod worker;
pub use worker::Worker;

/// Errors from the encoder.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("OpenH264: {0}")]
    OpenH264(#[from] openh264::Error),
    #[error("OpenH264 refused an option change (error {0})")]
    Option(i32),
    #[error("frame is {got} but the encoder was set up for {want}")]
    WrongSize {
        got: crate::config::Size,
        want: crate::config::Size,
    },
}

/// How the encoded pictures' colours are to be read, written in every SPS (VUI) so a
/// decoder never guesses, nor keeps what an earlier SPS said: a viewer that watched a WHIP
/// publisher's full-range stream would otherwise show our limited-range pictures washed out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Colour {
    /// BT.601, limited range: what [`crate::frame`] converts RGB to (all our own sources).
    #[default]
    Bt601,
    /// BT.709, limited range.
    Bt709,
    /// BT.709 matrix, full range.
    Bt709Full,
    /// BT.709 primaries and matrix, sRGB transfer, full range: what Chromium publishes.
    Srgb,
}

impl Colour {
    fn vui(self) -> VuiConfig {
        match self {
            Colour::Bt601 => VuiConfig::bt601(),
            Colour::Bt709 => VuiConfig::bt709(),
            Colour::Bt709Full => VuiConfig::bt709_full(),
            Colour::Srgb => VuiConfig::srgb(),
        }
    }

    /// The closest of ours to what an SPS signals: `full_range`, and the matrix and transfer
    /// (H.273 code points) when given.
    pub fn from_signal(full_range: bool, transfer: Option<u8>, matrix: Option<u8>) -> Self {
        let bt601 = matches!(matrix, Some(5 | 6));
        match (full_range, bt601, transfer) {
            (false, true, _) => Colour::Bt601,
            (false, false, _) => Colour::Bt709,
            (true, _, Some(13)) => Colour::Srgb,
            (true, _, _) => Colour::Bt709Full,
        }
    }
}

/// The least rate [`Encoder::set_bitrate`] goes down to: below it a picture is mush, and
/// a link that cannot carry it needs a smaller size, not a lower rate.
pub const MIN_BITRATE: u32 = 50_000;

/// An H.264 encoder configured for live video.
pub struct Encoder {
    inner: openh264::encoder::Encoder,
    settings: EncodeSettings,
    out: Vec<u8>,
    frames: u64,
    /// The rate rate control aims at now (bits per second); starts at the settings' rate.
    bitrate: u32,
    /// A rate asked for before OpenH264 set itself up (it does so on the first frame, from
    /// the settings): applied right after that frame.
    pending_bitrate: Option<u32>,
}

/// One encoded picture, borrowed from the encoder until the next call.
#[derive(Debug)]
pub struct Encoded<'a> {
    /// Annex B byte stream (start codes + NAL units). IDRs carry SPS and PPS in front.
    pub annexb: &'a [u8],
    /// Whether this is an IDR (a point where a new viewer can start decoding).
    pub keyframe: bool,
}

impl Encoder {
    /// An encoder of our own pictures (BT.601, limited range).
    pub fn new(settings: EncodeSettings) -> Result<Self, EncodeError> {
        Self::with_colour(settings, Colour::Bt601)
    }

    /// An encoder of pictures whose colours are `colour` (e.g. a decoded WHIP publisher's).
    pub fn with_colour(settings: EncodeSettings, colour: Colour) -> Result<Self, EncodeError> {
        let config = EncoderConfig::new()
            .vui(colour.vui())
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(settings.bitrate.bps()))
            .max_frame_rate(FrameRate::from_hz(settings.fps as f32))
            .skip_frames(false)
            .intra_frame_period(IntraFramePeriod::from_num_frames(settings.keyint_frames()))
            .profile(Profile::Baseline)
            .level(level_for(settings))
            .complexity(Complexity::Low)
            // Same ids on every IDR: a viewer who joins late needs nothing it has not seen.
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            .num_threads(1);
        let inner =
            openh264::encoder::Encoder::with_api_config(OpenH264API::from_source(), config)?;
        Ok(Self {
            inner,
            settings,
            out: Vec::with_capacity(settings.bitrate.bps() as usize / 8),
            frames: 0,
            bitrate: settings.bitrate.bps(),
            pending_bitrate: None,
        })
    }

    pub fn settings(&self) -> &EncodeSettings {
        &self.settings
    }

    /// Frames encoded so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The rate rate control aims at now, bits per second.
    pub fn bitrate(&self) -> u32 {
        self.pending_bitrate.unwrap_or(self.bitrate)
    }

    /// Aims rate control at `bps` from the next frame on, within 50 kbit/s and the
    /// settings' rate (OpenH264's ceiling for this stream: it was set up with that as the
    /// most it may spend). For a sender whose one receiver's link decides the rate.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), EncodeError> {
        let bps = bps.clamp(
            MIN_BITRATE.min(self.settings.bitrate.bps()),
            self.settings.bitrate.bps(),
        );
        if bps == self.bitrate() {
            return Ok(());
        }
        if self.frames == 0 {
            // Not set up yet: OpenH264 would overwrite it on the first frame.
            self.pending_bitrate = Some(bps);
            return Ok(());
        }
        let mut info = openh264_sys2::SBitrateInfo {
            iLayer: openh264_sys2::SPATIAL_LAYER_ALL,
            iBitrate: bps as std::ffi::c_int,
        };
        // SAFETY: ENCODER_OPTION_BITRATE reads one SBitrateInfo through the pointer, which
        // lives across the call; the encoder is set up (a frame was encoded) and used by
        // this thread alone (`&mut self`). It changes only the rate-control target, which
        // the wrapper does not rely on.
        let rc = unsafe {
            self.inner.raw_api().set_option(
                openh264_sys2::ENCODER_OPTION_BITRATE,
                (&raw mut info).cast(),
            )
        };
        if rc != 0 {
            return Err(EncodeError::Option(rc));
        }
        self.bitrate = bps;
        Ok(())
    }

    /// Makes the next frame an IDR (a viewer joined or lost a picture).
    pub fn force_keyframe(&mut self) {
        self.inner.force_intra_frame();
    }

    /// Encodes one frame. The returned bytes live in a buffer reused for the next frame.
    pub fn encode(&mut self, frame: &I420Frame) -> Result<Encoded<'_>, EncodeError> {
        if frame.size() != self.settings.size {
            return Err(EncodeError::WrongSize {
                got: frame.size(),
                want: self.settings.size,
            });
        }
        let ts = openh264::Timestamp::from_millis(self.frames * 1000 / self.settings.fps as u64);
        let bitstream = self.inner.encode_at(frame, ts)?;
        let keyframe = matches!(bitstream.frame_type(), FrameType::IDR);
        self.out.clear();
        bitstream.write_vec(&mut self.out);
        self.frames += 1;
        if let Some(bps) = self.pending_bitrate.take() {
            self.set_bitrate(bps)?;
        }
        Ok(Encoded {
            annexb: &self.out,
            keyframe,
        })
    }
}

/// The lowest level that holds the picture size and rate (browsers only care that it does
/// not exceed what they negotiated; 3.1 covers 720p30, bigger streams signal more).
fn level_for(s: EncodeSettings) -> Level {
    let mbs = (s.size.width as u64).div_ceil(16) * (s.size.height as u64).div_ceil(16);
    let mbps = mbs * s.fps as u64;
    match (mbs, mbps) {
        (..=3600, ..=108_000) => Level::Level_3_1,
        (..=5120, ..=216_000) => Level::Level_3_2,
        (..=8192, ..=245_760) => Level::Level_4_1,
        (..=8704, ..=522_240) => Level::Level_4_2,
        (..=22_080, ..=589_824) => Level::Level_5_1,
        _ => Level::Level_5_2,
    }
}

/// Splits an Annex B stream into NAL units (without start codes).
pub fn nal_units(annexb: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = annexb;
    std::iter::from_fn(move || {
        // Skip the start code in front of the unit.
        let start = find_start_code(rest)?;
        rest = &rest[start..];
        let end = next_start(rest).unwrap_or(rest.len());
        let (unit, tail) = rest.split_at(end);
        rest = tail;
        Some(unit)
    })
}

/// Index just past the first start code (00 00 01 or 00 00 00 01).
fn find_start_code(b: &[u8]) -> Option<usize> {
    b.windows(3).position(|w| w == [0, 0, 1]).map(|i| i + 3)
}

/// Index of the next start code's first zero byte.
fn next_start(b: &[u8]) -> Option<usize> {
    let i = b.windows(3).position(|w| w == [0, 0, 1])?;
    Some(if i > 0 && b[i - 1] == 0 { i - 1 } else { i })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Size;
    use crate::source::{FrameInfo, Pattern, Source};
    use std::time::SystemTime;

    #[test]
    fn first_frame_is_an_idr_with_baseline_sps_and_keyint_holds() {
        let settings = EncodeSettings {
            size: Size::new(320, 240).unwrap(),
            fps: 10,
            keyint: 1.0,
            ..Default::default()
        };
        let mut enc = Encoder::new(settings).unwrap();
        let mut pat = Pattern::new(settings.size);
        let mut frame = I420Frame::new(settings.size);
        let mut keys = vec![];
        for n in 0..25 {
            pat.fill(
                &mut frame,
                FrameInfo {
                    number: n,
                    wall: SystemTime::now(),
                },
            )
            .unwrap();
            let out = enc.encode(&frame).unwrap();
            if out.keyframe {
                keys.push(n);
                let types: Vec<u8> = nal_units(out.annexb).map(|u| u[0] & 0x1f).collect();
                assert_eq!(
                    &types[..2],
                    &[7, 8],
                    "IDR must start with SPS, PPS: {types:?}"
                );
                let sps = nal_units(out.annexb).next().unwrap();
                assert_eq!(sps[1], 0x42, "profile_idc must be Baseline");
                assert_eq!(
                    crate::relay::sps_colour(out.annexb),
                    Some(Colour::Bt601),
                    "the SPS says how to read the colours"
                );
                assert!(sps[2] & 0x40 != 0, "constraint_set1 (constrained baseline)");
            }
        }
        assert_eq!(keys, vec![0, 10, 20]);
        assert_eq!(enc.frames(), 25);
    }

    #[test]
    fn forced_keyframe_comes_next() {
        let settings = EncodeSettings {
            size: Size::new(160, 120).unwrap(),
            ..Default::default()
        };
        let mut enc = Encoder::new(settings).unwrap();
        let frame = I420Frame::new(settings.size);
        assert!(enc.encode(&frame).unwrap().keyframe);
        assert!(!enc.encode(&frame).unwrap().keyframe);
        enc.force_keyframe();
        assert!(enc.encode(&frame).unwrap().keyframe);
    }

    /// Bytes of `n` pattern frames from `first` on, at the encoder's rate now.
    fn bytes_over(enc: &mut Encoder, pat: &mut Pattern, first: u64, n: u64) -> usize {
        let mut frame = I420Frame::new(enc.settings().size);
        (first..first + n)
            .map(|number| {
                let info = FrameInfo {
                    number,
                    wall: SystemTime::now(),
                };
                pat.fill(&mut frame, info).unwrap();
                enc.encode(&frame).unwrap().annexb.len()
            })
            .sum()
    }

    #[test]
    fn the_rate_follows_set_bitrate_within_the_settings() {
        let settings = EncodeSettings {
            size: Size::new(640, 360).unwrap(),
            fps: 30,
            bitrate: "800k".parse().unwrap(),
            keyint: 10.0,
        };
        let mut enc = Encoder::new(settings).unwrap();
        let mut pat = Pattern::new(settings.size);
        // Settle, then two seconds at the full rate.
        bytes_over(&mut enc, &mut pat, 0, 30);
        let full = bytes_over(&mut enc, &mut pat, 30, 60) * 8 / 2;
        enc.set_bitrate(200_000).unwrap();
        assert_eq!(enc.bitrate(), 200_000);
        bytes_over(&mut enc, &mut pat, 90, 30);
        let low = bytes_over(&mut enc, &mut pat, 120, 60) * 8 / 2;
        assert!(
            (120_000..=300_000).contains(&low),
            "at 200 kbit/s it spent {low} bit/s (at 800 kbit/s: {full})"
        );
        assert!(full > 2 * low, "800 kbit/s {full} vs 200 kbit/s {low}");
        // Never above what the stream was set up for, never below the floor.
        enc.set_bitrate(10_000_000).unwrap();
        assert_eq!(enc.bitrate(), 800_000);
        enc.set_bitrate(1).unwrap();
        assert_eq!(enc.bitrate(), MIN_BITRATE);
    }

    #[test]
    fn a_rate_set_before_the_first_frame_holds() {
        let settings = EncodeSettings {
            size: Size::new(320, 180).unwrap(),
            bitrate: "1M".parse().unwrap(),
            ..Default::default()
        };
        let mut enc = Encoder::new(settings).unwrap();
        enc.set_bitrate(200_000).unwrap();
        let mut pat = Pattern::new(settings.size);
        bytes_over(&mut enc, &mut pat, 0, 30);
        let bits = bytes_over(&mut enc, &mut pat, 30, 60) * 8 / 2;
        assert_eq!(enc.bitrate(), 200_000);
        assert!(bits < 350_000, "spent {bits} bit/s at 200 kbit/s");
    }

    #[test]
    fn levels_follow_size() {
        // The SPS level_idc the encoder writes: 3.1 for 720p30, 4.1 for 1080p30.
        for (size, level) in [("1280x720", 31), ("1920x1080", 41)] {
            let s = EncodeSettings {
                size: size.parse().unwrap(),
                ..Default::default()
            };
            let mut enc = Encoder::new(s).unwrap();
            let out = enc.encode(&I420Frame::new(s.size)).unwrap();
            let sps = nal_units(out.annexb).next().unwrap();
            assert_eq!(sps[3], level, "{size}");
        }
    }
}
