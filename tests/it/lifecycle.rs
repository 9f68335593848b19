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
    let before = watching.decoded.borrow().frames;
    watching
        .wait_for("more frames", |d| d.frames >= before + 10)
        .await;
    watching.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sessions_and_exits_zero() {
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

    let t = Instant::now();
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "still running after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("viewer left"),
        "session closed on shutdown: {stderr}"
    );
    viewer.close().await;
}
