//! whepcast's integration tests: one test binary (builds of webrtc + openh264 are slow),
//! one module per concern. Every test runs a real server and real WebRTC peers on loopback.

mod access;
mod datachannel;
mod encode;
mod fanout;
mod hostile;
mod ice;
mod ingest;
mod lifecycle;
mod limits;
mod sources;
mod support;
mod whep;
mod whip;
