//! On top: **http** — the WHEP endpoints, the viewer page and the JSON API, on axum.
//!
//! | method + path               | what                                                    |
//! |-----------------------------|---------------------------------------------------------|
//! | `GET /`, `GET /view/{name}` | the viewer page (`web/index.html`, built in)            |
//! | `GET /assets/{name}`        | its stylesheet and script modules (`web/`, built in)    |
//! | `GET /healthz`              | `200` while every source produces, else `503` + reasons |
//! | `POST /whep[/{name}]`       | SDP offer → `201` + SDP answer, `Location`, `ETag`, `Link` |
//! | `OPTIONS /whep[/{name}]`    | `Accept-Post: application/sdp`, `Allow`, `Link`         |
//! | `PATCH /whep/session/{id}`  | trickle ICE → `204`; ICE restart → `200` + fragment     |
//! | `DELETE /whep/session/{id}` | ends the session → `200`                                |
//! | `GET /api/streams`          | JSON: each stream's settings, viewers and counters      |
//! | `POST /whip[/{name}]`       | a publisher's SDP offer (`--source whip`) → `201` + answer; `409` if it has one |
//! | `PATCH`/`DELETE /whip/session/{id}` | the publisher's trickle / ICE restart / leaving |
//! | `GET /publish[/{name}]`     | the publish page (screen, camera or canvas over WHIP)   |
//!
//! With a token configured, the WHEP routes and the API need `Authorization: Bearer`; the
//! WHIP routes need the ingest token instead (`--ingest-token`), when one is set.
//! Handlers are small; every failure becomes an [`HttpError`], and [`HttpError`] alone
//! decides status codes and messages (plain text that says what to fix).

use crate::pipeline;
use crate::whep::{self, sdpfrag, Patched, Sessions, WhepError};
use crate::whip::ingest::Ingest;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use std::sync::atomic::Ordering;
use tower_http::cors::{Any, CorsLayer};

/// Largest SDP offer accepted. Browser offers are 3-8 KiB; 64 KiB leaves room for many
/// m-lines and candidates while keeping a flood of large bodies cheap to refuse.
pub const MAX_OFFER_BYTES: usize = 64 * 1024;

/// The viewer page, compiled into the binary so it works offline with no build step.
pub const VIEWER_PAGE: &str = include_str!("../web/index.html");
/// The publish page (WHIP from a browser), compiled in likewise.
pub const PUBLISH_PAGE: &str = include_str!("../web/publish.html");

const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// The page's stylesheet and ES modules, served as `/assets/{name}`: compiled in like the
/// page, no bundler. `whep.js` is the WHEP client alone (no DOM), for any page that plays or
/// publishes.
pub const VIEWER_ASSETS: &[(&str, &str, &str)] = &[
    ("app.css", CSS, include_str!("../web/app.css")),
    ("viewer.js", JS, include_str!("../web/viewer.js")),
    ("whep.js", JS, include_str!("../web/whep.js")),
    ("channel.js", JS, include_str!("../web/channel.js")),
    ("barcode.js", JS, include_str!("../web/barcode.js")),
    ("stats.js", JS, include_str!("../web/stats.js")),
    ("chat.js", JS, include_str!("../web/chat.js")),
    ("streams.js", JS, include_str!("../web/streams.js")),
    ("controls.js", JS, include_str!("../web/controls.js")),
    ("quality.js", JS, include_str!("../web/quality.js")),
    ("publish.js", JS, include_str!("../web/publish.js")),
    ("publish.css", CSS, include_str!("../web/publish.css")),
];

/// State shared by all handlers.
#[derive(Clone)]
pub struct AppState {
    pub sessions: Sessions,
    /// WHIP publishers' sessions (streams with `--source whip`).
    pub ingest: Ingest,
    /// Each stream's pipeline, for the API, `/metrics` and `/healthz`.
    pub pipelines: std::sync::Arc<[pipeline::Status]>,
    /// When set, WHEP and API requests need `Authorization: Bearer <token>`.
    pub token: Option<Token>,
    /// When set, WHIP publishers need `Authorization: Bearer <ingest token>`.
    pub ingest_token: Option<Token>,
}

/// A bearer token, compared in constant time and never printed.
#[derive(Clone)]
pub struct Token(std::sync::Arc<str>);

impl Token {
    pub fn new(s: &str) -> Self {
        Token(s.into())
    }

    /// Whether `header` is `Bearer <this token>`; the comparison does not leak, through its
    /// timing, how much of the token a guess got right.
    pub(crate) fn admits(&self, header: Option<&HeaderValue>) -> bool {
        use subtle::ConstantTimeEq;
        let Some(given) = header.and_then(|v| v.to_str().ok()).and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        }) else {
            return false;
        };
        given.trim().as_bytes().ct_eq(self.0.as_bytes()).into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Builds the router for `state`.
pub fn router(state: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::IF_MATCH,
        ])
        .expose_headers([header::LOCATION, header::ETAG, header::LINK, accept_post()]);
    // Everything but the page itself is behind the token (when one is set).
    let protected = Router::new()
        .route("/api/streams", get(streams_json))
        .route("/metrics", get(metrics_text))
        .route("/whep", endpoint(post_default))
        .route("/whep/{stream}", endpoint(post_named))
        .route(
            "/whep/session/{id}",
            MethodRouter::new()
                .delete(delete_session)
                .patch(patch_session)
                .fallback(|| async { HttpError::MethodNotAllowed(SESSION_ALLOW) }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    // Publishing has its own token: a viewer's token must not let anyone publish.
    let ingest = Router::new()
        .route("/whip", endpoint(post_whip_default))
        .route("/whip/{stream}", endpoint(post_whip_named))
        .route(
            "/whip/session/{id}",
            MethodRouter::new()
                .delete(delete_publisher)
                .patch(patch_publisher)
                .fallback(|| async { HttpError::MethodNotAllowed(SESSION_ALLOW) }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_ingest_token,
        ));
    let app = Router::new()
        .route("/", get(viewer_page))
        .route("/view/{stream}", get(viewer_page))
        .route("/publish", get(publish_page))
        .route("/publish/{stream}", get(publish_page))
        .merge(ingest)
        .route("/assets/{name}", get(viewer_asset))
        .route("/healthz", get(healthz))
        .merge(protected)
        .fallback(|| async { HttpError::NotFound })
        .layer(cors)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            options_headers,
        ))
        .with_state(state);
    with_panic_backstop(app)
}

/// Should a handler ever panic, its client still gets an answer (`500` and a plain message)
/// instead of a dropped connection, and the log says what and where (the panic hook has
/// printed the location already).
fn with_panic_backstop(app: Router) -> Router {
    app.layer(tower_http::catch_panic::CatchPanicLayer::custom(
        |panic: Box<dyn std::any::Any + Send>| {
            let what = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            tracing::error!("a request handler panicked: {what}");
            HttpError::Internal(
                "the server hit a bug while handling this request; it is logged, please report it"
                    .into(),
            )
            .into_response()
        },
    ))
}

const ENDPOINT_ALLOW: &str = "OPTIONS, POST";
const SESSION_ALLOW: &str = "OPTIONS, PATCH, DELETE";
const TRICKLE_TYPE: &str = "application/trickle-ice-sdpfrag";

fn accept_post() -> header::HeaderName {
    header::HeaderName::from_static("accept-post")
}

/// The WHEP endpoint's methods around a POST handler.
fn endpoint<H, T>(post: H) -> MethodRouter<AppState>
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    axum::routing::post(post).fallback(|| async { HttpError::MethodNotAllowed(ENDPOINT_ALLOW) })
}

/// What a WHEP client may ask for in the query of its `POST`.
#[derive(Debug, Default, serde::Deserialize)]
struct WhepQuery {
    /// `640x360`, `700k` or an index (0 = best); `auto` (the default) follows the link.
    rendition: Option<String>,
    /// Never above this rate: `800k`.
    max_bitrate: Option<String>,
    /// `1`/`true`: keep `rendition` even when the link cannot carry it.
    insist: Option<String>,
}

/// A WHEP request's wishes from its URI's query, as the handlers read them.
#[doc(hidden)]
pub fn wishes(uri: &http::Uri) -> Result<whep::Wishes, String> {
    Query::<WhepQuery>::try_from_uri(uri)
        .map(|Query(q)| q.into())
        .map_err(|e| e.body_text())
}

impl From<WhepQuery> for whep::Wishes {
    fn from(q: WhepQuery) -> Self {
        whep::Wishes {
            rendition: q.rendition,
            max_bitrate: q.max_bitrate,
            insist: q
                .insist
                .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes")),
        }
    }
}

/// `POST /whep`: the first (default) stream.
async fn post_default(
    State(state): State<AppState>,
    Query(query): Query<WhepQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let name = state
        .sessions
        .streams()
        .first()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    create_session(state, name, query.into(), headers, body).await
}

/// `POST /whep/{stream}`.
async fn post_named(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    Query(query): Query<WhepQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    create_session(state, stream, query.into(), headers, body).await
}

/// `POST /whip`: the first stream that takes publishers.
async fn post_whip_default(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let name = state
        .ingest
        .stream_names()
        .first()
        .map(|s| s.to_string())
        .ok_or(HttpError::NoIngest)?;
    create_publisher(state, name, headers, body).await
}

/// `POST /whip/{stream}`.
async fn post_whip_named(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    create_publisher(state, stream, headers, body).await
}

/// A publisher's offer → its session.
async fn create_publisher(
    state: AppState,
    stream: String,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    check_content_type(&headers, "application/sdp")?;
    let offer = read_offer(&headers, body).await?;
    let answer = state.ingest.create(&stream, offer).await?;
    // With an ingest token, the publisher showed it; without one, only same-origin.
    let credentials = state.ingest_token.is_some() || same_origin_or_none(&headers);
    created(&state, answer, "/whip/session/", credentials)
}

/// `PATCH /whip/session/{id}`.
async fn patch_publisher(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    check_content_type(&headers, TRICKLE_TYPE)?;
    let body = read_body(&headers, body, sdpfrag::MAX_FRAGMENT_BYTES).await?;
    let patched = state.ingest.patch(&id, if_match(&headers)?, &body).await?;
    patched_response(patched)
}

/// `DELETE /whip/session/{id}`: the publisher leaves; viewers see the waiting picture.
async fn delete_publisher(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    state.ingest.delete(&id).await?;
    Ok((StatusCode::OK, "publishing ended\n").into_response())
}

async fn publish_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PUBLISH_PAGE,
    )
}

/// Refuses WHIP requests without the right ingest token (when the server has one).
async fn require_ingest_token(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match &state.ingest_token {
        Some(token) if !token.admits(req.headers().get(header::AUTHORIZATION)) => {
            HttpError::NoIngestToken.into_response()
        }
        _ => next.run(req).await,
    }
}

async fn viewer_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        VIEWER_PAGE,
    )
}

/// `GET /assets/{name}`: one of [`VIEWER_ASSETS`]; any other name is a 404.
async fn viewer_asset(Path(name): Path<String>) -> Result<Response, HttpError> {
    let (_, content_type, body) = VIEWER_ASSETS
        .iter()
        .find(|(n, ..)| *n == name)
        .ok_or(HttpError::NotFound)?;
    Ok((
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        *body,
    )
        .into_response())
}

/// Refuses requests without the right bearer token (when the server has one).
async fn require_token(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match &state.token {
        Some(token) if !token.admits(req.headers().get(header::AUTHORIZATION)) => {
            HttpError::Unauthorized.into_response()
        }
        _ => next.run(req).await,
    }
}

/// `OPTIONS` is answered by the CORS layer (it treats every OPTIONS as a preflight); this
/// adds what WHEP clients look for on it: `Accept-Post` and the ICE servers (`Link`) on the
/// endpoint, `Allow` everywhere. TURN credentials go only to whoever may POST: with a
/// token, only to an OPTIONS that carries it (a browser preflight never does).
async fn options_headers(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.method() != Method::OPTIONS {
        return next.run(req).await;
    }
    let path = req.uri().path().to_owned();
    let authorized = state
        .token
        .as_ref()
        .is_none_or(|t| t.admits(req.headers().get(header::AUTHORIZATION)));
    let credentials = turn_credentials_allowed(&state, req.headers());
    let req_auth = req.headers().get(header::AUTHORIZATION).cloned();
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    if path.starts_with("/whip") {
        let ingest_ok = state
            .ingest_token
            .as_ref()
            .is_none_or(|t| t.admits(req_auth.as_ref()));
        if path.starts_with("/whip/session/") {
            h.insert(header::ALLOW, HeaderValue::from_static(SESSION_ALLOW));
            h.insert(
                header::HeaderName::from_static("accept-patch"),
                HeaderValue::from_static(TRICKLE_TYPE),
            );
        } else {
            h.insert(header::ALLOW, HeaderValue::from_static(ENDPOINT_ALLOW));
            h.insert(accept_post(), HeaderValue::from_static("application/sdp"));
            if ingest_ok {
                let credentials = state.ingest_token.is_some() || credentials;
                add_ice_links(&state, h, credentials);
            }
        }
    } else if path.starts_with("/whep/session/") {
        h.insert(header::ALLOW, HeaderValue::from_static(SESSION_ALLOW));
        h.insert(
            header::HeaderName::from_static("accept-patch"),
            HeaderValue::from_static(TRICKLE_TYPE),
        );
    } else if path == "/whep" || path.starts_with("/whep/") {
        h.insert(header::ALLOW, HeaderValue::from_static(ENDPOINT_ALLOW));
        h.insert(accept_post(), HeaderValue::from_static("application/sdp"));
        if authorized {
            add_ice_links(&state, h, credentials);
        }
    }
    res
}

/// One `Link: <url>; rel="ice-server"` per configured STUN/TURN server (WHIP, RFC 9725
/// section 4.6, which WHEP follows). TURN servers, whose links carry credentials, only when
/// `credentials` (see [`turn_credentials_allowed`]).
fn add_ice_links(state: &AppState, h: &mut HeaderMap, credentials: bool) {
    for server in state.sessions.ice_servers() {
        if server.credential.is_some() && !credentials {
            continue;
        }
        if let Ok(v) = HeaderValue::from_str(&server.link()) {
            h.append(header::LINK, v);
        }
    }
}

/// Whether a request may be told TURN credentials. With a token, whoever holds it may.
/// Without one, only our own page and non-browser clients (same origin, or no `Origin`):
/// CORS is open, so any web page a local user visits could otherwise read them.
fn turn_credentials_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    // With a token, the request got past the token check.
    state.token.is_some() || same_origin_or_none(headers)
}

/// Whether the request has no `Origin` (not a browser's cross-origin request), or one whose
/// host is the request's `Host`.
pub(crate) fn same_origin_or_none(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, o)| !host.is_empty() && o.eq_ignore_ascii_case(host))
}

/// `POST /whep[/{stream}]`: check the request, answer the offer.
async fn create_session(
    state: AppState,
    stream: String,
    wishes: whep::Wishes,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    check_content_type(&headers, "application/sdp")?;
    let offer = read_offer(&headers, body).await?;
    let answer = state.sessions.create(&stream, offer, &wishes).await?;
    let credentials = turn_credentials_allowed(&state, &headers);
    created(&state, answer, "/whep/session/", credentials)
}

/// An SDP offer from a request body: at most [`MAX_OFFER_BYTES`], UTF-8.
async fn read_offer(headers: &HeaderMap, body: Body) -> Result<String, HttpError> {
    let offer = read_body(headers, body, MAX_OFFER_BYTES).await?;
    String::from_utf8(offer.to_vec())
        .map_err(|_| HttpError::BadRequest("the SDP offer is not UTF-8 text".into()))
}

/// `201 Created`: the answer, the session's `Location` (under `sessions`), its `ETag`, and
/// the ICE servers (`Link`).
fn created(
    state: &AppState,
    answer: whep::Answer,
    sessions: &str,
    credentials: bool,
) -> Result<Response, HttpError> {
    let location = format!("{sessions}{}", answer.session_id);
    let mut response = (StatusCode::CREATED, answer.sdp).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    h.insert(header::LOCATION, header_value(&location)?);
    h.insert(header::ETAG, header_value(&answer.etag)?);
    add_ice_links(state, h, credentials);
    Ok(response)
}

/// `PATCH /whep/session/{id}`: trickle ICE (`204`) or ICE restart (`200` + the server's
/// fragment and a new `ETag`).
async fn patch_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    check_content_type(&headers, TRICKLE_TYPE)?;
    let body = read_body(&headers, body, sdpfrag::MAX_FRAGMENT_BYTES).await?;
    let patched = state
        .sessions
        .patch(&id, if_match(&headers)?, &body)
        .await?;
    patched_response(patched)
}

/// `204` for a trickle, `200` + the server's fragment and the new `ETag` for a restart.
fn patched_response(patched: Patched) -> Result<Response, HttpError> {
    match patched {
        Patched::Trickled { .. } => Ok(StatusCode::NO_CONTENT.into_response()),
        Patched::Restarted { fragment, etag } => {
            let mut response = (StatusCode::OK, fragment).into_response();
            let h = response.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(TRICKLE_TYPE));
            h.insert(header::ETAG, header_value(&etag)?);
            Ok(response)
        }
    }
}

/// The request's `If-Match`, if any, as text.
pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<&str>, HttpError> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| HttpError::BadRequest("If-Match is not ASCII".into())),
    }
}

/// `DELETE /whep/session/{id}`.
async fn delete_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    state.sessions.delete(&id).await?;
    Ok((StatusCode::OK, "session ended\n").into_response())
}

/// `GET /healthz`: 200 while every stream's source is producing frames, else 503 naming
/// each stream that is not and why. Open without a token, for load balancers and probes.
async fn healthz(State(state): State<AppState>) -> Response {
    let problems: Vec<String> = state
        .pipelines
        .iter()
        .filter_map(|p| {
            p.health()
                .err()
                .map(|why| format!("stream '{}': {why}", p.name()))
        })
        .collect();
    if problems.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n") + "\n").into_response()
    }
}

/// `GET /metrics`: Prometheus text format.
async fn metrics_text(State(state): State<AppState>) -> Response {
    let Some(handle) = crate::metrics::install() else {
        return HttpError::Internal("another metrics recorder is installed".into()).into_response();
    };
    // Copy in what the pipelines and sessions already count.
    for p in state.pipelines.iter() {
        let st = p.stats();
        let name = p.name().to_owned();
        metrics::gauge!("whepcast_viewers", "stream" => name.clone())
            .set(viewers(&state, p) as f64);
        metrics::gauge!("whepcast_pipeline_load", "stream" => name.clone())
            .set(st.load_permille.load(Ordering::Relaxed) as f64 / 1000.0);
        metrics::gauge!("whepcast_overloaded", "stream" => name.clone())
            .set(u8::from(st.overloaded.load(Ordering::Relaxed)) as f64);
        let totals = [
            ("whepcast_frames_in_total", &st.frames_in),
            ("whepcast_frames_encoded_total", &st.frames_encoded),
            ("whepcast_frames_dropped_total", &st.frames_dropped),
            ("whepcast_keyframes_total", &st.keyframes),
            ("whepcast_forced_keyframes_total", &st.forced_keyframes),
            ("whepcast_bytes_encoded_total", &st.bytes_encoded),
        ];
        for (metric, value) in totals {
            metrics::counter!(metric, "stream" => name.clone())
                .absolute(value.load(Ordering::Relaxed));
        }
        // Per rendition: who receives it, and what it cost.
        for r in p.renditions() {
            let labels = [
                ("stream", name.clone()),
                ("rendition", r.feed.size().to_string()),
            ];
            metrics::gauge!("whepcast_rendition_viewers", &labels).set(r.feed.viewers() as f64);
            metrics::counter!("whepcast_rendition_frames_encoded_total", &labels)
                .absolute(r.stats.frames_encoded.load(Ordering::Relaxed));
            metrics::counter!("whepcast_rendition_bytes_encoded_total", &labels)
                .absolute(r.stats.bytes_encoded.load(Ordering::Relaxed));
            metrics::counter!("whepcast_rendition_keyframes_total", &labels)
                .absolute(r.stats.keyframes.load(Ordering::Relaxed));
        }
    }
    metrics::gauge!("whepcast_sessions_active").set(state.sessions.counts().active as f64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// `GET /api/streams`.
async fn streams_json(State(state): State<AppState>) -> impl IntoResponse {
    let streams: Vec<_> = state
        .pipelines
        .iter()
        .map(|p| {
            let st = p.stats();
            let cfg = p.settings();
            let size = st.size();
            serde_json::json!({
                "name": p.name(),
                "source": p.label(),
                "state": if p.is_ended() { "ended" } else { "live" },
                "size": size.to_string(),
                "width": size.width,
                "height": size.height,
                "fps": cfg.fps,
                "bitrate": cfg.bitrate.bps(),
                "keyint_seconds": cfg.keyint,
                "viewers": viewers(&state, p),
                "frames_in": st.frames_in.load(Ordering::Relaxed),
                "frames_encoded": st.frames_encoded.load(Ordering::Relaxed),
                "frames_dropped": st.frames_dropped.load(Ordering::Relaxed),
                "keyframes": st.keyframes.load(Ordering::Relaxed),
                "forced_keyframes": st.forced_keyframes.load(Ordering::Relaxed),
                "bytes_encoded": st.bytes_encoded.load(Ordering::Relaxed),
                "encode_fps": st.current_fps_milli.load(Ordering::Relaxed) as f64 / 1000.0,
                // Share of the frame time the pipeline is busy; above 1 it drops frames.
                "load": st.load_permille.load(Ordering::Relaxed) as f64 / 1000.0,
                "overloaded": st.overloaded.load(Ordering::Relaxed),
                "uptime_seconds": p.uptime().as_secs_f64(),
                "renditions": p.renditions().map(|r| {
                    let s = r.stats;
                    serde_json::json!({
                        "index": r.index,
                        "name": r.feed.label(),
                        "size": r.feed.size().to_string(),
                        "bitrate": r.feed.bitrate(),
                        "viewers": r.feed.viewers(),
                        "frames_encoded": s.frames_encoded.load(Ordering::Relaxed),
                        "keyframes": s.keyframes.load(Ordering::Relaxed),
                        "bytes_encoded": s.bytes_encoded.load(Ordering::Relaxed),
                        "busy_seconds": s.busy_ns.load(Ordering::Relaxed) as f64 / 1e9,
                    })
                }).collect::<Vec<_>>(),
                "viewer_links": state.sessions.viewers(p.name()),
            })
        })
        .collect();
    axum::Json(serde_json::json!({
        "streams": streams,
        "sessions": state.sessions.counts(),
    }))
}

/// Viewers of `pipeline`'s stream, connected or connecting.
fn viewers(state: &AppState, pipeline: &pipeline::Status) -> usize {
    state
        .sessions
        .stream(pipeline.name())
        .map_or(0, |s| s.viewers())
}

/// Accepts a body whose media type (parameters aside) is `expected`.
pub(crate) fn check_content_type(headers: &HeaderMap, expected: &str) -> Result<(), HttpError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(expected) {
        Ok(())
    } else if ct.is_empty() {
        Err(HttpError::UnsupportedMediaType(format!(
            "no Content-Type (this request takes {expected})"
        )))
    } else {
        // Quoted, but not whole: it is the client's text, of any length.
        let ct: String = ct.chars().take(60).collect();
        Err(HttpError::UnsupportedMediaType(format!(
            "Content-Type '{ct}' (this request takes {expected})"
        )))
    }
}

/// Reads at most `limit` bytes, refusing early when `Content-Length` says more.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, HttpError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(HttpError::TooLarge(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_long = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_long {
            HttpError::TooLarge(limit)
        } else {
            HttpError::BadRequest(format!("could not read the request body: {e}"))
        }
    })
}

fn header_value(s: &str) -> Result<HeaderValue, HttpError> {
    HeaderValue::from_str(s).map_err(|e| HttpError::Internal(e.to_string()))
}

/// Every way an HTTP request can fail, and the one place that maps them to responses.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Whep(#[from] WhepError),
    #[error("{0} is not accepted here; send an offer as application/sdp, a PATCH as application/trickle-ice-sdpfrag")]
    UnsupportedMediaType(String),
    #[error("the body is larger than {0} bytes; an SDP offer or ICE fragment is a few KiB")]
    TooLarge(usize),
    #[error("{0}")]
    BadRequest(String),
    #[error("this server needs a token: send Authorization: Bearer <token> (the viewer page takes it as #token=... in its URL)")]
    Unauthorized,
    #[error("publishing here needs the ingest token: send Authorization: Bearer <ingest token> (the publish page takes it as #token=... in its URL)")]
    NoIngestToken,
    #[error("no stream here takes WHIP publishers; start the server with --source whip (or --stream NAME=whip)")]
    NoIngest,
    #[error("method not allowed here; allowed: {0}")]
    MethodNotAllowed(&'static str),
    #[error("nothing here; the WHEP endpoint is POST /whep and the viewer page is /")]
    NotFound,
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = match &self {
            HttpError::Whep(e) => e.status(),
            HttpError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Unauthorized | HttpError::NoIngestToken => StatusCode::UNAUTHORIZED,
            HttpError::NoIngest => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::NotFound => StatusCode::NOT_FOUND,
            HttpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Expected under load (caps, running out): counted in
            // whepcast_sessions_refused_total; a line each would flood the log.
            tracing::debug!("{status}: {self}");
        } else if status.is_server_error() {
            tracing::warn!("{status}: {self}");
        } else {
            tracing::debug!("{status}: {self}");
        }
        let mut response = (status, format!("{self}\n")).into_response();
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let HttpError::MethodNotAllowed(allow) = self {
            h.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[test]
    fn a_refused_content_type_is_not_quoted_whole() {
        let mut h = HeaderMap::new();
        let long = format!("text/{}", "x".repeat(10_000));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(&long).unwrap());
        let e = check_content_type(&h, "application/sdp").expect_err("not SDP");
        let text = e.to_string();
        assert!(text.contains("text/xxx") && text.len() < 300, "{text}");
    }

    /// A panic in a handler is answered with a 500 and a message, not a dropped connection.
    #[tokio::test]
    async fn a_panicking_handler_gets_a_500_with_a_message() {
        let app = with_panic_backstop(Router::new().route(
            "/boom",
            get(|| async {
                let v: Vec<u8> = Vec::new();
                // An index a peer could control, out of range.
                v[std::hint::black_box(3)].to_string()
            }),
        ));
        let res = app
            .oneshot(
                axum::http::Request::get("/boom")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(res.into_body(), 4096).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("bug"), "{body:?}");
    }
}
