//! Screen capture cost: time to grab one frame of the X display in `DISPLAY` with `scrap`,
//! and to convert it to I420, per frame, over 300 frames.
//!
//!     scripts/bench.sh capture     # starts a 1920x1080 Xvfb showing a busy picture

use std::time::{Duration, Instant};
use whepcast::config::Size;
use whepcast::source::{ByteOrder, I420Frame};

fn main() {
    let display = match scrap::Display::primary() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("no X display ({e}); set DISPLAY");
            std::process::exit(2);
        }
    };
    let (w, h) = (display.width(), display.height());
    let mut capturer = scrap::Capturer::new(display).expect("capturer");
    let size = Size::new(w as u32 & !1, h as u32 & !1).expect("size");
    let mut frame = I420Frame::new(size);
    let (mut grab, mut convert) = (Duration::ZERO, Duration::ZERO);
    let n = 300u32;
    for _ in 0..n {
        let t = Instant::now();
        let bgra = capturer.frame().expect("frame");
        let t1 = Instant::now();
        frame
            .fill_from_rgba(&bgra, w * 4, ByteOrder::Bgra)
            .expect("convert");
        convert += t1.elapsed();
        grab += t1 - t;
    }
    println!("| display | grab ms/frame | BGRA→I420 ms/frame | total ms/frame |");
    println!("|---|---|---|---|");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0 / n as f64;
    println!(
        "| {w}x{h} | {:.2} | {:.2} | {:.2} |",
        ms(grab),
        ms(convert),
        ms(grab + convert)
    );
}
