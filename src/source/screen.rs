//! `screen` / `screen:N` — an X11 display captured through shared memory (MIT-SHM), at the
//! stream's frame rate, on the pipeline thread (X handles are not `Send`, and capture never
//! touches the async runtime).
//!
//! Only what changed is grabbed and converted: the X server's DAMAGE extension says which
//! rectangles were drawn since the last frame (`source::damage`), the server copies just
//! those into shared memory (`source::shm`), and a screen where nothing changed answers
//! [`Fill::Unchanged`] without a grab, so an idle desktop costs next to nothing. (Without
//! DAMAGE every frame is grabbed and converted whole, by `scrap`, which also takes the first
//! pictures.)
//!
//! Once a second it looks at the display afresh: if the screen was resized, capture restarts
//! at the new size (the pipeline then restarts the encoder, and viewers get an IDR of the new
//! size); if the X server went away, viewers see a "source lost" picture until it comes back,
//! and capture resumes by itself.

use super::damage::Damage;
use super::pattern::{draw_text, fill_rect};
use super::shm::ShmGrabber;
use super::{Fill, FrameInfo, Source, SourceError};
use crate::config::Size;
use crate::frame::{ByteOrder, I420Frame, Rect};
use scrap::x11;
use std::rc::Rc;
use std::time::{Duration, Instant};

const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How often a whole grab checks the damage reports ([`Screen::check`]).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Checks in a row that found missed changes before damage tracking is given up.
const MISSES_TO_GIVE_UP: u32 = 3;

pub struct Screen {
    index: Option<usize>,
    capturer: Option<x11::Capturer>,
    /// What changed on the display; `None` when the server cannot say (convert everything).
    damage: Option<Damage>,
    /// Grabs just the changed rectangles; `None` without MIT-SHM (grab whole with `scrap`).
    grabber: Option<ShmGrabber>,
    /// Where each changed rectangle starts in the grabber's memory.
    starts: Vec<usize>,
    /// Pixels grabbed just where things changed, in whole-screen grabs, and in the checks of
    /// the damage reports (`/metrics`).
    grabbed_changed: metrics::Counter,
    grabbed_whole: metrics::Counter,
    grabbed_check: metrics::Counter,
    /// Changed rectangles reported before the last grab (when that was `scrap`'s), and since.
    /// `scrap` keeps one grab request in flight and returns the previous request's picture;
    /// XCB sends that request only when the next call waits for its reply, so in practice the
    /// picture is taken by the call that returns it, but nothing promises that: the grab after
    /// a `scrap` grab converts that grab's changes again, so a change is never left out.
    /// (Shared-memory grabs go over the damage connection, after the report: no repeat.)
    before: Vec<Rect>,
    since: Vec<Rect>,
    /// What the last grab converted, when not all of it ([`Source::changed`]).
    converted: Vec<Rect>,
    partial: bool,
    /// Grabs still to convert whole (a new capture: the canvas holds nothing of it yet).
    whole: u8,
    /// Damage tracking failed at run time: the next probe starts it again.
    rewatch: bool,
    /// When the damage reports were last checked against a whole grab, the picture that grab
    /// gave, and how many checks in a row found changes they missed.
    last_check: Instant,
    truth: I420Frame,
    misses: u32,
    /// Size of the display being captured (before cropping to even).
    raw: (usize, usize),
    size: Size,
    last_probe: Instant,
    lost_drawn: bool,
}

/// The display to capture: the primary one, or the `n`-th (`scrap`'s `x11` layer, which also
/// tells where the monitor sits on the root window, for damage tracking).
fn display(index: Option<usize>) -> Result<x11::Display, SourceError> {
    let no_x = |e: x11::Error| {
        SourceError::Screen(format!(
            "cannot open the X display {} ({e:?}); set DISPLAY, e.g. DISPLAY=:0",
            std::env::var("DISPLAY").unwrap_or_else(|_| "(DISPLAY is not set)".into())
        ))
    };
    let mut all = x11::Server::displays(Rc::new(x11::Server::default().map_err(no_x)?));
    let found = match index {
        None => {
            let first = all.next();
            if first.as_ref().is_some_and(|d| !d.is_default()) {
                all.find(|d| d.is_default()).or(first)
            } else {
                first
            }
        }
        Some(n) => {
            let mut all: Vec<_> = all.collect();
            let count = all.len();
            if n >= count {
                return Err(SourceError::Screen(format!(
                    "screen:{n} does not exist; this X server has {count} screen(s), 0 to {}",
                    count.saturating_sub(1)
                )));
            }
            Some(all.swap_remove(n))
        }
    };
    found.ok_or_else(|| SourceError::Screen("the X server has no monitor to capture".into()))
}

/// The display's size in pixels.
fn raw_size(d: &x11::Display) -> (usize, usize) {
    (d.rect().w.into(), d.rect().h.into())
}

/// Damage tracking for the monitor `d`, and a grabber for what changed, or `None` (logged)
/// when the server has no DAMAGE or MIT-SHM.
fn watch(d: &x11::Display) -> (Option<Damage>, Option<ShmGrabber>) {
    let r = d.rect();
    let damage = Damage::watch(d.root(), r.x, r.y, r.w, r.h)
        .inspect_err(|e| tracing::warn!("screen: converting every frame whole: {e}"))
        .ok();
    let grabber = damage.as_ref().and_then(|damage| {
        let len = usize::from(r.w) * usize::from(r.h) * 4;
        ShmGrabber::new(damage.connection(), len)
            .inspect_err(|e| tracing::warn!("screen: grabbing the whole screen per change: {e}"))
            .ok()
    });
    (damage, grabber)
}

fn even_size(w: usize, h: usize) -> Result<Size, SourceError> {
    Ok(Size::new(w as u32 & !1, h as u32 & !1)?)
}

impl Screen {
    pub fn open(index: Option<usize>) -> Result<Self, SourceError> {
        let d = display(index)?;
        let raw = raw_size(&d);
        let size = even_size(raw.0, raw.1)?;
        let (damage, grabber) = watch(&d);
        let capturer = x11::Capturer::new(d).map_err(|e| SourceError::Screen(e.to_string()))?;
        Ok(Self {
            index,
            capturer: Some(capturer),
            damage,
            grabber,
            starts: Vec::new(),
            grabbed_changed: metrics::counter!("whepcast_screen_grabbed_pixels_total", "grab" => "changed"),
            grabbed_whole: metrics::counter!("whepcast_screen_grabbed_pixels_total", "grab" => "whole"),
            grabbed_check: metrics::counter!("whepcast_screen_grabbed_pixels_total", "grab" => "check"),
            before: Vec::new(),
            since: Vec::new(),
            converted: Vec::new(),
            partial: false,
            whole: 2,
            rewatch: false,
            last_check: Instant::now(),
            truth: I420Frame::new(Size {
                width: 0,
                height: 0,
            }),
            misses: 0,
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
                let raw = raw_size(&d);
                if self.capturer.is_some() && raw == self.raw {
                    if self.damage.is_none() && self.rewatch {
                        // Damage tracking failed while the display stayed: start it afresh.
                        self.rewatch = false;
                        (self.damage, self.grabber) = watch(&d);
                        self.before.clear();
                        self.whole = 1;
                    }
                    return;
                }
                let Ok(size) = even_size(raw.0, raw.1) else {
                    return;
                };
                // Release the old shared memory (ours and the server's hold on it, which goes
                // with the damage connection) before making new.
                self.capturer = None;
                self.lost_drawn = false;
                self.grabber = None;
                self.damage = None;
                self.before.clear();
                let (damage, grabber) = watch(&d);
                match x11::Capturer::new(d) {
                    Ok(c) => {
                        tracing::info!("screen capture at {}x{}", raw.0, raw.1);
                        self.capturer = Some(c);
                        self.damage = damage;
                        self.grabber = grabber;
                        self.whole = 2;
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

    fn changed(&self) -> Option<&[Rect]> {
        self.partial.then_some(&self.converted[..])
    }

    fn fill(&mut self, frame: &mut I420Frame, _info: FrameInfo) -> Result<Fill, SourceError> {
        if self.last_probe.elapsed() >= PROBE_EVERY {
            self.probe();
            if frame.size() != self.size {
                // The pipeline hands us a frame of the new size on the next call.
                return Ok(Fill::Unchanged);
            }
        }
        if frame.size() != self.size {
            self.whole = 2;
        }
        if self.capturer.is_none() {
            if self.lost_drawn {
                return Ok(Fill::Unchanged);
            }
            // Keep the viewers' picture meaningful while the display is gone.
            let Size { width, height } = frame.size();
            fill_rect(frame, 0, 0, width, height, [60, 128, 128]);
            self.partial = false;
            let scale = (height / 120).max(1);
            draw_text(
                frame,
                width / 20,
                height / 2,
                scale,
                "SOURCE LOST - WAITING FOR THE SCREEN",
            );
            self.lost_drawn = true;
            return Ok(Fill::New);
        }
        let fill = self.update(frame)?;
        if self.damage.is_some() && self.whole == 0 && self.last_check.elapsed() >= CHECK_EVERY {
            return self.check(frame, fill);
        }
        Ok(fill)
    }
}

impl Screen {
    /// Brings `frame` up to date with what the X server reported changed (or grabs whole).
    fn update(&mut self, frame: &mut I420Frame) -> Result<Fill, SourceError> {
        self.since.clear();
        if let Some(damage) = &mut self.damage {
            if let Err(e) = damage.take(&mut self.since) {
                tracing::warn!("screen: converting every frame whole until it recovers: {e}");
                self.damage = None;
                self.grabber = None;
                self.rewatch = true;
            }
        }
        let whole = self.whole > 0 || self.damage.is_none();
        self.converted.clear();
        if !whole {
            let size = self.size;
            for r in self.before.iter().chain(&self.since) {
                // The same area is often in both lists (a pointer's old place is the
                // previous grab's new one): grab and convert it once.
                let Some(r) = r.to_even(size) else { continue };
                if !self.converted.iter().any(|c| c.contains(r)) {
                    self.converted.push(r);
                }
            }
            if self.converted.is_empty() {
                // Nothing changed inside the picture (an odd last column is cropped).
                self.before.clear();
                return Ok(Fill::Unchanged);
            }
        }
        let grabbed = self.grab_into(frame, whole);
        if grabbed.is_err() {
            // The frame may be partly converted: the next grab converts all of it.
            self.whole = self.whole.max(1);
            self.before.clear();
            self.partial = false;
        }
        grabbed
    }

    /// A whole grab, once a second, checks that the damage reports missed nothing: some
    /// setups do not report everything (a compositor drawing with the GPU, say) and would
    /// otherwise leave viewers a frozen picture. A missed change is shown at once; misses in
    /// several checks in a row turn damage tracking off (whole grabs from then on).
    fn check(&mut self, frame: &mut I420Frame, fill: Fill) -> Result<Fill, SourceError> {
        self.last_check = Instant::now();
        let Some(c) = &mut self.capturer else {
            return Ok(fill);
        };
        let bgra = c.frame();
        self.grabbed_check
            .increment((self.raw.0 * self.raw.1) as u64);
        if self.truth.size() != self.size {
            self.truth = I420Frame::new(self.size);
        }
        self.truth
            .fill_from_rgba(bgra, self.raw.0 * 4, ByteOrder::Bgra)?;
        let verdict = judge(&self.truth, frame, &mut self.misses);
        if verdict == Verdict::Same {
            return Ok(fill);
        }
        std::mem::swap(frame, &mut self.truth);
        self.partial = false;
        self.repeat_reported();
        if verdict == Verdict::GiveUp {
            tracing::warn!(
                "screen: the X server's damage reports miss changes ({} checks in a row); grabbing whole frames from now on",
                self.misses
            );
            self.damage = None;
            self.grabber = None;
        } else {
            tracing::debug!("screen: a change the damage reports missed is shown now");
        }
        Ok(Fill::New)
    }

    /// Grabs just the `converted` rectangles through shared memory and converts them into
    /// `frame`; false when there is no grabber or the grab failed (then grab whole).
    fn grab_changes(&mut self, frame: &mut I420Frame) -> Result<bool, SourceError> {
        let (Some(grabber), Some(damage)) = (&mut self.grabber, &self.damage) else {
            return Ok(false);
        };
        let (conn, root, origin) = (damage.connection(), damage.root(), damage.origin());
        let pixels = match grabber.grab(conn, root, origin, &self.converted, &mut self.starts) {
            Ok(pixels) => pixels,
            Err(e) => {
                tracing::debug!("screen: grabbing whole this time: {e}");
                return Ok(false);
            }
        };
        for (r, &start) in self.converted.iter().zip(&self.starts) {
            let stride = r.width as usize * 4;
            frame.fill_region_from_rgba(&pixels[start..], stride, ByteOrder::Bgra, *r)?;
            self.grabbed_changed
                .increment(u64::from(r.width) * u64::from(r.height));
        }
        Ok(true)
    }

    /// Converts the changed rectangles (or, with `whole`, everything) into `frame`: through
    /// shared memory when it can, else from a whole `scrap` grab.
    fn grab_into(&mut self, frame: &mut I420Frame, whole: bool) -> Result<Fill, SourceError> {
        self.partial = false;
        if !whole && self.grab_changes(frame)? {
            // Grabbed over the damage connection, after the report: the pictures hold every
            // change it listed, so nothing needs converting again next time.
            self.partial = true;
            self.before.clear();
            return Ok(Fill::New);
        }
        let Some(c) = &mut self.capturer else {
            return Ok(Fill::Unchanged);
        };
        let bgra = c.frame();
        self.grabbed_whole
            .increment((self.raw.0 * self.raw.1) as u64);
        let stride = self.raw.0 * 4;
        if whole {
            frame.fill_from_rgba(bgra, stride, ByteOrder::Bgra)?;
            self.whole = self.whole.saturating_sub(1);
        } else {
            for &rect in &self.converted {
                frame.fill_rect_from_rgba(bgra, stride, ByteOrder::Bgra, rect)?;
            }
            self.partial = true;
        }
        self.repeat_reported();
        Ok(Fill::New)
    }

    /// After a `scrap` grab, whose picture may predate this frame's report: the changes it
    /// listed are converted again with the next grab.
    fn repeat_reported(&mut self) {
        self.before.clone_from(&self.since);
    }
}

/// What a check of the damage reports found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The picture built from the reports is the screen.
    Same,
    /// It missed a change (show the whole grab).
    Missed,
    /// It missed changes in [`MISSES_TO_GIVE_UP`] checks in a row: stop trusting the reports.
    GiveUp,
}

/// Compares the picture built from damage reports (`shown`) with a whole grab (`truth`),
/// counting misses in a row.
fn judge(truth: &I420Frame, shown: &I420Frame, misses: &mut u32) -> Verdict {
    if truth.as_bytes() == shown.as_bytes() {
        *misses = 0;
        return Verdict::Same;
    }
    *misses += 1;
    if *misses >= MISSES_TO_GIVE_UP {
        Verdict::GiveUp
    } else {
        Verdict::Missed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_misses_in_a_row_give_damage_tracking_up() {
        let size = Size::new(32, 32).unwrap();
        let same = I420Frame::new(size);
        let mut other = I420Frame::new(size);
        fill_rect(&mut other, 0, 0, 4, 4, [200, 128, 128]);
        let mut misses = 0;
        assert_eq!(judge(&same, &same, &mut misses), Verdict::Same);
        assert_eq!(judge(&other, &same, &mut misses), Verdict::Missed);
        assert_eq!(judge(&other, &same, &mut misses), Verdict::Missed);
        // A check that matches starts the count again: a change racing the grab is no proof.
        assert_eq!(judge(&same, &same, &mut misses), Verdict::Same);
        assert_eq!(judge(&other, &same, &mut misses), Verdict::Missed);
        assert_eq!(judge(&other, &same, &mut misses), Verdict::Missed);
        assert_eq!(judge(&other, &same, &mut misses), Verdict::GiveUp);
    }
}
