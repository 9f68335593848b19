//! # whepcast
//!
//! Broadcast a screen, or frames a program generates, to any number of web browsers in real
//! time. Frames are encoded to H.264 **once** and sent to every viewer over WebRTC; viewers
//! connect with WHEP (an HTTP POST of an SDP offer).
//!
//! The modules follow the data path, one stage each:
//!
//! ```text
//! source ──► encode ──► broadcast (packetize once, fan out) ──► rtc + whep (per viewer) ──► http
//! ```
//!
//! * [`source`]: makes raw I420 pictures (the test pattern, ...).
//! * [`encode`]: OpenH264 configured for live video.
//! * [`broadcast`]: the paced pipeline thread and the fan-out channel.
//! * [`rtc`]: one peer connection per viewer, answering a WHEP offer.
//! * [`whep`]: viewer sessions: create, send, supervise, close.
//! * [`http`]: the axum routes, the viewer page and the JSON API.
//! * [`server`]: wires the stages together for `whepcast serve`.
//! * [`Broadcaster`]: the whole server behind one handle, for programs that draw frames.
//! * [`check`]: `whepcast encode`, the CI encode check (encode, write, decode back, judge).

pub mod broadcast;
mod broadcaster;
pub mod check;
pub mod config;
pub mod encode;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod metrics;
pub mod rtc;
pub mod server;
pub mod source;
pub mod whep;

pub use broadcaster::{Broadcaster, BroadcasterBuilder};
