//! Limits hold under concurrency and under exhaustion: the viewer cap and the UDP port pool
//! admit exactly as many viewers as they have room for when offers arrive all at once, and a
//! server that runs out of file descriptors answers `503` + `Retry-After` (never a `500`,
//! never a dropped connection) while the viewer already watching keeps its video.

use crate::support::*;
use std::collections::BTreeMap;

/// POSTs `sdp` to `url` `n` times at once; counts the answers by status (checking every
/// `503` says to retry) and returns the sessions made.
async fn flood(url: &str, sdp: &str, n: usize) -> (BTreeMap<u16, usize>, Vec<String>) {
    let client = reqwest::Client::new();
    let answers = futures_util::future::join_all((0..n).map(|_| {
        client
            .post(url)
            .header("Content-Type", "application/sdp")
            .body(sdp.to_owned())
            .send()
    }))
    .await;
    let mut counts = BTreeMap::new();
    let mut sessions = Vec::new();
    for a in answers {
        let a = a.expect("every offer is answered (no dropped connection)");
        let status = a.status().as_u16();
        if status == 503 {
            assert!(
                a.headers().contains_key("retry-after"),
                "503 without Retry-After"
            );
        }
        if let Some(l) = a.headers().get("location") {
            sessions.push(l.to_str().unwrap().to_owned());
        }
        *counts.entry(status).or_default() += 1;
    }
    (counts, sessions)
}

/// DELETEs `sessions`, and waits until the server has none left.
async fn delete_all(server: &TestServer, sessions: &[String]) {
    let client = reqwest::Client::new();
    for s in sessions {
        let res = client.delete(server.url(s)).send().await.unwrap();
        assert_eq!(res.status(), 200, "DELETE {s}");
    }
    server.wait_for_sessions(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_offers_at_once_get_exactly_max_viewers_seats() {
    let server = TestServer::with_config(vec![pattern_stream("320x240", 15, 2.0)], |c| {
        c.max_viewers = Some(3)
    })
    .await;
    let (pc, sdp, _track) = offer().await;
    let (counts, sessions) = flood(&server.url("/whep"), &sdp, 50).await;
    assert_eq!(counts.get(&201), Some(&3), "answers by status: {counts:?}");
    assert_eq!(counts.get(&503), Some(&47), "answers by status: {counts:?}");
    let api = server.api().await;
    assert_eq!(api["streams"][0]["viewers"], 3, "{api}");
    // The refused left no seat taken: once the three are gone, three more fit.
    delete_all(&server, &sessions).await;
    let (again, sessions) = flood(&server.url("/whep"), &sdp, 5).await;
    assert_eq!(
        again.get(&201),
        Some(&3),
        "after the first three ended: {again:?}"
    );
    delete_all(&server, &sessions).await;
    let _ = pc.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_offers_at_once_share_a_three_port_range() {
    let server = TestServer::with_config(vec![pattern_stream("320x240", 15, 2.0)], |c| {
        c.rtc.ports = Some(whepcast::rtc::PortPool::parse("47311-47313").unwrap())
    })
    .await;
    let (pc, sdp, _track) = offer().await;
    let (counts, sessions) = flood(&server.url("/whep"), &sdp, 50).await;
    assert_eq!(counts.get(&201), Some(&3), "answers by status: {counts:?}");
    assert_eq!(counts.get(&503), Some(&47), "answers by status: {counts:?}");
    delete_all(&server, &sessions).await;
    let _ = pc.close().await;
    server.stop().await;
}

/// Whether `body` of a 503 names what ran out.
fn names_the_cause(body: &str) -> bool {
    body.contains("file descriptors") || body.contains("capacity") || body.contains("ulimit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_limited_flood_is_answered_201_or_503_and_the_viewer_plays_on() {
    // As many systems start programs: 1024 open files, soft and hard.
    let mut cmd = std::process::Command::new("sh");
    cmd.args([
        "-c",
        "ulimit -n 1024 && exec \"$0\" serve --listen 127.0.0.1:0 --size 320x240 --fps 15",
        env!("CARGO_BIN_EXE_whepcast"),
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::inherit());
    let mut child = Running(cmd.spawn().expect("whepcast starts"));
    let base = read_url(&mut child.0);
    let whep = format!("{base}/whep");
    let mut viewer = Viewer::connect(&whep).await;
    viewer.wait_for("frames", |d| d.frames >= 5).await;

    let (pc, sdp, _track) = offer().await;
    let client = reqwest::Client::new();
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    let mut unnamed_503 = 0;
    // 1500 offers, 100 at a time: far more than 1024 descriptors can hold.
    for _ in 0..15 {
        let answers = futures_util::future::join_all((0..100).map(|_| {
            client
                .post(&whep)
                .header("Content-Type", "application/sdp")
                .body(sdp.clone())
                .send()
        }))
        .await;
        for a in answers {
            let a = a.expect("every offer is answered (no dropped connection)");
            let status = a.status().as_u16();
            let retry = a.headers().contains_key("retry-after");
            let body = a.text().await.unwrap_or_default();
            if status == 503 {
                assert!(retry, "503 without Retry-After: {body}");
                if !names_the_cause(&body) {
                    unnamed_503 += 1;
                    eprintln!("503 not naming the cause: {body}");
                }
            }
            *counts.entry(status).or_default() += 1;
        }
    }
    eprintln!("1500 offers at 1024 descriptors: {counts:?}");
    let unexpected: Vec<_> = counts.keys().filter(|s| **s != 201 && **s != 503).collect();
    assert!(unexpected.is_empty(), "only 201 or 503: {counts:?}");
    assert!(
        counts.get(&503).copied().unwrap_or(0) > 0,
        "the limit was reached: {counts:?}"
    );
    assert_eq!(unnamed_503, 0, "every 503 names its cause");
    // The viewer watching before the flood still gets new pictures.
    viewer
        .wait_for_more("frames after the flood", |d| d.frames as usize, 15)
        .await;
    viewer.close().await;
    let _ = pc.close().await;
}
