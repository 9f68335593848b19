//! Screen capture cost: time to grab one frame of the X display in `DISPLAY` with `scrap`,
//! and to convert it to I420, per frame, over 300 frames; then what whepcast's `screen`
//! source costs per frame while the screen is still, while someone types (a glyph and the
//! pointer change per frame), and while a 800x600 window is redrawn every frame.
//!
//!     scripts/bench.sh capture     # starts a 1920x1080 Xvfb showing a busy picture

use std::time::{Duration, Instant, SystemTime};
use whepcast::config::Size;
use whepcast::frame::{ByteOrder, I420Frame};
use whepcast::source::{FrameInfo, OpenOptions, SourceSpec};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ChangeGCAux, ConnectionExt as _, CreateGCAux, Rectangle};

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
    sources();
}

/// Per-frame cost of whepcast's screen source while an X client draws `draw(n)` rectangles
/// before frame `n` (in one colour that changes per frame).
fn source_cost(name: &str, draw: &dyn Fn(u64) -> Vec<Rectangle>) {
    let (conn, screen) = x11rb::connect(None).expect("X display");
    let root = conn.setup().roots[screen].root;
    let gc = conn.generate_id().unwrap();
    conn.create_gc(gc, root, &CreateGCAux::new()).unwrap();
    let mut source = whepcast::source::open(
        &SourceSpec::Screen(None),
        OpenOptions::default(),
        &Default::default(),
    )
    .unwrap();
    let mut frame = I420Frame::new(source.size());
    let (n, mut spent, mut new) = (300u64, Duration::ZERO, 0u32);
    for i in 0..n + 2 {
        let rects = draw(i);
        if !rects.is_empty() {
            let colour = (i as u32).wrapping_mul(0x9e37_79b9) & 0xff_ffff;
            conn.change_gc(gc, &ChangeGCAux::new().foreground(colour))
                .unwrap();
            conn.poly_fill_rectangle(root, gc, &rects).unwrap();
        }
        conn.get_input_focus().unwrap().reply().unwrap();
        let info = FrameInfo {
            number: i,
            wall: SystemTime::now(),
        };
        let t = Instant::now();
        let fill = source.fill(&mut frame, info).unwrap();
        // The first two grabs are whole ones (a new capture): not what steady state costs.
        if i >= 2 {
            spent += t.elapsed();
            new += u32::from(fill == whepcast::source::Fill::New);
        }
    }
    println!(
        "| {name} | {:.3} | {new} of {n} |",
        spent.as_secs_f64() * 1000.0 / n as f64
    );
}

fn sources() {
    println!();
    println!("| whepcast `screen` source, screen | ms/frame | frames that were new |");
    println!("|---|---|---|");
    source_cost("still", &|_| Vec::new());
    source_cost("typing (an 8x16 glyph and the pointer move)", &|n| {
        let x = 100 + (n as i16 % 150) * 8;
        vec![
            Rectangle {
                x,
                y: 500,
                width: 8,
                height: 16,
            },
            Rectangle {
                x: (n as i16 * 7) % 1900,
                y: (n as i16 * 3) % 1060,
                width: 12,
                height: 18,
            },
        ]
    });
    source_cost("a 800x600 window redrawn", &|_| {
        vec![Rectangle {
            x: 300,
            y: 200,
            width: 800,
            height: 600,
        }]
    });
}
