//! The picture viewers of a WHIP stream see while it has no publisher: a dark slate
//! background, "WAITING FOR THE PUBLISHER", the stream's name, and the pattern's barcode
//! (frame number and clock), so a viewer (or a test) can tell it is live and what it is.

use super::pattern::{draw_text, fill_rect, rgb_to_yuv, Barcode};
use crate::config::Size;
use crate::frame::I420Frame;
use std::time::{SystemTime, UNIX_EPOCH};

/// The background colour (RGB): dark slate, unlike anything the pattern draws.
pub const BACKGROUND: [u8; 3] = [32, 40, 56];

/// Draws the waiting picture.
pub struct Standby {
    frame: I420Frame,
    stream: String,
    number: u64,
}

impl Standby {
    pub fn new(size: Size, stream: &str) -> Self {
        Self {
            frame: I420Frame::new(size),
            stream: stream.chars().take(40).collect(),
            number: 0,
        }
    }

    pub fn size(&self) -> Size {
        self.frame.size()
    }

    /// The next picture, at `size` (redrawn whole: it is small and rare).
    pub fn next(&mut self, size: Size) -> &I420Frame {
        if self.frame.size() != size {
            self.frame = I420Frame::new(size);
        }
        let (w, h) = (size.width, size.height);
        fill_rect(&mut self.frame, 0, 0, w, h, rgb_to_yuv(BACKGROUND));
        // Text about a 40th of the height, at least the font's own 8 pixels.
        let scale = (h / 160).max(1);
        let line = 10 * scale;
        let left = w / 16;
        let top = h / 3;
        draw_text(
            &mut self.frame,
            left,
            top,
            scale,
            "WAITING FOR THE PUBLISHER",
        );
        draw_text(
            &mut self.frame,
            left,
            top + 2 * line,
            scale,
            &format!("STREAM {}", self.stream.to_uppercase()),
        );
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        if let Some(code) = Barcode::for_size(size) {
            code.draw(&mut self.frame, self.number, ms);
        }
        self.number += 1;
        &self.frame
    }
}
