//! Every kind of source reaches a real viewer: an X11 screen (Xvfb), a still image, YUV4MPEG2
//! from a pipe, several named streams at once, and frames pushed by a program.

use crate::support::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use whepcast::config::Size;
use whepcast::frame::{ByteOrder, I420Frame};
use whepcast::server::StreamConfig;
use whepcast::source::{FrameInfo, OpenOptions, Pattern, Source, SourceSpec};

/// A private X server.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start(display_number: u32, width: u32, height: u32) -> Xvfb {
        Self::start_with(display_number, width, height, &[])
    }

    /// With extra Xvfb arguments (e.g. `-extension DAMAGE` to leave one out).
    fn start_with(display_number: u32, width: u32, height: u32, extra: &[&str]) -> Xvfb {
        let display = format!(":{display_number}");
        let socket = PathBuf::from(format!("/tmp/.X11-unix/X{display_number}"));
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_file(format!("/tmp/.X{display_number}-lock"));
        // -noreset: otherwise the server resets (root back to black) whenever its last
        // client, such as xsetroot, disconnects.
        let geometry = format!("{width}x{height}x24");
        let child = Command::new("Xvfb")
            .args([
                &display,
                "-screen",
                "0",
                &geometry,
                "-nolisten",
                "tcp",
                "-noreset",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb is installed (scripts/setup-test.sh installs it)");
        for _ in 0..100 {
            if socket.exists() && xsetroot_status(&display, "#000000") {
                return Xvfb { child, display };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        panic!("Xvfb {display} did not come up");
    }

    fn fill(&self, colour: &str) {
        assert!(xsetroot_status(&self.display, colour), "xsetroot {colour}");
    }
}

fn xsetroot_status(display: &str, colour: &str) -> bool {
    Command::new("xsetroot")
        .args(["-display", display, "-solid", colour])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const RED: [u8; 3] = [255, 0, 0];
const BLUE: [u8; 3] = [0, 0, 255];
const GREEN: [u8; 3] = [0, 255, 0];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screen_capture_follows_the_display_through_changes_loss_and_a_new_size() {
    let n = 40 + std::process::id() % 50;
    let x = Xvfb::start(n, 640, 480);
    x.fill("#ff0000");
    let (server, base) = spawn_serve(
        &["--source", "screen", "--fps", "15"],
        &[("DISPLAY", &x.display)],
        Stdio::null(),
    );
    let mut viewer = Viewer::connect(&format!("{base}/whep")).await;

    let centre = |d: &Decoded| {
        let p = d.last.as_ref().unwrap();
        p.mean(p.width / 2 - 40, p.height / 2 - 40, 80, 80)
    };
    let d = viewer
        .wait_for("the red screen", |d| {
            d.last.is_some() && close(centre(d), yuv_of(RED), 12.0)
        })
        .await;
    assert_eq!(d.size, Some((640, 480)), "decoded size is the display's");

    // Changing what the display shows changes what the viewer decodes.
    x.fill("#0000ff");
    viewer
        .wait_for("the blue screen", |d| close(centre(d), yuv_of(BLUE), 12.0))
        .await;

    // The X server goes away: viewers get the "source lost" picture (flat grey, Y = 60).
    let display = x.display.clone();
    drop(x);
    viewer
        .wait_for("the source-lost picture", |d| {
            let p = d.last.as_ref().unwrap();
            close(p.mean(0, 0, 100, 100), [60.0, 128.0, 128.0], 8.0)
        })
        .await;

    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 503, "a lost display is unhealthy");
    assert!(health.text().await.unwrap().contains("X display"));

    // It comes back at another size: capture resumes by itself, at the new size.
    let x = Xvfb::start(n, 800, 600);
    assert_eq!(x.display, display);
    x.fill("#00ff00");
    let d = viewer
        .wait_for("the green screen at 800x600", |d| {
            d.size == Some((800, 600)) && close(centre(d), yuv_of(GREEN), 12.0)
        })
        .await;
    assert_eq!(d.size, Some((800, 600)));
    let healthy = eventually(Duration::from_secs(3), || async {
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    assert!(healthy, "healthy again once capture resumed");
    viewer.close().await;
    stop(server);
}

/// Fills a rectangle of the root window with an 0xRRGGBB colour, as any X client drawing
/// would; returns once the server has done it.
fn draw_on_root(display: &str, x: i16, y: i16, width: u16, height: u16, rgb: u32) {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{ConnectionExt as _, CreateGCAux, Rectangle};
    let (conn, screen) = x11rb::connect(Some(display)).expect("connect to Xvfb");
    let root = conn.setup().roots[screen].root;
    let gc = conn.generate_id().unwrap();
    conn.create_gc(gc, root, &CreateGCAux::new().foreground(rgb))
        .unwrap();
    let rect = Rectangle {
        x,
        y,
        width,
        height,
    };
    conn.poly_fill_rectangle(root, gc, &[rect]).unwrap();
    conn.get_input_focus()
        .unwrap()
        .reply()
        .expect("X server answers");
}

async fn frames_in(base: &str) -> u64 {
    api_at(base).await["streams"][0]["frames_in"]
        .as_u64()
        .unwrap()
}

/// Pixels the screen source grabbed so far, by kind (`changed`, `whole`, `check`).
async fn grabbed(base: &str, how: &str) -> u64 {
    metric(
        base,
        &format!("whepcast_screen_grabbed_pixels_total{{grab=\"{how}\"}}"),
    )
    .await as u64
}

/// Where the tests draw, and what a viewer must see there.
const DRAWN: (i16, i16, u16, u16) = (100, 80, 200, 150);

/// Whether the decoded picture shows the blue rectangle drawn at [`DRAWN`].
fn shows_blue(d: &Decoded) -> bool {
    let p = d.last.as_ref().unwrap();
    close(p.mean(180, 135, 40, 40), yuv_of(BLUE), 12.0)
}

/// `serve --source screen` at 30 fps of a red Xvfb `x`, and a viewer that sees the red.
async fn serve_red_screen(x: &Xvfb) -> (Running, String, Viewer) {
    x.fill("#ff0000");
    let (server, base) = spawn_serve(
        &["--source", "screen", "--fps", "30"],
        &[("DISPLAY", &x.display)],
        Stdio::null(),
    );
    let mut viewer = Viewer::connect(&format!("{base}/whep")).await;
    viewer
        .wait_for("the red screen", |d| {
            d.last
                .as_ref()
                .is_some_and(|p| close(p.mean(300, 220, 40, 40), yuv_of(RED), 12.0))
        })
        .await;
    (server, base, viewer)
}

/// Draws the blue rectangle at [`DRAWN`] and waits for the viewer to show it.
async fn draw_blue_and_see_it(x: &Xvfb, viewer: &mut Viewer) -> Decoded {
    let (rx, ry, rw, rh) = DRAWN;
    draw_on_root(&x.display, rx, ry, rw, rh, 0x0000ff);
    viewer.wait_for("the blue rectangle", shows_blue).await
}

/// Capture follows the X server's damage reports: a still screen is not grabbed at all, and
/// when a client draws, what it drew reaches the viewer with the rest of the picture intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_still_screen_is_not_grabbed_and_a_drawing_on_it_is_seen() {
    let x = Xvfb::start(40 + (std::process::id() + 25) % 50, 640, 480);
    let (server, base, mut viewer) = serve_red_screen(&x).await;

    // Nothing is drawn for 1.5 s: at 30 fps that was 45 grabs; now none (the first two
    // after the start are whole grabs, taken before this window).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = frames_in(&base).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = frames_in(&base).await - before;
    assert!(
        still <= 2,
        "{still} frames grabbed from a screen nobody drew on"
    );

    // A client draws a blue rectangle: it shows, and the red around it stays ...
    let d = draw_blue_and_see_it(&x, &mut viewer).await;
    let shown = |d: &Decoded| {
        let p = d.last.as_ref().unwrap();
        let red = [(50, 50), (500, 300), (200, 400), (350, 150)]
            .iter()
            .all(|&(cx, cy)| close(p.mean(cx - 10, cy - 10, 20, 20), yuv_of(RED), 12.0));
        shows_blue(d) && red
    };
    assert!(shown(&d), "red kept around the blue rectangle");
    // ... and stays so in every later frame: both encoder buffers got the rectangle.
    let seen = d.frames;
    let d = viewer
        .wait_for("three more frames", |d| d.frames >= seen + 3)
        .await;
    assert!(
        shown(&d),
        "a later frame lost the rectangle or the red around it"
    );
    let drawn = frames_in(&base).await - before - still;
    assert_eq!(drawn, 1, "grabs for one drawing");
    // Only the drawn rectangle was grabbed, never the whole screen again.
    let changed = grabbed(&base, "changed").await;
    assert_eq!(
        grabbed(&base, "whole").await,
        2 * 640 * 480,
        "whole grabs: the first two only"
    );
    let (w, h) = (u64::from(DRAWN.2), u64::from(DRAWN.3));
    assert!(
        (w * h..=(w + 2) * (h + 2)).contains(&changed),
        "{changed} pixels grabbed for a {w}x{h} drawing"
    );
    viewer.close().await;
    stop(server);
}

/// An X server without DAMAGE: the screen is grabbed whole every frame, and still shows
/// what is drawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_damage_reports_every_frame_is_grabbed_whole() {
    let x = Xvfb::start_with(
        40 + (std::process::id() + 12) % 50,
        640,
        480,
        &["-extension", "DAMAGE"],
    );
    let (server, base, mut viewer) = serve_red_screen(&x).await;
    let before = frames_in(&base).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let grabbed_frames = frames_in(&base).await - before;
    assert!(
        grabbed_frames >= 15,
        "{grabbed_frames} grabs in 1 s at 30 fps without damage reports"
    );
    draw_blue_and_see_it(&x, &mut viewer).await;
    assert_eq!(
        grabbed(&base, "changed").await,
        0,
        "nothing grabbed in part without damage reports"
    );
    viewer.close().await;
    stop(server);
}

/// A smooth synthetic picture: gradients and a few flat shapes.
fn write_test_image(path: &Path, w: u32, h: u32) -> image::RgbaImage {
    let img = image::RgbaImage::from_fn(w, h, |x, y| {
        let inside = (x as i32 - 200).pow(2) + (y as i32 - 150).pow(2) < 60 * 60;
        if inside {
            image::Rgba([230, 40, 40, 255])
        } else if (400..560).contains(&x) && (60..200).contains(&y) {
            image::Rgba([30, 200, 90, 255])
        } else {
            image::Rgba([(x * 255 / w) as u8, (y * 255 / h) as u8, 128, 255])
        }
    });
    img.save(path).unwrap();
    img
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_source_matches_the_picture() {
    let dir = tempdir();
    let path = dir.join("still.png");
    let img = write_test_image(&path, 640, 360);
    let mut reference = I420Frame::new(Size::new(640, 360).unwrap());
    reference
        .fill_from_rgba(img.as_raw(), 640 * 4, ByteOrder::Rgba)
        .unwrap();

    let server = TestServer::with_streams(vec![StreamConfig::from_spec(
        "main",
        SourceSpec::Image(path.clone()),
        OpenOptions::default(),
        settings(Size::new(640, 360).unwrap(), 30, 2.0),
    )])
    .await;
    let mut viewer = Viewer::connect(&server.url("/whep")).await;
    // A still image is re-encoded only for keyframes and a heartbeat: the first frame (the
    // joiner's IDR) comes at once, the next about a second later.
    let d = viewer.wait_for("two frames", |d| d.frames >= 2).await;
    let picture = d.last.unwrap();
    assert_eq!((picture.width, picture.height), (640, 360));
    let psnr = picture.psnr_y(reference.planes().0);
    // Smooth gradients and flat shapes at 1.5 Mbit/s: OpenH264 lands well above 40 dB here;
    // 35 dB fails on a wrong scale, offset, colour matrix or a broken frame (those score < 20).
    assert!(psnr > 35.0, "PSNR-Y {psnr:.1} dB");
    eprintln!("image source PSNR-Y: {psnr:.1} dB");
    let api = server.api().await;
    assert!(
        api["streams"][0]["frames_encoded"].as_u64().unwrap() < 10,
        "a still is not re-encoded every tick: {api}"
    );
    viewer.close().await;
    server.stop().await;
}

/// A unique empty directory under the target dir.
fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "whepcast-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(1);
    h.finish()
}

/// Writes `frames` pattern frames (barcode = frame number) as YUV4MPEG2, then closes.
fn write_y4m(mut stdin: std::process::ChildStdin, size: Size, frames: u64) {
    let mut out = y4m::encode(
        size.width as usize,
        size.height as usize,
        y4m::Ratio::new(30, 1),
    )
    .with_colorspace(y4m::Colorspace::C420jpeg)
    .write_header(&mut stdin)
    .unwrap();
    let mut pattern = Pattern::new(size);
    let mut frame = I420Frame::new(size);
    for n in 0..frames {
        let info = FrameInfo {
            number: n,
            wall: std::time::SystemTime::now(),
        };
        pattern.fill(&mut frame, info).unwrap();
        let (y, u, v) = frame.planes();
        out.write_frame(&y4m::Frame::new([y, u, v], None)).unwrap();
    }
    stdin.flush().unwrap();
    // Dropping stdin closes the pipe: end of input.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn y4m_from_a_pipe_round_trips_and_its_end_ends_the_stream() {
    const FRAMES: u64 = 90;
    let size = Size::new(320, 240).unwrap();
    let mut writer = None;
    let (server, base) =
        spawn_serve_feeding(&["--source", "y4m:-"], &[], Stdio::piped(), |child| {
            let stdin = child.stdin.take().unwrap();
            writer = Some(std::thread::spawn(move || write_y4m(stdin, size, FRAMES)));
        });
    let writer = writer.unwrap();

    let mut viewer = Viewer::connect(&format!("{base}/whep")).await;
    let d = viewer
        .wait_for("frames from the pipe", |d| d.numbers.len() >= 30)
        .await;
    assert_eq!(d.size, Some((320, 240)), "size comes from the y4m header");
    assert!(
        d.numbers.windows(2).all(|w| w[1] > w[0]),
        "in order: {:?}",
        d.numbers
    );
    assert!(
        d.numbers.iter().all(|&n| (n as u64) < FRAMES),
        "{:?}",
        d.numbers
    );
    writer.join().unwrap();

    // End of input: the stream ends, the viewer's session is closed, new viewers hear 410.
    let ended = eventually(Duration::from_secs(10), || {
        let base = base.clone();
        async move { api_at(&base).await["streams"][0]["state"] == "ended" }
    })
    .await;
    assert!(ended, "stream never ended");
    let a = api_at(&base).await;
    assert_eq!(
        a["streams"][0]["frames_in"], FRAMES,
        "every frame read exactly once: {a}"
    );
    let closed = eventually(Duration::from_secs(5), || {
        let base = base.clone();
        async move { api_at(&base).await["sessions"]["active"] == 0 }
    })
    .await;
    assert!(closed, "viewer session not closed at end of stream");
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 503);
    assert!(health.text().await.unwrap().contains("ended"));
    let (_pc, offer_sdp, _) = offer().await;
    let (status, _, body) = post(&format!("{base}/whep"), Some("application/sdp"), offer_sdp).await;
    assert_eq!(status, 410, "{body}");
    assert!(body.contains("ended"), "{body}");
    viewer.close().await;
    stop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_named_streams_each_show_their_own_picture() {
    let dir = tempdir();
    let blue = dir.join("blue.png");
    image::RgbaImage::from_pixel(320, 240, image::Rgba([0, 0, 255, 255]))
        .save(&blue)
        .unwrap();
    let size = Size::new(320, 240).unwrap();
    let server = TestServer::with_streams(vec![
        StreamConfig::from_spec(
            "bars",
            SourceSpec::Pattern,
            OpenOptions {
                size: Some(size),
                pixel_format: None,
            },
            settings(size, 30, 2.0),
        ),
        StreamConfig::from_spec(
            "blue",
            SourceSpec::Image(blue),
            OpenOptions::default(),
            settings(size, 30, 2.0),
        ),
    ])
    .await;
    let mut a = Viewer::connect(&server.url("/whep/bars")).await;
    let mut b = Viewer::connect(&server.url("/whep/blue")).await;
    a.wait_for("pattern frames with numbers", |d| d.numbers.len() >= 10)
        .await;
    let d = b.wait_for("a blue frame", |d| d.last.is_some()).await;
    let p = d.last.unwrap();
    assert!(
        close(p.mean(0, 0, 320, 240), yuv_of([0, 0, 255]), 10.0),
        "stream 'blue' is blue"
    );
    assert!(d.numbers.is_empty(), "stream 'blue' carries no pattern");

    let api = server.api().await;
    let streams = api["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2);
    for s in streams {
        assert_eq!(s["viewers"], 1, "{s}");
    }
    // The plain endpoint is the first stream; the viewer page serves each by name.
    assert_eq!(
        reqwest::get(server.url("/view/blue"))
            .await
            .unwrap()
            .status(),
        200
    );
    a.close().await;
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canvas_example_reaches_a_viewer() {
    // `cargo test` builds the examples next to the test binaries.
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_whepcast"))
        .parent()
        .unwrap()
        .join("examples/canvas");
    assert!(exe.exists(), "{} not built", exe.display());
    let mut child = Running(
        Command::new(&exe)
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let base = read_url(&mut child.0);
    let mut viewer = Viewer::connect(&format!("{base}/whep")).await;
    // The example writes the frame number in binary as 16 squares along the bottom.
    let counter = |p: &Picture| -> u32 {
        (0..16).fold(0, |acc, bit| {
            let on = p.mean(16 + bit * 38 + 8, 360 - 22, 14, 8)[0] > 128.0;
            acc << 1 | on as u32
        })
    };
    let first = viewer.wait_for("a frame", |d| d.last.is_some()).await;
    let start = counter(first.last.as_ref().unwrap());
    let d = viewer
        .wait_for("the counter to advance", |d| {
            counter(d.last.as_ref().unwrap()) >= start + 20
        })
        .await;
    assert_eq!(d.size, Some((640, 360)));
    // The example pushes only what moved: the ball's old box must have been redrawn as sky,
    // or the ball leaves a trail. Yellow (low U) covers one ball, ~1250 chroma samples.
    let yellow = d
        .last
        .as_ref()
        .unwrap()
        .u
        .iter()
        .filter(|&&u| u < 90)
        .count();
    assert!(
        (600..1800).contains(&yellow),
        "{yellow} yellow chroma samples: a trail?"
    );
    viewer.close().await;
    stop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_bgra_frames_from_a_file_reach_a_viewer_in_their_colours() {
    // Two seconds of BGRA frames: orange for the first half, then teal.
    let dir = tempdir();
    let path = dir.join("frames.bgra");
    let (w, h) = (320usize, 240usize);
    let mut data = Vec::with_capacity(w * h * 4 * 60);
    for n in 0..60 {
        let [r, g, b] = if n < 30 {
            [255u8, 140, 0]
        } else {
            [0u8, 128, 128]
        };
        for _ in 0..w * h {
            data.extend_from_slice(&[b, g, r, 255]);
        }
    }
    std::fs::write(&path, &data).unwrap();
    let size = Size::new(w as u32, h as u32).unwrap();
    let server = TestServer::with_streams(vec![StreamConfig::from_spec(
        "main",
        SourceSpec::Raw(Some(path)),
        OpenOptions {
            size: Some(size),
            pixel_format: Some(whepcast::source::PixelFormat::Bgra),
        },
        settings(size, 30, 2.0),
    )])
    .await;
    let mut viewer = Viewer::connect(&server.url("/whep")).await;
    let mean = |d: &Decoded| d.last.as_ref().unwrap().mean(0, 0, w, h);
    // The file is read in real time from the start, so a viewer joining late may see only
    // the second half; either way the last colour must be teal, exactly as written.
    viewer
        .wait_for("teal frames", |d| {
            d.last.is_some() && close(mean(d), yuv_of([0, 128, 128]), 6.0)
        })
        .await;
    let ended = eventually(Duration::from_secs(5), || async {
        server.api().await["streams"][0]["state"] == "ended"
    })
    .await;
    assert!(ended, "end of the file ends the stream");
    assert_eq!(server.api().await["streams"][0]["frames_in"], 60);
    viewer.close().await;
    server.stop().await;
}

/// A stream reading a silent pipe still stops when dropped: its thread is joined (the pipe's
/// read end is closed, so the producer learns the reader is gone), not left blocked behind.
#[test]
fn dropping_a_stream_blocked_on_a_silent_pipe_joins_its_thread() {
    let dir = std::env::temp_dir().join(format!("whepcast-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let path = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
    let spec: SourceSpec = format!("raw:{}", dir.display()).parse().unwrap();
    let size = Size::new(32, 32).unwrap();
    let opts = OpenOptions {
        size: Some(size),
        pixel_format: None,
    };
    // The pipeline thread opens the read end; opening the write end waits for it.
    let writer = std::thread::spawn({
        let dir = dir.clone();
        move || std::fs::OpenOptions::new().write(true).open(dir).unwrap()
    });
    let pipeline = whepcast::pipeline::Pipeline::start(
        "silent",
        "raw",
        Box::new(move |stop| whepcast::source::open(&spec, opts, stop)),
        settings(size, 30, 2.0),
        &whepcast::config::Ladder::Auto,
    )
    .expect("starts");
    let mut writer = writer.join().unwrap();
    // Nothing is written: the source waits for its first frame. A viewer would make it read;
    // a raw source reads even when nobody watches.
    std::thread::sleep(Duration::from_millis(300));
    let t = std::time::Instant::now();
    drop(pipeline);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "drop took {took:?}");
    let wrote = writer.write_all(&[0u8; 64]);
    assert!(
        matches!(&wrote, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe),
        "the pipe still has a reader after the stream was dropped: {wrote:?}"
    );
    let _ = std::fs::remove_file(&dir);
}
