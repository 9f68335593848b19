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
//!   ▲         encode ◄──┘              ▲                  ▲
//!   │                                  └──── whip ────────┘
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
//! * [`whip`]: publishing the stream to a WHIP endpoint (RFC 9725): a media server or CDN
//!   that fans it out further; the publisher is one more receiver of the fan-out.
//! * [`rtc`]: one peer connection per viewer (or per publishing session): offer
//!   inspection, answer or offer, ICE, congestion control.
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
pub mod relay;
pub mod rtc;
pub mod server;
pub mod shutdown;
pub mod source;
pub mod whep;
pub mod whip;

mod broadcaster;

pub use broadcaster::{Broadcaster, BroadcasterBuilder};

/// Makes jemalloc the program's allocator, for Rust and C/C++ alike (its `malloc` replaces
/// glibc's, so OpenH264 uses it too), with the server's settings: a background thread returns
/// freed pages to the OS a second after they are freed (viewers come and go; without it an
/// idle server kept their memory; BENCHMARKS.md, one allocator). `MALLOC_CONF` in the
/// environment overrides the settings. Use it once, in a binary (the `whepcast` binary and
/// the encoder bench do, so the bench measures what the server runs).
#[macro_export]
macro_rules! use_jemalloc {
    () => {
        #[global_allocator]
        static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

        /// jemalloc's settings, read when it starts.
        #[export_name = "malloc_conf"]
        static MALLOC_CONF: MallocConf =
            MallocConf(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

        /// A C string pointer jemalloc can read as `const char *malloc_conf`.
        #[repr(transparent)]
        struct MallocConf(*const std::ffi::c_char);
        // SAFETY: it points at a constant string that nothing writes.
        unsafe impl Sync for MallocConf {}
    };
}
