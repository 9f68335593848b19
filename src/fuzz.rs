//! Fuzz entry points: one for every parser that network input reaches.
//!
//! Each `pub fn NAME(data: &[u8])` hands arbitrary bytes to one parser the way the server
//! does, must never panic, and checks what that parser promises beyond not panicking (a
//! rewrite stays well-formed, a fragment we write parses back to what we wrote, no reply
//! grows without bound, ...). Each `NAME_structured(u)` builds its input from real material
//! (a Chromium and an aiortc offer, trickle fragments, an answer, STUN and RTCP packets,
//! header values) and mutates it the way a broken or hostile peer would: multi-byte and
//! invalid UTF-8 in every field (also in place of as many bytes, so that byte-length checks
//! pass and byte-index slicing lands inside a character), huge and negative numbers,
//! repeated and missing attributes and parameters, absurd lengths, empty values, CR/LF/NUL.
//!
//! | entry point                 | parser                                                   |
//! |-----------------------------|----------------------------------------------------------|
//! | [`offer`]                   | offer inspection ([`crate::rtc::choose_h264`])           |
//! | [`restart`]                 | ICE-restart rewrites of an offer ([`crate::whep::sdpfrag`]) |
//! | [`advertise`]               | the answer's candidate rewrite ([`crate::rtc::advertise_candidates`]) |
//! | [`fragment`]                | trickle `PATCH` bodies ([`crate::whep::Fragment`])       |
//! | [`datachannel`]             | data-channel messages (ping, chat)                       |
//! | [`stun`], [`nomination`]    | the STUN nomination shim ([`crate::rtc::nomination`])    |
//! | [`rtcp`]                    | RTCP from viewers (keyframe requests, receiver reports, REMB, NACK gating) |
//! | [`feedback_reports`]        | transport-wide feedback as the estimator reads it ([`crate::rtc::cc`]) |
//! | [`whep_query`]              | `?rendition=`, `?max_bitrate=`, `?insist=` of `POST /whep` |
//! | [`authorization`], [`content_type`], [`if_match`], [`origin`] | the headers we read |
//! | [`port_range`], [`ice_server`] | configuration (`--udp-ports`, `--stun`/`--turn`)      |
//! | [`whip_link`]               | a WHIP endpoint's `Link: rel="ice-server"` headers ([`crate::whip::link`]) |
//! | [`whip_message`]            | a WHIP endpoint's error bodies ([`crate::whip::client::message_of`]) |
//!
//! The tests at the bottom run every entry point on a fixed set of cases with `arbtest`, on
//! stable Rust, in the normal test run (`cargo test --lib fuzz`). A failure prints its seed;
//! `ARBTEST_SEED=<seed> cargo test --lib fuzz::tests::<name>` replays it. `fuzz/` holds a
//! cargo-fuzz target per entry point for open-ended runs with a nightly toolchain.
//!
//! Not an API (hidden from the documentation): only for the fuzzers and the tests.

use crate::http::{self, Token};
use crate::rtc::ice::{advertise_candidates, IceServer, PortPool};
use crate::rtc::nomination::{stun_header, State};
use crate::rtc::offer::{choose_h264, rank_h264};
use crate::whep::datachannel::{self, Incoming, MAX_CHAT_CHARS};
use crate::whep::sdpfrag::{self, Fragment, IceParams, MAX_CANDIDATES};
use arbitrary::{Result, Unstructured};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

/// Longest error message a parser may send back beyond the input it quotes.
const MESSAGE_OVERHEAD: usize = 1024;

// ---------------------------------------------------------------------------------------
// Offers
// ---------------------------------------------------------------------------------------

/// Offer inspection, on a `POST /whep` body.
pub fn offer(data: &[u8]) {
    // The server refuses a body that is not UTF-8 before any parser sees it.
    let Ok(sdp) = std::str::from_utf8(data) else {
        return;
    };
    let first = choose_h264(sdp);
    match &first {
        Ok(choice) => {
            assert!(
                rank_h264(&choice.fmtp).is_some(),
                "chose a format we cannot send: {:?}",
                choice.fmtp
            );
            assert!(
                sdp.contains(choice.fmtp.as_str()),
                "the fmtp echoed in the answer is not the offer's: {:?}",
                choice.fmtp
            );
        }
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.len() <= sdp.len() + MESSAGE_OVERHEAD,
                "a {}-byte message for a {}-byte offer",
                text.len(),
                sdp.len()
            );
        }
    }
    // The same offer, the same choice (a NoH264 message may list formats in another order).
    match (&first, &choose_h264(sdp)) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(std::mem::discriminant(a), std::mem::discriminant(b)),
        (a, b) => panic!("one offer, two outcomes: {a:?} then {b:?}"),
    }
}

/// A real offer, mutated, through offer inspection and the ICE-restart rewrites.
pub fn offer_structured(u: &mut Unstructured) -> Result<()> {
    let bytes = mutated_offer(u)?;
    offer(&bytes);
    restart(&bytes);
    Ok(())
}

/// A Chromium or aiortc offer with 1 to 6 structure-aware mutations.
fn mutated_offer(u: &mut Unstructured) -> Result<Vec<u8>> {
    let base = *u.choose(&[CHROMIUM_OFFER, AIORTC_OFFER])?;
    mutate_lines(u, base, OFFER_FOCUS)
}

// ---------------------------------------------------------------------------------------
// ICE restart rewrites (sdpfrag on a viewer's offer)
// ---------------------------------------------------------------------------------------

/// The ICE-restart rewrites of a viewer's offer: [`sdpfrag::restarted_offer`],
/// [`sdpfrag::first_media`], [`sdpfrag::ufrag_of`], [`IceParams::from_sdp`] and
/// [`IceParams::to_fragment`].
pub fn restart(data: &[u8]) {
    let Ok(offer) = std::str::from_utf8(data) else {
        return;
    };
    // Credentials as a restart fragment has them once checked (ice-chars).
    check_restart(offer, "Fz9R", "b0VjW4lRvF3q9/+zxkTQ7pYe");
}

fn check_restart(offer: &str, ufrag: &str, pwd: &str) {
    let out = sdpfrag::restarted_offer(offer, ufrag, pwd);
    for line in out.split_inclusive('\n') {
        let line = line
            .strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("a line not ended by CRLF: {line:?}"));
        assert!(
            !line.starts_with("a=candidate:") && line != "a=end-of-candidates",
            "an old candidate survived the restart: {line:?}"
        );
        if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            assert_eq!(v, ufrag);
        }
        if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            assert_eq!(v, pwd);
        }
    }
    let lines = offer.lines().count();
    assert!(out.len() <= offer.len() + lines * (2 + ufrag.len().max(pwd.len())));
    assert_eq!(
        sdpfrag::restarted_offer(&out, ufrag, pwd),
        out,
        "restarting twice is restarting once"
    );
    assert_eq!(sdpfrag::first_media(&out), sdpfrag::first_media(offer));
    if sdpfrag::ufrag_of(offer).is_some() {
        assert_eq!(sdpfrag::ufrag_of(&out).as_deref(), Some(ufrag));
    }

    let params = IceParams::from_sdp(offer);
    let unique: HashSet<&String> = params.candidates.iter().collect();
    assert_eq!(unique.len(), params.candidates.len(), "candidates repeated");
    assert!(params
        .candidates
        .iter()
        .all(|c| c.starts_with("candidate:")));
    if let Some((m_line, mid)) = sdpfrag::first_media(offer) {
        check_written_fragment(&params, &m_line, &mid);
    }
}

/// What [`IceParams::to_fragment`] writes parses back to the same credentials and
/// candidates, exactly when they are valid ones (RFC 8839); otherwise it is refused.
fn check_written_fragment(params: &IceParams, m_line: &str, mid: &str) {
    let text = params.to_fragment(m_line, mid);
    let parsed = Fragment::parse(text.as_bytes());
    let ice = |v: &str, min: usize| {
        (min..=256).contains(&v.len())
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    };
    let valid = ice(&params.ufrag, 4)
        && ice(&params.pwd, 22)
        && params.candidates.len() <= MAX_CANDIDATES
        && params.candidates.iter().all(|c| {
            c.strip_prefix("candidate:")
                .is_some_and(|v| v.split_ascii_whitespace().count() >= 8)
        });
    if !valid {
        assert!(
            parsed.is_err(),
            "accepted what we should not write: {text:?}"
        );
        return;
    }
    let parsed = parsed.unwrap_or_else(|e| panic!("our own fragment is refused ({e}): {text:?}"));
    let expected = Fragment {
        ufrag: Some(params.ufrag.clone()),
        pwd: Some(params.pwd.clone()),
        candidates: params
            .candidates
            .iter()
            .map(|c| (Some(mid.trim().to_owned()), c.trim().to_owned()))
            .collect(),
        end_of_candidates: true,
    };
    assert_eq!(parsed, expected, "{text:?}");
}

// ---------------------------------------------------------------------------------------
// Trickle fragments (PATCH bodies)
// ---------------------------------------------------------------------------------------

/// A `PATCH` body: [`Fragment::parse`], then [`Fragment::check_candidates`], as the server
/// does.
pub fn fragment(data: &[u8]) {
    let frag = match Fragment::parse(data) {
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.len() <= MESSAGE_OVERHEAD,
                "{}-byte message: {e:?}",
                text.len()
            );
            return;
        }
        Ok(f) => f,
    };
    assert!(frag.candidates.len() <= MAX_CANDIDATES);
    assert_eq!(frag.ufrag.is_some(), frag.pwd.is_some(), "half credentials");
    for (mid, c) in &frag.candidates {
        assert!(
            c.strip_prefix("candidate:")
                .is_some_and(|v| v.split_ascii_whitespace().count() >= 8),
            "{c:?}"
        );
        assert!(c.trim() == c && !c.contains('\n'), "{c:?}");
        if let Some(m) = mid {
            assert!(m.trim() == m && !m.contains('\n'), "{m:?}");
        }
    }
    if let Err(e) = frag.check_candidates() {
        let text = e.to_string();
        assert!(
            text.len() <= MESSAGE_OVERHEAD,
            "{}-byte message: {}...",
            text.len(),
            text.chars().take(300).collect::<String>()
        );
    }
    // What the server writes from the same values parses back to them.
    if let (Some(ufrag), Some(pwd)) = (&frag.ufrag, &frag.pwd) {
        let params = IceParams {
            ufrag: ufrag.clone(),
            pwd: pwd.clone(),
            candidates: frag.candidates.iter().map(|(_, c)| c.clone()).collect(),
        };
        check_written_fragment(&params, "m=video 9 UDP/TLS/RTP/SAVPF 96", "0");
    }
}

/// A real trickle or restart fragment, mutated.
pub fn fragment_structured(u: &mut Unstructured) -> Result<()> {
    let base = *u.choose(FRAGMENTS)?;
    let bytes = mutate_lines(u, base, FRAGMENT_FOCUS)?;
    fragment(&bytes);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The answer's candidates (public addresses of a 1:1 NAT)
// ---------------------------------------------------------------------------------------

/// [`advertise_candidates`]: the first bytes choose the public addresses, the rest is the
/// SDP (lossily UTF-8, as a `&str` must be).
pub fn advertise(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let ips = public_ips(&mut u).unwrap_or_default();
    let sdp = String::from_utf8_lossy(u.take_rest());
    check_advertise(&sdp, &ips);
}

/// An answer as the `webrtc` crate writes it, mutated, with a few public addresses.
pub fn advertise_structured(u: &mut Unstructured) -> Result<()> {
    let ips = public_ips(u)?;
    let bytes = mutate_lines(u, ANSWER, &["a=candidate:"])?;
    check_advertise(&String::from_utf8_lossy(&bytes), &ips);
    Ok(())
}

fn public_ips(u: &mut Unstructured) -> Result<Vec<IpAddr>> {
    const IPS: &[&str] = &[
        "203.0.113.7",
        "198.51.100.9",
        "10.0.0.5",
        "0.0.0.0",
        "255.255.255.255",
        "2001:db8::7",
        "::",
        "::ffff:203.0.113.7",
    ];
    let mut ips = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        ips.push(if u.ratio(1, 4)? {
            u.arbitrary()?
        } else {
            u.choose(IPS)?.parse().expect("a valid address")
        });
    }
    Ok(ips)
}

/// Lines are only kept, dropped (RTCP candidates) or added (well-formed host candidates for
/// the public addresses, each on its own line).
fn check_advertise(sdp: &str, ips: &[IpAddr]) {
    let out = advertise_candidates(sdp, ips);
    // Lines compared without their CR: the last one may gain a line end.
    let lines = |s: &'_ str| -> HashSet<String> {
        s.split('\n')
            .map(|l| l.trim_end_matches('\r').to_owned())
            .collect()
    };
    let (input, output) = (lines(sdp), lines(&out));
    let mut added = 0;
    for line in out
        .split('\n')
        .filter(|l| !l.is_empty() && !input.contains(l.trim_end_matches('\r')))
    {
        added += 1;
        let f: Vec<&str> = line
            .trim_end()
            .strip_prefix("a=candidate:")
            .unwrap_or_else(|| panic!("added a line that is not a candidate: {line:?}"))
            .split_ascii_whitespace()
            .collect();
        assert!(
            line.ends_with('\r')
                && f.len() >= 8
                && f[1] == "1"
                && f[6] == "typ"
                && f[7] == "host"
                && f[4].parse::<IpAddr>().is_ok_and(|ip| ips.contains(&ip)),
            "added a malformed candidate line: {line:?}"
        );
    }
    for line in sdp
        .split('\n')
        .filter(|l| !output.contains(l.trim_end_matches('\r')))
    {
        let component = line
            .trim_end()
            .strip_prefix("a=candidate:")
            .and_then(|c| c.split_ascii_whitespace().nth(1));
        assert!(
            component.is_some_and(|c| c != "1"),
            "dropped a line that is not an RTCP candidate: {line:?}"
        );
    }
    let hosts = sdp.split('\n').filter(|l| l.contains("typ host")).count();
    assert!(added <= hosts * ips.len(), "{added} lines added");
    let longest = sdp.split('\n').map(str::len).max().unwrap_or(0);
    assert!(out.len() <= sdp.len() + added * (longest + 64));
    if ips.is_empty() {
        assert!(
            out.len() <= sdp.len(),
            "without public addresses, only lines go"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Data-channel messages
// ---------------------------------------------------------------------------------------

/// Longest reply to one message. A pong echoes `id` and `t`, and JSON numbers can come back
/// longer than they came (`1e15` is `1000000000000000.0`, 4.5 times longer).
const MAX_REPLY_BYTES: usize = 5 * datachannel::MAX_MESSAGE_BYTES + 128;

/// A data-channel message: the first byte says text (even) or binary (odd), the rest is the
/// message.
pub fn datachannel(data: &[u8]) {
    match data.split_first() {
        Some((kind, msg)) => check_message(msg, kind % 2 == 0),
        None => check_message(data, true),
    }
}

/// A JSON message built from the protocol's fields with hostile values.
pub fn datachannel_structured(u: &mut Unstructured) -> Result<()> {
    let is_text = !u.ratio(1, 16)?;
    let msg = json_message(u)?;
    check_message(&msg, is_text);
    Ok(())
}

fn check_message(data: &[u8], is_text: bool) {
    let reply = match datachannel::read_message(data, is_text) {
        Err(text) => {
            let reply = datachannel::error_reply(&text);
            assert!(reply.len() <= 256, "{reply}");
            reply
        }
        Ok(Incoming::Ping { id, t }) => {
            assert!(is_text && data.len() <= datachannel::MAX_MESSAGE_BYTES);
            datachannel::pong(&id, &t, 1.7e12)
        }
        Ok(Incoming::Chat(text)) => {
            assert!(is_text && data.len() <= datachannel::MAX_MESSAGE_BYTES);
            assert!(
                !text.is_empty() && text.chars().count() <= MAX_CHAT_CHARS,
                "{text:?}"
            );
            assert_eq!(text.trim(), text);
            assert!(
                !text.chars().any(hidden_in_chat),
                "a chat line carries a hidden character: {text:?}"
            );
            return;
        }
    };
    assert!(reply.len() <= MAX_REPLY_BYTES, "{}-byte reply", reply.len());
    let value: serde_json::Value = serde_json::from_str(&reply).expect("replies are JSON");
    assert!(value["type"].is_string(), "{reply}");
}

/// What the data channel's documentation says chat lines never carry: C0/C1 controls,
/// U+2028/2029, bidirectional marks, embeddings, overrides and isolates.
fn hidden_in_chat(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}'
        | '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A message like the page sends, with hostile types, fields and values.
fn json_message(u: &mut Unstructured) -> Result<Vec<u8>> {
    const TYPES: &[&str] = &[
        "\"ping\"",
        "\"chat\"",
        "\"ping\"",
        "\"chat\"",
        "\"pong\"",
        "\"hello\"",
        "\"PING\"",
        "\"chat \"",
        "\"ch\\u0061t\"",
        "\"chat\\u0000\"",
        "\"\"",
        "null",
        "1",
        "[\"chat\"]",
    ];
    const VALUES: &[&str] = &[
        "0",
        "-1",
        "1.5",
        "1e15",
        "9e15",
        "-0",
        "1e308",
        "1e309",
        "-1e400",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999",
        "-9223372036854775809",
        "null",
        "true",
        "[]",
        "{}",
        "\"x\"",
        "\"\\ud800\"",
    ];
    let mut fields = vec![format!("\"type\":{}", u.choose(TYPES)?)];
    for _ in 0..u.int_in_range(0..=4)? {
        let field = match u.int_in_range(0..=5)? {
            0..=2 => format!("\"text\":\"{}\"", json_text(u)?),
            3 => format!("\"type\":{}", u.choose(TYPES)?),
            4 => {
                // Deep nesting, or a long array of numbers that print longer than they read.
                let depth = u.int_in_range(1..=200)?;
                format!("\"id\":{}{}", "[".repeat(depth), "]".repeat(depth))
            }
            _ => {
                let key = *u.choose(&["id", "t", "text", "\u{e9}", ""])?;
                let n = *u.choose(&[1usize, 2, 300])?;
                let v = u.choose(VALUES)?;
                let value = if n == 1 {
                    v.to_string()
                } else {
                    format!("[{}]", vec![*v; n].join(","))
                };
                format!("\"{key}\":{value}")
            }
        };
        let at = u.int_in_range(0..=fields.len())?;
        fields.insert(at, field);
    }
    let mut msg = format!("{{{}}}", fields.join(",")).into_bytes();
    match u.int_in_range(0..=7)? {
        0 => {
            let at = u.int_in_range(0..=msg.len())?;
            msg.truncate(at);
        }
        1 => {
            let at = u.int_in_range(0..=msg.len())?;
            let bad = *u.choose(INVALID_UTF8)?;
            msg.splice(at..at, bad.iter().copied());
        }
        2 => {
            // At and just past the size limit.
            let target = datachannel::MAX_MESSAGE_BYTES + u.int_in_range(0..=1)?;
            if msg.len() < target {
                let pad = target - msg.len();
                msg.splice(
                    1..1,
                    format!("\"p\":\"{}\",", "x".repeat(pad.saturating_sub(7))).bytes(),
                );
            }
        }
        _ => {}
    }
    Ok(msg)
}

/// The inside of a JSON string: words, multi-byte characters, escapes (lone surrogates
/// included), hidden characters, Unicode spaces, and chat lines at and past the limit.
fn json_text(u: &mut Unstructured) -> Result<String> {
    const PIECES: &[&str] = &[
        "hello",
        " ",
        "\u{e9}",
        "\u{20ac}",
        "\u{1d11e}",
        "\\u00e9",
        "\\ud83d\\ude00",
        "\\ud800",
        "\\udc00x",
        "\\n",
        "\\r\\n",
        "\\u0000",
        "\\u0007",
        "\\t",
        "\\\"",
        "\\\\",
        "\u{202e}",
        "\u{2028}",
        "\u{2066}",
        "\u{200f}",
        "\u{061c}",
        "\u{a0}",
        "\u{3000}",
        "\u{feff}",
        "\u{85}",
        "\\u202e",
        "\\u2029",
    ];
    let mut s = String::new();
    for _ in 0..u.int_in_range(0..=8)? {
        match u.int_in_range(0..=9)? {
            0 => {
                // At, and one past, the chat limit, in 1- to 4-byte characters.
                let c = *u.choose(&["a", "\u{e9}", "\u{20ac}", "\u{1d11e}", "\\u00e9"])?;
                let n = MAX_CHAT_CHARS + u.int_in_range(0..=1)?;
                s.push_str(&c.repeat(n));
            }
            _ => s.push_str(u.choose(PIECES)?),
        }
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------
// STUN (the nomination shim)
// ---------------------------------------------------------------------------------------

/// One UDP datagram through the nomination shim: `stun_header`, then the state machine of
/// a fresh socket.
pub fn stun(data: &[u8]) {
    let Some(header) = stun_header(data) else {
        return;
    };
    assert!(data.len() >= 20 && data[0] <= 3);
    assert_eq!(header.0, u16::from_be_bytes([data[0], data[1]]));
    assert_eq!(header.1[..], data[8..20]);
    let from: SocketAddr = "192.0.2.1:50000".parse().expect("address");
    let mut state = State::default();
    assert!(
        !state.on_received(header, data, from),
        "nothing can be due on a fresh socket"
    );
    let mut buf = vec![0; 65_536];
    let mut meta = webrtc::runtime::RecvMeta::default();
    if state.take_replay(&mut buf, &mut meta) {
        assert_eq!(&buf[..meta.len], data, "replayed bytes are the peer's own");
        assert_eq!(meta.addr, from);
        assert_eq!(header.0, binding_request());
    }
}

/// A sequence of datagrams in and out of one socket (real Binding requests with and without
/// USE-CANDIDATE, their successes, mutated and random packets, from two peers) and replays
/// asked for with buffers of several sizes. A replay only comes due after a success from the
/// address a request came from, gives back a request received from there, byte for byte,
/// and happens once.
pub fn nomination(data: &[u8]) {
    let _ = nomination_structured(&mut Unstructured::new(data));
}

/// See [`nomination`].
pub fn nomination_structured(u: &mut Unstructured) -> Result<()> {
    nomination_replays(u).map(drop)
}

/// [`nomination_structured`], counting the replays.
fn nomination_replays(u: &mut Unstructured) -> Result<usize> {
    let mut replays = 0;
    let peers: [SocketAddr; 2] = [
        "192.0.2.1:50000".parse().expect("address"),
        "[2001:db8::1]:50000".parse().expect("address"),
    ];
    let mut state = State::default();
    let mut received: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
    let mut ours: Vec<Vec<u8>> = Vec::new();
    for _ in 0..u.int_in_range(1..=24)? {
        match u.int_in_range(0..=3)? {
            0 | 1 => {
                let from = *u.choose(&peers)?;
                let packet = stun_packet(u, &ours)?;
                if let Some(header) = stun_header(&packet) {
                    let due = state.on_received(header, &packet, from);
                    if header.0 == binding_request() {
                        received.push((packet.clone(), from));
                    }
                    if due {
                        assert_ne!(header.0, binding_request());
                        assert!(
                            received.iter().any(|(_, a)| *a == from),
                            "a replay came due with no request from {from}"
                        );
                    }
                }
            }
            2 => {
                // The agent sends a check of its own, or answers a request.
                let answered: Vec<Vec<u8>> = received.iter().map(|(p, _)| p.clone()).collect();
                let packet = stun_packet(u, &answered)?;
                if let Some(header) = stun_header(&packet) {
                    state.on_sent(header);
                    if header.0 == binding_request() {
                        ours.push(packet);
                    }
                }
            }
            _ => {
                let size = *u.choose(&[0usize, 19, 20, 64, 1500, 65_536])?;
                let mut buf = vec![0; size];
                let mut meta = webrtc::runtime::RecvMeta::default();
                if state.take_replay(&mut buf, &mut meta) {
                    replays += 1;
                    let bytes = &buf[..meta.len];
                    assert!(
                        received.iter().any(|(p, a)| p == bytes && *a == meta.addr),
                        "replayed something not received from {}",
                        meta.addr
                    );
                    assert!(!state.take_replay(&mut buf, &mut meta), "replayed twice");
                }
            }
        }
    }
    Ok(replays)
}

fn binding_request() -> u16 {
    ::rtc::stun::message::BINDING_REQUEST.value()
}

/// A STUN Binding request (with or without USE-CANDIDATE), a success answering one of
/// `requests`, either of them mutated (bytes, lengths, truncation), or not STUN at all.
fn stun_packet(u: &mut Unstructured, requests: &[Vec<u8>]) -> Result<Vec<u8>> {
    use ::rtc::stun::message::{Message, Setter, TransactionId, BINDING_SUCCESS};
    let mut packet = match u.int_in_range(0..=5)? {
        0..=2 => {
            let mut m = Message::new();
            let username = String::from_utf8_lossy(&mutate_value(u, b"EsAw:Fz9R")?).into_owned();
            let mut setters: Vec<Box<dyn Setter>> = vec![
                Box::new(::rtc::stun::message::BINDING_REQUEST),
                Box::new(TransactionId(u.arbitrary()?)),
                Box::new(::rtc::stun::textattrs::Username::new(
                    ::rtc::stun::attributes::ATTR_USERNAME,
                    username,
                )),
            ];
            if u.arbitrary()? {
                setters.push(Box::new(
                    ::rtc::ice::attributes::use_candidate::UseCandidateAttr::new(),
                ));
            }
            if u.arbitrary()? {
                setters.push(Box::new(::rtc::stun::fingerprint::FINGERPRINT));
            }
            if m.build(&setters).is_err() {
                return Ok(Vec::new());
            }
            m.raw
        }
        3 if !requests.is_empty() => {
            let req = u.choose(requests)?;
            let mut m = Message::new();
            if m.unmarshal_binary(req).is_err() {
                return Ok(req.clone());
            }
            let mut r = Message::new();
            if r.build(&[Box::new(m), Box::new(BINDING_SUCCESS)]).is_err() {
                return Ok(Vec::new());
            }
            r.raw
        }
        4 => {
            // STUN's header, anything after it.
            let mut p = vec![u.int_in_range(0..=3)?, u.arbitrary()?];
            p.extend_from_slice(&u.arbitrary::<u16>()?.to_be_bytes());
            p.extend_from_slice(&0x2112_A442u32.to_be_bytes());
            let n = u.int_in_range(0..=128)?;
            p.extend_from_slice(u.bytes(n.min(u.len()))?);
            p
        }
        _ => {
            let n = u.int_in_range(0..=64)?;
            u.bytes(n.min(u.len()))?.to_vec()
        }
    };
    match u.int_in_range(0..=5)? {
        0 if !packet.is_empty() => {
            let i = u.choose_index(packet.len())?;
            packet[i] = u.arbitrary()?;
        }
        1 if packet.len() >= 4 => {
            // The message length: 0, huge, or off by a little.
            let off_by_4 = (packet.len().saturating_sub(20) as u16).wrapping_add(4);
            let len: u16 = *u.choose(&[0, 4, 0xfffc, 0xffff, off_by_4])?;
            packet[2..4].copy_from_slice(&len.to_be_bytes());
        }
        2 if packet.len() >= 24 => {
            // The first attribute's length.
            let len: u16 = *u.choose(&[0, 1, 0xffff, 0x8000])?;
            packet[22..24].copy_from_slice(&len.to_be_bytes());
        }
        3 => {
            let at = u.int_in_range(0..=packet.len())?;
            packet.truncate(at);
        }
        _ => {}
    }
    Ok(packet)
}

// ---------------------------------------------------------------------------------------
// RTCP from viewers
// ---------------------------------------------------------------------------------------

/// RTCP as a viewer sends it: unmarshalled by the `rtc` crate, then through our read-side
/// interceptors (NACK gating, receiver reports and REMB, keyframe requests) as a
/// connection's chain runs them, with the link's pacer holding a long queue or none.
pub fn rtcp(data: &[u8]) {
    use ::rtc::interceptor::{AttributedPacket, Packet, Registry, Slot, TaggedPacket};
    use ::rtc::sansio::Protocol;
    let mut buf = data;
    let Ok(packets) = ::rtc::rtcp::packet::unmarshal(&mut buf) else {
        return;
    };
    for p in &packets {
        let _ = crate::rtc::keyframe::is_keyframe_request(p.as_ref());
        let _ = p.destination_ssrc();
    }
    let link = std::sync::Arc::new(crate::rtc::cc::Link::default());
    let bounds = crate::rtc::cc::Bounds {
        start_bps: 3e6,
        min_bps: 2e5,
        max_bps: 5e6,
    };
    let mut media = ::rtc::peer_connection::configuration::media_engine::MediaEngine::default();
    use crate::rtc::cc::Feedback;
    let feedback = match data.first().map(|b| b % 3) {
        Some(0) => Feedback::Twcc,
        Some(1) => Feedback::Reports,
        _ => Feedback::Either,
    };
    let Ok(registry) =
        crate::rtc::cc::register(Registry::new(), &mut media, &link, bounds, feedback)
    else {
        return;
    };
    let mut chain = registry
        .with(
            Slot::from(crate::rtc::keyframe::SLOT),
            crate::rtc::keyframe::requests(),
        )
        .build();
    let now = std::time::Instant::now();
    let _ = chain.handle_read(TaggedPacket {
        now,
        transport: Default::default(),
        message: AttributedPacket::new(Packet::Rtcp(packets)),
    });
    while chain.poll_read().is_some() {}
    let _ = chain.handle_timeout(now + std::time::Duration::from_millis(5));
    while chain.poll_write().is_some() {}
    assert!(link
        .rtt()
        .is_none_or(|rtt| rtt < std::time::Duration::from_secs(1 << 20)));
    assert!((0.0..=1.0).contains(&link.loss()), "loss {}", link.loss());
}

/// Real RTCP packets (PLI, FIR, NACK, receiver and sender reports, REMB, SDES, BYE), in
/// compounds, with lengths, counts and bytes mutated.
pub fn rtcp_structured(u: &mut Unstructured) -> Result<()> {
    let mut data = Vec::new();
    for _ in 0..u.int_in_range(1..=3)? {
        let mut p = u.choose(RTCP_PACKETS)?.to_vec();
        match u.int_in_range(0..=5)? {
            0 => {
                let len: u16 = *u.choose(&[0, 1, 0x7fff, 0xffff])?;
                p[2..4].copy_from_slice(&len.to_be_bytes());
            }
            1 => p[0] = (p[0] & 0xe0) | u.int_in_range(0..=31)?,
            2 => {
                let i = u.choose_index(p.len())?;
                p[i] = u.arbitrary()?;
            }
            3 => {
                let at = u.int_in_range(0..=p.len())?;
                p.truncate(at);
            }
            _ => {}
        }
        data.extend_from_slice(&p);
    }
    rtcp(&data);
    Ok(())
}

/// Transport-wide feedback as [`crate::rtc::cc::Published`] reads it (arrival times the
/// viewer chose, in any order, lost and duplicate packets): the estimate, loss, queueing and
/// arriving rate stay numbers within their bounds.
pub fn feedback_reports(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = feedback_reports_structured(&mut u);
}

pub fn feedback_reports_structured(u: &mut Unstructured) -> Result<()> {
    use ::rtc::interceptor::{BandwidthEstimator, Gcc, PacketReport};
    use std::time::{Duration, Instant};
    let link = std::sync::Arc::new(crate::rtc::cc::Link::default());
    let mut estimator = crate::rtc::cc::Published::new(Gcc::new(3e6, 2e5, 5e6), link.clone());
    let t0 = Instant::now();
    let mut id = 0u64;
    for batch in 0..u.int_in_range(1..=20)? {
        let now = t0 + Duration::from_millis(batch * u.int_in_range(0..=500)?);
        let mut reports = Vec::new();
        for _ in 0..u.int_in_range(0..=40)? {
            id += 1;
            let arrival = match u.int_in_range(0..=4)? {
                0 => None,
                1 => Some(Duration::from_micros(u.arbitrary()?)),
                2 => Some(Duration::MAX),
                _ => Some(Duration::from_micros(
                    id * 1000 + u.int_in_range(0..=300_000)?,
                )),
            };
            reports.push(PacketReport {
                ssrc: u.arbitrary()?,
                id,
                rtp_sequence_number: u.arbitrary()?,
                is_twcc: true,
                twcc_sequence_number: u.arbitrary()?,
                // Sizes are of packets we sent (the viewer reports only arrival times).
                size: *u.choose(&[0, 1, 60, 1200, 1500])?,
                arrived: arrival.is_some(),
                departure: t0 + Duration::from_millis(u.int_in_range(0..=20_000)?),
                arrival,
                ecn: Default::default(),
            });
        }
        estimator.on_reports(now, &reports);
        let target = estimator.target_bitrate();
        assert!(target.is_finite() && target >= 0.0, "pacer target {target}");
        assert!((0.0..=1.0).contains(&link.loss()), "loss {}", link.loss());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The WHEP query
// ---------------------------------------------------------------------------------------

/// A stream with the default 720p ladder, for the query entry points.
fn three_renditions() -> crate::whep::Stream {
    let (publishers, renditions) = crate::fanout::ladder(&[2_500_000, 625_000, 208_000]);
    for (p, size) in publishers.iter().zip([(1280, 720), (640, 360), (320, 180)]) {
        p.set_size(crate::config::Size {
            width: size.0,
            height: size.1,
        });
    }
    crate::whep::Stream::new("main", renditions)
}

/// `POST /whep?...`: the query read as the handler reads it, checked against the stream's
/// renditions. An unknown rendition or rate is a 400 whose message stays short.
pub fn whep_query(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = format!("/whep?{text}").parse::<axum::http::Uri>() else {
        return;
    };
    let Ok(wishes) = http::wishes(&uri) else {
        return;
    };
    let stream = three_renditions();
    match wishes.preference(&stream) {
        Ok(p) => {
            if let crate::fanout::Choice::Fixed(i) = p.choice {
                assert!(i < 3, "{text:?} chose {i}");
            }
        }
        Err(e) => {
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{e}");
            assert!(e.to_string().len() < 400, "{e}");
        }
    }
}

/// Queries from the real keys and values (sizes, rates, indices) with multi-byte, encoded,
/// repeated, empty and huge parts.
pub fn whep_query_structured(u: &mut Unstructured) -> Result<()> {
    const KEYS: &[&str] = &[
        "rendition",
        "max_bitrate",
        "insist",
        "x",
        "rendition%00",
        "ré",
    ];
    const VALUES: &[&str] = &[
        "640x360",
        "1280x720",
        "320x180",
        "0",
        "2",
        "3",
        "625k",
        "2.5M",
        "auto",
        "",
        "1",
        "true",
        "640×360",
        "６４０x３６０",
        "%FF%FE",
        "%E2%82%AC",
        "99999999999999999999x1",
        "1e309",
        "-1",
        "NaN",
        "inf",
        "640x360@625k",
        "x",
        "😀",
    ];
    let mut q = String::new();
    for i in 0..u.int_in_range(0..=5)? {
        if i > 0 {
            q.push('&');
        }
        q.push_str(u.choose(KEYS)?);
        if u.ratio(7, 8)? {
            q.push('=');
            q.push_str(u.choose(VALUES)?);
        }
    }
    if u.ratio(1, 4)? {
        let extra: String = u.arbitrary()?;
        q.push_str(&extra);
    }
    whep_query(q.as_bytes());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------

/// The token the header entry points check against.
const TOKEN: &str = "s3cr3t-t0ken";

/// `Authorization` against a fixed token.
pub fn authorization(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    check_authorization(TOKEN, &value);
}

/// Tokens (up to 60 KiB) and `Authorization` values made from them, mutated.
pub fn authorization_structured(u: &mut Unstructured) -> Result<()> {
    let token = match u.int_in_range(0..=3)? {
        0 => "k".repeat(60 * 1024),
        1 => String::from_utf8_lossy(&mutate_value(u, TOKEN.as_bytes())?).into_owned(),
        _ => TOKEN.to_owned(),
    };
    let scheme = *u.choose(&[
        "Bearer ", "bearer ", "BEARER ", "Bearer  ", "Basic ", "Bearer", "",
    ])?;
    let mut value = format!("{scheme}{token}").into_bytes();
    if u.arbitrary()? {
        let (a, b) = (scheme.len(), value.len());
        let new = mutate_value(u, &value[a..b])?;
        value.splice(a..b, new);
    }
    if let Ok(value) = HeaderValue::from_bytes(&value) {
        check_authorization(&token, &value);
    }
    Ok(())
}

/// Admitted exactly when the value is `Bearer ` (or `bearer `) and the token, give or take
/// surrounding whitespace.
fn check_authorization(token: &str, value: &HeaderValue) {
    let t = Token::new(token);
    let admitted = t.admits(Some(value));
    let given = value.to_str().ok().and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    });
    assert_eq!(
        admitted,
        given.is_some_and(|g| g.trim() == token),
        "{value:?}"
    );
    assert!(!t.admits(None));
    // The holder of a token that can be sent (visible ASCII) is let in.
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) {
        let exact = HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value");
        assert!(t.admits(Some(&exact)), "{token:?} is locked out");
    }
}

/// `Content-Type` of an offer.
pub fn content_type(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    check_content_type(Some(value));
}

/// Real media types, mutated.
pub fn content_type_structured(u: &mut Unstructured) -> Result<()> {
    const TYPES: &[&str] = &[
        "application/sdp",
        "APPLICATION/SDP",
        "application/sdp; charset=utf-8",
        " application/sdp ;",
        "application/sdpx",
        "application/trickle-ice-sdpfrag",
        "text/plain",
        ";application/sdp",
        "",
    ];
    let base = u.choose(TYPES)?.as_bytes();
    let bytes = if u.arbitrary()? {
        mutate_value(u, base)?
    } else {
        base.to_vec()
    };
    if u.ratio(1, 16)? {
        check_content_type(None);
    } else if let Ok(value) = HeaderValue::from_bytes(&bytes) {
        check_content_type(Some(value));
    }
    Ok(())
}

fn check_content_type(value: Option<HeaderValue>) {
    let mut headers = HeaderMap::new();
    if let Some(v) = &value {
        headers.insert(header::CONTENT_TYPE, v.clone());
    }
    let result = http::check_content_type(&headers, "application/sdp");
    let essence = value.as_ref().and_then(|v| v.to_str().ok()).map(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    assert_eq!(
        result.is_ok(),
        essence.as_deref() == Some("application/sdp"),
        "{value:?}"
    );
    if let Err(e) = result {
        let text = e.to_string();
        assert!(text.len() <= 512, "a {}-byte message", text.len());
    }
}

/// The session's ETag in the `If-Match` entry points.
const ETAG: &str = "\"5d41402abc4b2a76\"";

/// `If-Match` of a `PATCH`: the first byte says whether the fragment restarts ICE.
pub fn if_match(data: &[u8]) {
    let (restart, value) = match data.split_first() {
        Some((b, rest)) => (b % 2 == 1, rest),
        None => (false, data),
    };
    if let Ok(value) = HeaderValue::from_bytes(value) {
        check_if_match(Some(value), restart);
    }
}

/// ETags, wildcards, lists and weak tags, mutated.
pub fn if_match_structured(u: &mut Unstructured) -> Result<()> {
    const VALUES: &[&str] = &[
        ETAG,
        "*",
        "\"*\"",
        "W/\"5d41402abc4b2a76\"",
        "\"0000000000000000\"",
        "\"0000000000000000\", \"5d41402abc4b2a76\"",
        " \"5d41402abc4b2a76\" ",
        ",,,",
        "5d41402abc4b2a76",
        "",
    ];
    let restart = u.arbitrary()?;
    if u.ratio(1, 8)? {
        check_if_match(None, restart);
        return Ok(());
    }
    let base = u.choose(VALUES)?.as_bytes();
    let mut bytes = base.to_vec();
    for _ in 0..u.int_in_range(0..=2)? {
        bytes = mutate_value(u, &bytes)?;
    }
    if let Ok(value) = HeaderValue::from_bytes(&bytes) {
        check_if_match(Some(value), restart);
    }
    Ok(())
}

fn check_if_match(value: Option<HeaderValue>, restart: bool) {
    use crate::whep::WhepError;
    let mut headers = HeaderMap::new();
    if let Some(v) = &value {
        headers.insert(header::IF_MATCH, v.clone());
    }
    let given = match http::if_match(&headers) {
        Ok(given) => given,
        Err(e) => {
            assert!(value.as_ref().is_some_and(|v| v.to_str().is_err()), "{e}");
            return;
        }
    };
    let result = crate::whep::check_if_match(given, restart, ETAG);
    let expected = match given.map(str::trim) {
        None => !restart,
        Some(g) => g == "*" || g == "\"*\"" || g.split(',').any(|t| t.trim() == ETAG),
    };
    assert_eq!(result.is_ok(), expected, "{value:?}, restart: {restart}");
    match result {
        Err(WhepError::PreconditionFailed { given, current }) => {
            assert!(given.chars().count() <= 40);
            assert_eq!(current, ETAG);
        }
        Err(WhepError::PreconditionRequired) => assert!(given.is_none() && restart),
        Err(e) => panic!("unexpected error {e}"),
        Ok(()) => {}
    }
}

/// `Origin` and `Host`, which decide whether TURN credentials may be told: the first byte
/// says which are present and where the two values split.
pub fn origin(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let (Ok(flags), Ok(split)) = (u.arbitrary::<u8>(), u.arbitrary::<u8>()) else {
        return;
    };
    let rest = u.take_rest();
    let (a, b) = rest.split_at((split as usize).min(rest.len()));
    check_origin((flags & 1 != 0).then_some(a), (flags & 2 != 0).then_some(b));
}

/// Real origins and hosts, mutated.
pub fn origin_structured(u: &mut Unstructured) -> Result<()> {
    const ORIGINS: &[&str] = &[
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "http://LOCALHOST:8080",
        "https://evil.example",
        "http://localhost:8080.evil.example",
        "http://localhost:8080/",
        "null",
        "file://",
        "://localhost:8080",
        "",
    ];
    const HOSTS: &[&str] = &["127.0.0.1:8080", "localhost:8080", "", "evil.example"];
    let mut values: [Option<Vec<u8>>; 2] = [None, None];
    for (slot, list) in values.iter_mut().zip([ORIGINS, HOSTS]) {
        if !u.ratio(1, 6)? {
            let base = u.choose(list)?.as_bytes();
            *slot = Some(if u.ratio(1, 3)? {
                mutate_value(u, base)?
            } else {
                base.to_vec()
            });
        }
    }
    check_origin(values[0].as_deref(), values[1].as_deref());
    Ok(())
}

/// Allowed without an `Origin`; with one, only when its host is the request's `Host`.
fn check_origin(origin: Option<&[u8]>, host: Option<&[u8]>) {
    let mut headers = HeaderMap::new();
    for (name, v) in [(header::ORIGIN, origin), (header::HOST, host)] {
        if let Some(Ok(v)) = v.map(HeaderValue::from_bytes) {
            headers.insert(name, v);
        }
    }
    let allowed = http::same_origin_or_none(&headers);
    let text = |n: &HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    if let (true, Some(o)) = (allowed, text(&header::ORIGIN)) {
        let host = text(&header::HOST).unwrap_or("");
        assert!(
            !host.is_empty()
                && o.split_once("://")
                    .is_some_and(|(_, h)| h.eq_ignore_ascii_case(host)),
            "TURN credentials for Origin {o:?} on Host {host:?}"
        );
    }
    if headers.get(header::ORIGIN).is_none() {
        assert!(allowed, "no Origin is not a browser: allowed");
    }
}

// ---------------------------------------------------------------------------------------
// Configuration (not network input, but typed by people)
// ---------------------------------------------------------------------------------------

/// `--udp-ports MIN-MAX`.
pub fn port_range(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(pool) = PortPool::parse(s) {
        assert!((1..=65_535).contains(&pool.len()));
        let again = PortPool::parse(&pool.to_string()).expect("its own text parses");
        assert_eq!(again.to_string(), pool.to_string());
    }
}

/// `--stun`/`--turn` URLs with credentials: the first byte says which are present, the
/// second and third where the values split.
pub fn ice_server(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let (Ok(flags), Ok(i), Ok(j)) = (
        u.arbitrary::<u8>(),
        u.arbitrary::<u8>(),
        u.arbitrary::<u8>(),
    ) else {
        return;
    };
    let rest = String::from_utf8_lossy(u.take_rest()).into_owned();
    let cut = |n: u8| {
        let mut i = usize::from(n).min(rest.len());
        while !rest.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let (i, j) = (cut(i.min(j)), cut(i.max(j)));
    let (url, user, pass) = (&rest[..i], &rest[i..j], &rest[j..]);
    let user = (flags & 1 != 0).then(|| user.to_owned());
    let pass = (flags & 2 != 0).then(|| pass.to_owned());
    if let Ok(server) = IceServer::new(url, user.clone(), pass.clone()) {
        assert_eq!(server.url, url);
        if let Some(p) = pass.filter(|p| !p.is_empty()) {
            assert!(!format!("{server:?}").contains(&p), "credentials in Debug");
        }
        let _ = server.link();
        let _ = server.for_agent();
    }
}

// ---------------------------------------------------------------------------------------
// What a WHIP endpoint sends us
// ---------------------------------------------------------------------------------------

/// `Link` header values of a WHIP `201` (one value per line of input).
pub fn whip_link(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_links(&text.split('\n').collect::<Vec<_>>());
}

/// Real `Link` values (MediaMTX-, Cloudflare- and Janus-style), mutated.
pub fn whip_link_structured(u: &mut Unstructured) -> Result<()> {
    let bytes = mutate_lines(u, WHIP_LINKS, &["<turn:", "<stun:"])?;
    let text = String::from_utf8_lossy(&bytes);
    check_links(&text.lines().collect::<Vec<_>>());
    Ok(())
}

fn check_links(values: &[&str]) {
    let servers = crate::whip::link::ice_servers(values.iter().copied());
    assert!(servers.len() <= crate::whip::link::MAX_SERVERS);
    for s in &servers {
        // Each is a server our own agent or a viewer could be told about again.
        let again = IceServer::new(&s.url, s.username.clone(), s.credential.clone())
            .expect("a kept server is valid");
        let _ = again.link();
        let _ = s.for_agent();
    }
}

/// An error body of any status: the message we print is one clipped line.
pub fn whip_message(data: &[u8]) {
    let Some((&code, body)) = data.split_first() else {
        return;
    };
    let status = axum::http::StatusCode::from_u16(400 + u16::from(code) % 200)
        .unwrap_or(axum::http::StatusCode::BAD_REQUEST);
    let msg = crate::whip::client::message_of(&String::from_utf8_lossy(body), status);
    assert!(msg.chars().count() <= 303, "{} chars", msg.chars().count());
    assert!(!msg.chars().any(char::is_control), "{msg:?}");
    assert!(!msg.is_empty());
}

const WHIP_LINKS: &[&str] = &[
    r#"<stun:stun.l.example.com:19302>; rel="ice-server""#,
    r#"<turn:turn.example.net:3478?transport=udp>; rel="ice-server"; username="1700000000:user"; credential="c2VjcmV0PQ=="; credential-type="password""#,
    r#"<turns:turn.example.net:5349?transport=tcp>; rel="ice-server"; username="u"; credential="p""#,
    r#"<stun:a.example.net>; rel="ice-server", <turn:b.example.net>; rel="ice-server"; username="x"; credential="y""#,
    r#"<urn:ietf:params:whip:ext:example:server-sent-events>; rel="urn:ietf:params:whip:ext:example:server-sent-events""#,
];

// ---------------------------------------------------------------------------------------
// Mutation
// ---------------------------------------------------------------------------------------

/// Characters of 2, 3 and 4 bytes in UTF-8 (index: length - 2): accents, a dotted capital
/// I (longer in lower case), non-ASCII digits, a no-break space, the euro sign, bidi
/// override, line separator, BOM, a noncharacter, full-width digits and letters, astral
/// symbols.
const WIDE: [&[char]; 3] = [
    &['é', 'ß', 'İ', 'Ω', '٣', '\u{80}', '\u{a0}'],
    &[
        '€', '\u{202e}', '\u{2028}', '\u{feff}', '\u{ffff}', '１', 'ｆ',
    ],
    &['𝄞', '😀', '\u{10ffff}', '𝟙'],
];

/// Not UTF-8: lone bytes, truncated sequences, a surrogate, past U+10FFFF, an overlong '/'.
const INVALID_UTF8: &[&[u8]] = &[
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xc3",
    b"\xe2\x82",
    b"\xf0\x9d\x84",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc0\xaf",
];

/// Numbers at and past every integer type's limits, negative, signed, padded, float-like.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-1",
    "+1",
    "00000000000000000001",
    "127",
    "128",
    "255",
    "256",
    "65535",
    "65536",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999",
    "340282366920938463463374607431768211456",
    "1e400",
    "NaN",
    "0x10",
    "1.5",
];

/// Values that end or break lines and fields.
const BREAKERS: &[&str] = &[
    "", " ", "\t", "\0", "\r", "\n", "\r\n", ";", ":", "=", ",", "/", "\"", "\\", "a=", "m=",
];

/// One mutation of a field's value.
fn mutate_value(u: &mut Unstructured, v: &[u8]) -> Result<Vec<u8>> {
    Ok(match u.int_in_range(0..=11)? {
        // A multi-byte character in place of as many bytes: a byte-length check still
        // passes, and byte-index slicing lands inside the character.
        0..=2 => {
            let n = u.int_in_range(2..=4usize)?;
            let c = *u.choose(WIDE[n - 2])?;
            let mut buf = [0; 4];
            let c = c.encode_utf8(&mut buf).as_bytes();
            if v.len() >= n {
                let at = u.int_in_range(0..=v.len() - n)?;
                splice(v, at, at + n, c)
            } else {
                c.to_vec()
            }
        }
        // A multi-byte character or a broken sequence inserted anywhere (maybe inside
        // another character).
        3 => {
            let at = u.int_in_range(0..=v.len())?;
            let mut buf = [0; 4];
            let ins = if u.arbitrary()? {
                let n = u.int_in_range(2..=4usize)?;
                u.choose(WIDE[n - 2])?.encode_utf8(&mut buf).as_bytes()
            } else {
                *u.choose(INVALID_UTF8)?
            };
            splice(v, at, at, ins)
        }
        4 => u.choose(NUMBERS)?.as_bytes().to_vec(),
        5 => {
            let at = u.int_in_range(0..=v.len())?;
            splice(v, at, at, u.choose(BREAKERS)?.as_bytes())
        }
        // Absurd lengths, up to 60 KiB: the value repeated, or one character.
        6 => {
            let unit: &[u8] = if v.is_empty() || u.arbitrary()? {
                u.choose(&["9", "a", "\u{e9}", "\u{1d11e}", " "])?
                    .as_bytes()
            } else {
                v
            };
            let target = *u.choose(&[300usize, 4096, 60 * 1024])?;
            unit.repeat(target / unit.len() + 1)
        }
        7 => Vec::new(),
        8 => {
            let mut w = v.to_vec();
            if w.is_empty() {
                w.push(u.arbitrary()?);
            } else {
                let i = u.choose_index(w.len())?;
                w[i] = u.arbitrary()?;
            }
            w
        }
        // ASCII case flipped: `H264` and `h264`, `Bearer` and `bEARER`.
        9 => v
            .iter()
            .map(|b| {
                if b.is_ascii_alphabetic() {
                    b ^ 0x20
                } else {
                    *b
                }
            })
            .collect(),
        10 => [v, v].concat(),
        _ => v[..v.len() / 2].to_vec(),
    })
}

fn splice(v: &[u8], from: usize, to: usize, with: &[u8]) -> Vec<u8> {
    [&v[..from], with, &v[to..]].concat()
}

/// Lines that do not belong, or that push a parser's corners.
const EXTRA_LINES: &[&str] = &[
    "m=video 0 RTP/AVP 0",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 102 103 104 105 106 107 108",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "a=rtpmap:96 H264/90000",
    "a=rtpmap:96 H264/0",
    "a=rtpmap:300 H264/90000",
    "a=rtpmap:96 h264/90000/2/7",
    "a=fmtp:96 packetization-mode=1;profile-level-id=42e01f",
    "a=fmtp:96 packetization-mode=1;profile-level-id=42e01f;profile-level-id=640032",
    "a=fmtp:96 packetization-mode=1;;;=;profile-level-id",
    "a=rtcp-fb:96 nack pli",
    "a=rtcp-fb:* nack",
    "a=ice-ufrag:",
    "a=ice-pwd:",
    "a=ice-ufrag:Fz9R",
    "a=ice-pwd:b0VjW4lRvF3q9/+zxkTQ7pYe",
    "a=candidate:1 1 udp 2130706431 10.0.0.5 50001 typ host",
    "a=candidate:1 2 udp 2130706431 10.0.0.5 50001 typ host",
    "a=candidate:1 1 udp 1 999.1.1.1 99999 typ host",
    "a=candidate:garbage",
    "a=candidate:",
    "a=end-of-candidates",
    "a=mid:",
    "a=mid:0",
    "a=fingerprint:sha-256 00:11",
    "a=sendonly",
    "a=inactive",
    "a=recvonly",
    "c=IN IP4",
    "v=0",
    "=",
    "a=",
    "\u{feff}v=0",
];

/// Which lines a mutation of an offer prefers (half of the time): what offer inspection
/// reads closely.
const OFFER_FOCUS: &[&str] = &["a=fmtp:", "a=rtpmap:", "m=video"];
/// Which lines a mutation of a fragment prefers: all of those it reads.
const FRAGMENT_FOCUS: &[&str] = &["a=candidate:", "a=ice-", "a=mid:", "m="];

/// `lines` with 1 to 6 structure-aware mutations (mostly 1 or 2), joined with CRLF or another line end,
/// with or without a final one.
fn mutate_lines(u: &mut Unstructured, lines: &[&str], focus: &[&str]) -> Result<Vec<u8>> {
    let mut ls: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
    // Mostly one or two: each mutation may make the text unparseable, hiding the others.
    for _ in 0..*u.choose(&[1, 1, 1, 2, 2, 3, 4, 6])? {
        mutate_line_set(u, &mut ls, focus)?;
    }
    let ending: &[u8] = match u.int_in_range(0..=9)? {
        0 => b"\n",
        1 => b"\r",
        2 => b"\r\r\n",
        3 => b"\n\r",
        _ => b"\r\n",
    };
    let mut out = ls.join(ending);
    if !u.ratio(1, 8)? {
        out.extend_from_slice(ending);
    }
    Ok(out)
}

/// A line to mutate: half of the time one of the `focus` lines (if any).
fn pick_line(u: &mut Unstructured, ls: &[Vec<u8>], focus: &[&str]) -> Result<usize> {
    if u.arbitrary()? {
        let focused: Vec<usize> = (0..ls.len())
            .filter(|&i| focus.iter().any(|f| ls[i].starts_with(f.as_bytes())))
            .collect();
        if !focused.is_empty() {
            return Ok(focused[u.choose_index(focused.len())?]);
        }
    }
    u.choose_index(ls.len())
}

fn mutate_line_set(u: &mut Unstructured, ls: &mut Vec<Vec<u8>>, focus: &[&str]) -> Result<()> {
    if ls.is_empty() {
        ls.push(Vec::new());
    }
    let i = pick_line(u, ls, focus)?;
    match u.int_in_range(0..=12)? {
        // A field (a word between ' ', ':', ';', '=', '/', ',') changed.
        0..=3 => ls[i] = mutate_field(u, &ls[i])?,
        // An element of the line's list (fmtp parameters, candidate fields, m-line formats)
        // changed, repeated, dropped or added.
        4..=6 => ls[i] = mutate_list(u, &ls[i])?,
        // A missing attribute.
        7 => {
            ls.remove(i);
        }
        // A repeated attribute, a few times or very many.
        8 => {
            let n = *u.choose(&[1usize, 1, 2, 300])?;
            let line = ls[i].clone();
            ls.splice(i..i, std::iter::repeat_n(line, n));
        }
        // Out of order, maybe into another section.
        9 => {
            let j = u.choose_index(ls.len())?;
            ls.swap(i, j);
        }
        10 => {
            let extra = u.choose(EXTRA_LINES)?.as_bytes().to_vec();
            let extra = if u.arbitrary()? {
                mutate_field(u, &extra)?
            } else {
                extra
            };
            ls.insert(i, extra);
        }
        // A line, or the whole text, cut short.
        11 => {
            let cut = u.int_in_range(0..=ls[i].len())?;
            ls[i].truncate(cut);
        }
        _ => ls.truncate(i + 1),
    }
    Ok(())
}

fn is_separator(b: u8) -> bool {
    matches!(b, b' ' | b':' | b';' | b'=' | b'/' | b',')
}

/// Changes one field of `line`.
fn mutate_field(u: &mut Unstructured, line: &[u8]) -> Result<Vec<u8>> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, b) in line.iter().enumerate() {
        match (start, is_separator(*b)) {
            (None, false) => start = Some(i),
            (Some(s), true) => {
                spans.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, line.len()));
    }
    if spans.is_empty() {
        return mutate_value(u, line);
    }
    let (a, b) = *u.choose(&spans)?;
    let new = mutate_value(u, &line[a..b])?;
    Ok(splice(line, a, b, &new))
}

/// Treats what follows the line's first ':' (or its `x=`) as a list, split on ';' if it has
/// one, else on ' ', and changes one element: its value (after '='), the element, or the
/// list (an element repeated, dropped, swapped, or added).
fn mutate_list(u: &mut Unstructured, line: &[u8]) -> Result<Vec<u8>> {
    const ADDED: &[&str] = &[
        "profile-level-id=42e01f",
        "packetization-mode=1",
        "packetization-mode=0",
        "x-unknown=1",
        "=",
        "generation 0",
        "raddr",
        "typ",
        "96",
    ];
    let head = line
        .iter()
        .position(|b| *b == b':')
        .map(|p| p + 1)
        .unwrap_or(line.len().min(2));
    let sep = if line[head..].contains(&b';') {
        b';'
    } else {
        b' '
    };
    let mut items: Vec<Vec<u8>> = line[head..]
        .split(|b| *b == sep)
        .map(<[u8]>::to_vec)
        .collect();
    let i = u.choose_index(items.len())?;
    match u.int_in_range(0..=7)? {
        0..=2 => {
            let item = &items[i];
            items[i] = match item.iter().position(|b| *b == b'=') {
                Some(eq) => splice(item, eq + 1, item.len(), &mutate_value(u, &item[eq + 1..])?),
                None => mutate_value(u, item)?,
            };
        }
        3 => items[i] = mutate_value(u, &items[i])?,
        4 => {
            let item = items[i].clone();
            items.insert(i, item);
        }
        5 => {
            items.remove(i);
        }
        6 => {
            let j = u.choose_index(items.len())?;
            items.swap(i, j);
        }
        _ => items.insert(i, u.choose(ADDED)?.as_bytes().to_vec()),
    }
    Ok([&line[..head], &items.join(&sep)[..]].concat())
}

// ---------------------------------------------------------------------------------------
// Material
// ---------------------------------------------------------------------------------------

/// A Chromium offer for the viewer page: video to receive (every codec Chromium has, H.264
/// in six profiles and both packetization modes) and a data channel.
const CHROMIUM_OFFER: &[&str] = &[
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 106 107 108 109 127 125 39 40 45 46 98 99 100 101 112 113 116 117 118",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:EsAw",
    "a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F",
    "a=setup:actpass",
    "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:toffset",
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=extmap:3 urn:3gpp:video-orientation",
    "a=extmap:4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
    "a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/video-content-type",
    "a=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/video-timing",
    "a=extmap:8 http://www.webrtc.org/experiments/rtp-hdrext/color-space",
    "a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    "a=recvonly",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    "a=rtpmap:96 VP8/90000",
    "a=rtcp-fb:96 goog-remb",
    "a=rtcp-fb:96 transport-cc",
    "a=rtcp-fb:96 ccm fir",
    "a=rtcp-fb:96 nack",
    "a=rtcp-fb:96 nack pli",
    "a=rtpmap:97 rtx/90000",
    "a=fmtp:97 apt=96",
    "a=rtpmap:102 H264/90000",
    "a=rtcp-fb:102 goog-remb",
    "a=rtcp-fb:102 transport-cc",
    "a=rtcp-fb:102 ccm fir",
    "a=rtcp-fb:102 nack",
    "a=rtcp-fb:102 nack pli",
    "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
    "a=rtpmap:103 rtx/90000",
    "a=fmtp:103 apt=102",
    "a=rtpmap:104 H264/90000",
    "a=rtcp-fb:104 goog-remb",
    "a=rtcp-fb:104 transport-cc",
    "a=rtcp-fb:104 ccm fir",
    "a=rtcp-fb:104 nack",
    "a=rtcp-fb:104 nack pli",
    "a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f",
    "a=rtpmap:105 rtx/90000",
    "a=fmtp:105 apt=104",
    "a=rtpmap:106 H264/90000",
    "a=rtcp-fb:106 goog-remb",
    "a=rtcp-fb:106 transport-cc",
    "a=rtcp-fb:106 ccm fir",
    "a=rtcp-fb:106 nack",
    "a=rtcp-fb:106 nack pli",
    "a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    "a=rtpmap:107 rtx/90000",
    "a=fmtp:107 apt=106",
    "a=rtpmap:108 H264/90000",
    "a=rtcp-fb:108 goog-remb",
    "a=rtcp-fb:108 transport-cc",
    "a=rtcp-fb:108 ccm fir",
    "a=rtcp-fb:108 nack",
    "a=rtcp-fb:108 nack pli",
    "a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f",
    "a=rtpmap:109 rtx/90000",
    "a=fmtp:109 apt=108",
    "a=rtpmap:127 H264/90000",
    "a=rtcp-fb:127 goog-remb",
    "a=rtcp-fb:127 transport-cc",
    "a=rtcp-fb:127 ccm fir",
    "a=rtcp-fb:127 nack",
    "a=rtcp-fb:127 nack pli",
    "a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f",
    "a=rtpmap:125 rtx/90000",
    "a=fmtp:125 apt=127",
    "a=rtpmap:39 H264/90000",
    "a=rtcp-fb:39 goog-remb",
    "a=rtcp-fb:39 transport-cc",
    "a=rtcp-fb:39 ccm fir",
    "a=rtcp-fb:39 nack",
    "a=rtcp-fb:39 nack pli",
    "a=fmtp:39 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=4d001f",
    "a=rtpmap:40 rtx/90000",
    "a=fmtp:40 apt=39",
    "a=rtpmap:45 AV1/90000",
    "a=rtcp-fb:45 goog-remb",
    "a=rtcp-fb:45 transport-cc",
    "a=rtcp-fb:45 ccm fir",
    "a=rtcp-fb:45 nack",
    "a=rtcp-fb:45 nack pli",
    "a=fmtp:45 level-idx=5;profile=0;tier=0",
    "a=rtpmap:46 rtx/90000",
    "a=fmtp:46 apt=45",
    "a=rtpmap:98 VP9/90000",
    "a=rtcp-fb:98 goog-remb",
    "a=rtcp-fb:98 transport-cc",
    "a=rtcp-fb:98 ccm fir",
    "a=rtcp-fb:98 nack",
    "a=rtcp-fb:98 nack pli",
    "a=fmtp:98 profile-id=0",
    "a=rtpmap:99 rtx/90000",
    "a=fmtp:99 apt=98",
    "a=rtpmap:100 VP9/90000",
    "a=rtcp-fb:100 goog-remb",
    "a=rtcp-fb:100 transport-cc",
    "a=rtcp-fb:100 ccm fir",
    "a=rtcp-fb:100 nack",
    "a=rtcp-fb:100 nack pli",
    "a=fmtp:100 profile-id=2",
    "a=rtpmap:101 rtx/90000",
    "a=fmtp:101 apt=100",
    "a=rtpmap:112 H264/90000",
    "a=rtcp-fb:112 goog-remb",
    "a=rtcp-fb:112 transport-cc",
    "a=rtcp-fb:112 ccm fir",
    "a=rtcp-fb:112 nack",
    "a=rtcp-fb:112 nack pli",
    "a=fmtp:112 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f",
    "a=rtpmap:113 rtx/90000",
    "a=fmtp:113 apt=112",
    "a=rtpmap:116 red/90000",
    "a=rtpmap:117 rtx/90000",
    "a=fmtp:117 apt=116",
    "a=rtpmap:118 ulpfec/90000",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "c=IN IP4 0.0.0.0",
    "a=ice-ufrag:EsAw",
    "a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F",
    "a=setup:actpass",
    "a=mid:1",
    "a=sctp-port:5000",
    "a=max-message-size:262144",
];

/// An aiortc offer: no trickle (candidates inline, end-of-candidates), credentials after
/// the codecs, H.264 Baseline and Constrained Baseline.
const AIORTC_OFFER: &[&str] = &[
    "v=0",
    "o=- 3926234923 3926234923 IN IP4 0.0.0.0",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0",
    "a=msid-semantic:WMS *",
    "m=video 42101 UDP/TLS/RTP/SAVPF 97 98 99 100 101 102",
    "c=IN IP4 192.0.2.20",
    "a=recvonly",
    "a=mid:0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=rtcp-mux",
    "a=rtpmap:97 VP8/90000",
    "a=rtcp-fb:97 nack",
    "a=rtcp-fb:97 nack pli",
    "a=rtcp-fb:97 goog-remb",
    "a=rtpmap:98 rtx/90000",
    "a=fmtp:98 apt=97",
    "a=rtpmap:99 H264/90000",
    "a=rtcp-fb:99 nack",
    "a=rtcp-fb:99 nack pli",
    "a=rtcp-fb:99 goog-remb",
    "a=fmtp:99 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
    "a=rtpmap:100 rtx/90000",
    "a=fmtp:100 apt=99",
    "a=rtpmap:101 H264/90000",
    "a=rtcp-fb:101 nack",
    "a=rtcp-fb:101 nack pli",
    "a=rtcp-fb:101 goog-remb",
    "a=fmtp:101 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    "a=rtpmap:102 rtx/90000",
    "a=fmtp:102 apt=101",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=candidate:5d6b8d5e5f6a2d3c2b1a0f9e8d7c6b5a 1 udp 2130706431 192.0.2.20 42101 typ host",
    "a=candidate:8c1b2a3d4e5f60718293a4b5c6d7e8f9 1 udp 1694498815 198.51.100.20 42101 typ srflx raddr 192.0.2.20 rport 42101",
    "a=end-of-candidates",
    "a=ice-ufrag:Vb3n",
    "a=ice-pwd:1ZCS1OAB6E1uTHPpF0k3xqJ3",
    "a=fingerprint:sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:8C:D3:B6:5C:09:5E:D6:BC",
    "a=setup:actpass",
];

/// Trickle `PATCH` bodies as clients send them (RFC 8840): Chromium's (several candidate
/// kinds, an mDNS name, IPv6), Firefox's, a two-section one (whip-whep), a restart, and an
/// end-of-candidates alone.
const FRAGMENTS: &[&[&str]] = &[
    &[
        "a=ice-ufrag:EsAw",
        "a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1",
        "m=video 9 UDP/TLS/RTP/SAVPF 0",
        "a=mid:0",
        "a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1",
        "a=candidate:3471623853 1 udp 1686052607 198.51.100.7 61764 typ srflx raddr 192.0.2.1 rport 61764 generation 0 ufrag EsAw network-id 1",
        "a=candidate:2274146694 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active generation 0 ufrag EsAw network-id 1",
        "a=candidate:842163049 1 udp 2122197247 2001:db8::1 61765 typ host generation 0 ufrag EsAw network-id 2",
        "a=candidate:4233069003 1 udp 2122131711 3f2b9c1e-6d0e-4c55-9f38-8a7e2a6d1f00.local 54400 typ host generation 0 ufrag EsAw network-id 3",
        "a=candidate:1039001212 1 udp 41885439 203.0.113.5 3478 typ relay raddr 198.51.100.7 rport 61764 generation 0 ufrag EsAw network-id 1",
        "a=end-of-candidates",
    ],
    &[
        "a=ice-ufrag:8f1a2b3c",
        "a=ice-pwd:4d6e8f0a1b2c3d4e5f6a7b8c9d0e1f2a",
        "m=video 9 UDP/TLS/RTP/SAVPF 0",
        "a=mid:0",
        "a=candidate:0 1 UDP 2122252543 192.0.2.3 50111 typ host",
        "a=candidate:2 1 TCP 2105524479 192.0.2.3 9 typ host tcptype active",
        "a=candidate:1 1 UDP 1686052863 198.51.100.3 50111 typ srflx raddr 192.0.2.3 rport 50111",
    ],
    &[
        "a=ice-ufrag:EsAw",
        "a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1",
        "m=audio 9 UDP/TLS/RTP/SAVPF 0",
        "a=mid:0",
        "a=candidate:1 1 udp 2122260223 192.0.2.1 61764 typ host",
        "m=video 9 UDP/TLS/RTP/SAVPF 0",
        "a=mid:1",
        "a=candidate:1 1 udp 2122260223 192.0.2.1 61764 typ host",
        "a=end-of-candidates",
    ],
    &[
        "a=ice-ufrag:Fz9R",
        "a=ice-pwd:b0VjW4lRvF3q9/+zxkTQ7pYe",
        "m=video 9 UDP/TLS/RTP/SAVPF 0",
        "a=mid:0",
    ],
    &["m=video 9 UDP/TLS/RTP/SAVPF 0", "a=mid:0", "a=end-of-candidates"],
];

/// An answer as the `webrtc` crate writes it: host candidates on two components, IPv4 and
/// IPv6, loopback, a server-reflexive one.
const ANSWER: &[&str] = &[
    "v=0",
    "o=- 6041289347563920484 839187429 IN IP4 0.0.0.0",
    "s=-",
    "t=0 0",
    "a=fingerprint:sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:8C:D3:B6:5C:09:5E:D6:BC",
    "a=group:BUNDLE 0",
    "m=video 9 UDP/TLS/RTP/SAVPF 106",
    "c=IN IP4 0.0.0.0",
    "a=setup:active",
    "a=mid:0",
    "a=ice-ufrag:kQzNbLhvYhmsWyDP",
    "a=ice-pwd:PpAYcnJNMcMtrbSQcGsbHtsMOZAwgkYd",
    "a=rtcp-mux",
    "a=rtpmap:106 H264/90000",
    "a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    "a=rtcp-fb:106 nack pli",
    "a=ssrc:2863170286 cname:whepcast-main",
    "a=sendonly",
    "a=candidate:2037425245 1 udp 2130706431 10.0.0.5 50001 typ host",
    "a=candidate:2037425245 2 udp 2130706431 10.0.0.5 50001 typ host",
    "a=candidate:3528925834 1 udp 2130706431 127.0.0.1 50001 typ host",
    "a=candidate:1211076970 1 udp 2130706431 2001:db8::5 50001 typ host",
    "a=candidate:233762139 1 udp 1694498815 198.51.100.9 40000 typ srflx raddr 10.0.0.5 rport 50001",
    "a=end-of-candidates",
];

/// RTCP packets a viewer sends: PLI, FIR, generic NACK, receiver report, sender report,
/// REMB, SDES (CNAME), BYE.
const RTCP_PACKETS: &[&[u8]] = &[
    &[0x81, 206, 0, 2, 0, 0, 0, 1, 0xaa, 0xbb, 0xcc, 0xdd],
    &[
        0x84, 206, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd, 7, 0, 0, 0,
    ],
    &[
        0x81, 205, 0, 3, 0, 0, 0, 1, 0xaa, 0xbb, 0xcc, 0xdd, 0x12, 0x34, 0x00, 0x05,
    ],
    &[
        0x81, 201, 0, 7, 0, 0, 0, 1, 0xaa, 0xbb, 0xcc, 0xdd, 0, 0, 0, 3, 0, 0, 0x10, 0x00, 0, 0, 0,
        20, 0, 0, 0, 0, 0, 0, 0, 0,
    ],
    &[
        0x80, 200, 0, 6, 0, 0, 0, 1, 0xe8, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 5,
        0, 0, 0x10, 0,
    ],
    &[
        0x8f, 206, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, b'R', b'E', b'M', b'B', 1, 0x0a, 0xbc, 0xde, 0xaa,
        0xbb, 0xcc, 0xdd,
    ],
    &[
        0x81, 202, 0, 3, 0, 0, 0, 1, 1, 4, b'w', b'h', b'e', b'p', 0, 0,
    ],
    &[0x81, 203, 0, 1, 0, 0, 0, 1],
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `property` on `cases` inputs, each from its own fixed seed (the same cases every
    /// run), their size growing from 64 bytes to 4 KiB. A failing case prints its seed;
    /// `ARBTEST_SEED=<seed>` runs that case alone.
    fn run(cases: u32, mut property: impl FnMut(&mut Unstructured) -> Result<()>) {
        if std::env::var_os("ARBTEST_SEED").is_some() {
            arbtest::arbtest(property).run();
            return;
        }
        for i in 0..cases {
            let size = 64 + (4096 - 64) * u64::from(i) / u64::from(cases.max(1));
            let seed = (u64::from(i).wrapping_mul(0x9e37_79b9) << 32) | size;
            arbtest::arbtest(&mut property).seed(seed).run();
        }
    }

    /// Bytes as they come, for the byte-level entry points.
    fn bytes(f: fn(&[u8])) -> impl FnMut(&mut Unstructured) -> Result<()> {
        move |u| {
            let n = u.len();
            f(u.bytes(n)?);
            Ok(())
        }
    }

    #[test]
    fn fuzz_offers() {
        run(12_000, offer_structured);
        run(1000, bytes(offer));
        run(1000, bytes(restart));
    }

    #[test]
    fn fuzz_fragments() {
        run(20_000, fragment_structured);
        run(2000, bytes(fragment));
    }

    #[test]
    fn fuzz_advertised_candidates() {
        run(8000, advertise_structured);
        run(1000, bytes(advertise));
    }

    #[test]
    fn fuzz_datachannel_messages() {
        run(20_000, datachannel_structured);
        run(2000, bytes(datachannel));
    }

    #[test]
    fn fuzz_stun_nomination() {
        run(10_000, nomination_structured);
        run(2000, bytes(nomination));
        run(2000, bytes(stun));
    }

    #[test]
    fn fuzz_rtcp() {
        run(10_000, rtcp_structured);
        run(2000, bytes(rtcp));
        run(3000, feedback_reports_structured);
    }

    #[test]
    fn fuzz_whep_query() {
        run(10_000, whep_query_structured);
        run(2000, bytes(whep_query));
    }

    #[test]
    fn fuzz_headers() {
        run(4000, authorization_structured);
        run(1000, bytes(authorization));
        run(4000, content_type_structured);
        run(1000, bytes(content_type));
        run(4000, if_match_structured);
        run(1000, bytes(if_match));
        run(4000, origin_structured);
        run(1000, bytes(origin));
    }

    #[test]
    fn fuzz_whip_responses() {
        run(6000, whip_link_structured);
        run(2000, bytes(whip_link));
        run(3000, bytes(whip_message));
    }

    #[test]
    fn fuzz_config() {
        run(2000, bytes(port_range));
        run(2000, bytes(ice_server));
    }

    /// The generators are not vacuous: each reaches its parser's every outcome, not only
    /// its refusals.
    #[test]
    fn fuzz_generators_reach_every_outcome() {
        use crate::rtc::OfferError;
        use crate::whep::FragmentError;
        let mut offers = [0usize; 4];
        run(2000, |u| {
            let sdp = mutated_offer(u)?;
            let i = match std::str::from_utf8(&sdp).map(choose_h264) {
                Ok(Ok(_)) => 0,
                Ok(Err(OfferError::NoH264(_))) => 1,
                Ok(Err(OfferError::Malformed(_))) => 2,
                _ => 3,
            };
            offers[i] += 1;
            Ok(())
        });
        assert!(offers.iter().all(|n| *n >= 10), "offers: {offers:?}");

        let mut fragments = [0usize; 5];
        run(2000, |u| {
            let base = *u.choose(FRAGMENTS)?;
            let bytes = mutate_lines(u, base, FRAGMENT_FOCUS)?;
            let i = match Fragment::parse(&bytes) {
                Ok(f) if f.candidates.is_empty() => 0,
                Ok(f) if f.check_candidates().is_ok() => 1,
                Ok(_) => 2,
                Err(FragmentError::BadCandidate(_)) => 3,
                Err(_) => 4,
            };
            fragments[i] += 1;
            Ok(())
        });
        assert!(
            fragments.iter().all(|n| *n >= 10),
            "fragments: {fragments:?}"
        );

        let mut messages = [0usize; 3];
        run(2000, |u| {
            let msg = json_message(u)?;
            let i = match datachannel::read_message(&msg, true) {
                Ok(Incoming::Ping { .. }) => 0,
                Ok(Incoming::Chat(_)) => 1,
                Err(_) => 2,
            };
            messages[i] += 1;
            Ok(())
        });
        assert!(messages.iter().all(|n| *n >= 10), "messages: {messages:?}");

        let mut replays = 0;
        run(2000, |u| {
            replays += nomination_replays(u)?;
            Ok(())
        });
        assert!(replays >= 10, "{replays} nominations replayed");

        let mut admitted = [0usize; 2];
        run(2000, |u| {
            let token = String::from_utf8_lossy(&mutate_value(u, TOKEN.as_bytes())?).into_owned();
            let value = format!("Bearer {token}");
            if let Ok(v) = HeaderValue::from_str(&value) {
                admitted[usize::from(Token::new(TOKEN).admits(Some(&v)))] += 1;
            }
            Ok(())
        });
        assert!(admitted.iter().all(|n| *n >= 10), "admitted: {admitted:?}");
    }

    /// The offer generator reaches the class of input that made `rank_h264` panic: an
    /// H.264 packetization-mode=1 format whose profile-level-id is six bytes with a
    /// multi-byte character, and more than once within `fuzz_offers`' cases.
    #[test]
    fn fuzz_offers_reach_multibyte_six_byte_profile_level_ids() {
        let mut hits = 0;
        run(12_000, |u| {
            let sdp = mutated_offer(u)?;
            let text = String::from_utf8_lossy(&sdp);
            hits += usize::from(text.lines().any(|l| {
                let l = l.trim_end_matches('\r');
                l.starts_with("a=fmtp:")
                    && l.contains("packetization-mode=1")
                    && l.split(';').any(|p| {
                        p.strip_prefix("profile-level-id=")
                            .is_some_and(|v| v.len() == 6 && !v.is_ascii())
                    })
            }));
            Ok(())
        });
        assert!(hits >= 10, "only {hits} offers had one");
    }

    /// The real material passes its parsers, so mutations start from valid input.
    #[test]
    fn fuzz_material_is_valid() {
        for base in [CHROMIUM_OFFER, AIORTC_OFFER] {
            let sdp = base.join("\r\n") + "\r\n";
            let choice = choose_h264(&sdp).expect("a real offer is answerable");
            assert!(rank_h264(&choice.fmtp) == Some(0), "{choice:?}");
        }
        for base in FRAGMENTS {
            let text = base.join("\r\n") + "\r\n";
            let frag = Fragment::parse(text.as_bytes()).expect("a real fragment parses");
            frag.check_candidates().expect("its candidates are usable");
        }
        for p in RTCP_PACKETS {
            let mut buf = *p;
            ::rtc::rtcp::packet::unmarshal(&mut buf).expect("a real RTCP packet");
        }
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let answer = ANSWER.join("\r\n") + "\r\n";
        assert_eq!(
            advertise_candidates(&answer, &[ip])
                .matches("203.0.113.7")
                .count(),
            1,
            "one copy per port"
        );
    }
}
