//! Hostile input, generated: mutated real offers and trickle fragments (multi-byte and
//! invalid UTF-8 included) and malformed HTTP requests. Whatever arrives, the server answers
//! 2xx or 4xx with a message, never panics or 5xx, leaves no session behind, and the viewer
//! already watching keeps its video.

use crate::support::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::{Read, Write};
use std::time::Duration;

/// Lines that exercise the parsers' corners.
const TRICKY: &[&str] = &[
    "m=video 0 RTP/AVP 0",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 102 103 104 105",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "a=rtpmap:96 H264/0",
    "a=rtpmap:96 H264/90000/2/7",
    "a=rtpmap:4294967296 H264/90000",
    "a=fmtp:96 profile-level-id=zzzzzz;packetization-mode=1",
    "a=fmtp:96 packetization-mode=1;profile-level-id=42e01f;profile-level-id=640032",
    "a=ice-ufrag:",
    "a=ice-pwd:x",
    "a=candidate:garbage",
    "a=candidate:1 1 udp 1 999.1.1.1 99999 typ host",
    "a=candidate:1 1 tcp 1 127.0.0.1 9 typ host tcptype passive",
    "a=fingerprint:sha-256 ZZ",
    "a=fingerprint:md5 00:11",
    "a=setup:actpass",
    "a=setup:holdconn",
    "a=mid:",
    "a=group:BUNDLE 0 1 2 3 4 5 6 7 8 9",
    "a=ssrc:4294967296 cname:x",
    "a=ssrc-group:FID 1",
    "a=extmap:99999 urn:x",
    "a=rtcp-fb:* nack",
    "a=sendrecv",
    "a=inactive",
    "c=IN IP6 ::1",
    "c=IN IP4",
    "b=AS:-1",
    "t=abc def",
    "o=- - - IN IP4 x",
    "v=1",
    "=",
    "a=",
    "x",
];

/// Characters of 2, 3 and 4 bytes in UTF-8, and a bidi override.
const WIDE: &[char] = &['\u{e9}', '\u{20ac}', '\u{1d11e}', '\u{202e}'];

/// Byte sequences that are not UTF-8: a lone byte, a truncated sequence, a surrogate.
const NOT_UTF8: &[&[u8]] = &[b"\xff", b"\xe2\x82", b"\xed\xa0\x80"];

/// A char boundary of `line` in its value (after its first ':' or '='), picked at random.
fn value_boundary(rng: &mut StdRng, line: &str) -> usize {
    let start = line.find([':', '=']).map_or(0, |p| p + 1);
    let mut at = rng.random_range(start..=line.len());
    while !line.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn lines(s: &str) -> Vec<String> {
    s.split("\r\n")
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// One random mutation of `sdp`.
pub(crate) fn mutate(rng: &mut StdRng, sdp: &str) -> Vec<u8> {
    let mut ls = lines(sdp);
    let pick = |rng: &mut StdRng, n: usize| rng.random_range(0..n.max(1));
    match rng.random_range(0..12) {
        0 => {
            let mut b = sdp.as_bytes().to_vec();
            for _ in 0..rng.random_range(1..8) {
                let i = pick(rng, b.len());
                b[i] = rng.random();
            }
            return b;
        }
        1 => {
            let i = pick(rng, ls.len());
            ls.remove(i);
        }
        2 => {
            let i = pick(rng, ls.len());
            let l = ls[i].clone();
            ls.insert(i, l);
        }
        3 => {
            let i = pick(rng, ls.len());
            let t = TRICKY[pick(rng, TRICKY.len())];
            ls.insert(i, t.to_string());
        }
        4 => {
            let i = pick(rng, ls.len());
            let t = TRICKY[pick(rng, TRICKY.len())];
            ls[i] = t.to_string();
        }
        5 => {
            let cut = pick(rng, sdp.len());
            return sdp.as_bytes()[..cut].to_vec();
        }
        6 => {
            let (i, j) = (pick(rng, ls.len()), pick(rng, ls.len()));
            ls.swap(i, j);
        }
        7 => {
            // A value replaced by a long or odd one.
            let i = pick(rng, ls.len());
            if let Some((k, _)) = ls[i].clone().split_once(':') {
                let v = match rng.random_range(0..3) {
                    0 => "9".repeat(40),
                    1 => "\u{202e}\u{0}\u{ffff}".into(),
                    _ => "x ".repeat(2000),
                };
                ls[i] = format!("{k}:{v}");
            }
        }
        8 => {
            // A multi-byte character inserted into a value.
            let i = pick(rng, ls.len());
            let at = value_boundary(rng, &ls[i]);
            ls[i].insert(at, WIDE[pick(rng, WIDE.len())]);
        }
        9 => {
            // A multi-byte character in place of as many bytes of a value: a byte-length
            // check still passes, byte-index slicing lands inside the character.
            let i = pick(rng, ls.len());
            let c = WIDE[pick(rng, WIDE.len())];
            let at = value_boundary(rng, &ls[i]);
            let end = at + c.len_utf8();
            if ls[i].get(at..end).is_some() {
                ls[i].replace_range(at..end, c.encode_utf8(&mut [0; 4]));
            }
        }
        10 => {
            // Bytes that are not UTF-8, inside a line.
            let mut b = (ls.join("\r\n") + "\r\n").into_bytes();
            let at = pick(rng, b.len());
            b.splice(at..at, NOT_UTF8[pick(rng, NOT_UTF8.len())].iter().copied());
            return b;
        }
        _ => {
            let n = rng.random_range(0..512);
            return (0..n).map(|_| rng.random()).collect();
        }
    }
    (ls.join("\r\n") + "\r\n").into_bytes()
}

fn acceptable(status: u16) -> bool {
    (200..300).contains(&status) || (400..500).contains(&status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_offers_get_4xx_or_a_session_and_leave_nothing_behind() {
    let server = TestServer::start("320x240", 15, 2.0).await;
    let whep = server.url("/whep");
    let mut watching = Viewer::connect(&whep).await;
    watching.wait_for("frames", |d| d.frames >= 5).await;
    let (pc, real, _rx, _dc) = offer_with_channel(Some("whepcast")).await;
    let _ = pc.close().await;

    let mut rng = StdRng::seed_from_u64(0x5eed_0ff3);
    let bodies: Vec<Vec<u8>> = (0..400).map(|_| mutate(&mut rng, &real)).collect();
    let client = reqwest::Client::new();
    let mut counts = std::collections::BTreeMap::<u16, usize>::new();
    for chunk in bodies.chunks(8) {
        let sent = chunk.iter().map(|b| {
            client
                .post(&whep)
                .header("Content-Type", "application/sdp")
                .body(b.clone())
                .send()
        });
        for (res, body) in futures_util::future::join_all(sent)
            .await
            .into_iter()
            .zip(chunk)
        {
            let res = res.expect("the server answers");
            let status = res.status().as_u16();
            *counts.entry(status).or_default() += 1;
            let location = res
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string());
            let text = res.text().await.unwrap();
            assert!(
                acceptable(status),
                "{status} for:\n{}\n-> {text}",
                String::from_utf8_lossy(body)
            );
            if status >= 400 {
                assert!(text.trim().len() > 10, "{status} says why: {text:?}");
            }
            if let Some(l) = location {
                let res = client.delete(server.url(&l)).send().await.unwrap();
                assert_eq!(res.status(), 200);
            }
        }
    }
    eprintln!("mutated offers: {counts:?}");
    assert!(
        counts.keys().any(|s| *s >= 400),
        "some mutations were refused"
    );
    server.wait_for_sessions(1).await;
    watching
        .wait_for_more("video through it all", |d| d.frames as usize, 10)
        .await;
    watching.close().await;
    server.stop().await;
}

/// The offers of issue 13: a six-byte profile-level-id with a multi-byte character made
/// offer inspection slice inside the character and panic. They are refused like any other
/// H.264 we cannot send: 422, naming H.264.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multibyte_profile_level_ids_get_422_naming_h264() {
    let server = TestServer::start("320x240", 15, 2.0).await;
    let whep = server.url("/whep");
    let (pc, real, _track) = offer().await;
    let _ = pc.close().await;
    assert!(real.contains("profile-level-id=42e01f"), "{real}");
    for pli in ["a\u{e9}123", "4\u{20ac}1f"] {
        let sdp = real.replace(
            "profile-level-id=42e01f",
            &format!("profile-level-id={pli}"),
        );
        let (status, _, body) = post(&whep, Some("application/sdp"), sdp).await;
        assert_eq!(status, 422, "{pli}: {body}");
        assert!(body.contains("H.264"), "{pli}: {body}");
    }
    assert_eq!(server.active_sessions().await, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_trickle_fragments_never_break_the_session() {
    let server = TestServer::start("320x240", 15, 2.0).await;
    let mut viewer = Viewer::connect(&server.url("/whep")).await;
    viewer.wait_for("frames", |d| d.frames >= 5).await;
    let session = server.url(&viewer.location);
    let local = viewer.pc.local_description().await.unwrap().sdp;
    let real = whepcast::whep::sdpfrag::IceParams::from_sdp(&local)
        .to_fragment("m=video 9 UDP/TLS/RTP/SAVPF 0", "0");

    let mut rng = StdRng::seed_from_u64(0x007e_1c4e);
    let client = reqwest::Client::new();
    let mut counts = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..300 {
        let body = mutate(&mut rng, &real);
        // No If-Match: a mutation that looks like a restart must be refused (428), not
        // carried out, so the viewer keeps its ICE session.
        let res = client
            .patch(&session)
            .header("Content-Type", "application/trickle-ice-sdpfrag")
            .body(body.clone())
            .send()
            .await
            .expect("the server answers");
        let status = res.status().as_u16();
        *counts.entry(status).or_default() += 1;
        let text = res.text().await.unwrap();
        assert!(
            acceptable(status),
            "{status} for:\n{}\n-> {text}",
            String::from_utf8_lossy(&body)
        );
    }
    eprintln!("mutated fragments: {counts:?}");
    assert!(counts.contains_key(&204) && counts.keys().any(|s| *s >= 400));
    assert_eq!(server.active_sessions().await, 1);
    viewer
        .wait_for_more("video after 300 hostile PATCHes", |d| d.frames as usize, 10)
        .await;
    viewer.close().await;
    server.stop().await;
}

/// Sends raw bytes as an HTTP request and returns the status of the response, or `None`
/// when the server closed the connection without one.
fn raw_status(addr: &str, request: &[u8]) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(request).ok()?;
    // Keep our side open (a half-closed client may have its request dropped) and read just
    // the status line.
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while out.len() < 12 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_requests_get_4xx() {
    let server = TestServer::start("320x240", 15, 2.0).await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let sdp = "v=0\r\n";
    let cases: Vec<Vec<u8>> = vec![
        format!("POST /whep HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: -1\r\n\r\n{sdp}").into(),
        format!("POST /whep HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: 99999999999999999999999\r\n\r\n{sdp}").into(),
        format!("POST /whep HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n{sdp}").into(),
        format!("POST /whep HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{sdp}").into(),
        b"POST /whep HTTP/1.1\r\nHost: x\r\nContent-Type: application/\xff\xfesdp\r\nContent-Length: 5\r\n\r\nv=0\r\n".to_vec(),
        b"POST /whep HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nAuthorization: Bearer \xff\r\nContent-Length: 5\r\n\r\nv=0\r\n".to_vec(),
        b"PATCH /whep/session/abc HTTP/1.1\r\nHost: x\r\nContent-Type: application/trickle-ice-sdpfrag\r\nIf-Match: \xff\r\nContent-Length: 5\r\n\r\na=x\r\n".to_vec(),
        b"DELETE /whep/session/%ff%00 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"POST /whep/%2e%2e%2f HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n".to_vec(),
        format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(10000)).into(),
        format!("POST /whep HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(100_000)).into(),
        b"BREW /whep HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
    ];
    for (i, req) in cases.iter().enumerate() {
        let status = tokio::task::spawn_blocking({
            let (addr, req) = (addr.clone(), req.clone());
            move || raw_status(&addr, &req)
        })
        .await
        .unwrap();
        let status = status.unwrap_or_else(|| panic!("case {i}: closed without a response"));
        assert!((400..500).contains(&status), "case {i}: {status}");
    }
    // Random bytes as header values, through a real client where they are legal.
    let mut rng = StdRng::seed_from_u64(42);
    let client = reqwest::Client::new();
    for _ in 0..100 {
        let v: String = (0..rng.random_range(0..40))
            .map(|_| rng.random_range(0x20u8..0x7f) as char)
            .collect();
        let res = client
            .post(server.url("/whep"))
            .header("Content-Type", v.clone())
            .header("Authorization", v.clone())
            .header("If-Match", v.clone())
            .body("v=0\r\n")
            .send()
            .await
            .unwrap();
        assert!(
            (400..500).contains(&res.status().as_u16()),
            "{v:?} -> {}",
            res.status()
        );
    }
    assert_eq!(server.active_sessions().await, 0);
    let mut v = Viewer::connect(&server.url("/whep")).await;
    v.wait_for("video after it all", |d| d.frames >= 5).await;
    v.close().await;
    server.stop().await;
}
