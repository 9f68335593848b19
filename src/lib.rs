//! # whepcast
//!
//! Broadcast a screen, or frames a program generates, to any number of web browsers in real
//! time. Frames are encoded to H.264 **once** and sent to every viewer over WebRTC; viewers
//! connect with WHEP (an HTTP POST of an SDP offer).
//!
//! ## Layout
//!
//! The modules follow the data path, one stage each, and depend only on stages to their
//! left (`http` and `server` sit on top of all of them):
//!
//! ```text
//! frame ◄── source ◄── pipeline ──► fanout ◄── whep ──► rtc
//!   ▲         encode ◄──┘                                 
//!   └─────────────────────────────  http, server on top
//! ```
//!
//! * [`frame`]: one picture in I420, conversion from RGBA/BGRA/I420, the canvas that
//!   remembers what changed.
//! * [`source`]: what makes pictures (the test pattern, a screen, files, pushed frames).
//! * [`encode`]: OpenH264 configured for live video, on its own thread.
//! * [`pipeline`]: the paced thread per stream: draw, encode once, packetize once, keyframe
//!   policy, counters and health.
//! * [`fanout`]: encoded frames to every viewer; the per-viewer send (SSRC, payload type,
//!   sequence numbers).
//! * [`whep`]: viewer sessions (draft-ietf-wish-whep): create, PATCH, DELETE, supervise.
//! * [`rtc`]: one peer connection per viewer: offer inspection, answer, ICE.
//! * [`http`]: the axum routes, the viewer page and the JSON API; errors become responses.
//! * [`server`]: wires the stages together for `whepcast serve`.
//! * [`shutdown`]: every task a server starts, told to stop and waited for in one place.
//! * [`Broadcaster`]: the whole server behind one handle, for programs that draw frames.
//! * [`check`]: `whepcast encode`, the CI encode check (encode, write, decode back, judge).

pub mod check;
pub mod config;
pub mod encode;
pub mod fanout;
pub mod frame;
/// Fuzz entry points: every parser network input reaches, for `cargo fuzz` (`fuzz/`) and the
/// bounded runs in the normal tests.
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod rtc;
pub mod server;
pub mod shutdown;
pub mod source;
pub mod whep;

mod broadcaster;

pub use broadcaster::{Broadcaster, BroadcasterBuilder};
