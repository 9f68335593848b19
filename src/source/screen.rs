//! `screen` / `screen:N` — an X11 display captured with `scrap` (XCB + MIT-SHM), at the
//! stream's frame rate, on the pipeline thread (X handles are not `Send`, and capture never
//! touches the async runtime).
//!
//! Once a second it looks at the display afresh: if the screen was resized, capture restarts
//! at the new size (the pipeline then restarts the encoder, and viewers get an IDR of the new
//! size); if the X server went away, viewers see a "source lost" picture until it comes back,
//! and capture resumes by itself.

use super::pattern::{draw_text, fill_rect};
use super::{ByteOrder, Fill, FrameInfo, I420Frame, Source, SourceError};
use crate::config::Size;
use std::time::{Duration, Instant};

const PROBE_EVERY: Duration = Duration::from_secs(1);

pub struct Screen {
    index: Option<usize>,
    capturer: Option<scrap::Capturer>,
    /// Size of the display being captured (before cropping to even).
    raw: (usize, usize),
    size: Size,
    last_probe: Instant,
    lost_drawn: bool,
}

/// The display to capture: the primary one, or the `n`-th.
fn display(index: Option<usize>) -> Result<scrap::Display, SourceError> {
    let no_x = |e: std::io::Error| {
        SourceError::Screen(format!(
            "cannot open the X display {} ({e}); set DISPLAY, e.g. DISPLAY=:0",
            std::env::var("DISPLAY").unwrap_or_else(|_| "(DISPLAY is not set)".into())
        ))
    };
    match index {
        None => scrap::Display::primary().map_err(no_x),
        Some(n) => {
            let mut all = scrap::Display::all().map_err(no_x)?;
            let count = all.len();
            if n >= count {
                return Err(SourceError::Screen(format!(
                    "screen:{n} does not exist; this X server has {count} screen(s), 0 to {}",
                    count.saturating_sub(1)
                )));
            }
            Ok(all.swap_remove(n))
        }
    }
}

fn even_size(w: usize, h: usize) -> Result<Size, SourceError> {
    Size::new(w as u32 & !1, h as u32 & !1).map_err(SourceError::Screen)
}

impl Screen {
    pub fn open(index: Option<usize>) -> Result<Self, SourceError> {
        let d = display(index)?;
        let raw = (d.width(), d.height());
        let size = even_size(raw.0, raw.1)?;
        let capturer = scrap::Capturer::new(d).map_err(|e| SourceError::Screen(e.to_string()))?;
        Ok(Self {
            index,
            capturer: Some(capturer),
            raw,
            size,
            last_probe: Instant::now(),
            lost_drawn: false,
        })
    }

    /// Re-reads the display: restarts capture on a new size, notices a lost or returned server.
    fn probe(&mut self) {
        self.last_probe = Instant::now();
        match display(self.index) {
            Err(e) => {
                if self.capturer.take().is_some() {
                    tracing::warn!("screen source lost: {e}");
                    self.lost_drawn = false;
                }
            }
            Ok(d) => {
                let raw = (d.width(), d.height());
                if self.capturer.is_some() && raw == self.raw {
                    return;
                }
                let Ok(size) = even_size(raw.0, raw.1) else {
                    return;
                };
                self.capturer = None; // release the old shared memory first
                match scrap::Capturer::new(d) {
                    Ok(c) => {
                        tracing::info!("screen capture at {}x{}", raw.0, raw.1);
                        self.capturer = Some(c);
                        self.raw = raw;
                        self.size = size;
                    }
                    Err(e) => tracing::warn!("screen capture restart failed: {e}"),
                }
            }
        }
    }
}

impl Source for Screen {
    fn size(&self) -> Size {
        self.size
    }

    fn problem(&self) -> Option<String> {
        self.capturer
            .is_none()
            .then(|| "the X display is gone; viewers see 'source lost'".to_string())
    }

    fn fill(&mut self, frame: &mut I420Frame, _info: FrameInfo) -> Result<Fill, SourceError> {
        if self.last_probe.elapsed() >= PROBE_EVERY {
            self.probe();
            if frame.size() != self.size {
                // The pipeline hands us a frame of the new size on the next call.
                return Ok(Fill::Unchanged);
            }
        }
        match &mut self.capturer {
            Some(c) => {
                let bgra = c.frame().map_err(|e| SourceError::Screen(e.to_string()))?;
                frame.fill_from_rgba(&bgra, self.raw.0 * 4, ByteOrder::Bgra)?;
                Ok(Fill::New)
            }
            None if self.lost_drawn => Ok(Fill::Unchanged),
            None => {
                // Keep the viewers' picture meaningful while the display is gone.
                let Size { width, height } = frame.size();
                fill_rect(frame, 0, 0, width, height, [60, 128, 128]);
                let scale = (height / 120).max(1);
                draw_text(
                    frame,
                    width / 20,
                    height / 2,
                    scale,
                    "SOURCE LOST - WAITING FOR THE SCREEN",
                );
                self.lost_drawn = true;
                Ok(Fill::New)
            }
        }
    }
}
