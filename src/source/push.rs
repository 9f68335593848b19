//! Frames pushed by a program (a renderer, a canvas, a game): [`FramePusher::push`] or
//! [`FramePusher::push_changed`] from any thread, [`PushSource`] hands the newest picture to
//! the pipeline.
//!
//! A mailbox of one picture: a push converts to I420 on the pusher's thread (the colour
//! conversion stays off the pipeline's threads) and replaces whatever was not yet taken, so
//! the stream always shows the latest picture and a fast producer never builds a queue.
//!
//! A program that knows what it redrew says so with [`FramePusher::push_changed`]: only
//! those rectangles are converted, copied into the pipeline's canvas and on into the
//! encoder's buffers (a few kilobytes per frame where a whole 1080p picture is 8 MB of RGBA
//! to read). A whole push converts into a spare buffer outside the lock and is taken by a
//! buffer swap. Buffers are recycled between the two sides, so steady pushing allocates
//! nothing.

use super::{Fill, FrameInfo, Source, SourceError};
use crate::config::Size;
use crate::frame::{I420Frame, Pixels, Rect};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Changed rectangles kept per picture before they are merged into their bounding box (the
/// pipeline copies each one; many tiny ones cost more than one bigger copy).
const MAX_RECTS: usize = 32;

/// Spare buffers kept for whole pushes: one per thread pushing at the same moment, and two
/// is already more than a program needs.
const SPARES: usize = 2;

struct Mailbox {
    size: Size,
    staged: Mutex<Staged>,
    /// Buffers for the next whole pushes, converted into outside the `staged` lock.
    spare: Mutex<Vec<I420Frame>>,
    closed: AtomicBool,
}

/// What was pushed since the pipeline last took a picture.
struct Staged {
    /// The pusher's picture: the newest pushed pixels wherever `whole` or `changed` says;
    /// elsewhere whatever it held (the pipeline's canvas already has those parts).
    frame: I420Frame,
    /// `frame` holds a whole new picture: the pipeline swaps it in.
    whole: bool,
    /// Otherwise: the rectangles that changed (even edges, inside the picture); empty when
    /// nothing new was pushed.
    changed: Vec<Rect>,
}

/// The pipeline's side: yields the newest pushed picture.
pub struct PushSource {
    mailbox: Arc<Mailbox>,
    /// The last [`Fill::New`] was a whole picture ([`Source::changed`] is `None`)...
    whole: bool,
    /// ...or changed these rectangles.
    rects: Vec<Rect>,
}

/// The program's side: cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct FramePusher {
    mailbox: Arc<Mailbox>,
}

/// A connected pair for pictures of `size`.
pub fn channel(size: Size) -> (FramePusher, PushSource) {
    let mailbox = Arc::new(Mailbox {
        size,
        staged: Mutex::new(Staged {
            frame: I420Frame::new(size),
            whole: false,
            changed: Vec::new(),
        }),
        spare: Mutex::new(Vec::new()),
        closed: AtomicBool::new(false),
    });
    (
        FramePusher {
            mailbox: mailbox.clone(),
        },
        PushSource {
            mailbox,
            whole: true,
            rects: Vec::new(),
        },
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FramePusher {
    /// The size every pushed picture must have.
    pub fn size(&self) -> Size {
        self.mailbox.size
    }

    /// Offers a whole new picture; it replaces any picture not yet encoded.
    pub fn push(&self, pixels: Pixels<'_>) -> Result<(), SourceError> {
        let mb = &self.mailbox;
        let mut frame = lock(&mb.spare)
            .pop()
            .unwrap_or_else(|| I420Frame::new(mb.size));
        let converted = frame.fill_from(pixels);
        if converted.is_ok() {
            let mut staged = lock(&mb.staged);
            std::mem::swap(&mut staged.frame, &mut frame);
            staged.whole = true;
            staged.changed.clear();
        }
        let mut spare = lock(&mb.spare);
        if spare.len() < SPARES {
            spare.push(frame);
        }
        Ok(converted?)
    }

    /// Offers a picture that differs from the one pushed before only inside `changed`
    /// (rectangles in pixels; parts outside the picture are ignored). `pixels` is the whole
    /// picture, but only the changed rectangles are read: what the program drew elsewhere
    /// since its last push is not shown until a push covers it. No rectangles: nothing new.
    ///
    /// The rectangles are converted while the stream cannot take the picture (a lock), so
    /// many small ones cost the stream nothing but a short wait.
    pub fn push_changed(&self, pixels: Pixels<'_>, changed: &[Rect]) -> Result<(), SourceError> {
        let size = self.mailbox.size;
        if changed.iter().any(|r| r.contains(Rect::whole(size))) {
            return self.push(pixels);
        }
        let mut staged = lock(&self.mailbox.staged);
        let staged = &mut *staged;
        staged.frame.check(pixels)?;
        let rects = changed.iter().filter_map(|r| r.to_even(size));
        if staged.whole {
            // Still a whole new picture, with these parts newer.
            for r in rects {
                staged.frame.fill_rect_from(pixels, r)?;
            }
            return Ok(());
        }
        if staged.changed.len() + rects.clone().count() > MAX_RECTS {
            // Too many to copy one by one: their bounding box instead, all of it converted
            // from this, the newest, picture (the staged frame is right only inside the
            // rectangles).
            let all = staged
                .changed
                .iter()
                .copied()
                .chain(rects)
                .reduce(Rect::union);
            if let Some(all) = all {
                staged.frame.fill_rect_from(pixels, all)?;
                staged.changed.clear();
                staged.changed.push(all);
            }
            return Ok(());
        }
        for r in rects {
            staged.frame.fill_rect_from(pixels, r)?;
            staged.changed.push(r);
        }
        Ok(())
    }

    /// Ends the stream: viewers are told, and the pipeline stops.
    pub fn close(&self) {
        self.mailbox.closed.store(true, Ordering::Release);
    }
}

impl Source for PushSource {
    fn size(&self) -> Size {
        self.mailbox.size
    }

    fn changed(&self) -> Option<&[Rect]> {
        (!self.whole).then_some(&self.rects[..])
    }

    /// `frame` is the pipeline's canvas: it holds the picture taken last time.
    fn fill(&mut self, frame: &mut I420Frame, _info: FrameInfo) -> Result<Fill, SourceError> {
        let mut staged = lock(&self.mailbox.staged);
        let staged = &mut *staged;
        if staged.whole {
            // Same size by construction. The old canvas picture goes to the pusher, which
            // only ever writes over it.
            std::mem::swap(frame, &mut staged.frame);
            staged.whole = false;
            self.whole = true;
            return Ok(Fill::New);
        }
        if !staged.changed.is_empty() {
            for &r in &staged.changed {
                frame.copy_rect_from(&staged.frame, r);
            }
            self.rects.clear();
            self.rects.append(&mut staged.changed);
            self.whole = false;
            return Ok(Fill::New);
        }
        if self.mailbox.closed.load(Ordering::Acquire) {
            return Ok(Fill::Ended);
        }
        Ok(Fill::Unchanged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    const W: u32 = 64;
    const H: u32 = 48;

    fn size() -> Size {
        Size::new(W, H).unwrap()
    }

    fn info() -> FrameInfo {
        FrameInfo {
            number: 0,
            wall: SystemTime::UNIX_EPOCH,
        }
    }

    /// An RGBA picture of one colour.
    fn picture(c: [u8; 4]) -> Vec<u8> {
        c.repeat((W * H) as usize)
    }

    fn paint(rgba: &mut [u8], r: Rect, c: [u8; 4]) {
        for y in r.y..r.y + r.height {
            for x in r.x..r.x + r.width {
                let i = ((y * W + x) * 4) as usize;
                rgba[i..i + 4].copy_from_slice(&c);
            }
        }
    }

    fn pixels(rgba: &[u8]) -> Pixels<'_> {
        Pixels::Rgba {
            data: rgba,
            stride: W as usize * 4,
        }
    }

    /// What a whole conversion of `rgba` gives.
    fn converted(rgba: &[u8]) -> I420Frame {
        let mut f = I420Frame::new(size());
        f.fill_from(pixels(rgba)).unwrap();
        f
    }

    const GREY: [u8; 4] = [120, 120, 120, 255];
    const RED: [u8; 4] = [230, 20, 20, 255];
    const BLUE: [u8; 4] = [20, 20, 230, 255];

    /// Both ends of a push channel, the pipeline's canvas and the program's picture.
    struct Rig {
        pusher: FramePusher,
        source: PushSource,
        canvas: I420Frame,
        rgba: Vec<u8>,
    }

    impl Rig {
        /// Nothing pushed yet; the program's picture is grey.
        fn new() -> Self {
            let (pusher, source) = channel(size());
            Self {
                pusher,
                source,
                canvas: I420Frame::new(size()),
                rgba: picture(GREY),
            }
        }

        /// The grey picture pushed whole and taken.
        fn taken() -> Self {
            let mut rig = Self::new();
            rig.pusher.push(pixels(&rig.rgba)).unwrap();
            rig.take();
            rig
        }

        /// The pipeline taking a picture into its canvas.
        fn take(&mut self) -> Fill {
            self.source.fill(&mut self.canvas, info()).unwrap()
        }

        /// Paints `r` on the program's picture and pushes it as changed.
        fn paint_and_push(&mut self, r: Rect, c: [u8; 4]) {
            paint(&mut self.rgba, r, c);
            self.pusher.push_changed(pixels(&self.rgba), &[r]).unwrap();
        }

        /// Whether the canvas holds `rgba`.
        fn shows(&self, rgba: &[u8]) -> bool {
            self.canvas.as_bytes() == converted(rgba).as_bytes()
        }
    }

    #[test]
    fn only_the_changed_rectangles_are_taken() {
        let mut rig = Rig::new();
        rig.pusher.push(pixels(&rig.rgba)).unwrap();
        assert!(matches!(rig.take(), Fill::New));
        assert_eq!(
            rig.source.changed(),
            None,
            "a whole push changes everything"
        );

        let r = Rect::new(9, 5, 8, 9);
        paint(&mut rig.rgba, r, RED);
        let told = rig.rgba.clone();
        // Drawn but not declared: must not be shown.
        paint(&mut rig.rgba, Rect::new(40, 30, 6, 6), BLUE);
        rig.pusher.push_changed(pixels(&rig.rgba), &[r]).unwrap();
        assert!(matches!(rig.take(), Fill::New));
        assert_eq!(rig.source.changed(), Some(&[Rect::new(8, 4, 10, 10)][..]));
        assert!(rig.shows(&told));
        assert!(matches!(rig.take(), Fill::Unchanged));
    }

    #[test]
    fn changes_pushed_between_takes_add_up() {
        let mut rig = Rig::taken();
        let (a, b) = (Rect::new(2, 2, 6, 6), Rect::new(30, 20, 10, 4));
        rig.paint_and_push(a, RED);
        rig.paint_and_push(b, BLUE);
        assert!(matches!(rig.take(), Fill::New));
        assert_eq!(rig.source.changed(), Some(&[a, b][..]));
        assert!(rig.shows(&rig.rgba));
    }

    #[test]
    fn changes_on_a_whole_picture_not_yet_taken_make_one_whole_picture() {
        let mut rig = Rig::new();
        rig.pusher.push(pixels(&rig.rgba)).unwrap();
        rig.paint_and_push(Rect::new(10, 10, 4, 4), RED);
        assert!(matches!(rig.take(), Fill::New));
        assert_eq!(rig.source.changed(), None);
        assert!(rig.shows(&rig.rgba));

        // The pusher now writes into the canvas's old (black) buffer: the canvas keeps the
        // rest of the picture.
        let s = Rect::new(50, 40, 4, 4);
        rig.paint_and_push(s, BLUE);
        rig.take();
        assert_eq!(rig.source.changed(), Some(&[s][..]));
        assert!(rig.shows(&rig.rgba));
    }

    #[test]
    fn a_whole_push_replaces_changes_not_yet_taken() {
        let mut rig = Rig::taken();
        rig.paint_and_push(Rect::new(4, 4, 8, 8), RED);
        let blue = picture(BLUE);
        rig.pusher.push(pixels(&blue)).unwrap();
        assert!(matches!(rig.take(), Fill::New));
        assert_eq!(rig.source.changed(), None);
        // The red rectangle is not taken later from whatever buffer the pusher holds now.
        assert!(matches!(rig.take(), Fill::Unchanged));
        assert!(rig.shows(&blue));
    }

    #[test]
    fn many_small_changes_are_merged_and_a_covering_one_is_a_whole_push() {
        let mut rig = Rig::taken();
        let dots: Vec<Rect> = (0..40).map(|i| Rect::new(i, i, 2, 2)).collect();
        for &d in &dots {
            paint(&mut rig.rgba, d, RED);
        }
        rig.pusher.push_changed(pixels(&rig.rgba), &dots).unwrap();
        rig.take();
        assert_eq!(rig.source.changed(), Some(&[Rect::new(0, 0, 42, 42)][..]));
        assert!(rig.shows(&rig.rgba));

        let everything = Rect::new(0, 0, 1000, 1000);
        let blue = picture(BLUE);
        rig.pusher
            .push_changed(pixels(&blue), &[everything])
            .unwrap();
        rig.take();
        assert_eq!(rig.source.changed(), None);
        assert!(rig.shows(&blue));
    }

    #[test]
    fn a_bad_push_is_refused_and_shows_nothing() {
        let mut rig = Rig::new();
        let short = vec![0u8; 100];
        assert!(rig.pusher.push(pixels(&short)).is_err());
        let r = Rect::new(0, 0, 4, 4);
        let outside = Rect::new(W, 0, 4, 4);
        for rects in [&[r][..], &[], &[outside]] {
            assert!(rig.pusher.push_changed(pixels(&short), rects).is_err());
        }
        // A stride that overflows any size computation.
        let huge = Pixels::Rgba {
            data: &short,
            stride: usize::MAX / 2,
        };
        assert!(rig.pusher.push(huge).is_err());
        assert!(rig.pusher.push_changed(huge, &[r]).is_err());
        assert!(matches!(rig.take(), Fill::Unchanged));
        // Outside the picture: nothing to take.
        let red = picture(RED);
        rig.pusher.push_changed(pixels(&red), &[outside]).unwrap();
        assert!(matches!(rig.take(), Fill::Unchanged));
        rig.pusher.close();
        assert!(matches!(rig.take(), Fill::Ended));
    }
}
