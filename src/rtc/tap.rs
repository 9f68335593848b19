//! One way to put our own code in a connection's interceptor chain: [`Tap`] wraps an
//! interceptor (one of the crate's, or [`PassThrough`]) and calls [`Hooks`] around it, so
//! each of ours is only what it adds — a look at the packets coming in, a look at the inner
//! interceptor after it worked — and not another copy of the chain's plumbing.

use rtc::interceptor::{Interceptor, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::time::Instant;

/// What a [`Tap`] adds to the interceptor it wraps.
pub trait Hooks<I>: Send + Sync {
    /// Sees (and may change) each packet on its way in, before the inner interceptor does;
    /// `false` drops it.
    fn read(&mut self, _msg: &mut TaggedPacket) -> bool {
        true
    }

    /// Runs after the inner interceptor handled a packet either way or a timeout.
    fn after(&mut self, _inner: &I) {}

    /// Whether the inner interceptor is given a timeout right after each packet written
    /// (a pacer then releases at once what its budget allows, instead of at the driver's
    /// next wake-up, which comes a millisecond or more later for every packet).
    fn timeout_on_write(&self) -> bool {
        false
    }
}

/// An interceptor with [`Hooks`] around it.
pub struct Tap<I, H> {
    pub inner: I,
    pub hooks: H,
}

impl<I: Interceptor, H: Hooks<I>> Protocol<TaggedPacket, TaggedPacket, ()> for Tap<I, H> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if self.hooks.read(&mut msg) {
            self.inner.handle_read(msg)?;
        }
        self.hooks.after(&self.inner);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.inner.poll_read()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        let now = msg.now;
        self.inner.handle_write(msg)?;
        if self.hooks.timeout_on_write() {
            self.inner.handle_timeout(now)?;
        }
        self.hooks.after(&self.inner);
        Ok(())
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.inner.poll_write()
    }
    fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        self.inner.handle_timeout(now)?;
        self.hooks.after(&self.inner);
        Ok(())
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        self.inner.poll_timeout()
    }
}

impl<I: Interceptor, H: Hooks<I>> Interceptor for Tap<I, H> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.inner.bind_local_stream(info)
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.inner.unbind_local_stream(info)
    }
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.inner.bind_remote_stream(info)
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.inner.unbind_remote_stream(info)
    }
}

/// An interceptor that hands every packet on unchanged: what a [`Tap`] that only looks wraps.
#[derive(Default)]
pub struct PassThrough {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for PassThrough {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.read.push_back(msg);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.write.push_back(msg);
        Ok(())
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for PassThrough {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
