//! Encoding on its own thread, so that drawing or capturing frame N+1 overlaps encoding
//! frame N.
//!
//! One thread doing both runs at 1 / (draw + encode); two threads on two cores run at
//! 1 / max(draw, encode). Frames travel in a fixed set of buffers (two: one being drawn, one
//! being encoded) that go round and round, so nothing is allocated per frame. The producer
//! waits for a free buffer when the worker falls behind: that back-pressure is what makes a
//! paced pipeline notice it is late and drop frame slots, instead of queueing stale frames.

use crate::config::Size;
use crate::frame::I420Frame;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

/// Buffers in circulation: one being filled while the other is encoded.
const BUFFERS: usize = 2;

/// The producer's handle on a worker thread that processes filled frames in order.
pub struct Worker<M> {
    to_worker: Option<SyncSender<(I420Frame, M)>>,
    free: Receiver<I420Frame>,
    /// Buffers made so far: they are made on first need, so a stream nobody watches holds none.
    made: std::cell::Cell<usize>,
    /// Lets the producer put back a buffer it filled but does not want processed.
    give_back: Sender<I420Frame>,
    thread: Option<JoinHandle<()>>,
}

impl<M: Send + 'static> Worker<M> {
    /// Starts a thread named `name` that calls `work` for every frame submitted, in order.
    pub fn spawn(
        name: &str,
        mut work: impl FnMut(&I420Frame, M) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (to_worker, jobs) = mpsc::sync_channel::<(I420Frame, M)>(BUFFERS);
        let (give_back, free) = mpsc::channel();
        let returns = give_back.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                for (frame, meta) in jobs {
                    work(&frame, meta);
                    if returns.send(frame).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            to_worker: Some(to_worker),
            free,
            made: std::cell::Cell::new(0),
            give_back,
            thread: Some(thread),
        })
    }

    /// A buffer to fill, of `size` (reallocated only when the size changed); waits while the
    /// worker holds every buffer. `None` if the worker thread has stopped.
    pub fn take(&self, size: Size) -> Option<I420Frame> {
        let frame = match self.free.try_recv() {
            Ok(frame) => frame,
            Err(_) if self.made.get() < BUFFERS => {
                self.made.set(self.made.get() + 1);
                return Some(I420Frame::new(size));
            }
            Err(_) => self.wait_for_free()?,
        };
        Some(if frame.size() == size {
            frame
        } else {
            I420Frame::new(size)
        })
    }

    /// Waits for the worker to give a buffer back; `None` if it has stopped (a panic in the
    /// encoder must end the stream, not hang the producer: it holds a sender of `free` too).
    fn wait_for_free(&self) -> Option<I420Frame> {
        loop {
            match self
                .free
                .recv_timeout(std::time::Duration::from_millis(100))
            {
                Ok(frame) => return Some(frame),
                Err(mpsc::RecvTimeoutError::Timeout)
                    if self.thread.as_ref().is_some_and(|t| !t.is_finished()) => {}
                Err(_) => return None,
            }
        }
    }

    /// Hands a filled buffer to the worker. `false` if the worker thread has stopped.
    pub fn submit(&self, frame: I420Frame, meta: M) -> bool {
        self.to_worker
            .as_ref()
            .is_some_and(|tx| tx.send((frame, meta)).is_ok())
    }

    /// Returns a buffer without processing it.
    pub fn put_back(&self, frame: I420Frame) {
        // Cannot fail: `free` is ours.
        let _ = self.give_back.send(frame);
    }

    /// Waits until every submitted frame has been processed and the thread has ended.
    pub fn finish(self) {
        drop(self);
    }
}

impl<M> Drop for Worker<M> {
    /// Same as [`Worker::finish`]: frames already submitted are still processed.
    fn drop(&mut self) {
        self.to_worker = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn frames_are_processed_in_order_and_buffers_reused() {
        let size = Size {
            width: 16,
            height: 16,
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let worker = Worker::spawn("test-worker", move |frame: &I420Frame, n: u64| {
            // The first luma byte carries the frame number drawn by the producer.
            assert_eq!(frame.as_bytes()[0], n as u8);
            log.lock().unwrap().push(n);
        })
        .unwrap();
        for n in 0..50u64 {
            let mut f = worker.take(size).unwrap();
            f.planes_mut().0[0] = n as u8;
            if n == 7 {
                worker.put_back(f);
                continue;
            }
            assert!(worker.submit(f, n));
        }
        worker.finish();
        let want: Vec<u64> = (0..50).filter(|n| *n != 7).collect();
        assert_eq!(*seen.lock().unwrap(), want);
    }

    #[test]
    fn a_worker_that_dies_does_not_hang_the_producer() {
        let size = Size {
            width: 16,
            height: 16,
        };
        let (done_tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let worker = Worker::spawn("test-worker", |_: &I420Frame, _: u64| {
                // Dies holding the first buffer, after the second one is queued.
                std::thread::sleep(std::time::Duration::from_millis(50));
                panic!("encoder failure (expected by the test)");
            })
            .unwrap();
            for n in 0..2 {
                let f = worker.take(size).unwrap();
                assert!(worker.submit(f, n));
            }
            // Both buffers are with the dead worker: this must give up, not wait for ever.
            let _ = done_tx.send(worker.take(size).is_none());
        });
        let gave_up = done.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(gave_up, Ok(true), "the producer learns the worker is gone");
    }

    #[test]
    fn a_new_size_gets_a_new_buffer() {
        let small = Size {
            width: 16,
            height: 16,
        };
        let big = Size {
            width: 32,
            height: 16,
        };
        let worker = Worker::spawn("test-worker", |_: &I420Frame, _: ()| {}).unwrap();
        let first = worker.take(small).unwrap();
        worker.put_back(first);
        // The free buffer is the old size: a new one instead.
        assert_eq!(worker.take(big).unwrap().size(), big);
    }
}
