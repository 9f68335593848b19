//! Pictures: the **frame** every stage passes along.
//!
//! An [`I420Frame`] is one picture in the layout the H.264 encoder eats (planar Y, then U
//! and V at quarter resolution). Programs and screens hand over [`Pixels`] in RGBA, BGRA or
//! I420 with strides; conversion uses the `yuv` crate's SIMD routines, whole or by
//! [`Rect`]angle. A [`Canvas`] is the picture a source draws into and remembers what each
//! picture changed, so that the encoder's buffers get a copy of only that.

use crate::config::Size;

/// Why a picture could not be taken in.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("colour conversion failed: {0}")]
    Convert(#[source] yuv::YuvError),
    #[error("{rect:?} is not an even rectangle inside {size}")]
    NotEvenInside { rect: Rect, size: Size },
    #[error("pixel buffer too small: {got} bytes for {size} with stride {stride}, need {need}")]
    BufferTooSmall {
        got: usize,
        need: usize,
        size: Size,
        stride: usize,
    },
}

/// A borrowed picture in one of the layouts programs produce, for [`I420Frame::fill_from`].
#[derive(Debug, Clone, Copy)]
pub enum Pixels<'a> {
    /// 8-bit R, G, B, A per pixel; `stride` bytes per row.
    Rgba { data: &'a [u8], stride: usize },
    /// 8-bit B, G, R, A per pixel (X11, Windows); `stride` bytes per row.
    Bgra { data: &'a [u8], stride: usize },
    /// Planar 4:2:0; `y_stride` bytes per luma row, `uv_stride` per chroma row.
    I420 {
        y: &'a [u8],
        u: &'a [u8],
        v: &'a [u8],
        y_stride: usize,
        uv_stride: usize,
    },
}

/// One picture in I420: a full-size luma plane and two half-by-half chroma planes, tightly
/// packed (stride = width). Allocated once per stream and redrawn in place.
#[derive(Clone)]
pub struct I420Frame {
    size: Size,
    data: Vec<u8>,
    /// Which [`Canvas`] picture this buffer holds a copy of; 0: unknown.
    holds: u64,
}

impl I420Frame {
    /// A black frame.
    pub fn new(size: Size) -> Self {
        let luma = size.area();
        let mut data = vec![0u8; luma + luma / 2];
        data[..luma].fill(16);
        data[luma..].fill(128);
        Self {
            size,
            data,
            holds: 0,
        }
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

    /// Copies `r` (clipped to the frame, chroma rounded outwards) from another frame of the
    /// same size; does nothing if sizes differ.
    pub(crate) fn copy_rect_from(&mut self, other: &I420Frame, r: Rect) {
        let size = self.size;
        let (x, y) = (r.x, r.y);
        let x1 = x.saturating_add(r.width).min(size.width);
        let y1 = y.saturating_add(r.height).min(size.height);
        if other.size != size || x >= x1 || y >= y1 {
            return;
        }
        let (stride, cstride) = (size.width as usize, size.width as usize / 2);
        let (sy, su, sv) = other.planes();
        let (dy, du, dv) = self.planes_mut();
        for row in y as usize..y1 as usize {
            let span = row * stride + x as usize..row * stride + x1 as usize;
            dy[span.clone()].copy_from_slice(&sy[span]);
        }
        let (cx0, cx1) = (x as usize / 2, (x1 as usize).div_ceil(2));
        for row in y as usize / 2..(y1 as usize).div_ceil(2) {
            let span = row * cstride + cx0..row * cstride + cx1;
            du[span.clone()].copy_from_slice(&su[span.clone()]);
            dv[span.clone()].copy_from_slice(&sv[span]);
        }
    }

    /// Copies or converts a picture of this frame's size into it.
    pub fn fill_from(&mut self, pixels: Pixels<'_>) -> Result<(), FrameError> {
        self.fill_rect_from(pixels, Rect::whole(self.size))
    }

    /// Like [`I420Frame::fill_from`] (same picture, same checks), but only `rect`, grown to
    /// even edges and clipped to the frame; the rest of the frame keeps what it had.
    pub fn fill_rect_from(&mut self, pixels: Pixels<'_>, rect: Rect) -> Result<(), FrameError> {
        match pixels {
            Pixels::Rgba { data, stride } => {
                self.fill_rect_from_rgba(data, stride, ByteOrder::Rgba, rect)
            }
            Pixels::Bgra { data, stride } => {
                self.fill_rect_from_rgba(data, stride, ByteOrder::Bgra, rect)
            }
            Pixels::I420 {
                y,
                u,
                v,
                y_stride,
                uv_stride,
            } => self.fill_rect_from_i420([y, u, v], y_stride, uv_stride, rect),
        }
    }

    /// Copies planar I420 (any strides; a source wider or taller than this frame is cropped).
    pub fn fill_from_i420(
        &mut self,
        planes: [&[u8]; 3],
        y_stride: usize,
        uv_stride: usize,
    ) -> Result<(), FrameError> {
        self.fill_rect_from_i420(planes, y_stride, uv_stride, Rect::whole(self.size))
    }

    /// [`I420Frame::fill_from_i420`] of only `rect` (grown to even edges, clipped).
    fn fill_rect_from_i420(
        &mut self,
        [y, u, v]: [&[u8]; 3],
        y_stride: usize,
        uv_stride: usize,
        rect: Rect,
    ) -> Result<(), FrameError> {
        self.check_i420([y, u, v], y_stride, uv_stride)?;
        let (w, cw) = (self.size.width as usize, self.size.width as usize / 2);
        let Some(r) = rect.to_even(self.size) else {
            return Ok(());
        };
        let (x0, x1) = (r.x as usize, (r.x + r.width) as usize);
        let (y0, y1) = (r.y as usize, (r.y + r.height) as usize);
        let (fy, fu, fv) = self.planes_mut();
        for row in y0..y1 {
            fy[row * w + x0..row * w + x1].copy_from_slice(&y[row * y_stride + x0..][..x1 - x0]);
        }
        let (cx0, cx1) = (x0 / 2, x1 / 2);
        for row in y0 / 2..y1 / 2 {
            let dst = row * cw + cx0..row * cw + cx1;
            let src = row * uv_stride + cx0..row * uv_stride + cx1;
            fu[dst.clone()].copy_from_slice(&u[src.clone()]);
            fv[dst].copy_from_slice(&v[src]);
        }
        Ok(())
    }

    /// Converts an RGBA or BGRA picture (`stride` bytes per row) into this frame, BT.601
    /// limited range, which is what browsers assume for H.264 without colour metadata.
    pub fn fill_from_rgba(
        &mut self,
        pixels: &[u8],
        stride: usize,
        order: ByteOrder,
    ) -> Result<(), FrameError> {
        self.fill_rect_from_rgba(pixels, stride, order, Rect::whole(self.size))
    }

    /// Like [`I420Frame::fill_from_rgba`] (same picture, same checks), but converts only
    /// `rect`, grown to even edges (4:2:0 chroma covers 2x2 pixels) and clipped to the frame;
    /// the rest of the frame keeps what it had. Capture uses it to convert only what changed.
    pub fn fill_rect_from_rgba(
        &mut self,
        pixels: &[u8],
        stride: usize,
        order: ByteOrder,
        rect: Rect,
    ) -> Result<(), FrameError> {
        self.check_rgba(pixels, stride)?;
        match rect.to_even(self.size) {
            Some(r) => {
                let start = r.y as usize * stride + r.x as usize * 4;
                self.convert_rgba(&pixels[start..], stride, order, r)
            }
            None => Ok(()),
        }
    }

    /// Converts a picture of just `rect` (`pixels` starts at its top left corner) into that
    /// rectangle of the frame. `rect` must have even edges and lie inside the frame
    /// ([`Rect::to_even`] makes it so).
    pub fn fill_region_from_rgba(
        &mut self,
        pixels: &[u8],
        stride: usize,
        order: ByteOrder,
        rect: Rect,
    ) -> Result<(), FrameError> {
        if rect.to_even(self.size) != Some(rect) {
            return Err(FrameError::NotEvenInside {
                rect,
                size: self.size,
            });
        }
        self.fits(
            pixels,
            stride,
            rect.width as usize * 4,
            rect.height as usize,
        )?;
        self.convert_rgba(pixels, stride, order, rect)
    }

    /// Whether `pixels` holds a whole picture of this frame's size: what every `fill_*` checks
    /// before converting anything.
    pub fn check(&self, pixels: Pixels<'_>) -> Result<(), FrameError> {
        match pixels {
            Pixels::Rgba { data, stride } | Pixels::Bgra { data, stride } => {
                self.check_rgba(data, stride)
            }
            Pixels::I420 {
                y,
                u,
                v,
                y_stride,
                uv_stride,
            } => self.check_i420([y, u, v], y_stride, uv_stride),
        }
    }

    fn check_rgba(&self, pixels: &[u8], stride: usize) -> Result<(), FrameError> {
        let Size { width, height } = self.size;
        self.fits(pixels, stride, width as usize * 4, height as usize)
    }

    fn check_i420(
        &self,
        [y, u, v]: [&[u8]; 3],
        y_stride: usize,
        uv_stride: usize,
    ) -> Result<(), FrameError> {
        let (w, h) = (self.size.width as usize, self.size.height as usize);
        self.fits(y, y_stride, w, h)?;
        let shorter = if u.len() < v.len() { u } else { v };
        self.fits(shorter, uv_stride, w / 2, h / 2)
    }

    /// Whether `rows` rows of `row_bytes` bytes, `stride` bytes apart, fit in `pixels`. Any
    /// stride is checked without overflow (it comes from the caller); strides the colour
    /// converter cannot take (4 GiB and more) do not fit.
    fn fits(
        &self,
        pixels: &[u8],
        stride: usize,
        row_bytes: usize,
        rows: usize,
    ) -> Result<(), FrameError> {
        let need = stride
            .checked_mul(rows.saturating_sub(1))
            .and_then(|n| n.checked_add(row_bytes))
            .unwrap_or(usize::MAX);
        if stride < row_bytes || pixels.len() < need || u32::try_from(stride).is_err() {
            return Err(FrameError::BufferTooSmall {
                got: pixels.len(),
                need,
                size: self.size,
                stride,
            });
        }
        Ok(())
    }

    /// Converts a picture of `rect` (`pixels` at its top left corner; even edges, inside the
    /// frame: checked by the callers) into that rectangle of the frame.
    ///
    /// The `yuv` crate converts as many row pairs as *all* its slices hold in full strides,
    /// whatever the height says: given a plane that goes on below the rectangle it converts
    /// those rows too, and given a source whose last row is shorter than a stride it silently
    /// skips the last two rows. So it only ever gets exactly sized slices: full-width
    /// rectangles convert in place, others into a small scratch picture copied in row by row,
    /// and a source short of a full last stride is first copied out tight.
    fn convert_rgba(
        &mut self,
        pixels: &[u8],
        stride: usize,
        order: ByteOrder,
        rect: Rect,
    ) -> Result<(), FrameError> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const {
                std::cell::RefCell::new((Vec::new(), Vec::new()))
            };
        }
        let (w, h) = (rect.width as usize, rect.height as usize);
        if pixels.len() < stride * h && h > 2 {
            // Short of a full last stride (a padded picture): all rows but the last pair
            // convert in place, the last pair through a tight copy below.
            let top = Rect::new(rect.x, rect.y, rect.width, rect.height - 2);
            self.convert_rgba(pixels, stride, order, top)?;
            let bottom = Rect::new(rect.x, rect.y + rect.height - 2, rect.width, 2);
            return self.convert_rgba(&pixels[stride * (h - 2)..], stride, order, bottom);
        }
        SCRATCH.with(|scratch| {
            let (tight_rgba, tight_yuv) = &mut *scratch.borrow_mut();
            let (pixels, stride) = if pixels.len() >= stride * h {
                (&pixels[..stride * h], stride)
            } else {
                tight_rgba.clear();
                for row in pixels.chunks(stride).take(h) {
                    tight_rgba.extend_from_slice(&row[..w * 4]);
                }
                (&tight_rgba[..], w * 4)
            };
            let frame_w = self.size.width as usize;
            let (x, y) = (rect.x as usize, rect.y as usize);
            let (yp, up, vp) = self.planes_mut();
            if w == frame_w {
                let c = y / 2 * (w / 2);
                let planes = [
                    &mut yp[y * w..(y + h) * w],
                    &mut up[c..c + w / 2 * h / 2],
                    &mut vp[c..c + w / 2 * h / 2],
                ];
                return convert_into(planes, w, pixels, stride, order, rect);
            }
            tight_yuv.resize(w * h * 3 / 2, 0);
            let (ty, tuv) = tight_yuv.split_at_mut(w * h);
            let (tu, tv) = tuv.split_at_mut(w * h / 4);
            convert_into(
                [&mut *ty, &mut *tu, &mut *tv],
                w,
                pixels,
                stride,
                order,
                rect,
            )?;
            for (row, line) in ty.chunks_exact(w).enumerate() {
                let at = (y + row) * frame_w + x;
                yp[at..at + w].copy_from_slice(line);
            }
            for (plane, tight) in [(up, &*tu), (vp, &*tv)] {
                for (row, line) in tight.chunks_exact(w / 2).enumerate() {
                    let at = (y / 2 + row) * (frame_w / 2) + x / 2;
                    plane[at..at + w / 2].copy_from_slice(line);
                }
            }
            Ok(())
        })
    }
}

/// Converts `pixels` (a `rect`-sized picture) into exactly sized planes of stride `w`.
fn convert_into(
    [y, u, v]: [&mut [u8]; 3],
    w: usize,
    pixels: &[u8],
    stride: usize,
    order: ByteOrder,
    rect: Rect,
) -> Result<(), FrameError> {
    let mut image = yuv::YuvPlanarImageMut {
        y_plane: yuv::BufferStoreMut::Borrowed(y),
        y_stride: w as u32,
        u_plane: yuv::BufferStoreMut::Borrowed(u),
        u_stride: w as u32 / 2,
        v_plane: yuv::BufferStoreMut::Borrowed(v),
        v_stride: w as u32 / 2,
        width: rect.width,
        height: rect.height,
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
    .map_err(FrameError::Convert)
}

/// A rectangle of a picture, in pixels from its top left corner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    pub const fn new(x: u32, y: u32, width: u32, height: u32) -> Self {
        Self {
            x,
            y,
            width,
            height,
        }
    }

    /// All of a picture of `size`.
    pub fn whole(size: Size) -> Self {
        Self::new(0, 0, size.width, size.height)
    }

    /// This rectangle grown to even edges and clipped to a picture of `size` (even sides), or
    /// `None` when nothing of it is inside.
    pub fn to_even(self, size: Size) -> Option<Rect> {
        if self.width == 0 || self.height == 0 {
            return None;
        }
        let (x0, y0) = (self.x.min(size.width) & !1, self.y.min(size.height) & !1);
        let x1 = (self.x.saturating_add(self.width).min(size.width) + 1) & !1;
        let y1 = (self.y.saturating_add(self.height).min(size.height) + 1) & !1;
        (x0 < x1 && y0 < y1).then_some(Rect::new(x0, y0, x1 - x0, y1 - y0))
    }

    /// Whether `other` lies wholly inside this rectangle.
    pub fn contains(self, other: Rect) -> bool {
        other.x >= self.x
            && other.y >= self.y
            && other.x.saturating_add(other.width) <= self.x.saturating_add(self.width)
            && other.y.saturating_add(other.height) <= self.y.saturating_add(self.height)
    }

    /// The smallest rectangle holding both.
    pub fn union(self, other: Rect) -> Rect {
        let (x0, y0) = (self.x.min(other.x), self.y.min(other.y));
        let x1 = self
            .x
            .saturating_add(self.width)
            .max(other.x.saturating_add(other.width));
        let y1 = self
            .y
            .saturating_add(self.height)
            .max(other.y.saturating_add(other.height));
        Rect {
            x: x0,
            y: y0,
            width: x1 - x0,
            height: y1 - y0,
        }
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

/// Pictures of the canvas whose changes are remembered: an encoder buffer that holds one of
/// them is brought up to date by copying only what changed since (two buffers go round, so
/// a buffer is usually two pictures behind).
const CANVAS_HISTORY: usize = 4;

/// The picture a source draws into when it keeps its previous picture (a screen converts
/// only what the X server says changed), and what changed in each of its last pictures, so
/// that each encoder buffer gets a copy of only the rectangles it lacks instead of the whole
/// frame: a few kilobytes instead of 3 MB per 1080p frame while someone types.
pub struct Canvas {
    frame: I420Frame,
    /// Pictures drawn so far; a buffer's `holds` names the one it has.
    drawn: u64,
    /// What picture `n` changed, at `n % CANVAS_HISTORY` (`known` false: everything). The
    /// vectors are reused, so steady state allocates nothing.
    changes: [(bool, Vec<Rect>); CANVAS_HISTORY],
    /// The frame was (re)made since the last picture: that picture changed everything.
    fresh: bool,
}

impl Canvas {
    pub fn new(size: Size) -> Self {
        Self {
            frame: I420Frame::new(size),
            drawn: 0,
            changes: Default::default(),
            fresh: true,
        }
    }

    /// The frame to draw the next picture into, of `size` (remade when the size changed).
    pub fn frame_mut(&mut self, size: Size) -> &mut I420Frame {
        if self.frame.size() != size {
            self.frame = I420Frame::new(size);
            self.fresh = true;
        }
        &mut self.frame
    }

    /// Records that a new picture was drawn, which changed `changed` (`None`: everything).
    pub fn drew(&mut self, changed: Option<&[Rect]>) {
        self.drawn += 1;
        let (known, rects) = &mut self.changes[self.drawn as usize % CANVAS_HISTORY];
        rects.clear();
        *known = !std::mem::take(&mut self.fresh) && changed.is_some();
        rects.extend(changed.unwrap_or_default());
    }

    /// Makes `buffer` hold the latest picture, copying only what it lacks when that is known.
    pub fn stage(&self, buffer: &mut I420Frame) {
        let held = buffer.holds;
        if held == self.drawn && held != 0 {
            return;
        }
        let known = held != 0
            && held < self.drawn
            && self.drawn - held < CANVAS_HISTORY as u64
            && (held + 1..=self.drawn).all(|n| self.changes[n as usize % CANVAS_HISTORY].0);
        if known && buffer.size() == self.frame.size() {
            for n in held + 1..=self.drawn {
                for r in &self.changes[n as usize % CANVAS_HISTORY].1 {
                    buffer.copy_rect_from(&self.frame, *r);
                }
            }
        } else {
            buffer.copy_from(&self.frame);
        }
        buffer.holds = self.drawn;
    }
}

/// Scales I420 pictures to another size, plane by plane, with `fast_image_resize`'s SIMD
/// convolution (bilinear: smooth enough for the 2x and 4x steps of a rendition ladder, and
/// cheap). Keeps its scratch buffers between frames.
#[derive(Default)]
pub struct Scaler {
    resizer: fast_image_resize::Resizer,
}

/// Why a picture could not be scaled (planes that do not match their size: a bug).
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    #[error(transparent)]
    Buffer(#[from] fast_image_resize::ImageBufferError),
    #[error(transparent)]
    Resize(#[from] fast_image_resize::ResizeError),
}

impl Scaler {
    /// Scales `src` into `dst`, made `size` first if it is another size.
    pub fn scale(
        &mut self,
        src: &I420Frame,
        dst: &mut I420Frame,
        size: Size,
    ) -> Result<(), ScaleError> {
        use fast_image_resize::{
            images::Image, images::ImageRef, FilterType, PixelType, ResizeAlg, ResizeOptions,
        };
        if dst.size() != size {
            *dst = I420Frame::new(size);
        }
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        let (from, to) = (src.size(), size);
        let (sy, su, sv) = src.planes();
        let (dy, du, dv) = dst.planes_mut();
        let (fw, fh, tw, th) = (from.width, from.height, to.width, to.height);
        let planes = [
            (sy, dy, fw, fh, tw, th),
            (su, du, fw / 2, fh / 2, tw / 2, th / 2),
            (sv, dv, fw / 2, fh / 2, tw / 2, th / 2),
        ];
        for (s, d, sw, sh, dw, dh) in planes {
            let from = ImageRef::new(sw, sh, s, PixelType::U8)?;
            let mut to = Image::from_slice_u8(dw, dh, d, PixelType::U8)?;
            self.resizer.resize(&from, &mut to, &options)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A picture where every pixel differs from its neighbours, and from other seeds'.
    fn noise(size: Size, seed: u32) -> Vec<u8> {
        (0..size.area() as u32 * 4)
            .map(|i| ((i ^ seed.wrapping_mul(0x9e37_79b9)).wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    /// Asserts that `got` equals `new` inside `covers` and `old` everywhere else, in all
    /// three planes (chroma at half resolution).
    fn assert_changed_only(
        got: &I420Frame,
        new: &I420Frame,
        old: &I420Frame,
        covers: Rect,
        what: &str,
    ) {
        let Size { width, height } = got.size();
        for (plane, shift) in [(0, 0), (1, 1), (2, 1)] {
            let pick = |f: &I420Frame| {
                let (y, u, v) = f.planes();
                [y, u, v][plane].to_vec()
            };
            let (g, n, o) = (pick(got), pick(new), pick(old));
            let (pw, ph) = (width >> shift, height >> shift);
            for row in 0..ph {
                for col in 0..pw {
                    let inside = (covers.x >> shift..(covers.x + covers.width) >> shift)
                        .contains(&col)
                        && (covers.y >> shift..(covers.y + covers.height) >> shift).contains(&row);
                    let i = (row * pw + col) as usize;
                    let want = if inside { n[i] } else { o[i] };
                    assert_eq!(g[i], want, "{what}: plane {plane} at {col},{row}");
                }
            }
        }
    }

    /// Rectangles anywhere (touching each edge, narrow, full width, odd edges, past the
    /// picture, outside it), from the whole picture and, when even, from a tight copy of just
    /// the rectangle (as a shared-memory grab gives), convert to exactly what converting the
    /// whole picture gives inside the rectangle grown to even edges and clipped, and nothing
    /// outside; and so does copying the rectangle from that picture in padded I420.
    #[test]
    fn every_rect_converts_exactly_its_own_pixels() {
        let size = Size::new(64, 48).unwrap();
        let (old, new) = (noise(size, 1), noise(size, 2));
        let mut before = I420Frame::new(size);
        before
            .fill_from_rgba(&old, 64 * 4, ByteOrder::Rgba)
            .unwrap();
        let mut whole = I420Frame::new(size);
        whole.fill_from_rgba(&new, 64 * 4, ByteOrder::Rgba).unwrap();
        assert!(whole.as_bytes() != before.as_bytes());
        // (rectangle, what it must cover)
        let cases = [
            (Rect::new(0, 2, 16, 14), Rect::new(0, 2, 16, 14)),
            (Rect::new(6, 16, 10, 4), Rect::new(6, 16, 10, 4)),
            (Rect::new(0, 0, 10, 4), Rect::new(0, 0, 10, 4)),
            (Rect::new(40, 30, 24, 18), Rect::new(40, 30, 24, 18)),
            (Rect::new(2, 46, 2, 2), Rect::new(2, 46, 2, 2)),
            (Rect::new(0, 20, 64, 6), Rect::new(0, 20, 64, 6)),
            (Rect::new(0, 40, 64, 8), Rect::new(0, 40, 64, 8)),
            // Odd edges grow outwards: x 5..18, y 7..30 -> x 4..18, y 6..30.
            (Rect::new(5, 7, 13, 23), Rect::new(4, 6, 14, 24)),
            (Rect::new(60, 44, 100, 100), Rect::new(60, 44, 4, 4)),
            (Rect::new(64, 0, 8, 8), Rect::new(0, 0, 0, 0)),
        ];
        // The same new picture as padded I420 (strides wider than the picture).
        let (ys, cs) = (64 + 6, 32 + 3);
        let pad = |plane: &[u8], w: usize, stride: usize| -> Vec<u8> {
            plane
                .chunks_exact(w)
                .flat_map(|row| {
                    row.iter()
                        .copied()
                        .chain([7; 8].into_iter().take(stride - w))
                })
                .collect()
        };
        let (wy, wu, wv) = whole.planes();
        let (py, pu, pv) = (pad(wy, 64, ys), pad(wu, 32, cs), pad(wv, 32, cs));
        for (r, covers) in cases {
            let mut from_whole = before.clone();
            from_whole
                .fill_rect_from_rgba(&new, 64 * 4, ByteOrder::Rgba, r)
                .unwrap();
            assert_changed_only(
                &from_whole,
                &whole,
                &before,
                covers,
                &format!("whole {r:?}"),
            );
            let mut from_i420 = before.clone();
            let i420 = Pixels::I420 {
                y: &py,
                u: &pu,
                v: &pv,
                y_stride: ys,
                uv_stride: cs,
            };
            from_i420.fill_rect_from(i420, r).unwrap();
            assert_changed_only(&from_i420, &whole, &before, covers, &format!("I420 {r:?}"));
            if r != covers {
                continue;
            }
            let mut tight = Vec::new();
            for y in r.y..r.y + r.height {
                tight
                    .extend_from_slice(&new[(y * 64 + r.x) as usize * 4..][..r.width as usize * 4]);
            }
            let mut from_tight = before.clone();
            let stride = r.width as usize * 4;
            from_tight
                .fill_region_from_rgba(&tight, stride, ByteOrder::Rgba, r)
                .unwrap();
            assert_changed_only(
                &from_tight,
                &whole,
                &before,
                covers,
                &format!("tight {r:?}"),
            );
        }
    }

    /// A padded picture whose last row stops short of a full stride (as `fill_from_rgba`
    /// accepts) converts every row, the last two included.
    #[test]
    fn a_padded_picture_without_a_full_last_stride_converts_every_row() {
        let size = Size::new(64, 48).unwrap();
        let tight = noise(size, 3);
        let stride = 64 * 4 + 8;
        let mut padded = vec![0u8; stride * 47 + 64 * 4];
        for (row, line) in tight.chunks_exact(64 * 4).enumerate() {
            padded[row * stride..row * stride + 64 * 4].copy_from_slice(line);
        }
        let mut want = I420Frame::new(size);
        want.fill_from_rgba(&tight, 64 * 4, ByteOrder::Rgba)
            .unwrap();
        let mut got = I420Frame::new(size);
        got.fill_from_rgba(&padded, stride, ByteOrder::Rgba)
            .unwrap();
        assert!(got.as_bytes() == want.as_bytes());
        // And a rectangle reaching the bottom, not at the left edge.
        let r = Rect::new(8, 40, 16, 8);
        let mut part = I420Frame::new(size);
        part.fill_rect_from_rgba(&padded, stride, ByteOrder::Rgba, r)
            .unwrap();
        assert_eq!(part.planes().0[47 * 64 + 10], want.planes().0[47 * 64 + 10]);
        assert_eq!(
            part.planes().0[47 * 64 + 30],
            16,
            "outside the rectangle stays black"
        );
    }

    fn paint(frame: &mut I420Frame, r: Rect, luma: u8) {
        crate::source::pattern::fill_rect(frame, r.x, r.y, r.width, r.height, [luma, 90, 170]);
    }

    /// Two buffers go round while a source changes parts of the canvas (and now and then
    /// says nothing about what changed, or a buffer sits out for longer than the history):
    /// after staging, a buffer always equals the canvas.
    #[test]
    fn staged_buffers_always_hold_the_latest_picture() {
        let size = Size::new(96, 64).unwrap();
        let mut canvas = Canvas::new(size);
        let mut buffers = [I420Frame::new(size), I420Frame::new(size)];
        let mut spare = I420Frame::new(size);
        for n in 0u32..60 {
            let r = Rect::new(n * 7 % 80, n * 5 % 50, 3 + n % 17, 5 + n % 13);
            let frame = canvas.frame_mut(size);
            paint(frame, r, (n * 37 % 200) as u8 + 20);
            canvas.drew((n % 11 != 5).then_some(&[r][..]));
            let b = &mut buffers[n as usize % 2];
            canvas.stage(b);
            assert!(b.as_bytes() == canvas.frame.as_bytes(), "picture {n}");
            if n % 9 == 0 {
                // A buffer that missed several pictures.
                canvas.stage(&mut spare);
                assert!(spare.as_bytes() == canvas.frame.as_bytes(), "spare at {n}");
            }
        }
    }

    /// Only what changed is copied: a mark outside the changed rectangles survives staging.
    #[test]
    fn staging_copies_only_the_changed_rectangles() {
        let size = Size::new(64, 64).unwrap();
        let mut canvas = Canvas::new(size);
        let mut buffer = I420Frame::new(size);
        canvas.frame_mut(size);
        canvas.drew(None);
        canvas.stage(&mut buffer);
        // Marked where no later picture changes anything.
        paint(&mut buffer, Rect::new(50, 50, 4, 4), 77);
        for (n, r) in [Rect::new(0, 0, 10, 10), Rect::new(20, 4, 8, 30)]
            .into_iter()
            .enumerate()
        {
            paint(canvas.frame_mut(size), r, 200 - n as u8);
            canvas.drew(Some(&[r]));
        }
        canvas.stage(&mut buffer);
        let (y, _, _) = buffer.planes();
        assert_eq!(
            y[51 * 64 + 51],
            77,
            "the mark outside the changes is not overwritten"
        );
        assert_eq!(y[5 * 64 + 5], 200);
        assert_eq!(y[20 * 64 + 22], 199);
        // Not knowing what changed means copying everything.
        canvas.frame_mut(size);
        canvas.drew(None);
        canvas.stage(&mut buffer);
        assert_eq!(buffer.planes().0[51 * 64 + 51], 16);
    }
}
