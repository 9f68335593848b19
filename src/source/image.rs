//! `image:PATH` — a still picture (PNG, JPEG, GIF, BMP, WebP), decoded once with the `image`
//! crate, scaled to `--size` if given, converted to I420 once.
//!
//! It reports [`Fill::Unchanged`] after the first frame, so the pipeline encodes it only
//! when a keyframe is due: a viewer who joins gets an IDR at once, and the stream costs
//! almost nothing in between.

use super::{Fill, FrameInfo, Source, SourceError};
use crate::config::Size;
use crate::frame::{ByteOrder, I420Frame};
use std::path::Path;

pub struct Still {
    picture: I420Frame,
    drawn: bool,
}

impl Still {
    pub fn open(path: &Path, size: Option<Size>) -> Result<Self, SourceError> {
        let err = |err: ::image::ImageError| SourceError::Image {
            path: path.display().to_string(),
            err,
        };
        let io = |e: std::io::Error| err(::image::ImageError::IoError(e));
        let decoded = ::image::ImageReader::open(path)
            .map_err(io)?
            .with_guessed_format()
            .map_err(io)?
            .decode()
            .map_err(err)?;
        let mut rgba = decoded.to_rgba8();
        if let Some(size) = size {
            if (rgba.width(), rgba.height()) != (size.width, size.height) {
                rgba = ::image::imageops::resize(
                    &rgba,
                    size.width,
                    size.height,
                    ::image::imageops::FilterType::Triangle,
                );
            }
        }
        // H.264 needs even sides: drop a last odd row/column rather than scale.
        let size = Size::new(rgba.width() & !1, rgba.height() & !1)?;
        let mut picture = I420Frame::new(size);
        picture.fill_from_rgba(rgba.as_raw(), rgba.width() as usize * 4, ByteOrder::Rgba)?;
        Ok(Self {
            picture,
            drawn: false,
        })
    }
}

impl Source for Still {
    fn size(&self) -> Size {
        self.picture.size()
    }

    fn fill(&mut self, frame: &mut I420Frame, _info: FrameInfo) -> Result<Fill, SourceError> {
        if self.drawn {
            return Ok(Fill::Unchanged);
        }
        frame.copy_from(&self.picture);
        self.drawn = true;
        Ok(Fill::New)
    }
}
