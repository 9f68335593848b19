//! Frames read from a file or a pipe: `y4m:PATH|-` (YUV4MPEG2, size and rate from its
//! header) and `raw:PATH|-` (tightly packed frames of `--size` in `--pixel-format`).
//!
//! Reading blocks the pipeline thread until a frame arrives, which is right for a pipe from
//! a live producer (`ffmpeg ... -f yuv4mpegpipe -`): the producer sets the pace, and a fast
//! producer is held back by the pipe. End of input ends the stream. The wait is in slices of
//! [`STOP_CHECK`], checking the stream's stop signal between them, so a stream reading a
//! silent pipe still stops (and its thread is joined) when the server does.

use super::{Fill, FrameInfo, PixelFormat, Source, SourceError};
use crate::config::Size;
use crate::frame::{ByteOrder, I420Frame};
use std::io::{BufReader, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a read waits for input before it looks at the stop signal again.
pub const STOP_CHECK: Duration = Duration::from_millis(100);

fn reader(path: Option<&Path>, stop: &CancellationToken) -> Result<Box<dyn Read>, SourceError> {
    Ok(match path {
        None => Box::new(Stoppable::new(std::io::stdin().lock(), stop)),
        Some(p) => Box::new(Stoppable::new(
            std::fs::File::open(p).map_err(|err| SourceError::Open {
                path: p.display().to_string(),
                err,
            })?,
            stop,
        )),
    })
}

/// A reader that waits for input with poll(2) in slices of [`STOP_CHECK`], and fails once
/// `stop` is cancelled instead of waiting on.
struct Stoppable<R> {
    inner: R,
    stop: CancellationToken,
}

impl<R: Read + AsFd> Stoppable<R> {
    fn new(inner: R, stop: &CancellationToken) -> Self {
        Self {
            inner,
            stop: stop.clone(),
        }
    }

    /// Waits until the input is readable (data or end of input) or the stream stops.
    fn wait(&self) -> std::io::Result<()> {
        let mut fds = libc::pollfd {
            fd: self.inner.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            if self.stop.is_cancelled() {
                return Err(std::io::Error::other("the stream is stopping"));
            }
            // SAFETY: one valid pollfd, borrowed for the call; the fd lives as long as `inner`.
            let ready = unsafe { libc::poll(&mut fds, 1, STOP_CHECK.as_millis() as i32) };
            match ready {
                n if n > 0 => return Ok(()),
                0 => continue,
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
    }
}

impl<R: Read + AsFd> Read for Stoppable<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.wait()?;
        self.inner.read(buf)
    }
}

/// YUV4MPEG2 input (4:2:0, 8 bit).
pub struct Y4m {
    decoder: y4m::Decoder<BufReader<Box<dyn Read>>>,
    size: Size,
    fps: f64,
}

impl Y4m {
    pub fn open(path: Option<&Path>, stop: &CancellationToken) -> Result<Self, SourceError> {
        let name = path.map_or("standard input".to_string(), |p| p.display().to_string());
        let decoder = y4m::decode(BufReader::with_capacity(1 << 20, reader(path, stop)?))
            .map_err(|e| SourceError::Stream(format!("{name} is not YUV4MPEG2: {e:?}")))?;
        use y4m::Colorspace::*;
        match decoder.get_colorspace() {
            C420 | C420jpeg | C420paldv | C420mpeg2 => {}
            other => {
                return Err(SourceError::Stream(format!(
                    "{name} is {other:?}; whepcast reads 8-bit 4:2:0 (ffmpeg: -pix_fmt yuv420p)"
                )))
            }
        }
        let (w, h) = (decoder.get_width() as u32, decoder.get_height() as u32);
        let size = Size::new(w & !1, h & !1)?;
        let rate = decoder.get_framerate();
        let fps = if rate.den > 0 && rate.num > 0 {
            rate.num as f64 / rate.den as f64
        } else {
            30.0
        };
        Ok(Self { decoder, size, fps })
    }
}

impl Source for Y4m {
    fn size(&self) -> Size {
        self.size
    }

    fn native_fps(&self) -> Option<f64> {
        Some(self.fps)
    }

    fn drain_when_idle(&self) -> bool {
        true
    }

    fn fills_any_frame(&self) -> bool {
        true
    }

    fn fill(&mut self, frame: &mut I420Frame, _info: FrameInfo) -> Result<Fill, SourceError> {
        let w = self.decoder.get_width();
        match self.decoder.read_frame() {
            Ok(f) => {
                // Odd sizes are cropped to even: strides are the stream's own widths.
                let planes = [f.get_y_plane(), f.get_u_plane(), f.get_v_plane()];
                frame.fill_from_i420(planes, w, w.div_ceil(2))?;
                Ok(Fill::New)
            }
            Err(y4m::Error::EOF) => Ok(Fill::Ended),
            Err(e) => Err(SourceError::Stream(format!("reading YUV4MPEG2: {e:?}"))),
        }
    }
}

/// Raw frames of a known size and layout.
pub struct Raw {
    input: Box<dyn Read>,
    size: Size,
    format: PixelFormat,
    buf: Vec<u8>,
}

impl Raw {
    pub fn open(
        path: Option<&Path>,
        size: Size,
        format: PixelFormat,
        stop: &CancellationToken,
    ) -> Result<Self, SourceError> {
        Ok(Self {
            input: reader(path, stop)?,
            size,
            format,
            buf: vec![0; format.frame_len(size)],
        })
    }
}

impl Source for Raw {
    fn size(&self) -> Size {
        self.size
    }

    fn drain_when_idle(&self) -> bool {
        true
    }

    fn fills_any_frame(&self) -> bool {
        true
    }

    fn fill(&mut self, frame: &mut I420Frame, _info: FrameInfo) -> Result<Fill, SourceError> {
        match self.input.read_exact(&mut self.buf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Fill::Ended),
            Err(e) => return Err(SourceError::Stream(format!("reading raw frames: {e}"))),
        }
        let w = self.size.width as usize;
        match self.format {
            PixelFormat::Rgba => frame.fill_from_rgba(&self.buf, w * 4, ByteOrder::Rgba)?,
            PixelFormat::Bgra => frame.fill_from_rgba(&self.buf, w * 4, ByteOrder::Bgra)?,
            PixelFormat::I420 => {
                let luma = self.size.area();
                let (y, uv) = self.buf.split_at(luma);
                let (u, v) = uv.split_at(luma / 4);
                frame.fill_from_i420([y, u, v], w, w / 2)?;
            }
        }
        Ok(Fill::New)
    }
}
