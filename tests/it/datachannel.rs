//! The data channel a viewer's offer may carry: every frame's capture time (matching the RTP
//! timestamps of the video), clock pings, and chat between the viewers of a stream.

use crate::support::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent};

/// A viewer with a data channel, and the JSON messages the server sent on it.
pub(crate) struct Member {
    pub(crate) viewer: Viewer,
    dc: Arc<dyn DataChannel>,
    inbox: mpsc::UnboundedReceiver<Value>,
}

async fn join(endpoint: &str) -> Member {
    join_with(endpoint, true).await
}

/// A viewer with a data channel; `decode` false only counts RTP (cheap at any size).
pub(crate) async fn join_with(endpoint: &str, decode: bool) -> Member {
    let (pc, sdp, track_rx, dc) = offer_with_channel(Some("whepcast")).await;
    let dc = dc.expect("data channel");
    let viewer = Viewer::post_offer(endpoint, pc, sdp, track_rx, decode).await;
    let (tx, inbox) = mpsc::unbounded_channel();
    let reader = dc.clone();
    tokio::spawn(async move {
        while let Some(ev) = reader.poll().await {
            if let DataChannelEvent::OnMessage(m) = ev {
                assert!(m.is_string, "the server sends text");
                let v: Value = serde_json::from_slice(&m.data).expect("JSON");
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    Member { viewer, dc, inbox }
}

impl Member {
    /// The next message of type `kind` (others are skipped).
    pub(crate) async fn next(&mut self, kind: &str) -> Value {
        let found = tokio::time::timeout(WAIT, async {
            loop {
                let v = self.inbox.recv().await.expect("channel open");
                if v["type"] == kind {
                    return v;
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no '{kind}' message"))
    }

    async fn send(&self, v: Value) {
        self.dc.send_text(&v.to_string()).await.expect("send");
    }
}

pub(crate) fn now_ms() -> f64 {
    whepcast::fanout::unix_ms(SystemTime::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_channel_carries_frame_times_pings_and_chat() {
    let server = TestServer::start("320x240", 30, 2.0).await;
    let whep = server.url("/whep");
    let mut a = join(&whep).await;
    let mut b = join(&whep).await;

    let hello = a.next("hello").await;
    let name_a = hello["name"].as_str().unwrap().to_string();
    assert!(name_a.starts_with("viewer-"), "{hello}");
    assert_eq!(hello["stream"], "main");
    let session = a.viewer.location.trim_start_matches("/whep/session/");
    assert!(session.starts_with(hello["session"].as_str().unwrap()));
    let name_b = b.next("hello").await["name"].as_str().unwrap().to_string();

    // Frame messages: consecutive numbers, capture times just behind the clock, and RTP
    // timestamps that are the ones on the video this viewer decodes.
    let mut frames = Vec::new();
    for _ in 0..20 {
        frames.push(a.next("frame").await);
    }
    for w in frames.windows(2) {
        assert!(
            w[1]["n"].as_u64().unwrap() > w[0]["n"].as_u64().unwrap(),
            "{w:?}"
        );
        let dt = w[1]["captured_ms"].as_f64().unwrap() - w[0]["captured_ms"].as_f64().unwrap();
        let drtp = w[1]["rtp"]
            .as_u64()
            .unwrap()
            .wrapping_sub(w[0]["rtp"].as_u64().unwrap());
        assert!(
            (drtp as f64 - dt * 90.0).abs() < 900.0,
            "RTP clock vs capture time: {w:?}"
        );
    }
    let last = frames.last().unwrap();
    let age = now_ms() - last["captured_ms"].as_f64().unwrap();
    assert!((0.0..5000.0).contains(&age), "captured {age} ms ago");
    let want: Vec<u32> = frames
        .iter()
        .map(|f| f["rtp"].as_u64().unwrap() as u32)
        .collect();
    let decoded = a
        .viewer
        .wait_for("frames the metadata described", |d| {
            want.iter().filter(|t| d.rtp_timestamps.contains(t)).count() >= 10
        })
        .await;
    assert!(!decoded.rtp_timestamps.is_empty());

    // Ping: echoed, with the server's clock.
    a.send(json!({"type": "ping", "id": 7, "t": 123.5})).await;
    let pong = a.next("pong").await;
    assert_eq!(pong["id"], 7);
    assert_eq!(pong["t"], 123.5);
    assert!(
        (now_ms() - pong["server_ms"].as_f64().unwrap()).abs() < 5000.0,
        "{pong}"
    );

    // Chat reaches everyone on the stream, control characters removed, sender named.
    a.send(json!({"type": "chat", "text": "hi <b>there</b>\nline\u{2028}x\u{202e}y"}))
        .await;
    for m in [&mut a, &mut b] {
        let line = m.next("chat").await;
        assert_eq!(line["from"], name_a.as_str());
        assert_eq!(line["text"], "hi <b>there</b>linexy");
    }
    // Too long: refused, to the sender only.
    a.send(json!({"type": "chat", "text": "x".repeat(281)}))
        .await;
    let err = a.next("error").await;
    assert!(err["text"].as_str().unwrap().contains("280"), "{err}");
    // Not JSON, unknown type.
    a.dc.send_text("hello?").await.unwrap();
    assert!(a.next("error").await["text"]
        .as_str()
        .unwrap()
        .contains("JSON"));
    a.send(json!({"type": "shout"})).await;
    assert!(a.next("error").await["text"]
        .as_str()
        .unwrap()
        .contains("unknown"));
    // Rate: five lines per ten seconds (one was sent already).
    for i in 0..4 {
        a.send(json!({"type": "chat", "text": format!("line {i}")}))
            .await;
    }
    a.send(json!({"type": "chat", "text": "one too many"}))
        .await;
    let err = a.next("error").await;
    assert!(err["text"].as_str().unwrap().contains("slow down"), "{err}");
    // B saw exactly the accepted lines, then B's own line.
    b.send(json!({"type": "chat", "text": "from b"})).await;
    let mut seen = Vec::new();
    loop {
        let line = b.next("chat").await;
        seen.push(line["text"].as_str().unwrap().to_string());
        if line["from"] == name_b.as_str() {
            break;
        }
    }
    assert_eq!(seen, ["line 0", "line 1", "line 2", "line 3", "from b"]);

    // Audience changes are announced.
    let c = Viewer::connect(&whep).await;
    let count = b.next("viewers").await;
    assert_eq!(count["count"], 3, "{count}");
    c.close().await;
    let _ = reqwest::Client::new()
        .delete(server.url(&c.location))
        .send()
        .await;
    assert_eq!(b.next("viewers").await["count"], 2);

    // The video itself is unaffected by all of it.
    b.viewer
        .wait_for_more("video alongside the channel", |d| d.frames as usize, 10)
        .await;
    a.viewer.close().await;
    b.viewer.close().await;
    server.stop().await;
}
