//! Frames pushed by a program (a renderer, a canvas, a game): [`FramePusher::push`] from any
//! thread, [`PushSource`] hands the newest one to the pipeline.
//!
//! A mailbox of one: a push converts the picture to I420 on the pusher's thread (spreading
//! the colour-conversion cost off the encoder thread) and replaces whatever was waiting, so
//! the stream always shows the latest picture and a fast producer never builds a queue.
//! Buffers are recycled between the two sides, so steady-state pushing allocates nothing.

use super::{Fill, FrameInfo, I420Frame, Pixels, Source, SourceError};
use crate::config::Size;
use std::sync::{Arc, Mutex};

struct Mailbox {
    size: Size,
    /// The newest picture not yet taken by the pipeline.
    waiting: Mutex<Option<I420Frame>>,
    /// Buffers to convert into, returned by the pipeline.
    spare: Mutex<Vec<I420Frame>>,
    closed: std::sync::atomic::AtomicBool,
}

/// The pipeline's side: yields the newest pushed picture.
pub struct PushSource {
    mailbox: Arc<Mailbox>,
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
        waiting: Mutex::new(None),
        spare: Mutex::new(Vec::new()),
        closed: Default::default(),
    });
    (
        FramePusher {
            mailbox: mailbox.clone(),
        },
        PushSource { mailbox },
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

    /// Offers a picture; it replaces any picture not yet encoded.
    pub fn push(&self, pixels: Pixels<'_>) -> Result<(), SourceError> {
        let mb = &self.mailbox;
        let mut frame = lock(&mb.spare)
            .pop()
            .unwrap_or_else(|| I420Frame::new(mb.size));
        frame.fill_from(pixels)?;
        if let Some(old) = lock(&mb.waiting).replace(frame) {
            lock(&mb.spare).push(old);
        }
        Ok(())
    }

    /// Ends the stream: viewers are told, and the pipeline stops.
    pub fn close(&self) {
        self.mailbox
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

impl Source for PushSource {
    fn size(&self) -> Size {
        self.mailbox.size
    }

    fn fill(&mut self, frame: &mut I420Frame, _info: FrameInfo) -> Result<Fill, SourceError> {
        let mb = &self.mailbox;
        match lock(&mb.waiting).take() {
            Some(mut new) => {
                // Swap buffers instead of copying; the old one goes back for the next push.
                std::mem::swap(frame, &mut new);
                lock(&mb.spare).push(new);
                Ok(Fill::New)
            }
            None if mb.closed.load(std::sync::atomic::Ordering::Acquire) => Ok(Fill::Ended),
            None => Ok(Fill::Unchanged),
        }
    }
}
