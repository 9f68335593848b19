//! Stage: **source** — what makes raw pictures.
//!
//! A [`Source`] fills an [`I420Frame`] that the pipeline owns and reuses, so producing a
//! frame allocates nothing; sources that start from RGB convert with
//! [`I420Frame::fill_from_rgba`] and friends ([`crate::frame`]).

mod damage;
pub mod file;
pub mod image;
pub mod pattern;
pub mod push;
pub mod screen;
mod shm;
pub mod standby;

use crate::config::Size;
use crate::frame::{FrameError, I420Frame, Rect};
use std::path::PathBuf;
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;

pub use pattern::{Barcode, Pattern};
pub use push::{FramePusher, PushSource};

/// Errors a source can report.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "unknown source '{0}'; use pattern, screen, screen:N, image:PATH, y4m:PATH, y4m:-, \
         raw:PATH, raw:- or whip"
    )]
    Unknown(String),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot open {path}: {err}")]
    Open { path: String, err: std::io::Error },
    #[error("cannot read the image {path}: {err}")]
    Image {
        path: String,
        #[source]
        err: ::image::ImageError,
    },
    #[error("{0}")]
    Stream(String),
    #[error("screen capture: {0}")]
    Screen(String),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the input's picture size cannot be encoded: {0}")]
    Size(#[from] crate::config::ConfigError),
}

/// What the user asked for with `--source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// The built-in moving test pattern.
    Pattern,
    /// An X11 display (`screen` = the primary one, `screen:N` = the N-th), via `DISPLAY`.
    Screen(Option<usize>),
    /// A still picture (PNG, JPEG, ...).
    Image(PathBuf),
    /// YUV4MPEG2 frames from a file, or from standard input (`None`).
    Y4m(Option<PathBuf>),
    /// Raw frames of `--size` and `--pixel-format` from a file or standard input (`None`).
    Raw(Option<PathBuf>),
    /// Whatever a WHIP publisher sends to `/whip[/NAME]` (relayed, not a [`Source`]: the
    /// server runs a [`crate::relay`] for it instead of a pipeline).
    Whip,
}

/// Reads `-` as standard input, anything else as a path.
fn path_or_stdin(s: &str) -> Option<PathBuf> {
    (s != "-").then(|| PathBuf::from(s))
}

impl std::str::FromStr for SourceSpec {
    type Err = SourceError;
    fn from_str(s: &str) -> Result<Self, SourceError> {
        let s = s.trim();
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        let need = |what: &str| {
            SourceError::Invalid(format!(
                "'{s}': {kind} needs a {what}, e.g. {kind}:{}",
                match kind {
                    "image" => "logo.png",
                    _ => "-",
                }
            ))
        };
        match (kind, arg) {
            ("pattern", None) => Ok(SourceSpec::Pattern),
            ("screen", None) => Ok(SourceSpec::Screen(None)),
            ("screen", Some(n)) => n.parse().map(|n| SourceSpec::Screen(Some(n))).map_err(|_| {
                SourceError::Invalid(format!("'{s}': the display number must be 0, 1, ..."))
            }),
            ("image", Some(p)) if !p.is_empty() => Ok(SourceSpec::Image(PathBuf::from(p))),
            ("image", _) => Err(need("path")),
            ("y4m", Some(p)) if !p.is_empty() => Ok(SourceSpec::Y4m(path_or_stdin(p))),
            ("y4m", _) => Err(need("path or -")),
            ("raw", Some(p)) if !p.is_empty() => Ok(SourceSpec::Raw(path_or_stdin(p))),
            ("raw", _) => Err(need("path or -")),
            ("whip", None) => Ok(SourceSpec::Whip),
            _ => Err(SourceError::Unknown(s.to_string())),
        }
    }
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = |p: &Option<PathBuf>| match p {
            Some(p) => p.display().to_string(),
            None => "-".to_string(),
        };
        match self {
            SourceSpec::Pattern => f.write_str("pattern"),
            SourceSpec::Screen(None) => f.write_str("screen"),
            SourceSpec::Screen(Some(n)) => write!(f, "screen:{n}"),
            SourceSpec::Image(p) => write!(f, "image:{}", p.display()),
            SourceSpec::Y4m(p) => write!(f, "y4m:{}", path(p)),
            SourceSpec::Raw(p) => write!(f, "raw:{}", path(p)),
            SourceSpec::Whip => f.write_str("whip"),
        }
    }
}

/// Pixel layouts accepted for raw input and pushed frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PixelFormat {
    Bgra,
    Rgba,
    I420,
}

impl PixelFormat {
    /// Bytes in one tightly packed frame of `size`.
    pub fn frame_len(self, size: Size) -> usize {
        match self {
            PixelFormat::Bgra | PixelFormat::Rgba => size.area() * 4,
            PixelFormat::I420 => size.area() * 3 / 2,
        }
    }
}

/// Options that shape how a source is opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// `--size`: the pattern's size, the size an image is scaled to, raw frames' size.
    pub size: Option<Size>,
    /// `--pixel-format` for raw input.
    pub pixel_format: Option<PixelFormat>,
}

/// Facts about the frame being produced, handed to the source.
#[derive(Debug, Clone, Copy)]
pub struct FrameInfo {
    /// 0 for the first frame the pipeline produces, then +1 per frame (dropped ones included).
    pub number: u64,
    /// Wall-clock capture time, for clocks drawn into the picture.
    pub wall: SystemTime,
}

/// What a source did when asked for the next picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// A new picture is in the frame.
    New,
    /// Nothing changed since the last picture, which the frame still holds. The pipeline
    /// skips encoding it unless a keyframe is due (a still image or an idle screen costs
    /// next to nothing).
    Unchanged,
    /// No more pictures will come (end of input).
    Ended,
}

/// Something that produces pictures.
///
/// A source lives on the pipeline thread (it need not be `Send`: X11 handles are not).
pub trait Source {
    /// Size of the next frame. It may change between calls (a screen was resized): the
    /// pipeline then gives [`Source::fill`] a frame of the new size and restarts the encoder
    /// at it, which makes the next frame an IDR.
    fn size(&self) -> Size;
    /// The frame rate the input dictates (a YUV4MPEG2 header), if any.
    fn native_fps(&self) -> Option<f64> {
        None
    }
    /// Whether to keep pulling pictures while nobody watches. True for pipes and files, so a
    /// producer is never stalled and a file plays on in real time; false (the default) for
    /// sources that would only waste work.
    fn drain_when_idle(&self) -> bool {
        false
    }
    /// Whether [`Source::fill`] writes its whole picture into any frame of the right size:
    /// it never relies on the frame holding its previous picture and never answers
    /// [`Fill::Unchanged`]. The pipeline then lets it draw straight into the encoder's buffer
    /// instead of into a canvas that is copied there (one frame copy less, per frame).
    fn fills_any_frame(&self) -> bool {
        false
    }
    /// Why the source is not delivering its real picture right now (a lost X display), for
    /// `/healthz`; `None` when all is well.
    fn problem(&self) -> Option<String> {
        None
    }
    /// After a [`Fill::New`]: the rectangles where the new picture may differ from the one
    /// before, or `None` when the source cannot say (then all of it may). The pipeline copies
    /// only these into the encoder's buffers.
    fn changed(&self) -> Option<&[Rect]> {
        None
    }
    /// Draws the next picture into `frame`, which has [`Source::size`] and holds whatever this
    /// source drew into it last time (or black).
    fn fill(&mut self, frame: &mut I420Frame, info: FrameInfo) -> Result<Fill, SourceError>;
}

/// Opens a source on the calling thread. Sources that wait for input (files, pipes) stop
/// waiting once `stop` is cancelled.
pub fn open(
    spec: &SourceSpec,
    opts: OpenOptions,
    stop: &CancellationToken,
) -> Result<Box<dyn Source>, SourceError> {
    const DEFAULT: Size = Size {
        width: 1280,
        height: 720,
    };
    match spec {
        SourceSpec::Pattern => Ok(Box::new(Pattern::new(opts.size.unwrap_or(DEFAULT)))),
        SourceSpec::Screen(n) => Ok(Box::new(screen::Screen::open(*n)?)),
        SourceSpec::Image(path) => Ok(Box::new(image::Still::open(path, opts.size)?)),
        SourceSpec::Y4m(path) => Ok(Box::new(file::Y4m::open(path.as_deref(), stop)?)),
        SourceSpec::Raw(path) => {
            let size = opts.size.ok_or_else(|| {
                SourceError::Invalid("raw input needs --size WxH (and --pixel-format)".into())
            })?;
            let format = opts.pixel_format.unwrap_or(PixelFormat::I420);
            Ok(Box::new(file::Raw::open(
                path.as_deref(),
                size,
                format,
                stop,
            )?))
        }
        SourceSpec::Whip => Err(SourceError::Invalid(
            "a WHIP stream's frames come from its publisher; `serve` relays it (encode needs a file or pattern)"
                .into(),
        )),
    }
}
