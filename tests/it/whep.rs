//! WHEP over real HTTP: the round trip, and every kind of bad input.

use crate::support::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_decodes_moving_pattern_then_delete_ends_session() {
    let server = TestServer::start("640x360", 30, 2.0).await;
    let mut viewer = Viewer::connect(&server.url("/whep")).await;
    assert!(
        viewer.location.starts_with("/whep/session/"),
        "{}",
        viewer.location
    );
    assert!(
        viewer.location.len() >= "/whep/session/".len() + 32,
        "session id must be unguessable"
    );
    assert!(viewer.etag.is_some(), "answer carries an ETag");

    let d = viewer
        .wait_for("30 decoded frames", |d| d.numbers.len() >= 30)
        .await;
    assert_eq!(d.size, Some((640, 360)), "decoded size");
    // The frame counter strip changes from frame to frame: the picture moves.
    let distinct: std::collections::BTreeSet<_> = d.numbers.iter().collect();
    assert!(
        distinct.len() >= 25,
        "frame numbers barely change: {:?}",
        d.numbers
    );
    assert!(
        d.numbers.windows(2).all(|w| w[1] > w[0]),
        "numbers go forward: {:?}",
        d.numbers
    );

    let url = server.url(&viewer.location);
    let client = reqwest::Client::new();
    let res = client.delete(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        server.active_sessions().await,
        0,
        "DELETE frees the session"
    );
    let res = client.delete(&url).send().await.unwrap();
    assert_eq!(res.status(), 404, "second DELETE");
    assert!(res.text().await.unwrap().contains("no session"));
    viewer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframes_tell_the_viewer_to_play_out_at_once() {
    let server = TestServer::start("320x240", 30, 1.0).await;
    let mut viewer = Viewer::connect(&server.url("/whep")).await;
    let answer = viewer.pc.remote_description().await.unwrap().sdp;
    let id: u8 = answer
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("a=extmap:")?;
            let (id, uri) = rest.split_once(' ')?;
            (uri.trim() == whepcast::rtc::PLAYOUT_DELAY_URI).then(|| id.parse().ok())?
        })
        .unwrap_or_else(|| panic!("the answer does not negotiate playout-delay:\n{answer}"));
    // The viewer offered transport-wide congestion control: every packet carries its
    // transport-wide sequence number too (under its own id).
    let twcc: Option<u8> = answer.lines().find_map(|l| {
        let rest = l.strip_prefix("a=extmap:")?;
        let (id, uri) = rest.split_once(' ')?;
        (uri.trim() == ::rtc::sdp::extmap::TRANSPORT_CC_URI).then(|| id.parse().ok())?
    });
    // Past the joiner's IDR and the next periodic one (every second).
    let d = viewer
        .wait_for("45 decoded frames", |d| d.frames >= 45)
        .await;
    let others: Vec<_> = d
        .extensions
        .iter()
        .filter(|(i, _)| Some(*i) != twcc)
        .cloned()
        .collect();
    assert_eq!(
        others,
        vec![(id, vec![0, 0, 0])],
        "playout delay min 0 / max 0 under the negotiated id, and nothing else"
    );
    let count = |i: Option<u8>| i.and_then(|i| d.packets_with_extension.get(&i).copied());
    assert_eq!(
        count(twcc),
        Some(d.rtp_packets),
        "transport-wide sequence numbers negotiated ({twcc:?}) and on every packet"
    );
    let with_delay = count(Some(id)).unwrap_or(0);
    assert!(
        (2..=4).contains(&with_delay),
        "only the first packet of each keyframe carries it: {with_delay} packets of {}",
        d.rtp_packets
    );
    viewer.close().await;
    server.stop().await;
}

/// A minimal but complete-looking offer with the given video lines.
fn offer_with(video: &str) -> String {
    format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
         a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
         a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
         a=setup:actpass\r\na=rtcp-mux\r\na=recvonly\r\n{video}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_video_keeps_flowing() {
    let server = TestServer::start("320x240", 30, 2.0).await;
    let whep = server.url("/whep");
    let (_pc, good_offer, _track) = offer().await;

    // Wrong content type -> 415, naming what to send.
    let (status, _, body) = post(&whep, Some("application/json"), good_offer.clone()).await;
    assert_eq!(status, 415, "{body}");
    assert!(body.contains("application/sdp"), "{body}");
    let (status, _, body) = post(&whep, None, good_offer.clone()).await;
    assert_eq!(status, 415, "{body}");

    // Not SDP, truncated SDP -> 400.
    let (status, _, body) = post(&whep, Some("application/sdp"), "hello world").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("SDP"), "{body}");
    // Cut inside the media line.
    let cut = good_offer.find("m=video").unwrap() + "m=video 9 UDP/".len();
    let truncated = good_offer[..cut].to_string();
    let (status, _, body) = post(&whep, Some("application/sdp"), truncated).await;
    assert_eq!(status, 400, "{body}");

    // No usable H.264 -> 422 naming H.264.
    let vp8 = offer_with("a=rtpmap:96 VP8/90000\r\n");
    let (status, _, body) = post(&whep, Some("application/sdp"), vp8).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("H.264"), "{body}");
    let mode0 = offer_with("a=rtpmap:96 H264/90000\r\na=fmtp:96 profile-level-id=42e01f\r\n");
    let (status, _, body) = post(&whep, Some("application/sdp"), mode0).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("packetization-mode=1"), "{body}");
    let high = offer_with(
        "a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;profile-level-id=640c1f\r\n",
    );
    let (status, _, body) = post(&whep, Some("application/sdp"), high).await;
    assert_eq!(status, 422, "{body}");

    // Over 64 KiB -> 413, with and without Content-Length.
    let big = format!(
        "{good_offer}{}",
        "a=x-padding:0123456789abcdef\r\n".repeat(3000)
    );
    let (status, _, body) = post(&whep, Some("application/sdp"), big.clone()).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("larger than"), "{body}");
    let stream = futures_stream(big.into_bytes());
    let (status, _, _) = post(&whep, Some("application/sdp"), stream).await;
    assert_eq!(status, 413, "chunked body without Content-Length");

    // Unknown session / stream -> 404.
    let res = reqwest::Client::new()
        .delete(server.url("/whep/session/00000000000000000000000000000000"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let (status, _, body) = post(
        &server.url("/whep/nope"),
        Some("application/sdp"),
        good_offer.clone(),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("main"), "404 lists the streams: {body}");

    // GET/PUT on the endpoint -> 405 with Allow.
    for method in [reqwest::Method::GET, reqwest::Method::PUT] {
        let res = reqwest::Client::new()
            .request(method.clone(), &whep)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method}");
        assert!(res.headers()["allow"].to_str().unwrap().contains("POST"));
        assert!(res.text().await.unwrap().contains("allowed"));
    }
    // OPTIONS advertises SDP; CORS preflight exposes Location and ETag.
    let res = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, &whep)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["accept-post"], "application/sdp");
    let res = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, &whep)
        .header("Origin", "http://example.test")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert_eq!(res.headers()["access-control-allow-origin"], "*");

    // A burst of hundreds of bad requests leaves nothing behind...
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..300 {
        let whep = whep.clone();
        let body = match i % 3 {
            0 => "garbage".to_string(),
            1 => offer_with("a=rtpmap:96 VP8/90000\r\n"),
            _ => "v=0\r\n".repeat(i),
        };
        burst.spawn(async move { post(&whep, Some("application/sdp"), body).await.0 });
    }
    while let Some(status) = burst.join_next().await {
        let status = status.unwrap();
        assert!((400..500).contains(&status), "bad request got {status}");
    }
    assert_eq!(server.active_sessions().await, 0, "no session leaked");

    // ...and a good viewer still gets moving video.
    let mut viewer = Viewer::connect(&whep).await;
    viewer
        .wait_for("10 frames after the burst", |d| d.numbers.len() >= 10)
        .await;
    viewer.close().await;
    server.stop().await;
}

/// A body streamed without Content-Length.
fn futures_stream(data: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(4096).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiner_and_pli_get_a_keyframe_without_waiting_for_the_periodic_one() {
    // Periodic IDRs only every 30 s: anything sooner must be a forced one.
    let server = TestServer::start("320x240", 30, 30.0).await;
    let mut first = Viewer::connect(&server.url("/whep")).await;
    first.wait_for("frames", |d| d.frames >= 10).await;

    let mut second = Viewer::connect(&server.url("/whep")).await;
    let started = second.started;
    let d = second.wait_for("a first frame", |d| d.frames >= 1).await;
    let waited = d.first_frame_at.unwrap() - started;
    assert!(
        waited < Duration::from_secs(5),
        "joiner waited {waited:?} for a keyframe"
    );

    let before = server.api().await["streams"][0]["forced_keyframes"]
        .as_u64()
        .unwrap();
    // A request inside the IDR rate limit waits for it, and is still answered.
    first.send_pli().await;
    let got = eventually(Duration::from_secs(5), || async {
        server.api().await["streams"][0]["forced_keyframes"]
            .as_u64()
            .unwrap()
            > before
    })
    .await;
    assert!(got, "PLI did not force a keyframe");
    first.close().await;
    second.close().await;
    server.stop().await;
}

/// Renditions: a viewer that asks for the smaller one gets it at its size, and only that one
/// is encoded; a viewer with no wish starts on the best; a rendition or rate that does not
/// exist is a 400 naming what does, and leaves no session behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_renditions_viewers_receive_are_encoded_each_at_its_size() {
    // 320x240 at 1.5 Mbit/s: the default ladder adds 160x120 at 375 kbit/s (nothing under
    // 90 lines after that).
    let server = TestServer::start("320x240", 30, 1.0).await;
    let api = server.api().await;
    let renditions = api["streams"][0]["renditions"].as_array().unwrap().clone();
    let names: Vec<&str> = renditions
        .iter()
        .map(|r| r["size"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["320x240", "160x120"]);

    let mut small = Viewer::connect(&server.url("/whep?rendition=160x120")).await;
    let d = small
        .wait_for("20 decoded frames", |d| d.frames >= 20)
        .await;
    assert_eq!(d.size, Some((160, 120)), "the rendition asked for");
    let encoded = |api: &serde_json::Value, i: usize| {
        api["streams"][0]["renditions"][i]["frames_encoded"]
            .as_u64()
            .unwrap()
    };
    let api = server.api().await;
    assert_eq!(encoded(&api, 0), 0, "nobody receives 320x240: not encoded");
    assert!(encoded(&api, 1) >= 20);
    let links = api["streams"][0]["viewer_links"].as_array().unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0]["rendition"], "160x120@375k");

    let mut full = Viewer::connect(&server.url("/whep")).await;
    let d = full.wait_for("20 decoded frames", |d| d.frames >= 20).await;
    assert_eq!(
        d.size,
        Some((320, 240)),
        "no wish: the best the link allows"
    );
    assert!(encoded(&server.api().await, 0) >= 20);

    let (_pc, offer_sdp, _track) = offer().await;
    for (query, names) in [
        ("rendition=999x999", "320x240@1500k, 160x120@375k"),
        ("rendition=7", "320x240@1500k"),
        ("max_bitrate=fast", "bit rate"),
    ] {
        let (status, _, body) = post(
            &server.url(&format!("/whep?{query}")),
            Some("application/sdp"),
            offer_sdp.clone(),
        )
        .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(names), "{query}: {body}");
    }
    assert_eq!(
        server.active_sessions().await,
        2,
        "no session left by a refusal"
    );
    small.close().await;
    full.close().await;
    server.stop().await;
}
