//! A program that draws its own frames and serves them to browsers.
//!
//!     cargo run --release --example canvas             # then open the printed URL
//!     cargo run --example canvas -- 127.0.0.1:0 300    # any port, stop after 300 frames
//!
//! Each frame it draws a scene into an RGBA buffer — a sky gradient, a bouncing ball, and a
//! row of squares whose brightness counts the frames in binary — and pushes it. whepcast
//! converts, encodes once and sends to every viewer.

use std::time::{Duration, Instant};
use whepcast::config::Size;
use whepcast::source::Pixels;
use whepcast::Broadcaster;

const W: usize = 640;
const H: usize = 360;

fn draw(rgba: &mut [u8], n: u64) {
    let t = n as f32 / 30.0;
    let (bx, by) = (
        (W as f32 / 2.0 + (t * 1.3).sin() * 240.0) as i32,
        (H as f32 / 2.0 + (t * 2.1).cos() * 120.0) as i32,
    );
    for (y, row) in rgba.chunks_exact_mut(W * 4).enumerate() {
        for (x, px) in row.chunks_exact_mut(4).enumerate() {
            let (dx, dy) = (x as i32 - bx, y as i32 - by);
            let colour = if dx * dx + dy * dy < 40 * 40 {
                [250, 200, 40]
            } else {
                let g = (y * 255 / H) as u8;
                [20, 60u8.saturating_add(g / 3), 120u8.saturating_add(g / 2)]
            };
            px.copy_from_slice(&[colour[0], colour[1], colour[2], 255]);
        }
    }
    // 16 squares along the bottom: bit i of the frame number, white for 1.
    for bit in 0..16 {
        let on = (n >> (15 - bit)) & 1 == 1;
        let v = if on { 255 } else { 0 };
        for y in H - 30..H - 6 {
            for x in 16 + bit * 38..16 + bit * 38 + 30 {
                rgba[(y * W + x) * 4..(y * W + x) * 4 + 3].copy_from_slice(&[v, v, v]);
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8080".into())
        .parse()?;
    let frames: Option<u64> = args.next().map(|s| s.parse()).transpose()?;

    let size = Size::new(W as u32, H as u32)?;
    let caster = Broadcaster::builder(size).listen(listen).fps(30).start()?;
    println!("canvas: open {} to watch", caster.url());

    let mut rgba = vec![0u8; W * H * 4];
    let start = Instant::now();
    let mut n = 0u64;
    while frames.is_none_or(|f| n < f) {
        draw(&mut rgba, n);
        caster.push_frame(Pixels::Rgba {
            data: &rgba,
            stride: W * 4,
        })?;
        n += 1;
        // Draw at 30 fps, on a schedule that does not drift.
        let next = start + Duration::from_secs_f64(n as f64 / 30.0);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(())
}
