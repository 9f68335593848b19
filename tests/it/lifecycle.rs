//! Sessions end when they should: vanished viewers, viewers that never connect, shutdown.

use crate::support::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_and_never_connected_viewers_are_reaped_within_10s() {
    let server = TestServer::start("320x240", 15, 2.0).await;
    let mut watching = Viewer::connect(&server.url("/whep")).await;
    watching.wait_for("frames", |d| d.frames >= 5).await;

    // One viewer goes away without DELETE; another POSTs and never answers ICE.
    let mut gone = Viewer::connect(&server.url("/whep")).await;
    gone.wait_for("frames", |d| d.frames >= 5).await;
    let (silent_pc, offer_sdp, _) = offer().await;
    let (status, _, _) = post(&server.url("/whep"), Some("application/sdp"), offer_sdp).await;
    assert_eq!(status, 201);
    silent_pc.close().await.ok();
    assert_eq!(server.active_sessions().await, 3);

    let t = Instant::now();
    gone.close().await;
    let reaped = eventually(Duration::from_secs(12), || async {
        server.active_sessions().await == 1
    })
    .await;
    assert!(reaped, "sessions left: {}", server.active_sessions().await);
    assert!(
        t.elapsed() <= Duration::from_secs(11),
        "took {:?}",
        t.elapsed()
    );

    // The viewer that stayed is unaffected.
    watching
        .wait_for_more("more frames", |d| d.frames as usize, 10)
        .await;
    watching.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_50_viewers_closes_every_session_and_exits_zero() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_whepcast"))
        .args(["serve", "--listen", "127.0.0.1:0", "--size", "320x240"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL printed: {line}"))
        .trim_end_matches('/')
        .to_string();
    let mut viewer = Viewer::connect(&format!("{url}/whep")).await;
    viewer.wait_for("frames", |d| d.frames >= 5).await;
    // 49 more that only count packets.
    let whep = format!("{url}/whep");
    let others =
        futures_util::future::join_all((0..49).map(|_| Viewer::connect_with(&whep, false))).await;
    for v in &others {
        let mut d = v.decoded.clone();
        let got = tokio::time::timeout(WAIT, d.wait_for(|d| d.rtp_packets >= 10)).await;
        assert!(got.is_ok(), "a viewer got no packets");
    }
    assert_eq!(api_at(&url).await["sessions"]["active"], 50);

    let t = Instant::now();
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "still running after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = t.elapsed();
    assert!(status.success(), "exit status {status:?}");
    eprintln!("SIGTERM with 50 viewers: exited in {took:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(
        stderr.matches("(server shutting down)").count(),
        50,
        "every session closed on shutdown: {stderr}"
    );
    viewer.close().await;
    for v in &others {
        v.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_drops_frames_keeps_latency_bounded_and_says_so() {
    // 4K at 120 fps: far more than OpenH264 encodes on one core (the pattern does ~45 fps).
    let mut child = Command::new(env!("CARGO_BIN_EXE_whepcast"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--size", "3840x2160", "--fps", "120", "--bitrate", "8M"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let child = Running(child);
    let mut child = child;
    let url = read_url(&mut child.0);
    // Decoding 1080p here would load the machine more than the server does.
    let mut member = crate::datachannel::join_with(&format!("{url}/whep"), false).await;

    let overloaded = eventually(WAIT, || async {
        let s = &api_at(&url).await["streams"][0];
        s["overloaded"] == true && s["frames_dropped"].as_u64().unwrap() > 0
    })
    .await;
    assert!(overloaded, "API: {}", api_at(&url).await);
    let s = &api_at(&url).await["streams"][0];
    assert!(s["encode_fps"].as_f64().unwrap() < 120.0, "{s}");
    assert!(s["load"].as_f64().unwrap() > 0.5, "{s}");
    // Frames are dropped, not queued: frame slots are skipped, and what arrives was captured
    // moments ago however long the overload lasts. (Queueing 120 fps of work done at a lower
    // rate would add seconds of delay within seconds; the bound is loose for shared machines.)
    let (mut skipped, mut worst, mut last_n) = (0, 0.0f64, None);
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        let f = member.next("frame").await;
        let n = f["n"].as_u64().unwrap();
        if last_n.is_some_and(|l| n > l + 1) {
            skipped += 1;
        }
        last_n = Some(n);
        worst = worst.max(crate::datachannel::now_ms() - f["captured_ms"].as_f64().unwrap());
    }
    assert!(skipped > 0, "no frame slot was skipped");
    assert!(
        worst < 3000.0,
        "a frame arrived {worst:.0} ms after capture"
    );
    let said = eventually(Duration::from_secs(5), || async {
        log.lock().unwrap().contains("overloaded: encoding")
    })
    .await;
    assert!(said, "log: {}", log.lock().unwrap());
    let text = get_text(&format!("{url}/metrics")).await;
    assert!(
        text.contains("whepcast_overloaded{stream=\"main\"} 1"),
        "{text}"
    );
    member.viewer.close().await;
    stop(child);
}

/// The binary allocates with jemalloc, configured to return freed memory to the OS from its
/// background thread: closed sessions' memory goes back without the server doing anything.
#[test]
fn the_server_returns_freed_memory_from_jemallocs_background_thread() {
    let (server, base) = spawn_serve(&["--size", "320x240"], &[], std::process::Stdio::null());
    let pid = server.0.id();
    let names = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim().to_string())
            .collect()
    };
    // jemalloc starts its background threads as arenas are first used.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !names().iter().any(|n| n == "jemalloc_bg_thd") {
        assert!(
            std::time::Instant::now() < deadline,
            "no jemalloc background thread in {:?} ({base})",
            names()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    stop(server);
}
