//! A program that draws its own frames and serves them to browsers.
//!
//!     cargo run --release --example canvas             # then open the printed URL
//!     cargo run --example canvas -- 127.0.0.1:0 300    # any port, stop after 300 frames
//!
//! It draws a sky gradient once; each frame it redraws only what moves over it (a bouncing
//! ball, and a row of squares whose brightness counts the frames in binary) and pushes the
//! picture with the rectangles it redrew. whepcast converts just those, encodes once and
//! sends to every viewer.

use std::time::{Duration, Instant};
use whepcast::config::Size;
use whepcast::frame::{Pixels, Rect};
use whepcast::Broadcaster;

const W: usize = 640;
const H: usize = 360;

/// The sky, drawn once: frames only redraw what moves over it.
fn sky() -> Vec<u8> {
    let mut rgba = vec![0u8; W * H * 4];
    for (y, row) in rgba.chunks_exact_mut(W * 4).enumerate() {
        let g = (y * 255 / H) as u8;
        for px in row.chunks_exact_mut(4) {
            px.copy_from_slice(&[
                20,
                60u8.saturating_add(g / 3),
                120u8.saturating_add(g / 2),
                255,
            ]);
        }
    }
    rgba
}

const R: i32 = 40;

/// The box around the ball in frame `n`.
fn ball(n: u64) -> Rect {
    let t = n as f32 / 30.0;
    let x = (W as f32 / 2.0 + (t * 1.3).sin() * 240.0) as i32 - R;
    let y = (H as f32 / 2.0 + (t * 2.1).cos() * 120.0) as i32 - R;
    Rect::new(x.max(0) as u32, y.max(0) as u32, 2 * R as u32, 2 * R as u32)
}

/// The row of squares along the bottom.
const COUNTER: Rect = Rect::new(16, H as u32 - 30, 16 * 38, 24);

/// Draws frame `n` over frame `n - 1` and returns what changed: the ball's old and new
/// boxes and the counter.
fn draw(rgba: &mut [u8], sky: &[u8], n: u64) -> [Rect; 3] {
    let (old, new) = (ball(n.saturating_sub(1)), ball(n));
    let rows = |r: Rect| (r.y as usize..(r.y + r.height) as usize).filter(|&y| y < H);
    let span = |r: Rect, y: usize| {
        (y * W + r.x as usize) * 4..(y * W + (r.x + r.width) as usize).min(y * W + W) * 4
    };
    for y in rows(old) {
        rgba[span(old, y)].copy_from_slice(&sky[span(old, y)]);
    }
    let (cx, cy) = (
        (new.x + new.width / 2) as i32,
        (new.y + new.height / 2) as i32,
    );
    for y in rows(new) {
        for x in new.x as usize..((new.x + new.width) as usize).min(W) {
            let (dx, dy) = (x as i32 - cx, y as i32 - cy);
            if dx * dx + dy * dy < R * R {
                rgba[(y * W + x) * 4..(y * W + x) * 4 + 3].copy_from_slice(&[250, 200, 40]);
            }
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
    [old, new, COUNTER]
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

    let sky = sky();
    let mut rgba = sky.clone();
    let start = Instant::now();
    let mut n = 0u64;
    while frames.is_none_or(|f| n < f) {
        let changed = draw(&mut rgba, &sky, n);
        let pixels = Pixels::Rgba {
            data: &rgba,
            stride: W * 4,
        };
        // The first picture is all new; after that only what moved is converted and sent
        // to the encoder.
        if n == 0 {
            caster.push_frame(pixels)?;
        } else {
            caster.push_changed(pixels, &changed)?;
        }
        n += 1;
        // Draw at 30 fps, on a schedule that does not drift.
        let next = start + Duration::from_secs_f64(n as f64 / 30.0);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(())
}
