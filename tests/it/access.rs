//! Access control: the token, the refusal to expose a screen without one, viewer limits.

use crate::support::*;
use std::process::Command;
use whepcast::config::Size;
use whepcast::rtc::RtcConfig;
use whepcast::server::{ServeConfig, Server, StreamConfig};
use whepcast::source::{OpenOptions, SourceSpec};

async fn server_with(
    token: Option<&str>,
    max_viewers: Option<usize>,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let size = Size::new(320, 240).unwrap();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        streams: vec![StreamConfig::from_spec(
            "main",
            SourceSpec::Pattern,
            OpenOptions {
                size: Some(size),
                pixel_format: None,
            },
            settings(size, 30, 2.0),
        )],
        rtc: RtcConfig::for_listen_ip("127.0.0.1".parse().unwrap()),
        token: token.map(str::to_string),
        max_viewers,
        public: false,
        ingest_token: None,
    };
    let server = Server::bind(config).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    (base, tx)
}

async fn post_with_auth(url: &str, auth: Option<&str>, sdp: String) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("Content-Type", "application/sdp")
        .body(sdp);
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_required_and_checked() {
    let (base, _stop) = server_with(Some("s3cret-token"), None).await;
    let whep = format!("{base}/whep");
    let (_pc, sdp, _) = offer().await;
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cret-toke"),
        Some("Basic s3cret-token"),
    ] {
        let res = post_with_auth(&whep, auth, sdp.clone()).await;
        assert_eq!(res.status(), 401, "{auth:?}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        assert!(res.text().await.unwrap().contains("token"));
    }
    let res = reqwest::get(format!("{base}/api/streams")).await.unwrap();
    assert_eq!(res.status(), 401, "the API is protected too");
    assert_eq!(
        reqwest::get(format!("{base}/")).await.unwrap().status(),
        200,
        "the page is not"
    );

    let res = post_with_auth(&whep, Some("Bearer s3cret-token"), sdp).await;
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let del = reqwest::Client::new()
        .delete(format!("{base}{location}"))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 401, "DELETE needs the token as well");
    let del = reqwest::Client::new()
        .delete(format!("{base}{location}"))
        .header("Authorization", "Bearer s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
}

#[test]
fn sharing_a_screen_beyond_loopback_without_a_token_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_whepcast"))
        .args(["serve", "--source", "screen", "--listen", "0.0.0.0:0"])
        .env_remove("WHEPCAST_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("without a token") && stderr.contains("WHEPCAST_TOKEN"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_viewers_turns_away_the_extra_viewer_until_one_leaves() {
    let (base, _stop) = server_with(None, Some(2)).await;
    let whep = format!("{base}/whep");
    let mut a = Viewer::connect(&whep).await;
    let _b = Viewer::connect(&whep).await;
    let (_pc, sdp, _) = offer().await;
    let res = post_with_auth(&whep, None, sdp.clone()).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert!(res.text().await.unwrap().contains("full"));

    a.wait_for("frames", |d| d.frames > 0).await;
    let del = reqwest::Client::new()
        .delete(format!("{base}{}", a.location))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    let mut c = Viewer::connect(&whep).await;
    c.wait_for("frames after a seat freed up", |d| d.frames > 0)
        .await;
}

/// The library keeps the rules itself, whoever configures it: a program using
/// `Broadcaster` or `Server` directly gets the same refusals as the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_refuses_what_the_command_line_refuses() {
    use whepcast::server::ServeError;
    let size = Size::new(320, 240).unwrap();
    let screen = |listen: &str, token: Option<&str>, public: bool| ServeConfig {
        listen: listen.parse().unwrap(),
        streams: vec![StreamConfig::from_spec(
            "desk",
            SourceSpec::Screen(None),
            OpenOptions::default(),
            settings(size, 30, 2.0),
        )],
        rtc: RtcConfig::for_listen_ip("127.0.0.1".parse().unwrap()),
        token: token.map(str::to_string),
        max_viewers: None,
        public,
        ingest_token: None,
    };
    let refused = screen("0.0.0.0:0", None, false).check();
    assert!(
        matches!(refused, Err(ServeError::ScreenWithoutToken(_))),
        "{refused:?}"
    );
    assert!(screen("0.0.0.0:0", Some("s3cret"), false).check().is_ok());
    assert!(screen("0.0.0.0:0", None, true).check().is_ok());
    assert!(screen("127.0.0.1:0", None, false).check().is_ok());
    assert!(matches!(
        screen("127.0.0.1:0", Some("  "), false).check(),
        Err(ServeError::EmptyToken)
    ));
    // A token no header can carry would lock everyone out without a word.
    for bad in [" padded", "caf\u{e9}", "two words", "tab\there"] {
        assert!(
            matches!(
                screen("127.0.0.1:0", Some(bad), false).check(),
                Err(ServeError::BadToken)
            ),
            "{bad:?}"
        );
    }
    let named = |name: &str| {
        whepcast::Broadcaster::builder(size)
            .listen("127.0.0.1:0".parse().unwrap())
            .name(name)
            .start()
    };
    for bad in ["session", "", "a/b", "caf\u{e9}", &"x".repeat(65)] {
        let r = named(bad);
        assert!(
            matches!(r, Err(ServeError::StreamName(_))),
            "name {bad:?}: {:?}",
            r.err()
        );
    }
    assert!(named("ok_name-1").is_ok());
}
