//! Fan-out cost: server CPU and memory with N viewers, side by side with the GStreamer
//! reference broadcaster (`../shared/peers/gst_whep.py`) when it is installed.
//!
//!     scripts/bench.sh fanout            # or: cargo bench --bench fanout -- 0,1,8 10
//!
//! For each N, starts the server as its own process (release build), connects N webrtc-rs
//! viewers that complete ICE/DTLS and count RTP without decoding, waits for every viewer's
//! first packet, then samples the server's CPU time (/proc/PID/stat, all threads) and RSS
//! over a window. Prints a Markdown table. Run inside a loopback-only network namespace.
//!
//! `FANOUT_SOURCE=whip` measures the WHIP relay instead: `serve --source whip` fed by a
//! `whepcast publish` of the same pattern (the publisher's own CPU is not counted: it stands
//! for a browser or OBS on another machine).

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::Viewer;

struct Target {
    child: Child,
    whep: String,
    /// The publisher feeding a relay (`FANOUT_SOURCE=whip`).
    publisher: Option<Child>,
}

fn start(name: &'static str, size: &str, fps: u32, kbps: u32) -> Option<Target> {
    let mut cmd = match name {
        "whepcast" => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_whepcast"));
            // FANOUT_SOURCE=screen measures screen sharing (of the display in DISPLAY).
            let source = std::env::var("FANOUT_SOURCE").unwrap_or_else(|_| "pattern".into());
            c.args(["serve", "--listen", "127.0.0.1:0", "--source", &source]);
            if source == "pattern" || source == "whip" {
                c.args(["--size", size]);
            }
            c.args(["--fps", &fps.to_string(), "--bitrate", &format!("{kbps}k")]);
            c
        }
        _ => {
            let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/peers/gst_whep.py");
            if !script.exists() {
                return None;
            }
            let mut c = Command::new("/usr/bin/python3");
            c.arg(script)
                .args(["--listen", "127.0.0.1:0", "--size", size])
                .args(["--fps", &fps.to_string(), "--bitrate", &kbps.to_string()]);
            c
        }
    };
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut reader = BufReader::new(child.stdout.take()?);
    let mut line = String::new();
    while reader.read_line(&mut line).ok()? > 0 {
        if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            let base = url
                .trim_end_matches('/')
                .trim_end_matches("/whep")
                .to_string();
            let publisher = if std::env::var("FANOUT_SOURCE").is_ok_and(|s| s == "whip") {
                let p = Command::new(env!("CARGO_BIN_EXE_whepcast"))
                    .args(["publish", &format!("{base}/whip"), "--size", size])
                    .args(["--fps", &fps.to_string(), "--bitrate", &format!("{kbps}k")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .ok()?;
                // Publishing before measuring: the relay's frames are the publisher's.
                std::thread::sleep(Duration::from_secs(2));
                Some(p)
            } else {
                None
            };
            return Some(Target {
                child,
                whep: format!("{base}/whep"),
                publisher,
            });
        }
        line.clear();
    }
    let _ = child.kill();
    None
}

/// (CPU seconds used by all threads, RSS in bytes).
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    (ticks / hz, rss_kb * 1024)
}

struct Row {
    target: &'static str,
    viewers: usize,
    cpu: f64,
    rss_mb: f64,
    kbps_min: f64,
    kbps_median: f64,
    lost_pct: f64,
}

async fn measure(name: &'static str, viewers: usize, window: Duration) -> Option<Row> {
    let (size, fps, kbps) = ("1280x720", 30, 2500);
    let mut target = start(name, size, fps, kbps)?;
    let pid = target.child.id();
    let mut clients = Vec::new();
    for _ in 0..viewers {
        clients.push(Viewer::connect_with(&target.whep, false).await);
    }
    for c in clients.iter_mut() {
        c.wait_for("first RTP packet", |d| d.rtp_packets > 0).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before: Vec<_> = clients.iter().map(|c| c.decoded.borrow().clone()).collect();
    let (cpu0, _) = usage(pid);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let (cpu1, rss) = usage(pid);
    let secs = t0.elapsed().as_secs_f64();
    let mut kbps_each = Vec::new();
    let (mut got, mut gaps) = (0u64, 0u64);
    for (c, b) in clients.iter().zip(&before) {
        let a = c.decoded.borrow().clone();
        kbps_each.push((a.rtp_bytes - b.rtp_bytes) as f64 * 8.0 / 1000.0 / secs);
        got += a.rtp_packets - b.rtp_packets;
        gaps += a.rtp_gaps - b.rtp_gaps;
    }
    kbps_each.sort_by(|a, b| a.total_cmp(b));
    for c in &clients {
        c.close().await;
    }
    if let Some(mut p) = target.publisher.take() {
        // SAFETY: kill(2) on the child we started and have not waited for yet.
        unsafe { libc::kill(p.id() as i32, libc::SIGTERM) };
        let _ = tokio::task::spawn_blocking(move || p.wait()).await;
    }
    // SAFETY: kill(2) on the child we started and have not waited for yet.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = tokio::task::spawn_blocking(move || target.child.wait()).await;
    Some(Row {
        target: name,
        viewers,
        cpu: (cpu1 - cpu0) / secs * 100.0,
        rss_mb: rss as f64 / 1048576.0,
        kbps_min: kbps_each.first().copied().unwrap_or(0.0),
        kbps_median: kbps_each.get(kbps_each.len() / 2).copied().unwrap_or(0.0),
        lost_pct: if got + gaps > 0 {
            gaps as f64 * 100.0 / (got + gaps) as f64
        } else {
            0.0
        },
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let counts: Vec<usize> = args
        .first()
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![0, 1, 8]);
    let window = Duration::from_secs(args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10));
    println!(
        "fan-out at 1280x720, 30 fps, 2500 kbps; {}-s window; {} cores",
        window.as_secs(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| server | viewers | CPU % of one core | RSS MB | per-viewer kbps (min / median) | RTP loss % |");
    println!("|---|---|---|---|---|---|");
    for &n in &counts {
        // The reference has no screen source, and FANOUT_ONLY_WHEPCAST=1 skips it (e.g. at
        // counts where it would need more than the machine's cores).
        let only_ours = std::env::var("FANOUT_SOURCE").is_ok_and(|s| s != "pattern")
            || std::env::var("FANOUT_ONLY_WHEPCAST").is_ok_and(|v| v == "1");
        for name in ["whepcast", "gst-webrtcbin"] {
            if only_ours && name != "whepcast" {
                continue;
            }
            match measure(name, n, window).await {
                Some(r) => println!(
                    "| {} | {} | {:.1} | {:.1} | {:.0} / {:.0} | {:.2} |",
                    r.target, r.viewers, r.cpu, r.rss_mb, r.kbps_min, r.kbps_median, r.lost_pct
                ),
                None => println!("| {name} | {n} | not available | | | |"),
            }
        }
    }
}
