//! Stage: **whip** — WHIP (RFC 9725) both ways. Out: publishing our stream to a WHIP
//! endpoint, the way past one machine (a media server or CDN takes the one stream and fans
//! it out further). In: taking a browser's (or OBS's) stream as a source.
//!
//! * [`client`]: the HTTP exchange (POST the offer, PATCH, DELETE), redirects and errors;
//! * [`link`]: the STUN/TURN servers an endpoint names in `Link` headers;
//! * [`publish`]: a publishing session that lasts: offer, answer, send, restart ICE when the
//!   path fails, publish again when the endpoint comes back, DELETE at the end.
//! * [`ingest`]: the other way: publishers' sessions on our own `/whip` endpoint, feeding a
//!   stream's [`crate::relay`].
//!
//! The publishing peer is one more receiver of the stream's renditions ([`crate::fanout`]),
//! so `serve --publish` sends the very frames local viewers get, encoded once.

pub mod client;
pub mod ingest;
pub mod link;
pub mod publish;

pub use client::{Client, WhipError};
pub use publish::{publish, PublishConfig};
