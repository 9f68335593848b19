//! `whepcast publish` against a WHIP endpoint made here: axum for the HTTP side, webrtc-rs
//! answering (receive-only) and decoding what arrives, so each test reads the pattern's
//! frame numbers back. The endpoint can refuse, be down, redirect, forget its sessions (a
//! restart), and send the publisher PLI and REMB.

use crate::support::{self, Decoded, Running, WAIT};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

const TOKEN: &str = "s3cret-token";

/// A request the endpoint saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    port: u16,
}

/// How the endpoint answers a POST.
#[derive(Clone)]
enum Mode {
    Accept,
    Refuse(StatusCode, &'static str),
}

struct Session {
    pc: Arc<dyn PeerConnection>,
    track: Arc<Mutex<Option<Arc<dyn TrackRemote>>>>,
}

#[derive(Clone)]
struct Endpoint {
    inner: Arc<Inner>,
}

struct Inner {
    mode: Mutex<Mode>,
    seen: Mutex<Vec<Seen>>,
    sessions: Mutex<HashMap<String, Session>>,
    /// Every session's decoding, in the order they were made (kept after DELETE).
    history: Mutex<Vec<watch::Receiver<Decoded>>>,
    /// Where `/moved` sends a POST (another port: another origin).
    moved_to: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap()
}

impl Endpoint {
    /// Serves the endpoint on `listeners` (several ports, one state).
    async fn serve(listeners: Vec<tokio::net::TcpListener>) -> Self {
        let ep = Endpoint {
            inner: Arc::new(Inner {
                mode: Mutex::new(Mode::Accept),
                seen: Mutex::new(Vec::new()),
                sessions: Mutex::new(HashMap::new()),
                history: Mutex::new(Vec::new()),
                moved_to: Mutex::new(None),
            }),
        };
        for listener in listeners {
            let port = listener.local_addr().unwrap().port();
            let app = Router::new()
                .route("/whip", post(offer))
                .route("/moved", post(moved))
                .route("/session/{id}", delete(remove).patch(no_patch))
                .layer(axum::middleware::from_fn_with_state(
                    (ep.clone(), port),
                    record,
                ))
                .with_state(ep.clone());
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        ep
    }

    async fn start() -> (Self, String) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        (Self::serve(vec![l]).await, base)
    }

    fn set_mode(&self, mode: Mode) {
        *lock(&self.inner.mode) = mode;
    }

    fn seen(&self) -> Vec<Seen> {
        lock(&self.inner.seen).clone()
    }

    fn count(&self, method: &str, path_start: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path.starts_with(path_start))
            .count()
    }

    /// The first session from `from` on that plays the pattern (frame numbers growing): a
    /// publisher whose first connection failed (a loaded machine) publishes anew, and any
    /// session it makes counts. Returns its index and its decoding.
    async fn playing(&self, from: usize, what: &str) -> (usize, watch::Receiver<Decoded>) {
        let playing = |d: &Decoded| {
            d.numbers.len() >= 10 && d.numbers.windows(2).last().is_some_and(|w| w[1] > w[0])
        };
        let started = Instant::now();
        while started.elapsed() < WAIT * 2 {
            let found = lock(&self.inner.history)
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, rx)| playing(&rx.borrow()))
                .map(|(i, rx)| (i, rx.clone()));
            if let Some(found) = found {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{what}: no session from #{from} plays; requests: {:?}",
            self.seen()
        );
    }

    /// Forgets every session and closes their connections, as a restarted server would.
    async fn restart(&self) {
        let sessions: Vec<Session> = lock(&self.inner.sessions).drain().map(|(_, s)| s).collect();
        for s in sessions {
            let _ = s.pc.close().await;
        }
    }

    /// The track of the only session, once media arrived.
    async fn track(&self) -> Arc<dyn TrackRemote> {
        let mut out = None;
        let ok = support::eventually(WAIT, || {
            let slot = lock(&self.inner.sessions)
                .values()
                .next()
                .and_then(|s| lock(&s.track).clone());
            out = slot.clone();
            async move { slot.is_some() }
        })
        .await;
        assert!(ok, "no track arrived");
        out.unwrap()
    }
}

/// Records every request with the port it came in on.
async fn record(
    State((ep, port)): State<(Endpoint, u16)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    lock(&ep.inner.seen).push(Seen {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        authorization: req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        port,
    });
    next.run(req).await
}

async fn offer(State(ep): State<Endpoint>, headers: HeaderMap, body: String) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return (
            StatusCode::UNAUTHORIZED,
            "that token is not valid for this stream",
        )
            .into_response();
    }
    if let Mode::Refuse(status, message) = lock(&ep.inner.mode).clone() {
        let mut r = (status, message).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert("retry-after", "1".parse().unwrap());
        }
        return r;
    }
    assert_eq!(headers["content-type"], "application/sdp");
    assert!(
        body.contains("a=sendonly"),
        "a WHIP offer is sendonly:\n{body}"
    );
    assert!(
        body.contains("a=rtcp-mux-only"),
        "RFC 9725 wants rtcp-mux-only:\n{body}"
    );
    let (pc, mut gathered, track_rx) = support::client_pc().await;
    pc.set_remote_description(RTCSessionDescription::offer(body).unwrap())
        .await
        .unwrap();
    let answer = pc.create_answer(None).await.unwrap();
    pc.set_local_description(answer).await.unwrap();
    let _ = tokio::time::timeout(WAIT, gathered.wait_for(|d| *d)).await;
    let sdp = pc.local_description().await.unwrap().sdp;
    let (tx, rx) = watch::channel(Decoded::default());
    let track = Arc::new(Mutex::new(None));
    let slot = track.clone();
    tokio::spawn(async move {
        if let Ok(Ok(t)) = tokio::time::timeout(WAIT, track_rx).await {
            *lock(&slot) = Some(t.clone());
            support::receive(t, tx, true).await;
        }
    });
    let id = format!("{:08x}", rand::random::<u32>());
    lock(&ep.inner.history).push(rx);
    lock(&ep.inner.sessions).insert(id.clone(), Session { pc, track });
    let mut r = (StatusCode::CREATED, sdp).into_response();
    let h = r.headers_mut();
    h.insert("content-type", "application/sdp".parse().unwrap());
    // Relative, as real servers send it.
    h.insert("location", format!("/session/{id}").parse().unwrap());
    h.insert("etag", "\"one\"".parse().unwrap());
    r
}

async fn moved(State(ep): State<Endpoint>) -> Response {
    let to = lock(&ep.inner.moved_to).clone().unwrap();
    (StatusCode::TEMPORARY_REDIRECT, [("location", to)]).into_response()
}

async fn remove(State(ep): State<Endpoint>, Path(id): Path<String>) -> StatusCode {
    let session = lock(&ep.inner.sessions).remove(&id);
    match session {
        Some(s) => {
            let _ = s.pc.close().await;
            StatusCode::OK
        }
        None => StatusCode::NOT_FOUND,
    }
}

/// This endpoint takes neither trickle nor ICE restarts (as many do not).
async fn no_patch(State(ep): State<Endpoint>, Path(id): Path<String>) -> StatusCode {
    if lock(&ep.inner.sessions).contains_key(&id) {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        StatusCode::NOT_FOUND
    }
}

/// `whepcast publish URL --token TOKEN` with `extra` flags (a small, fast pattern unless
/// they give a size).
pub(crate) fn publish(url: &str, token: &str, extra: &[&str]) -> Running {
    let small: &[&str] = if extra.contains(&"--size") {
        &[]
    } else {
        &["--size", "320x240", "--fps", "15"]
    };
    // One picture size: on a loaded machine the estimate can dip and the publisher step down
    // to a rendition too small for the barcode these tests read (stepping down is measured
    // in BENCHMARKS.md, not asserted here).
    let single: &[&str] = if extra.contains(&"--ladder") {
        &[]
    } else {
        &["--ladder", "none"]
    };
    let child = Command::new(env!("CARGO_BIN_EXE_whepcast"))
        .args(["publish", url])
        .args(small)
        .args(single)
        .args(extra)
        .env("WHEPCAST_PUBLISH_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("whepcast starts");
    Running(child)
}

/// Waits for the process to exit (at most [`WAIT`]); its exit code and what it logged.
/// (Async: the endpoint runs on this test's runtime and must go on answering meanwhile.)
async fn finish(mut child: Running) -> (Option<i32>, String) {
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status.code();
        }
        assert!(started.elapsed() < WAIT, "whepcast publish did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut err = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    (code, err)
}

fn sigterm(child: &Running) {
    // SAFETY: kill(2) on our own child's pid, which it keeps until we wait for it.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
}

/// Frames decoded by `rx` with pattern numbers that keep growing.
async fn wait_playing(rx: &mut watch::Receiver<Decoded>, what: &str) -> Decoded {
    let from = rx.borrow().numbers.len();
    let playing = |d: &Decoded| {
        d.numbers.len() >= from + 10 && d.numbers.windows(2).last().is_some_and(|w| w[1] > w[0])
    };
    if !until(rx, playing).await {
        panic!("{what}: not playing; decoded {:?}", *rx.borrow());
    }
    let d = rx.borrow().clone();
    d
}

/// Whether `pred` comes to hold for what `rx` decoded within [`WAIT`].
async fn until(rx: &mut watch::Receiver<Decoded>, pred: impl FnMut(&Decoded) -> bool) -> bool {
    matches!(
        tokio::time::timeout(WAIT, rx.wait_for(pred)).await,
        Ok(Ok(_))
    )
}

#[tokio::test]
async fn publishes_the_pattern_and_deletes_the_session_on_sigterm() {
    let (ep, base) = Endpoint::start().await;
    let child = publish(&format!("{base}/whip"), TOKEN, &[]);
    let (_, rx) = ep.playing(0, "publishing").await;
    let d = rx.borrow().clone();
    assert_eq!(d.size, Some((320, 240)));
    sigterm(&child);
    let (code, log) = finish(child).await;
    assert_eq!(code, Some(0), "exit code after SIGTERM; log:\n{log}");
    let seen = ep.seen();
    let deletes: Vec<&Seen> = seen.iter().filter(|s| s.method == "DELETE").collect();
    assert_eq!(deletes.len(), 1, "one DELETE: {seen:?}");
    assert!(deletes[0].path.starts_with("/session/"), "{seen:?}");
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"))),
        "the token goes with every request: {seen:?}"
    );
    assert!(
        lock(&ep.inner.sessions).is_empty(),
        "the session was deleted"
    );
}

#[tokio::test]
async fn a_refused_token_exits_2_naming_the_token() {
    let (ep, base) = Endpoint::start().await;
    let (code, log) = finish(publish(&format!("{base}/whip"), "wrong", &[])).await;
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("401") && log.contains("token"), "{log}");
    assert!(
        log.contains("that token is not valid"),
        "the endpoint's message: {log}"
    );
    assert_eq!(ep.count("POST", "/whip"), 1, "no retry for a refused token");
}

#[tokio::test]
async fn a_refused_offer_exits_2_with_the_endpoints_message() {
    let (ep, base) = Endpoint::start().await;
    ep.set_mode(Mode::Refuse(
        StatusCode::UNPROCESSABLE_ENTITY,
        "this room takes AV1 only",
    ));
    let (code, log) = finish(publish(&format!("{base}/whip"), TOKEN, &[])).await;
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("422") && log.contains("this room takes AV1 only"),
        "{log}"
    );
}

#[tokio::test]
async fn retries_while_unavailable_then_publishes_through_a_redirect_to_another_origin() {
    // The publisher is sent from port A (/moved) to port B (/whip) by a 307: the token must
    // go along, which reqwest's own redirects would not do across origins.
    let a = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (url_a, port_b) = (
        format!("http://{}/moved", a.local_addr().unwrap()),
        b.local_addr().unwrap().port(),
    );
    let ep = Endpoint::serve(vec![a, b]).await;
    *lock(&ep.inner.moved_to) = Some(format!("http://127.0.0.1:{port_b}/whip"));
    ep.set_mode(Mode::Refuse(StatusCode::SERVICE_UNAVAILABLE, "warming up"));
    let child = publish(&url_a, TOKEN, &[]);
    let retried = support::eventually(WAIT, || async { ep.count("POST", "/whip") >= 2 }).await;
    assert!(retried, "retries after 503: {:?}", ep.seen());
    ep.set_mode(Mode::Accept);
    ep.playing(0, "after the endpoint came up").await;
    let posts: Vec<Seen> = ep
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST" && s.path == "/whip")
        .collect();
    assert!(posts.iter().all(|s| s.port == port_b), "{posts:?}");
    assert!(
        posts
            .iter()
            .all(|s| s.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"))),
        "the token follows the redirect: {posts:?}"
    );
    drop(child);
}

#[tokio::test]
async fn an_endpoint_down_at_start_is_retried_until_it_comes_up() {
    // A free port, with nothing on it yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = publish(&format!("http://127.0.0.1:{port}/whip"), TOKEN, &[]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(child_running(&child), "gave up on a refused connection");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let ep = Endpoint::serve(vec![listener]).await;
    ep.playing(0, "once the endpoint is up").await;
    drop(child);
}

fn child_running(child: &Running) -> bool {
    // SAFETY: kill(pid, 0) only checks that our child still exists.
    let alive = unsafe { libc::kill(child.0.id() as i32, 0) == 0 };
    alive
        && !std::fs::read_to_string(format!("/proc/{}/stat", child.0.id()))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test]
async fn publishing_resumes_with_a_keyframe_after_the_endpoint_restarts() {
    let (ep, base) = Endpoint::start().await;
    let child = publish(&format!("{base}/whip"), TOKEN, &["--keyint", "30"]);
    let (first, _) = ep.playing(0, "before the restart").await;
    let restarted = Instant::now();
    ep.restart().await;
    let (_, second) = ep.playing(first + 1, "after the restart").await;
    let took = restarted.elapsed();
    let d = second.borrow().clone();
    println!("publishing again {took:?} after the endpoint restarted");
    assert!(d.keyframes >= 1, "the new session starts from an IDR");
    assert!(
        took < Duration::from_secs(5),
        "publishing again took {took:?} (the issue asks within 5 s)"
    );
    drop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pli_brings_a_keyframe_and_remb_brings_the_rate_down() {
    // 640x360 in the normal run (this endpoint decodes every frame, beside the other tests);
    // WHIP_REMB_SIZE=1280x720 for the figure at the default size (BENCHMARKS.md).
    let size = std::env::var("WHIP_REMB_SIZE").unwrap_or_else(|_| "640x360".into());
    let (ep, base) = Endpoint::start().await;
    // A long keyframe interval, so any keyframe after the first was asked for.
    let child = publish(
        &format!("{base}/whip"),
        TOKEN,
        &[
            "--keyint",
            "60",
            "--bitrate",
            "1500k",
            "--size",
            &size,
            "--fps",
            "30",
        ],
    );
    // With keyframes a minute apart, a receiver that missed the first one (its track came up
    // after it) waits for it: this endpoint asks, as browsers do, until it decodes.
    let track = ep.track().await;
    let asking = {
        let track = track.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                support::send_pli(&track).await;
            }
        })
    };
    let (_, mut rx) = ep.playing(0, "at the start").await;
    asking.abort();
    // Any keyframe those asked for has come by now: the next one is the PLI's below.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);

    let before = rx.borrow().keyframes;
    support::send_pli(&track).await;
    let keyed = until(&mut rx, |d| d.keyframes > before).await;
    assert!(keyed, "no keyframe after a PLI: {:?}", *rx.borrow());

    let rate = |rx: &watch::Receiver<Decoded>| rx.borrow().rtp_bytes;
    // The rate at full speed, over 3 s once it settled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (b0, t0) = (rate(&rx), Instant::now());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let full = (rate(&rx) - b0) as f64 * 8.0 / t0.elapsed().as_secs_f64();
    // The endpoint says 300 kbit/s is all it takes, twice a second (as Janus does).
    let remb = {
        let track = track.clone();
        tokio::spawn(async move {
            loop {
                let packet = ReceiverEstimatedMaximumBitrate {
                    sender_ssrc: 0,
                    bitrate: 300_000.0,
                    ssrcs: vec![ssrc],
                };
                if track.write_rtcp(vec![Box::new(packet)]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (b1, t1) = (rate(&rx), Instant::now());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let capped = (rate(&rx) - b1) as f64 * 8.0 / t1.elapsed().as_secs_f64();
    remb.abort();
    println!(
        "received {:.0} kbit/s before REMB 300k, {:.0} kbit/s after",
        full / 1000.0,
        capped / 1000.0
    );
    assert!(full > 700_000.0, "full rate {full}");
    assert!(capped < full / 2.0, "capped {capped} against {full}");
    assert!(capped < 400_000.0, "after REMB 300k the rate is {capped}");
    wait_playing(&mut rx, "at the lower rate").await;
    drop(child);
}
