//! ICE over WHEP on real sockets: trickle and ICE restart with PATCH (exact statuses and
//! headers), STUN/TURN servers announced in `Link` headers, a 1:1 NAT's public address
//! (through a real DNAT rule), and a fixed UDP port range.

use crate::support::*;
use reqwest::header::HeaderMap;
use std::time::Duration;
use webrtc::peer_connection::RTCSessionDescription;
use whepcast::rtc::{IceServer, PortPool};
use whepcast::whep::Fragment;

const TRICKLE: &str = "application/trickle-ice-sdpfrag";

/// The offer without its candidates: what a client that trickles POSTs.
fn strip_candidates(sdp: &str) -> String {
    sdp.split_inclusive('\n')
        .filter(|l| !l.starts_with("a=candidate:") && !l.starts_with("a=end-of-candidates"))
        .collect()
}

/// The candidate lines of `sdp` that contain `with`.
fn candidates<'a>(sdp: &'a str, with: &str) -> Vec<&'a str> {
    sdp.lines()
        .filter(|l| l.starts_with("a=candidate:") && l.contains(with))
        .collect()
}

/// `sdp` with only the candidates that contain `with`.
fn keep_candidates(sdp: &str, with: &str) -> String {
    sdp.split_inclusive('\n')
        .filter(|l| !l.starts_with("a=candidate:") || l.contains(with))
        .collect()
}

/// A trickle fragment with `sdp`'s credentials and candidates (RFC 8840).
fn fragment_of(sdp: &str) -> String {
    let p = whepcast::whep::sdpfrag::IceParams::from_sdp(sdp);
    p.to_fragment("m=video 9 UDP/TLS/RTP/SAVPF 0", "0")
}

async fn patch(
    url: &str,
    content_type: Option<&str>,
    if_match: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, HeaderMap, String) {
    let mut req = reqwest::Client::new().patch(url).body(body);
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    if let Some(m) = if_match {
        req = req.header("If-Match", m);
    }
    respond(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_viewer_gets_video_and_patch_statuses_are_exact() {
    let server = TestServer::start("320x240", 30, 2.0).await;
    let before = metric(&server.base, "whepcast_trickle_candidates_total").await;
    let (pc, sdp, track_rx) = offer().await;
    let stripped = strip_candidates(&sdp);
    assert!(!stripped.contains("a=candidate"), "the offer trickles");
    let mut viewer = Viewer::post_offer(&server.url("/whep"), pc, stripped, track_rx, true).await;
    let session = server.url(&viewer.location);
    let etag = viewer.etag.clone().expect("ETag on the 201");

    let frag = fragment_of(&sdp);
    assert!(frag.contains("a=candidate:"), "{frag}");
    let (status, _, body) = patch(&session, Some(TRICKLE), Some(&etag), frag.clone()).await;
    assert_eq!(status, 204, "trickle: {body}");
    let after = metric(&server.base, "whepcast_trickle_candidates_total").await;
    assert!(after > before, "the candidates reached the ICE agent");
    viewer
        .wait_for("20 frames after trickling", |d| d.numbers.len() >= 20)
        .await;

    // Trickle without If-Match is accepted (clients learn the ETag only from a restart).
    let (status, _, _) = patch(&session, Some(TRICKLE), None, frag.clone()).await;
    assert_eq!(status, 204);
    // Wrong or missing content type.
    let (status, _, body) = patch(&session, Some("application/sdp"), None, frag.clone()).await;
    assert_eq!(status, 415);
    assert!(body.contains("trickle-ice-sdpfrag"), "{body}");
    let (status, _, _) = patch(&session, None, None, frag.clone()).await;
    assert_eq!(status, 415);
    // A stale ETag.
    let (status, _, body) = patch(&session, Some(TRICKLE), Some("\"stale\""), frag.clone()).await;
    assert_eq!(status, 412, "{body}");
    assert!(body.contains("ETag"), "{body}");
    // New credentials = ICE restart, which needs If-Match.
    let restart = frag
        .replace("a=ice-ufrag:", "a=ice-ufrag:zz")
        .replace("a=ice-pwd:", "a=ice-pwd:zz");
    let (status, _, body) = patch(&session, Some(TRICKLE), None, restart).await;
    assert_eq!(status, 428, "{body}");
    assert!(body.contains("If-Match"), "{body}");
    // Not a fragment; a half fragment; too big; unknown session.
    let (status, _, body) = patch(&session, Some(TRICKLE), None, "hello world").await;
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = patch(&session, Some(TRICKLE), None, "a=ice-ufrag:x\r\n").await;
    assert_eq!(status, 400);
    let (status, _, _) = patch(&session, Some(TRICKLE), None, "a=x\r\n".repeat(5000)).await;
    assert_eq!(status, 413);
    let (status, _, _) = patch(
        &server.url("/whep/session/00000000000000000000000000000000"),
        Some(TRICKLE),
        None,
        frag.clone(),
    )
    .await;
    assert_eq!(status, 404);
    // OPTIONS on the session says PATCH is there and what it takes.
    let res = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, &session)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert!(res.headers()["allow"].to_str().unwrap().contains("PATCH"));
    assert_eq!(res.headers()["accept-patch"], TRICKLE);

    // None of that disturbed the viewer.
    viewer
        .wait_for_more("video after the bad PATCHes", |d| d.numbers.len(), 15)
        .await;
    assert_eq!(server.active_sessions().await, 1);
    viewer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_over_patch_keeps_video_flowing() {
    let server = TestServer::start("320x240", 30, 2.0).await;
    let mut viewer = Viewer::connect(&server.url("/whep")).await;
    viewer
        .wait_for("10 frames", |d| d.numbers.len() >= 10)
        .await;
    let session = server.url(&viewer.location);
    let old_etag = viewer.etag.clone().unwrap();
    let old_answer = viewer.pc.remote_description().await.unwrap().sdp;

    // The viewer restarts ICE: new credentials, sent with If-Match: "*".
    viewer.pc.restart_ice().await.unwrap();
    let offer = viewer.pc.create_offer(None).await.unwrap();
    viewer.pc.set_local_description(offer).await.unwrap();
    // Until it has gathered a candidate of the new generation.
    let pc = viewer.pc.clone();
    assert!(
        eventually(WAIT, || {
            let pc = pc.clone();
            async move {
                pc.local_description()
                    .await
                    .is_some_and(|d| d.sdp.contains("a=candidate"))
            }
        })
        .await,
        "the viewer gathered no candidate after restarting ICE"
    );
    let local = viewer.pc.local_description().await.unwrap().sdp;
    let frag = fragment_of(&local);
    let (status, headers2, body) = patch(&session, Some(TRICKLE), Some("*"), frag).await;
    assert_eq!(status, 200, "ICE restart: {body}");
    assert_eq!(headers2["content-type"], TRICKLE);
    let new_etag = headers2["etag"].to_str().unwrap().to_string();
    assert_ne!(new_etag, old_etag, "a restart changes the ETag");
    let answer = Fragment::parse(body.as_bytes()).expect("the answer is a fragment");
    let old_ufrag = whepcast::whep::sdpfrag::ufrag_of(&old_answer).unwrap();
    let new_ufrag = answer.ufrag.clone().expect("new ufrag");
    assert_ne!(new_ufrag, old_ufrag, "the server's credentials change too");
    assert!(
        !answer.candidates.is_empty() && answer.end_of_candidates,
        "{body}"
    );

    viewer
        .pc
        .set_remote_description(
            RTCSessionDescription::answer(with_fragment(&old_answer, &answer)).unwrap(),
        )
        .await
        .unwrap();

    // Longer than the server needs to drop a viewer whose ICE broke (4 s + 2 s grace).
    tokio::time::sleep(Duration::from_secs(7)).await;
    viewer
        .wait_for_more("video after the ICE restart", |d| d.numbers.len(), 30)
        .await;
    assert_eq!(server.active_sessions().await, 1, "the session survived");
    // The old ETag is stale now; the new one works for trickle.
    let trickle = fragment_of(&viewer.pc.local_description().await.unwrap().sdp);
    let (status, _, _) = patch(&session, Some(TRICKLE), Some(&old_etag), trickle.clone()).await;
    assert_eq!(status, 412);
    let (status, _, body) = patch(&session, Some(TRICKLE), Some(&new_etag), trickle).await;
    assert_eq!(status, 204, "{body}");
    viewer.close().await;
    server.stop().await;
}

/// The viewer's copy of the answer with the ICE part replaced by the server's restart
/// fragment (what RFC 8840 says the fragment means).
fn with_fragment(old_answer: &str, frag: &Fragment) -> String {
    let mut sdp = String::new();
    for line in strip_candidates(old_answer).split_inclusive('\n') {
        if line.starts_with("a=ice-ufrag:") {
            sdp.push_str(&format!(
                "a=ice-ufrag:{}\r\n",
                frag.ufrag.as_deref().unwrap()
            ));
        } else if line.starts_with("a=ice-pwd:") {
            sdp.push_str(&format!("a=ice-pwd:{}\r\n", frag.pwd.as_deref().unwrap()));
        } else {
            sdp.push_str(line);
            if line.starts_with("a=mid:") {
                for (_, c) in &frag.candidates {
                    sdp.push_str(&format!("a={c}\r\n"));
                }
            }
        }
    }
    sdp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ice_restart_rescues_a_viewer_whose_path_broke() {
    assert!(
        in_private_namespace(),
        "run through scripts/test.sh: this test adds firewall rules"
    );
    let server = TestServer::start("320x240", 30, 2.0).await;
    let mut viewer = Viewer::connect(&server.url("/whep")).await;
    viewer
        .wait_for("10 frames", |d| d.numbers.len() >= 10)
        .await;
    let session = server.url(&viewer.location);
    let old_answer = viewer.pc.remote_description().await.unwrap().sdp;
    let port = candidate_ports(&old_answer)[0];
    // The path breaks: nothing from the viewer reaches the server any more.
    let rule = format!("INPUT -p udp --dport {port} -j DROP");
    sh(&format!("iptables -w -A {rule}"));
    // The server notices after 4 s of silence; the viewer restarts ICE (over HTTP, which
    // still works) before the 2 s grace runs out ...
    tokio::time::sleep(Duration::from_millis(4600)).await;
    viewer.pc.restart_ice().await.unwrap();
    let offer = viewer.pc.create_offer(None).await.unwrap();
    viewer.pc.set_local_description(offer).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let frag = fragment_of(&viewer.pc.local_description().await.unwrap().sdp);
    let (status, _, body) = patch(&session, Some(TRICKLE), Some("*"), frag).await;
    // ... and the path comes back only after that grace would have ended.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    sh(&format!("iptables -w -D {rule}"));
    assert_eq!(status, 200, "restart: {body}");
    let answer = Fragment::parse(body.as_bytes()).unwrap();
    assert_eq!(
        server.active_sessions().await,
        1,
        "the restart kept the session"
    );
    viewer
        .pc
        .set_remote_description(
            RTCSessionDescription::answer(with_fragment(&old_answer, &answer)).unwrap(),
        )
        .await
        .unwrap();
    viewer
        .wait_for_more("video after the rescue", |d| d.numbers.len(), 30)
        .await;
    assert_eq!(server.active_sessions().await, 1);
    viewer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_servers_are_announced_in_link_headers() {
    let servers = vec![
        IceServer::new("stun:127.0.0.1:9", None, None).unwrap(),
        IceServer::new(
            "turn:127.0.0.1:9?transport=udp",
            Some("user".into()),
            Some("pass".into()),
        )
        .unwrap(),
    ];
    let want = [
        "<stun:127.0.0.1:9>; rel=\"ice-server\"",
        "<turn:127.0.0.1:9?transport=udp>; rel=\"ice-server\"; username=\"user\"; credential=\"pass\"; credential-type=\"password\"",
    ];
    let links = |h: &HeaderMap| -> Vec<String> {
        h.get_all("link")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };
    let s = servers.clone();
    let server = TestServer::with_config(vec![pattern_stream("320x240", 30, 2.0)], |c| {
        c.rtc.ice_servers = s;
        // Nothing answers on port 9: the answer must not wait long for it.
        c.rtc.gather_timeout = Duration::from_millis(300);
    })
    .await;
    let (pc, sdp, _rx) = offer().await;
    let (status, headers, body) = post(&server.url("/whep"), Some("application/sdp"), sdp).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(links(&headers), want);
    let _ = pc.close().await;
    let res = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, server.url("/whep"))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert_eq!(links(res.headers()), want, "OPTIONS announces them too");
    assert_eq!(res.headers()["accept-post"], "application/sdp");
    // Without a token, another web site's page is not told TURN credentials (CORS is open);
    // our own page is.
    let options_from = |origin: String| {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, server.url("/whep"))
            .header("Origin", origin)
            .send()
    };
    let res = options_from("http://example.test".into()).await.unwrap();
    assert_eq!(
        links(res.headers()),
        want[..1],
        "only STUN for another origin"
    );
    let res = options_from(server.base.clone()).await.unwrap();
    assert_eq!(links(res.headers()), want, "everything for our own page");
    server.stop().await;

    // With a token, credentials go only to requests that carry it.
    let server = TestServer::with_config(vec![pattern_stream("320x240", 30, 2.0)], |c| {
        c.rtc.ice_servers = servers;
        c.token = Some("tok".into());
    })
    .await;
    let client = reqwest::Client::new();
    let res = client
        .request(reqwest::Method::OPTIONS, server.url("/whep"))
        .send()
        .await
        .unwrap();
    assert!(
        links(res.headers()).is_empty(),
        "no TURN password without the token"
    );
    let res = client
        .request(reqwest::Method::OPTIONS, server.url("/whep"))
        .header("Authorization", "Bearer tok")
        .send()
        .await
        .unwrap();
    assert_eq!(links(res.headers()).len(), 2);
    // CORS lets a page read them.
    let res = post_cors(&server.url("/whep")).await;
    let exposed = res
        .get("access-control-expose-headers")
        .map(|v| v.to_str().unwrap().to_ascii_lowercase())
        .unwrap_or_default();
    for h in ["location", "etag", "link", "accept-post"] {
        assert!(exposed.contains(h), "CORS exposes {h}: {exposed}");
    }
    server.stop().await;
}

/// A cross-origin POST (refused for lack of a token, which is fine: only headers matter).
async fn post_cors(url: &str) -> HeaderMap {
    reqwest::Client::new()
        .post(url)
        .header("Origin", "http://example.test")
        .header("Content-Type", "application/sdp")
        .body("v=0")
        .send()
        .await
        .unwrap()
        .headers()
        .clone()
}

/// The port of each host candidate in `sdp`.
fn candidate_ports(sdp: &str) -> Vec<u16> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .filter_map(|c| c.split_whitespace().nth(5)?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_take_ports_from_the_range_and_503_when_it_runs_out() {
    let pool = PortPool::parse("47310-47311").unwrap();
    let server = TestServer::with_config(vec![pattern_stream("320x240", 30, 2.0)], |c| {
        c.rtc.ports = Some(pool.clone());
    })
    .await;
    let whep = server.url("/whep");
    let mut a = Viewer::connect(&whep).await;
    let mut b = Viewer::connect(&whep).await;
    for v in [&a, &b] {
        let answer = v.pc.remote_description().await.unwrap().sdp;
        let ports = candidate_ports(&answer);
        assert!(!ports.is_empty());
        assert!(
            ports.iter().all(|p| (47310..=47311).contains(p)),
            "candidate ports {ports:?}"
        );
    }
    a.wait_for("video on the first", |d| d.frames >= 10).await;
    b.wait_for("video on the second", |d| d.frames >= 10).await;
    assert_eq!(pool.available(), 0);

    let (pc, sdp, _rx) = offer().await;
    let (status, headers, body) = post(&whep, Some("application/sdp"), sdp.clone()).await;
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert!(
        body.contains("UDP port") && body.contains("47310-47311"),
        "{body}"
    );
    let _ = pc.close().await;

    // A seat frees when a viewer leaves.
    let res = reqwest::Client::new()
        .delete(server.url(&a.location))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    a.close().await;
    let mut c = Viewer::connect(&whep).await;
    c.wait_for("video on the third", |d| d.frames >= 10).await;
    b.wait_for_more("the second unaffected", |d| d.frames as usize, 10)
        .await;
    b.close().await;
    c.close().await;
    server.stop().await;
}

/// Runs `cmd` through `sh`, panicking with its output when it fails.
fn sh(cmd: &str) {
    let out = std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Only in the loopback-only network namespace `scripts/test.sh` runs tests in: this test
/// adds an address and a NAT rule, which must not touch the host's network.
fn in_private_namespace() -> bool {
    // /proc/net/dev lists this network namespace's interfaces (/sys may be the host's).
    let dev = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    ifaces == ["lo"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_ip_is_advertised_and_reached_through_a_real_dnat() {
    assert!(
        in_private_namespace(),
        "run through scripts/test.sh: this test needs a loopback-only network namespace"
    );
    // 203.0.113.7 stands for the NAT's public address: packets to it are rewritten to
    // 127.0.0.1, where the server's sockets are. Without the rule nothing listens there.
    sh("ip addr add 203.0.113.7/32 dev lo 2>/dev/null || true");
    sh("iptables -w -t nat -C OUTPUT -d 203.0.113.7 -p udp -j DNAT --to-destination 127.0.0.1 2>/dev/null \
        || iptables -w -t nat -A OUTPUT -d 203.0.113.7 -p udp -j DNAT --to-destination 127.0.0.1");
    let server = TestServer::with_config(vec![pattern_stream("320x240", 30, 2.0)], |c| {
        c.rtc.public_ips = vec!["203.0.113.7".parse().unwrap()];
    })
    .await;
    // The viewer hides its own candidates, so the server cannot reach it first: the only
    // way in is the viewer's check to the public address.
    let (pc, sdp, track_rx) = offer().await;
    let (status, _, answer) = post(
        &server.url("/whep"),
        Some("application/sdp"),
        strip_candidates(&sdp),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let local = candidates(&answer, " 127.0.0.1 ");
    let public = candidates(&answer, " 203.0.113.7 ");
    assert_eq!(
        public.len(),
        local.len(),
        "one public copy per host candidate:\n{answer}"
    );
    assert_eq!(
        candidate_ports(&public.join("\n")),
        candidate_ports(&local.join("\n"))
    );
    // Keep only the public candidate, as a viewer on the internet would see it.
    let only_public = keep_candidates(&answer, " 203.0.113.7 ");
    pc.set_remote_description(RTCSessionDescription::answer(only_public).unwrap())
        .await
        .unwrap();
    let (dec_tx, mut dec_rx) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        let Ok(Ok(track)) = tokio::time::timeout(WAIT, track_rx).await else {
            return;
        };
        while let Some(ev) = track.poll().await {
            if let webrtc::media_stream::track_remote::TrackRemoteEvent::OnRtpPacket(_) = ev {
                dec_tx.send_modify(|n| *n += 1);
            }
        }
    });
    let got = tokio::time::timeout(WAIT, dec_rx.wait_for(|n| *n >= 100)).await;
    let _ = pc.close().await;
    sh("iptables -w -t nat -D OUTPUT -d 203.0.113.7 -p udp -j DNAT --to-destination 127.0.0.1");
    assert!(got.is_ok(), "no media through the public address");
    server.stop().await;
}

/// A real coturn on loopback, stopped when dropped.
struct Coturn {
    child: Running,
    port: u16,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether a STUN Binding request to `port` gets an answer (the TURN server is up).
fn stun_answers(port: u16) -> bool {
    let Ok(sock) = std::net::UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    // Binding request: type 0x0001, length 0, magic cookie, 12-byte transaction id.
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(&[7u8; 12]);
    let _ = sock.send_to(&req, ("127.0.0.1", port));
    let mut buf = [0u8; 512];
    matches!(sock.recv(&mut buf), Ok(n) if n >= 20 && buf[0] == 0x01 && buf[1] == 0x01)
}

fn start_coturn() -> Coturn {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("whepcast-coturn-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let child = std::process::Command::new("turnserver")
        .args(["-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
        .arg(format!("--listening-port={port}"))
        .args([
            "--min-port=49400",
            "--max-port=49500",
            "--user=u:p",
            "--realm=whepcast",
        ])
        .args([
            "--lt-cred-mech",
            "--no-tls",
            "--no-dtls",
            "--allow-loopback-peers",
            "--no-cli",
        ])
        .arg(format!("--pidfile={}", dir.join("pid").display()))
        .arg(format!("--userdb={}", dir.join("db").display()))
        .args(["--log-file=stdout", "--simple-log"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("turnserver (coturn) is installed: scripts/setup-test.sh");
    let coturn = Coturn {
        child: Running(child),
        port,
        _dir: TempDir(dir),
    };
    let t = std::time::Instant::now();
    while !stun_answers(port) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "coturn did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    coturn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_ice_agent_allocates_a_relay_on_the_turn_server() {
    let turn = start_coturn();
    let url = format!("turn:127.0.0.1:{}", turn.port);
    let server = TestServer::with_config(vec![pattern_stream("320x240", 30, 2.0)], |c| {
        c.rtc.ice_servers = vec![IceServer::new(&url, Some("u".into()), Some("p".into())).unwrap()];
        c.rtc.gather_timeout = Duration::from_secs(3);
    })
    .await;
    let (pc, sdp, track_rx) = offer().await;
    let (status, _, answer) = post(&server.url("/whep"), Some("application/sdp"), sdp).await;
    assert_eq!(status, 201, "{answer}");
    let relay = candidates(&answer, " typ relay");
    assert!(
        !relay.is_empty(),
        "no relay candidate in the answer:\n{answer}"
    );
    let ports = candidate_ports(&relay.join("\n"));
    assert!(
        ports.iter().all(|p| (49400..=49500).contains(p)),
        "relay ports come from coturn's range: {ports:?}"
    );
    // A viewer told only about the relay still gets media (coturn forwards both ways).
    let only_relay = keep_candidates(&answer, " typ relay");
    pc.set_remote_description(RTCSessionDescription::answer(only_relay).unwrap())
        .await
        .unwrap();
    let track = tokio::time::timeout(WAIT, track_rx)
        .await
        .expect("a track")
        .unwrap();
    let mut packets = 0;
    let got = tokio::time::timeout(WAIT, async {
        while let Some(ev) = track.poll().await {
            if let webrtc::media_stream::track_remote::TrackRemoteEvent::OnRtpPacket(_) = ev {
                packets += 1;
                if packets >= 100 {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert!(matches!(got, Ok(true)), "media: {packets} packets");
    let _ = pc.close().await;
    server.stop().await;
    drop(turn.child);
}
