//! Encoder throughput: bare OpenH264 vs whepcast's pipeline work on the same frames.
//!
//! `cargo bench --bench encoder` prints, per size and content, frames per second for
//!
//! * bare: `openh264` encoding pre-drawn I420 frames (nothing else);
//! * pipeline: what the pipeline thread does per frame — draw the frame into the reused
//!   buffer, encode with whepcast's configuration, packetize into RTP.
//!
//! Both encode the same pictures with the same encoder settings, in one run.

use std::time::{Duration, Instant, SystemTime};
use whepcast::broadcast::Packetizer;
use whepcast::config::{Bitrate, EncodeSettings, Size};
use whepcast::encode::Encoder;
use whepcast::source::{FrameInfo, I420Frame, Pattern, Source};

fn info(number: u64) -> FrameInfo {
    FrameInfo {
        number,
        wall: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_000_000_000 + number * 33),
    }
}

fn bench(size: Size, frames: u64) -> (f64, f64) {
    let settings = EncodeSettings {
        size,
        fps: 30,
        bitrate: Bitrate(2_500_000),
        keyint: 2.0,
    };
    let mut pattern = Pattern::new(size);
    let pre: Vec<I420Frame> = (0..frames)
        .map(|n| {
            let mut f = I420Frame::new(size);
            pattern.fill(&mut f, info(n)).unwrap();
            f
        })
        .collect();

    // Alternate the two, three rounds each, and keep each one's best: the machine is shared
    // and noisy, and the best run is the one least disturbed.
    let (mut bare, mut pipeline) = (0f64, 0f64);
    for _ in 0..3 {
        let mut enc = Encoder::new(settings).unwrap();
        let t = Instant::now();
        for f in &pre {
            enc.encode(f).unwrap();
        }
        bare = bare.max(frames as f64 / t.elapsed().as_secs_f64());

        let mut enc = Encoder::new(settings).unwrap();
        let mut pattern = Pattern::new(size);
        let mut frame = I420Frame::new(size);
        let mut packetizer = Packetizer::default();
        let t = Instant::now();
        for n in 0..frames {
            pattern.fill(&mut frame, info(n)).unwrap();
            let out = enc.encode(&frame).unwrap();
            packetizer.packetize(out.annexb, n as u32 * 3000);
        }
        pipeline = pipeline.max(frames as f64 / t.elapsed().as_secs_f64());
    }
    (bare, pipeline)
}

fn main() {
    println!("| content | size | bare openh264 fps | whepcast pipeline fps | ratio |");
    println!("|---|---|---|---|---|");
    for (size, frames) in [("1280x720", 300), ("1920x1080", 200)] {
        let size: Size = size.parse().unwrap();
        let (bare, pipeline) = bench(size, frames);
        println!(
            "| pattern | {size} | {bare:.0} | {pipeline:.0} | {:.2} |",
            pipeline / bare
        );
    }
}
