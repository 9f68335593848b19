//! Stage 1 of the data path: **sources** make raw pictures.
//!
//! A [`Source`] fills an [`I420Frame`] that the pipeline owns and reuses, so producing a
//! frame allocates nothing. I420 (planar Y, then U and V at quarter resolution) is what the
//! H.264 encoder eats; sources that start from RGB convert with the `yuv` crate's SIMD
//! routines ([`I420Frame::fill_from_rgba`]).

pub mod pattern;

use crate::config::Size;
use std::time::SystemTime;

pub use pattern::{Barcode, Pattern};

/// Errors a source can report.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("unknown source '{0}'; this build knows: pattern")]
    Unknown(String),
    #[error("colour conversion failed: {0}")]
    Convert(String),
    #[error("pixel buffer too small: {got} bytes for {size} with stride {stride}, need {need}")]
    BufferTooSmall {
        got: usize,
        need: usize,
        size: Size,
        stride: usize,
    },
}

/// What the user asked for with `--source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// The built-in moving test pattern.
    Pattern,
}

impl std::str::FromStr for SourceSpec {
    type Err = SourceError;
    fn from_str(s: &str) -> Result<Self, SourceError> {
        match s.trim() {
            "pattern" => Ok(SourceSpec::Pattern),
            other => Err(SourceError::Unknown(other.to_string())),
        }
    }
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceSpec::Pattern => f.write_str("pattern"),
        }
    }
}

/// Facts about the frame being produced, handed to the source.
#[derive(Debug, Clone, Copy)]
pub struct FrameInfo {
    /// 0 for the first frame the pipeline produces, then +1 per frame (dropped ones included).
    pub number: u64,
    /// Wall-clock capture time, for clocks drawn into the picture.
    pub wall: SystemTime,
}

/// Something that produces pictures of a fixed size.
pub trait Source: Send {
    /// Size of every frame this source produces.
    fn size(&self) -> Size;
    /// Draws the next picture into `frame`, which has [`Source::size`].
    fn fill(&mut self, frame: &mut I420Frame, info: FrameInfo) -> Result<(), SourceError>;
}

/// Opens the source a user named.
pub fn open(spec: &SourceSpec, size: Size) -> Result<Box<dyn Source>, SourceError> {
    match spec {
        SourceSpec::Pattern => Ok(Box::new(Pattern::new(size))),
    }
}

/// One picture in I420: a full-size luma plane and two half-by-half chroma planes, tightly
/// packed (stride = width). Allocated once per stream and redrawn in place.
#[derive(Clone)]
pub struct I420Frame {
    size: Size,
    data: Vec<u8>,
}

impl I420Frame {
    /// A black frame.
    pub fn new(size: Size) -> Self {
        let luma = size.area();
        let mut data = vec![0u8; luma + luma / 2];
        data[..luma].fill(16);
        data[luma..].fill(128);
        Self { size, data }
    }

    pub fn size(&self) -> Size {
        self.size
    }

    /// The whole buffer: Y, then U, then V.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// Mutable Y, U and V planes.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let luma = self.size.area();
        let (y, uv) = self.data.split_at_mut(luma);
        let (u, v) = uv.split_at_mut(luma / 4);
        (y, u, v)
    }

    /// Y, U and V planes.
    pub fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let luma = self.size.area();
        let (y, uv) = self.data.split_at(luma);
        let (u, v) = uv.split_at(luma / 4);
        (y, u, v)
    }

    /// Copies another frame of the same size into this one.
    pub fn copy_from(&mut self, other: &I420Frame) {
        self.data.copy_from_slice(&other.data);
    }

    /// Converts an RGBA or BGRA picture (`stride` bytes per row) into this frame, BT.601
    /// limited range, which is what browsers assume for H.264 without colour metadata.
    pub fn fill_from_rgba(
        &mut self,
        pixels: &[u8],
        stride: usize,
        order: ByteOrder,
    ) -> Result<(), SourceError> {
        let Size { width, height } = self.size;
        let need = stride * (height as usize - 1) + width as usize * 4;
        if stride < width as usize * 4 || pixels.len() < need {
            return Err(SourceError::BufferTooSmall {
                got: pixels.len(),
                need,
                size: self.size,
                stride,
            });
        }
        let (y, u, v) = self.planes_mut();
        let mut image = yuv::YuvPlanarImageMut {
            y_plane: yuv::BufferStoreMut::Borrowed(y),
            y_stride: width,
            u_plane: yuv::BufferStoreMut::Borrowed(u),
            u_stride: width / 2,
            v_plane: yuv::BufferStoreMut::Borrowed(v),
            v_stride: width / 2,
            width,
            height,
        };
        let convert = match order {
            ByteOrder::Rgba => yuv::rgba_to_yuv420,
            ByteOrder::Bgra => yuv::bgra_to_yuv420,
        };
        convert(
            &mut image,
            pixels,
            stride as u32,
            yuv::YuvRange::Limited,
            yuv::YuvStandardMatrix::Bt601,
            yuv::YuvConversionMode::Balanced,
        )
        .map_err(|e| SourceError::Convert(e.to_string()))
    }
}

/// Channel order of 32-bit pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    Rgba,
    Bgra,
}

impl openh264::formats::YUVSource for I420Frame {
    fn dimensions(&self) -> (usize, usize) {
        (self.size.width as usize, self.size.height as usize)
    }
    fn strides(&self) -> (usize, usize, usize) {
        let w = self.size.width as usize;
        (w, w / 2, w / 2)
    }
    fn y(&self) -> &[u8] {
        self.planes().0
    }
    fn u(&self) -> &[u8] {
        self.planes().1
    }
    fn v(&self) -> &[u8] {
        self.planes().2
    }
}
