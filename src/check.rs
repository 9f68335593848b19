//! `whepcast encode`: encode a known input with exactly the encoder `serve` uses, write it to
//! a file, decode it back, measure it, and judge it against thresholds — a CI check that fails
//! the build when quality or format is wrong.
//!
//! Same path as the broadcaster: [`crate::source::open`] → [`crate::encode::Encoder`] with the
//! same configuration. Every encoded frame is decoded again with OpenH264 from the very bytes
//! written to the file and compared with its source frame (PSNR of luma).

use crate::config::{EncodeSettings, Rung};
use crate::encode::{nal_units, EncodeError, Encoder};
use crate::frame::{I420Frame, ScaleError, Scaler};
use crate::pipeline::{prepare, StartError};
use crate::source::{self, FrameInfo, OpenOptions, SourceError, SourceSpec};
use serde::Serialize;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Why a check could not run (as opposed to ran and failed).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The source or the encoder could not be set up (bad input: exit 2).
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("{0}: the output must end in .h264 (Annex B) or .mp4")]
    Container(PathBuf),
    #[error("the source produced no frames")]
    NoFrames,
    #[error("writing {path}: {err}")]
    Write {
        path: String,
        #[source]
        err: WriteError,
    },
    #[error("decoding the output back: {0}")]
    Decode(#[source] openh264::Error),
    #[error("decoding the output back: frame {0} produced no picture")]
    NoPicture(u64),
    #[error("scaling to the rendition's size: {0}")]
    Scale(#[from] ScaleError),
    #[error(transparent)]
    Settings(#[from] crate::config::ConfigError),
}

/// Why the output file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("MP4: {0}")]
    Mp4(#[from] mp4::Error),
    #[error("the first frame carries no SPS/PPS")]
    NoParameterSets,
    #[error("no frames were written")]
    NoFrames,
}

/// Output container, from the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Container {
    /// Annex B elementary stream (`.h264`).
    H264,
    /// MP4 with an avcC track (`.mp4`).
    Mp4,
}

impl Container {
    pub fn from_path(path: &Path) -> Result<Self, CheckError> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("h264") | Some("264") => Ok(Container::H264),
            Some("mp4") => Ok(Container::Mp4),
            _ => Err(CheckError::Container(path.to_owned())),
        }
    }
}

/// What to encode and what to demand of it.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    pub source: SourceSpec,
    pub open: OpenOptions,
    pub settings: EncodeSettings,
    pub frames: u64,
    pub out: PathBuf,
    /// Fail when the mean PSNR-Y is below this (dB).
    pub min_psnr: Option<f64>,
    /// Fail when the achieved bit rate is off the target by more than this (percent).
    pub max_bitrate_error: Option<f64>,
    /// Fail unless keyframes sit exactly every `keyint` seconds (set when asked for).
    pub check_keyint: bool,
    /// Encode this rendition of the source (scaled as `serve` scales it) instead of the
    /// source as it is.
    pub rendition: Option<Rung>,
}

/// One threshold and how it went.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// Statistics of a per-frame series.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub min: f64,
    pub mean: f64,
    pub max: f64,
}

/// Everything measured, for `--report` and `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub source: String,
    pub output: String,
    pub container: Container,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub frames: u64,
    pub bytes: u64,
    pub duration_seconds: f64,
    pub target_bitrate: u32,
    pub achieved_bitrate: f64,
    pub bitrate_error_percent: f64,
    pub keyframes: Vec<u64>,
    pub keyint_frames: u32,
    pub profile: String,
    pub level: String,
    pub profile_level_id: String,
    pub psnr_y: Summary,
    pub psnr_y_per_frame: Vec<f64>,
    pub encode_fps: f64,
    pub checks: Vec<CheckResult>,
    pub passed: bool,
}

impl Report {
    /// A few lines for people (CI logs).
    pub fn human(&self) -> String {
        let mut s = format!(
            "{} -> {} ({:?}): {} frames {}x{} at {} fps, {} bytes\n\
             bit rate {:.0} kbit/s (target {} kbit/s, {:+.1} %)\n\
             keyframes at {:?} (every {} frames), {} level {} ({})\n\
             PSNR-Y min {:.2} / mean {:.2} / max {:.2} dB; encoded at {:.0} fps\n",
            self.source,
            self.output,
            self.container,
            self.frames,
            self.width,
            self.height,
            self.fps,
            self.bytes,
            self.achieved_bitrate / 1000.0,
            self.target_bitrate / 1000,
            self.bitrate_error_percent,
            self.keyframes,
            self.keyint_frames,
            self.profile,
            self.level,
            self.profile_level_id,
            self.psnr_y.min,
            self.psnr_y.mean,
            self.psnr_y.max,
            self.encode_fps,
        );
        for c in &self.checks {
            let mark = if c.passed { "pass" } else { "FAIL" };
            s.push_str(&format!("{mark}: {} — {}\n", c.name, c.detail));
        }
        s.push_str(if self.passed {
            "all checks passed\n"
        } else {
            "checks failed\n"
        });
        s
    }
}

/// Called after each frame with (frames done, frames total).
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// Runs the check: encode, write, decode back, measure, judge.
pub fn run(cfg: &CheckConfig, progress: Progress<'_>) -> Result<Report, CheckError> {
    let container = Container::from_path(&cfg.out)?;
    let never = tokio_util::sync::CancellationToken::new();
    let source = source::open(&cfg.source, cfg.open, &never).map_err(StartError::from)?;
    let (mut source, encoder, source_settings) = prepare(source, cfg.settings)?;
    // A rendition: the source's pictures scaled to its size, encoded at its rate.
    let (mut encoder, settings) = match cfg.rendition {
        None => (encoder, source_settings),
        Some(rung) => {
            let s = EncodeSettings {
                size: rung.size_for(source_settings.size),
                bitrate: rung.bitrate,
                ..source_settings
            };
            s.validate()?;
            (Encoder::new(s)?, s)
        }
    };
    let mut scaler = Scaler::default();
    let mut scaled = I420Frame::new(settings.size);
    let mut decoder = openh264::decoder::Decoder::new().map_err(CheckError::Decode)?;
    let write_err = |err: WriteError| CheckError::Write {
        path: cfg.out.display().to_string(),
        err,
    };
    let mut sink = Sink::create(&cfg.out, container, settings).map_err(write_err)?;

    let mut frame = I420Frame::new(source_settings.size);
    let mut psnr = Vec::with_capacity(cfg.frames as usize);
    let mut keyframes = Vec::new();
    let mut bytes = 0u64;
    let mut sps: Option<Vec<u8>> = None;
    let mut encode_time = Duration::ZERO;
    // A fixed clock for the pattern's clock and barcode: the same input on every run.
    let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for n in 0..cfg.frames {
        let info = FrameInfo {
            number: n,
            wall: epoch + settings.frame_interval().mul_f64(n as f64),
        };
        if source.fill(&mut frame, info)? == source::Fill::Ended {
            break;
        }
        let picture = if settings.size == frame.size() {
            &frame
        } else {
            scaler.scale(&frame, &mut scaled, settings.size)?;
            &scaled
        };
        let t = Instant::now();
        let out = encoder.encode(picture)?;
        encode_time += t.elapsed();
        if out.keyframe {
            keyframes.push(n);
        }
        if sps.is_none() {
            sps = nal_units(out.annexb)
                .find(|u| u.first().map(|b| b & 0x1f) == Some(7))
                .map(<[u8]>::to_vec);
        }
        bytes += sink.write(out.annexb, n, out.keyframe).map_err(write_err)?;
        // Decode exactly what was written and compare with the source picture.
        let decoded = decoder
            .decode(out.annexb)
            .map_err(CheckError::Decode)?
            .ok_or(CheckError::NoPicture(n))?;
        psnr.push(psnr_y(picture, &decoded));
        progress(n + 1, cfg.frames);
    }
    let file_bytes = sink.finish().map_err(write_err)?;

    let frames = psnr.len() as u64;
    if frames == 0 {
        return Err(CheckError::NoFrames);
    }
    let duration = frames as f64 / settings.fps as f64;
    let achieved = bytes as f64 * 8.0 / duration;
    let target = settings.bitrate.bps();
    let error = (achieved - target as f64) / target as f64 * 100.0;
    let summary = Summary {
        min: psnr.iter().copied().fold(f64::INFINITY, f64::min),
        mean: psnr.iter().sum::<f64>() / frames as f64,
        max: psnr.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    };
    let (profile, level, pli) = describe_sps(sps.as_deref());

    let mut checks = Vec::new();
    if let Some(min) = cfg.min_psnr {
        checks.push(CheckResult {
            name: "min-psnr".into(),
            passed: summary.mean >= min,
            detail: format!(
                "mean PSNR-Y {:.2} dB vs required {min:.2} dB ({:+.2} dB)",
                summary.mean,
                summary.mean - min
            ),
        });
    }
    if let Some(max) = cfg.max_bitrate_error {
        checks.push(CheckResult {
            name: "max-bitrate-error".into(),
            passed: error.abs() <= max,
            detail: format!(
                "{:.0} kbit/s is {error:+.1} % off the {} kbit/s target (allowed ±{max} %)",
                achieved / 1000.0,
                target / 1000
            ),
        });
    }
    let keyint = settings.keyint_frames();
    if cfg.check_keyint {
        let expected: Vec<u64> = (0..frames).step_by(keyint as usize).collect();
        let passed = keyframes == expected;
        checks.push(CheckResult {
            name: "keyint".into(),
            passed,
            detail: if passed {
                format!("keyframes every {keyint} frames as asked")
            } else {
                format!("keyframes at {keyframes:?}, expected every {keyint} frames: {expected:?}")
            },
        });
    }
    let passed = checks.iter().all(|c| c.passed);
    Ok(Report {
        source: cfg.source.to_string(),
        output: cfg.out.display().to_string(),
        container,
        width: settings.size.width,
        height: settings.size.height,
        fps: settings.fps,
        frames,
        bytes: file_bytes,
        duration_seconds: duration,
        target_bitrate: target,
        achieved_bitrate: achieved,
        bitrate_error_percent: error,
        keyframes,
        keyint_frames: keyint,
        profile,
        level,
        profile_level_id: pli,
        psnr_y: summary,
        psnr_y_per_frame: psnr,
        encode_fps: frames as f64 / encode_time.as_secs_f64().max(1e-9),
        checks,
        passed,
    })
}

/// PSNR of the decoded luma against the source luma, in dB (100 for identical).
fn psnr_y(source: &I420Frame, decoded: &openh264::decoder::DecodedYUV<'_>) -> f64 {
    use openh264::formats::YUVSource;
    let w = source.size().width as usize;
    let stride = decoded.strides().0;
    let (src, dec) = (source.planes().0, decoded.y());
    let mut se = 0u64;
    for (row, line) in src.chunks_exact(w).enumerate() {
        let d = &dec[row * stride..row * stride + w];
        se += line
            .iter()
            .zip(d)
            .map(|(a, b)| (*a as i64 - *b as i64).pow(2) as u64)
            .sum::<u64>();
    }
    let mse = se as f64 / src.len() as f64;
    if mse == 0.0 {
        100.0
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

/// Profile name, level and `profile-level-id` from an SPS NAL unit.
fn describe_sps(sps: Option<&[u8]>) -> (String, String, String) {
    let Some(&[_, profile_idc, constraints, level_idc, ..]) = sps else {
        return ("unknown".into(), "unknown".into(), String::new());
    };
    let profile = match (profile_idc, constraints & 0x40 != 0) {
        (66, true) => "Constrained Baseline",
        (66, false) => "Baseline",
        (77, _) => "Main",
        (100, _) => "High",
        _ => "other",
    };
    let level = format!("{}.{}", level_idc / 10, level_idc % 10);
    (
        profile.into(),
        level,
        format!("{profile_idc:02x}{constraints:02x}{level_idc:02x}"),
    )
}

/// Where the encoded frames go.
enum Sink {
    H264(BufWriter<std::fs::File>),
    Mp4 {
        writer: Option<mp4::Mp4Writer<BufWriter<std::fs::File>>>,
        file: Option<BufWriter<std::fs::File>>,
        settings: EncodeSettings,
        sample: Vec<u8>,
    },
}

/// MP4 media timescale: 90 kHz, like RTP, so any frame rate has whole-number durations.
const MP4_TIMESCALE: u32 = 90_000;

impl Sink {
    fn create(
        path: &Path,
        container: Container,
        settings: EncodeSettings,
    ) -> Result<Self, WriteError> {
        let file = BufWriter::new(std::fs::File::create(path)?);
        Ok(match container {
            Container::H264 => Sink::H264(file),
            Container::Mp4 => Sink::Mp4 {
                writer: None,
                file: Some(file),
                settings,
                sample: Vec::new(),
            },
        })
    }

    /// Writes one access unit; returns the bytes of coded video it holds.
    fn write(&mut self, annexb: &[u8], n: u64, keyframe: bool) -> Result<u64, WriteError> {
        match self {
            Sink::H264(f) => {
                f.write_all(annexb)?;
                Ok(annexb.len() as u64)
            }
            Sink::Mp4 {
                writer,
                file,
                settings,
                sample,
            } => {
                if writer.is_none() {
                    // The track's avcC needs the SPS and PPS, which arrive with the first IDR.
                    let find =
                        |t: u8| nal_units(annexb).find(|u| u.first().map(|b| b & 0x1f) == Some(t));
                    let (Some(sps), Some(pps), Some(file)) = (find(7), find(8), file.take()) else {
                        return Err(WriteError::NoParameterSets);
                    };
                    let config = mp4::Mp4Config {
                        major_brand: str::parse("isom")?,
                        minor_version: 512,
                        compatible_brands: ["isom", "iso2", "avc1", "mp41"]
                            .iter()
                            .map(|b| str::parse(b))
                            .collect::<Result<_, mp4::Error>>()?,
                        timescale: MP4_TIMESCALE,
                    };
                    let mut w = mp4::Mp4Writer::write_start(file, &config)?;
                    w.add_track(&mp4::TrackConfig {
                        track_type: mp4::TrackType::Video,
                        timescale: MP4_TIMESCALE,
                        language: "und".into(),
                        media_conf: mp4::MediaConfig::AvcConfig(mp4::AvcConfig {
                            width: settings.size.width as u16,
                            height: settings.size.height as u16,
                            seq_param_set: sps.to_vec(),
                            pic_param_set: pps.to_vec(),
                        }),
                    })?;
                    *writer = Some(w);
                }
                // MP4 samples hold length-prefixed NAL units; SPS/PPS live in avcC.
                sample.clear();
                for unit in nal_units(annexb) {
                    if matches!(unit.first().map(|b| b & 0x1f), Some(7..=9)) {
                        continue;
                    }
                    sample.extend_from_slice(&(unit.len() as u32).to_be_bytes());
                    sample.extend_from_slice(unit);
                }
                let duration = MP4_TIMESCALE / settings.fps;
                let w = writer.as_mut().ok_or(WriteError::NoParameterSets)?;
                w.write_sample(
                    1,
                    &mp4::Mp4Sample {
                        start_time: n * duration as u64,
                        duration,
                        rendering_offset: 0,
                        is_sync: keyframe,
                        bytes: bytes::Bytes::copy_from_slice(sample),
                    },
                )?;
                Ok(annexb.len() as u64)
            }
        }
    }

    /// Finishes the file; returns its size in bytes.
    fn finish(self) -> Result<u64, WriteError> {
        let mut file = match self {
            Sink::H264(f) => f,
            Sink::Mp4 { writer, .. } => {
                let mut w = writer.ok_or(WriteError::NoFrames)?;
                w.write_end()?;
                w.into_writer()
            }
        };
        file.flush()?;
        let f = file.into_inner().map_err(|e| e.into_error())?;
        Ok(f.metadata()?.len())
    }
}
