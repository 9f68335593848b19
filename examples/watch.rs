//! A WHEP viewer on the command line, built on webrtc-rs and OpenH264 (not a browser): it
//! plays a stream for a while, decoding every frame, and prints one JSON line of what it saw.
//! The browser tests use it as the "Rust viewer" of a stream Chromium publishes.
//!
//!     cargo run --example watch -- http://127.0.0.1:8080/whep [SECONDS]
//!
//! Prints `{"frames", "width", "height", "numbers": [barcode frame numbers read, last 30],
//! "regions": {"centre": [Y, U, V], "top_right": [...], "top_left": [...]}}` (mean YUV of
//! 40x40 regions of the last picture, as decoded: no colour conversion), or exits 1 with a
//! message when no frame arrived.

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use std::time::Duration;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(url) = args.next() else {
        eprintln!("usage: watch WHEP_URL [SECONDS]");
        return std::process::ExitCode::from(2);
    };
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let viewer = support::Viewer::connect(&url).await;
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let d = viewer.decoded.borrow().clone();
    viewer.close().await;
    let Some(p) = d.last.as_ref() else {
        eprintln!("no frame decoded in {seconds} s: {d:?}");
        return std::process::ExitCode::FAILURE;
    };
    let (w, h) = (p.width, p.height);
    let region = |x: usize, y: usize| {
        let m = p.mean(x.min(w - 40), y.min(h - 40), 40, 40);
        m.map(|v| (v * 10.0).round() / 10.0)
    };
    let tail = d.numbers.len().saturating_sub(30);
    let out = serde_json::json!({
        "frames": d.frames,
        "width": w,
        "height": h,
        "numbers": &d.numbers[tail..],
        "regions": {
            "centre": region(w / 2 - 20, h / 2 - 20),
            "top_right": region(w - 40, 0),
            "top_left": region(0, 0),
        },
    });
    println!("{out}");
    std::process::ExitCode::SUCCESS
}
