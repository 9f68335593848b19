//! The built-in test pattern: a known, moving picture that proves a viewer is live.
//!
//! ```text
//! +-------------------------------------------+
//! | colour bars (75 %: white yellow cyan ...) |  top half: fixed, for colour checks
//! |-------------------------------------------|
//! |  [box] -> over twinkling cells            |  motion band: moves every frame
//! | FRAME 000123                              |  frame counter
//! | 17:31:57.123 UTC                          |  wall clock with milliseconds
//! |      ▮▯▮▮▯▯▮ ... barcode                  |  frame number + capture time, machine-readable
//! +-------------------------------------------+
//! ```
//!
//! The bars and bands are drawn once into a background frame. A new buffer gets a copy of it;
//! a buffer drawn before gets back only what the last drawing changed, and then the moving
//! parts are drawn, instead of copying the whole lower half back before any drawing.

use super::{Fill, FrameInfo, Source, SourceError};
use crate::config::Size;
use crate::frame::{ByteOrder, I420Frame, Rect};
use font8x8::UnicodeFonts;
use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

/// RGB of the seven 75 % bars, left to right.
pub const BARS: [[u8; 3]; 7] = [
    [191, 191, 191],
    [191, 191, 0],
    [0, 191, 191],
    [0, 191, 0],
    [191, 0, 191],
    [191, 0, 0],
    [0, 0, 191],
];

const BAND_GREY: [u8; 3] = [40, 40, 40];
const BOX_RGB: [u8; 3] = [255, 140, 0];

/// The moving test pattern source.
pub struct Pattern {
    size: Size,
    background: I420Frame,
    text: String,
    layout: Layout,
    box_yuv: [u8; 3],
}

/// Where each element goes for a given size.
#[derive(Debug, Clone, Copy)]
struct Layout {
    bars_bottom: u32,
    band_top: u32,
    band_bottom: u32,
    box_side: u32,
    text_scale: u32,
    text_top: u32,
    text_left: u32,
}

impl Layout {
    fn new(size: Size) -> Self {
        let (w, h) = (size.width, size.height);
        let bars_bottom = h / 2;
        let band_top = bars_bottom;
        let band_bottom = band_top + h * 3 / 20;
        let box_side = ((band_bottom - band_top) * 4 / 5).max(2) & !1;
        // Two lines of 12-16 glyphs must fit across and in ~22 % of the height.
        let text_scale = (h / 120).min(w / (17 * 8)).max(1);
        Self {
            bars_bottom,
            band_top,
            band_bottom,
            box_side,
            text_scale,
            text_top: band_bottom + text_scale * 2,
            text_left: (w / 20).max(2),
        }
    }
}

impl Pattern {
    pub fn new(size: Size) -> Self {
        let layout = Layout::new(size);
        let mut rgba = vec![0u8; size.area() * 4];
        let w = size.width as usize;
        for (row, line) in rgba.chunks_exact_mut(w * 4).enumerate() {
            for (col, px) in line.chunks_exact_mut(4).enumerate() {
                let rgb = if (row as u32) < layout.bars_bottom {
                    BARS[col * BARS.len() / w]
                } else if (row as u32) < layout.band_bottom {
                    BAND_GREY
                } else {
                    [0, 0, 0]
                };
                px.copy_from_slice(&[rgb[0], rgb[1], rgb[2], 255]);
            }
        }
        let mut background = I420Frame::new(size);
        // Cannot fail: the buffer was sized for this frame just above.
        if let Err(e) = background.fill_from_rgba(&rgba, w * 4, ByteOrder::Rgba) {
            tracing::error!("pattern background: {e}");
        }
        Self {
            size,
            background,
            text: String::with_capacity(32),
            layout,
            box_yuv: rgb_to_yuv(BOX_RGB),
        }
    }
}

impl Pattern {
    /// Brings `frame` back to the background wherever this frame's drawing will not cover.
    ///
    /// A buffer that already holds one of our pictures (its first row has the bars: it is a
    /// buffer we drew before) differs from the background only where the drawing changes
    /// every frame: the motion band, the text block and the barcode. Cells and barcode are
    /// redrawn over their whole area anyway, so only the text block and the strips of the band
    /// the cells do not cover (where the box may have been) are copied back: about 9 % of a
    /// frame's bytes instead of the lower half, which leaves more of the caches the two cores
    /// share to the encoder.
    fn restore_background(&self, frame: &mut I420Frame) {
        let w = self.size.width as usize;
        if frame.planes().0[..w] != self.background.planes().0[..w] {
            frame.copy_from(&self.background);
            return;
        }
        let l = self.layout;
        let width = self.size.width;
        let cells_bottom = l.band_top + (l.band_bottom - l.band_top) / CELL * CELL;
        let cells_right = width / CELL * CELL;
        let band = l.band_bottom - l.band_top;
        let (text_w, text_h) = (TEXT_COLUMNS * 8 * l.text_scale, 18 * l.text_scale);
        for r in [
            Rect::new(0, cells_bottom, width, l.band_bottom - cells_bottom),
            Rect::new(cells_right, l.band_top, width - cells_right, band),
            Rect::new(l.text_left, l.text_top, text_w, text_h),
        ] {
            frame.copy_rect_from(&self.background, r);
        }
    }
}

/// Glyphs in the longest text line ("17:31:57.123 UTC"): the text block's width.
const TEXT_COLUMNS: u32 = 16;

impl Source for Pattern {
    fn size(&self) -> Size {
        self.size
    }

    /// A frame not holding the background gets all of it (`restore_background`).
    fn fills_any_frame(&self) -> bool {
        true
    }

    fn fill(&mut self, frame: &mut I420Frame, info: FrameInfo) -> Result<Fill, SourceError> {
        let l = self.layout;
        self.restore_background(frame);
        draw_cells(frame, l.band_top, l.band_bottom, info.number);
        let w = self.size.width;

        // The box bounces across the band, moving a few pixels every frame.
        let travel = w.saturating_sub(l.box_side).max(1) as u64;
        let step = (w as u64 / 160).max(2);
        let pos = (info.number * step) % (2 * travel);
        let x = if pos < travel { pos } else { 2 * travel - pos } as u32;
        let y = l.band_top + (l.band_bottom - l.band_top - l.box_side) / 2;
        fill_rect(frame, x, y, l.box_side, l.box_side, self.box_yuv);

        let since_epoch = info.wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let ms = since_epoch.as_millis() as u64;
        let day_ms = ms % 86_400_000;
        let s = l.text_scale;
        self.text.clear();
        let _ = write!(self.text, "FRAME {:06}", info.number % 1_000_000);
        draw_text(frame, l.text_left, l.text_top, s, &self.text);
        self.text.clear();
        let _ = write!(
            self.text,
            "{:02}:{:02}:{:02}.{:03} UTC",
            day_ms / 3_600_000,
            day_ms / 60_000 % 60,
            day_ms / 1000 % 60,
            day_ms % 1000
        );
        draw_text(frame, l.text_left, l.text_top + 10 * s, s, &self.text);

        if let Some(code) = Barcode::for_size(self.size) {
            code.draw(frame, info.number, ms);
        }
        Ok(Fill::New)
    }
}

/// Side of the twinkling cells in the motion band.
const CELL: u32 = 16;
/// Each cell takes a new colour every this many frames (at its own phase).
const CELL_PERIOD: u64 = 4;

/// Fills the motion band with cells that each change colour every few frames, at staggered
/// phases. Motion search cannot predict them, so the encoder has to spend bits the way it
/// does on real video — a pattern that only moved a box would encode at a tenth of the asked
/// bit rate and make every cost measured with it look rosier than real use.
fn draw_cells(frame: &mut I420Frame, top: u32, bottom: u32, number: u64) {
    let width = frame.size().width;
    let rows = (bottom - top) / CELL;
    for row in 0..rows {
        for col in 0..width / CELL {
            let cell = (row * 1000 + col) as u64;
            let phase = mix(cell) % CELL_PERIOD;
            let epoch = (number + phase) / CELL_PERIOD;
            let h = mix(cell ^ (epoch << 20));
            let yuv = [
                48 + (h % 160) as u8,
                96 + (h >> 8) as u8 % 64,
                96 + (h >> 16) as u8 % 64,
            ];
            fill_rect(frame, col * CELL, top + row * CELL, CELL, CELL, yuv);
        }
    }
}

/// A cheap, well-mixed hash (splitmix64's finaliser): deterministic "random" colours.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

/// BT.601 limited-range conversion of one colour (for flat fills).
pub(crate) fn rgb_to_yuv([r, g, b]: [u8; 3]) -> [u8; 3] {
    let (r, g, b) = (r as f32, g as f32, b as f32);
    let y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b;
    let u = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b;
    let v = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b;
    [y.round() as u8, u.round() as u8, v.round() as u8]
}

/// Fills a rectangle (clipped to the frame) with one colour in all three planes.
pub(crate) fn fill_rect(frame: &mut I420Frame, x: u32, y: u32, w: u32, h: u32, yuv: [u8; 3]) {
    let size = frame.size();
    let (x1, y1) = ((x + w).min(size.width), (y + h).min(size.height));
    if x >= x1 || y >= y1 {
        return;
    }
    let stride = size.width as usize;
    let (yp, up, vp) = frame.planes_mut();
    for row in y..y1 {
        let start = row as usize * stride;
        yp[start + x as usize..start + x1 as usize].fill(yuv[0]);
    }
    let cstride = stride / 2;
    for row in y / 2..y1.div_ceil(2) {
        let start = row as usize * cstride;
        let (a, b) = (start + x as usize / 2, start + (x1 as usize).div_ceil(2));
        up[a..b].fill(yuv[1]);
        vp[a..b].fill(yuv[2]);
    }
}

/// Draws white text on the black band with the 8x8 bitmap font, each dot `scale` pixels.
pub(crate) fn draw_text(frame: &mut I420Frame, x: u32, y: u32, scale: u32, text: &str) {
    let size = frame.size();
    let stride = size.width as usize;
    let (yp, _, _) = frame.planes_mut();
    for (i, ch) in text.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else {
            continue;
        };
        let gx = x + i as u32 * 8 * scale;
        for (gy, bits) in glyph.iter().enumerate() {
            for bit in 0..8u32 {
                if bits & (1 << bit) == 0 {
                    continue;
                }
                let px = gx + bit * scale;
                let py = y + gy as u32 * scale;
                for dy in 0..scale {
                    let row = py + dy;
                    if row >= size.height || px >= size.width {
                        continue;
                    }
                    let end = (px + scale).min(size.width) as usize;
                    let start = row as usize * stride;
                    yp[start + px as usize..start + end].fill(235);
                }
            }
        }
    }
}

/// A strip of black and white blocks near the bottom of the pattern carrying the frame
/// number and the capture time, so a receiver can read both back from a decoded picture
/// (tests prove motion with it; benchmarks measure glass-to-glass latency with it).
///
/// 72 blocks, most significant bit first: 24 bits frame number, 40 bits Unix time in
/// milliseconds (mod 2^40), 8 bits checksum (0xA5 plus the 8 payload bytes, so a flat
/// picture, all blocks black or all white, never reads as valid).
/// `web/barcode.js` reads the same layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barcode {
    pub left: u32,
    pub top: u32,
    pub block_w: u32,
    pub block_h: u32,
}

impl Barcode {
    pub const BITS: u32 = 72;

    /// The strip's placement for a picture size, or `None` when the picture is too small.
    pub fn for_size(size: Size) -> Option<Self> {
        let block_w = (size.width / (Self::BITS + 4)) & !1;
        let block_h = (size.height / 40).max(4) & !1;
        if block_w < 2 || size.height < 4 * block_h {
            return None;
        }
        Some(Self {
            left: ((size.width - block_w * Self::BITS) / 2) & !1,
            top: (size.height - block_h * 3 / 2) & !1,
            block_w,
            block_h,
        })
    }

    fn payload(frame: u64, ms: u64) -> [u8; 9] {
        let v = ((frame & 0xFF_FFFF) << 40) | (ms & 0xFF_FFFF_FFFF);
        let mut out = [0u8; 9];
        out[..8].copy_from_slice(&v.to_be_bytes());
        out[8] = Self::checksum(&out[..8]);
        out
    }

    fn checksum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0xA5u8, |a, b| a.wrapping_add(*b))
    }

    /// Draws frame number and capture time into `frame`.
    pub fn draw(&self, frame: &mut I420Frame, number: u64, unix_ms: u64) {
        let bytes = Self::payload(number, unix_ms);
        for i in 0..Self::BITS {
            let bit = bytes[(i / 8) as usize] >> (7 - i % 8) & 1;
            let luma = if bit == 1 { 235 } else { 16 };
            fill_rect(
                frame,
                self.left + i * self.block_w,
                self.top,
                self.block_w,
                self.block_h,
                [luma, 128, 128],
            );
        }
    }

    /// Reads `(frame number mod 2^24, unix ms mod 2^40)` back from a luma plane with the
    /// given stride, or `None` when the checksum does not match.
    pub fn read(&self, luma: &[u8], stride: usize) -> Option<(u32, u64)> {
        let mut bytes = [0u8; 9];
        for i in 0..Self::BITS {
            // Average the block's centre to ride out compression noise at the edges.
            let cx = self.left + i * self.block_w + self.block_w / 2;
            let cy = self.top + self.block_h / 2;
            let mut sum = 0u32;
            let mut n = 0u32;
            for y in cy.saturating_sub(1)..=cy + 1 {
                for x in cx.saturating_sub(self.block_w / 4)..=cx + self.block_w / 4 {
                    sum += *luma.get(y as usize * stride + x as usize)? as u32;
                    n += 1;
                }
            }
            if sum / n > 125 {
                bytes[(i / 8) as usize] |= 1 << (7 - i % 8);
            }
        }
        if Self::checksum(&bytes[..8]) != bytes[8] {
            return None;
        }
        let mut v = [0u8; 8];
        v.copy_from_slice(&bytes[..8]);
        let v = u64::from_be_bytes(v);
        Some(((v >> 40) as u32, v & 0xFF_FFFF_FFFF))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn info(number: u64) -> FrameInfo {
        FrameInfo {
            number,
            wall: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_000_000_123 + number),
        }
    }

    #[test]
    fn every_frame_differs_and_the_barcode_reads_back() {
        let size = Size::new(640, 360).unwrap();
        let mut p = Pattern::new(size);
        let mut a = I420Frame::new(size);
        let mut b = I420Frame::new(size);
        p.fill(&mut a, info(41)).unwrap();
        p.fill(&mut b, info(42)).unwrap();
        assert_ne!(a.as_bytes(), b.as_bytes());
        let code = Barcode::for_size(size).unwrap();
        let (n, ms) = code.read(b.planes().0, 640).unwrap();
        assert_eq!(n, 42);
        assert_eq!(ms, (1_764_000_000_123u64 + 42) & 0xFF_FFFF_FFFF);
    }

    /// Buffers go round (two in the pipeline) and each is only partly redrawn: every frame
    /// must still equal the same frame drawn into a fresh buffer, at every size's layout.
    #[test]
    fn redrawing_reused_buffers_equals_drawing_into_a_fresh_one() {
        for size in [
            "640x360",
            "1280x720",
            "1920x1080",
            "176x144",
            "320x200",
            "1000x562",
        ] {
            let size: Size = size.parse().unwrap();
            let mut p = Pattern::new(size);
            let mut reused = [I420Frame::new(size), I420Frame::new(size)];
            let mut fresh = I420Frame::new(size);
            // Enough frames for the box to cross the band and come back at 176x144.
            for n in 0..180 {
                let buffer = &mut reused[n as usize % 2];
                p.fill(buffer, info(n * 37)).unwrap();
                fresh.copy_from(&I420Frame::new(size));
                p.fill(&mut fresh, info(n * 37)).unwrap();
                assert!(buffer.as_bytes() == fresh.as_bytes(), "{size} frame {n}");
            }
        }
    }

    #[test]
    fn bars_have_their_colours() {
        let size = Size::new(1280, 720).unwrap();
        let mut p = Pattern::new(size);
        let mut f = I420Frame::new(size);
        p.fill(&mut f, info(0)).unwrap();
        let (y, u, v) = f.planes();
        for (i, rgb) in BARS.iter().enumerate() {
            let x = i * 1280 / 7 + 1280 / 14;
            let want = rgb_to_yuv(*rgb);
            let got = [y[100 * 1280 + x], u[50 * 640 + x / 2], v[50 * 640 + x / 2]];
            for c in 0..3 {
                assert!(
                    want[c].abs_diff(got[c]) <= 3,
                    "bar {i}: {got:?} vs {want:?}"
                );
            }
        }
    }

    #[test]
    fn flat_pictures_carry_no_barcode() {
        let size = Size::new(640, 360).unwrap();
        let code = Barcode::for_size(size).unwrap();
        for luma in [16u8, 235] {
            let flat = vec![luma; size.area()];
            assert_eq!(code.read(&flat, 640), None, "flat Y={luma}");
        }
    }

    #[test]
    fn a_corrupted_barcode_is_rejected() {
        let size = Size::new(640, 360).unwrap();
        let mut f = I420Frame::new(size);
        let code = Barcode::for_size(size).unwrap();
        code.draw(&mut f, 7, 99);
        let (y, _, _) = f.planes_mut();
        let row = (code.top + code.block_h / 2) as usize * 640;
        let x0 = (code.left + code.block_w / 2) as usize;
        for x in x0 - 2..x0 + 3 {
            for r in [row - 640, row, row + 640] {
                y[r + x] = 255 - y[r + x];
            }
        }
        assert_eq!(code.read(f.planes().0, 640), None);
    }
}
