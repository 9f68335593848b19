//! WHIP in (`--source whip`): a publisher's stream relayed to viewers, the waiting picture
//! while it has none, one publisher at a time, the ingest token, and hostile offers. The
//! publisher is the real `whepcast publish`; viewers are webrtc-rs peers that decode.

use crate::support::*;
use crate::whip::publish;
use whepcast::server::{ServeConfig, ServeError, Server};

const INGEST: &str = "ingest-secret";

/// The waiting picture's background, as a decoder sees it.
fn standby_yuv() -> [f64; 3] {
    yuv_of(whepcast::source::standby::BACKGROUND)
}

/// Whether the top-left corner of what `d` decoded last is the waiting picture's.
fn on_standby(d: &Decoded) -> bool {
    d.last
        .as_ref()
        .is_some_and(|p| close(p.mean(2, 2, 12, 12), standby_yuv(), 10.0))
}

async fn whip_server() -> TestServer {
    TestServer::with_config(vec![whip_stream("main", "320x240")], |c| {
        c.ingest_token = Some(INGEST.into())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_see_the_waiting_picture_then_the_publisher_then_the_picture_again() {
    let server = whip_server().await;
    let mut viewer = Viewer::connect(&server.url("/whep")).await;
    let d = viewer
        .wait_for("the waiting picture", |d| d.frames >= 2 && on_standby(d))
        .await;
    assert_eq!(d.size, Some((320, 240)), "the waiting picture takes --size");

    let whip = server.url("/whip");
    let publisher = publish(&whip, INGEST, &["--size", "640x360", "--fps", "15"]);
    let d = viewer
        .wait_for("the publisher's pattern", |d| {
            d.size == Some((640, 360)) && !on_standby(d) && d.numbers.len() >= 10
        })
        .await;
    let from = d.numbers.len();
    let d = viewer
        .wait_for("the pattern moving", |d| d.numbers.len() >= from + 10)
        .await;
    let tail = &d.numbers[d.numbers.len() - 10..];
    assert!(
        tail.windows(2).all(|w| w[1] > w[0]),
        "frame numbers keep growing: {tail:?}"
    );
    // The relay did not decode or re-encode: what arrives is the publisher's own frames.
    let api = server.api().await;
    assert_eq!(api["streams"][0]["source"], "whip", "{api}");
    assert!(api["streams"][0]["frames_encoded"].as_u64().unwrap() > 10);

    drop(publisher); // SIGTERM: it DELETEs its session
    viewer
        .wait_for("the waiting picture after the publisher left", |d| {
            on_standby(d) && d.size == Some((640, 360))
        })
        .await;
    let again = publish(&whip, INGEST, &["--size", "640x360", "--fps", "15"]);
    let n = viewer.decoded.borrow().numbers.len();
    viewer
        .wait_for("the publisher again, without reconnecting", |d| {
            !on_standby(d) && d.numbers.len() >= n + 10
        })
        .await;
    assert_eq!(server.active_sessions().await, 1, "the same viewer session");
    drop(again);
    viewer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_at_a_time_with_the_ingest_token_and_h264_sent() {
    let server = whip_server().await;
    let post = |path: &str, token: Option<&str>, ct: &str, body: String| {
        let mut r = reqwest::Client::new()
            .post(server.url(path))
            .header("Content-Type", ct)
            .body(body);
        if let Some(t) = token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        respond(r)
    };
    let (pc, sendonly) = publisher_offer().await;
    let offer = sendonly;

    let (status, _, text) = post("/whip", None, "application/sdp", offer.clone()).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("ingest token"), "{text}");
    let (status, _, text) = post("/whip", Some("wrong"), "application/sdp", offer.clone()).await;
    assert_eq!(status, 401, "{text}");
    // The viewers' token (none here) is no ingest token, and WHEP stays open.
    let (status, _, text) = post("/whip", Some(INGEST), "text/plain", offer.clone()).await;
    assert_eq!(status, 415, "{text}");
    let (status, _, text) =
        post("/whip/nope", Some(INGEST), "application/sdp", offer.clone()).await;
    assert_eq!(status, 404, "{text}");
    assert!(
        text.contains("main"),
        "names the streams that take publishers: {text}"
    );
    // A viewer's (recvonly) offer is no publisher's.
    let (vpc, viewer_offer, _) = crate::support::offer().await;
    let (status, _, text) = post("/whip", Some(INGEST), "application/sdp", viewer_offer).await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("sendonly"), "{text}");
    let _ = vpc.close().await;
    let no_h264 = offer.replace("H264/90000", "VP8/90000");
    let (status, _, text) = post("/whip", Some(INGEST), "application/sdp", no_h264).await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("H.264"), "{text}");

    let (status, headers, text) =
        post("/whip/main", Some(INGEST), "application/sdp", offer.clone()).await;
    assert_eq!(status, 201, "{text}");
    assert!(text.contains("a=recvonly"), "{text}");
    assert!(headers.get("etag").is_some());
    let location = headers["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/whip/session/"), "{location}");

    let (pc2, offer2) = publisher_offer().await;
    let (status, _, text) = post("/whip", Some(INGEST), "application/sdp", offer2.clone()).await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("'main'"), "names the stream: {text}");

    // PATCH and DELETE need the ingest token too.
    let client = reqwest::Client::new();
    let (status, _, _) = respond(client.delete(server.url(&location))).await;
    assert_eq!(status, 401);
    let (status, _, text) = respond(client.delete(server.url(&location)).bearer_auth(INGEST)).await;
    assert_eq!(status, 200, "{text}");
    // Once it left, the next one may publish.
    let (status, headers, text) = post("/whip", Some(INGEST), "application/sdp", offer2).await;
    assert_eq!(status, 201, "{text}");
    let location = headers["location"].to_str().unwrap().to_string();
    let (status, _, _) = respond(client.delete(server.url(&location)).bearer_auth(INGEST)).await;
    assert_eq!(status, 200);
    let (status, _, _) = respond(client.delete(server.url(&location)).bearer_auth(INGEST)).await;
    assert_eq!(status, 404, "gone after DELETE");
    let _ = pc.close().await;
    let _ = pc2.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_server_without_whip_streams_says_so() {
    let server = TestServer::start("160x120", 10, 2.0).await;
    let (pc, offer) = publisher_offer().await;
    let (status, _, text) = respond(
        reqwest::Client::new()
            .post(server.url("/whip"))
            .header("Content-Type", "application/sdp")
            .body(offer),
    )
    .await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("--source whip"), "{text}");
    let _ = pc.close().await;
    server.stop().await;
}

#[tokio::test]
async fn taking_publishers_beyond_loopback_needs_an_ingest_token() {
    let config = |listen: &str, token: Option<&str>, public: bool| ServeConfig {
        listen: listen.parse().unwrap(),
        streams: vec![whip_stream("main", "320x240")],
        rtc: whepcast::rtc::RtcConfig::for_listen_ip("127.0.0.1".parse().unwrap()),
        token: None,
        max_viewers: None,
        public,
        ingest_token: token.map(str::to_string),
    };
    let refused = config("0.0.0.0:0", None, false).check();
    assert!(
        matches!(refused, Err(ServeError::IngestWithoutToken(_))),
        "{refused:?}"
    );
    let text = refused.unwrap_err().to_string();
    assert!(text.contains("WHEPCAST_INGEST_TOKEN"), "{text}");
    assert!(config("0.0.0.0:0", Some("s3cret"), false).check().is_ok());
    assert!(config("0.0.0.0:0", None, true).check().is_ok());
    assert!(config("127.0.0.1:0", None, false).check().is_ok());
    assert!(matches!(
        config("127.0.0.1:0", Some("two words"), false).check(),
        Err(ServeError::BadIngestToken)
    ));
    // And the server itself refuses to start that way.
    assert!(Server::bind(config("0.0.0.0:0", None, false))
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_offers_to_whip_get_4xx_or_a_session_and_leave_nothing_behind() {
    use rand::SeedableRng;
    let server = whip_server().await;
    let mut viewer = Viewer::connect(&server.url("/whep")).await;
    viewer
        .wait_for("the waiting picture", |d| d.frames >= 2)
        .await;
    let (pc, real) = publisher_offer().await;
    let _ = pc.close().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0e1b_0ff3);
    let client = reqwest::Client::new();
    let mut counts = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..200 {
        let body = crate::hostile::mutate(&mut rng, &real);
        let res = client
            .post(server.url("/whip"))
            .header("Content-Type", "application/sdp")
            .bearer_auth(INGEST)
            .body(body.clone())
            .send()
            .await
            .expect("the server answers");
        let status = res.status().as_u16();
        *counts.entry(status).or_default() += 1;
        let location = res
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        let text = res.text().await.unwrap();
        assert!(
            (200..300).contains(&status) || (400..500).contains(&status),
            "{status} for:\n{}\n-> {text}",
            String::from_utf8_lossy(&body)
        );
        if status >= 400 {
            assert!(text.trim().len() > 10, "{status} says why: {text:?}");
        }
        if let Some(l) = location {
            let res = client
                .delete(server.url(&l))
                .bearer_auth(INGEST)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
    }
    eprintln!("mutated publisher offers: {counts:?}");
    assert!(counts.keys().any(|s| *s >= 400), "some were refused");
    // Nothing left holding the stream: a real publisher gets in, the viewer sees it.
    let publisher = publish(&server.url("/whip"), INGEST, &["--size", "640x360"]);
    viewer
        .wait_for("the publisher after the hostile ones", |d| {
            d.size == Some((640, 360)) && !on_standby(d)
        })
        .await;
    drop(publisher);
    viewer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_rendition_is_made_by_decoding_the_publisher_once() {
    let server = whip_server().await;
    let publisher = publish(
        &server.url("/whip"),
        INGEST,
        &["--size", "640x360", "--fps", "15"],
    );
    let mut top = Viewer::connect(&server.url("/whep")).await;
    top.wait_for("the publisher's own frames", |d| {
        d.size == Some((640, 360)) && d.numbers.len() >= 5
    })
    .await;
    let mut low = Viewer::connect(&server.url("/whep?rendition=1")).await;
    let d = low
        .wait_for("the half-size rendition", |d| {
            d.size == Some((320, 180)) && d.numbers.len() >= 10
        })
        .await;
    let tail = &d.numbers[d.numbers.len() - 10..];
    assert!(tail.windows(2).all(|w| w[1] > w[0]), "it moves: {tail:?}");
    let api = server.api().await;
    let renditions = &api["streams"][0]["renditions"];
    assert_eq!(renditions[1]["size"], "320x180", "{api}");
    assert!(
        renditions[1]["frames_encoded"].as_u64().unwrap() > 0,
        "{api}"
    );
    drop(publisher);
    top.close().await;
    low.close().await;
    server.stop().await;
}
