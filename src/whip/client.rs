//! The HTTP half of a WHIP client (RFC 9725): POST the offer, PATCH trickle candidates or
//! an ICE restart, DELETE the session.
//!
//! Redirects are followed here, not by reqwest: it drops `Authorization` when a redirect
//! changes host or port, and WHIP load balancers send publishers to other hosts with
//! `307`/`308`. We keep the method, body and token, never go from https to http, and stop
//! after [`MAX_REDIRECTS`].

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, ETAG, LOCATION};
use reqwest::{StatusCode, Url};
use std::time::Duration;

/// Redirects followed for one request.
pub const MAX_REDIRECTS: usize = 10;
/// Longest one request may take (an endpoint that accepts the connection and then says
/// nothing must not hold the publisher).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Characters of an endpoint's error message we repeat.
const MESSAGE_CHARS: usize = 300;

/// Why a WHIP request failed; [`WhipError::is_fatal`] says whether retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum WhipError {
    #[error("'{0}' is not an http(s) URL of a WHIP endpoint")]
    BadUrl(String),
    #[error("the token must be printable ASCII without spaces (it travels in an HTTP header)")]
    BadToken,
    #[error("the endpoint refused the token ({status}): {message}. Check --token / WHEPCAST_PUBLISH_TOKEN (or --publish-token)")]
    Unauthorized { status: u16, message: String },
    #[error("the endpoint refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("the endpoint is unavailable ({status}): {message}")]
    Unavailable {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("cannot reach the endpoint {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the endpoint broke the protocol: {0}")]
    Protocol(String),
}

impl WhipError {
    /// Whether trying again cannot help: a refused token or request, or a wrong setting.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            WhipError::BadUrl(_)
                | WhipError::BadToken
                | WhipError::Unauthorized { .. }
                | WhipError::Rejected { .. }
        )
    }

    /// How long the endpoint asked us to wait (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            WhipError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A session the endpoint created.
#[derive(Debug, Clone)]
pub struct Session {
    /// The session's URL (`Location`, resolved against the URL that answered).
    pub url: Url,
    /// The endpoint's answer.
    pub answer: String,
    /// The ICE session's tag, for `If-Match` (servers that cannot restart ICE send none).
    pub etag: Option<String>,
    /// The `Link: rel="ice-server"` servers the endpoint offered.
    pub ice_servers: Vec<crate::rtc::IceServer>,
}

/// What a `PATCH` gave.
#[derive(Debug)]
pub enum Patched {
    /// `204`: candidates taken.
    Trickled,
    /// `200`: the ICE restart's answer fragment and the new ETag.
    Restarted {
        fragment: String,
        etag: Option<String>,
    },
}

/// A WHIP endpoint and the token to present to it.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: Url,
    auth: Option<HeaderValue>,
}

impl std::fmt::Debug for Client {
    // The token never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint.as_str())
            .field("token", &self.auth.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Client {
    pub fn new(endpoint: &str, token: Option<&str>) -> Result<Self, WhipError> {
        let url = Url::parse(endpoint).map_err(|_| WhipError::BadUrl(endpoint.to_owned()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(WhipError::BadUrl(endpoint.to_owned()));
        }
        let auth = match token {
            None => None,
            Some(t) if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(WhipError::BadToken)
            }
            Some(t) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| WhipError::BadToken)?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("whepcast/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WhipError::Unreachable {
                url: endpoint.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            http,
            endpoint: url,
            auth,
        })
    }

    /// The endpoint's URL.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// POSTs the offer; `201 Created` gives the session.
    pub async fn post(&self, offer: &str) -> Result<Session, WhipError> {
        let (url, response) = self
            .send(
                reqwest::Method::POST,
                self.endpoint.clone(),
                Some(("application/sdp", offer.to_owned())),
                None,
            )
            .await?;
        let status = response.status();
        if status != StatusCode::CREATED {
            // 200 would be a non-conforming but harmless server; anything else is an error.
            if !status.is_success() {
                return Err(failure(response).await);
            }
            tracing::debug!("the endpoint answered {status} instead of 201 Created");
        }
        let headers = response.headers().clone();
        let location = headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| WhipError::Protocol("201 without a Location header".into()))?;
        let session_url = url
            .join(location)
            .map_err(|_| WhipError::Protocol(format!("bad Location '{}'", clip(location))))?;
        let etag = headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let links = headers
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let ice_servers = super::link::ice_servers(links);
        let answer = response.text().await.map_err(|e| WhipError::Unreachable {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        if !answer.starts_with("v=0") {
            return Err(WhipError::Protocol(format!(
                "the 201's body is not an SDP answer: '{}'",
                clip(&answer)
            )));
        }
        Ok(Session {
            url: session_url,
            answer,
            etag,
            ice_servers,
        })
    }

    /// PATCHes a trickle-ice-sdpfrag to the session (`if_match`: its ETag, or `"*"` for an
    /// ICE restart).
    pub async fn patch(
        &self,
        session: &Url,
        fragment: &str,
        if_match: &str,
    ) -> Result<Patched, WhipError> {
        let (_, response) = self
            .send(
                reqwest::Method::PATCH,
                session.clone(),
                Some(("application/trickle-ice-sdpfrag", fragment.to_owned())),
                Some(if_match),
            )
            .await?;
        match response.status() {
            StatusCode::NO_CONTENT => Ok(Patched::Trickled),
            s if s.is_success() => {
                let etag = response
                    .headers()
                    .get(ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let fragment = response.text().await.unwrap_or_default();
                if fragment.is_empty() {
                    Ok(Patched::Trickled)
                } else {
                    Ok(Patched::Restarted { fragment, etag })
                }
            }
            _ => Err(failure(response).await),
        }
    }

    /// DELETEs the session (the endpoint frees it at once instead of when ICE times out).
    pub async fn delete(&self, session: &Url) -> Result<(), WhipError> {
        let (_, response) = self
            .send(reqwest::Method::DELETE, session.clone(), None, None)
            .await?;
        if response.status().is_success() || response.status() == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(failure(response).await)
        }
    }

    /// Sends a request with the token, following `307`/`308` (and, for POST, only those:
    /// RFC 9725 forbids 301/302 for WHIP). Returns the URL that answered and its response.
    async fn send(
        &self,
        method: reqwest::Method,
        mut url: Url,
        body: Option<(&'static str, String)>,
        if_match: Option<&str>,
    ) -> Result<(Url, reqwest::Response), WhipError> {
        for _ in 0..=MAX_REDIRECTS {
            let mut headers = HeaderMap::new();
            if let Some(auth) = &self.auth {
                headers.insert(AUTHORIZATION, auth.clone());
            }
            if let Some((content_type, _)) = &body {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            }
            if let Some(tag) = if_match {
                if let Ok(v) = HeaderValue::from_str(tag) {
                    headers.insert(reqwest::header::IF_MATCH, v);
                }
            }
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers);
            if let Some((_, text)) = &body {
                request = request.body(text.clone());
            }
            let response = request.send().await.map_err(|e| WhipError::Unreachable {
                url: redacted(&url),
                reason: reason(&e),
            })?;
            let status = response.status();
            if status != StatusCode::TEMPORARY_REDIRECT && status != StatusCode::PERMANENT_REDIRECT
            {
                return Ok((url, response));
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| WhipError::Protocol(format!("{status} without a Location")))?;
            let next = url
                .join(location)
                .map_err(|_| WhipError::Protocol(format!("bad redirect '{}'", clip(location))))?;
            if url.scheme() == "https" && next.scheme() != "https" {
                return Err(WhipError::Protocol(format!(
                    "refusing a redirect from https to {}",
                    redacted(&next)
                )));
            }
            tracing::info!("{method} redirected ({status}) to {}", redacted(&next));
            url = next;
        }
        Err(WhipError::Protocol(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }
}

/// The error a non-success response stands for, with the endpoint's own message.
async fn failure(response: reqwest::Response) -> WhipError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(300)));
    let body = response.text().await.unwrap_or_default();
    let message = message_of(&body, status);
    let code = status.as_u16();
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => WhipError::Unauthorized {
            status: code,
            message,
        },
        // Too many requests is a wait, not a refusal.
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => WhipError::Unavailable {
            status: code,
            message,
            retry_after,
        },
        s if s.is_client_error() => WhipError::Rejected {
            status: code,
            message,
        },
        _ => WhipError::Unavailable {
            status: code,
            message,
            retry_after,
        },
    }
}

/// What an error body says: `detail` or `title` of a problem+json (RFC 9457), else the text,
/// clipped; the status's reason when it is empty.
pub fn message_of(body: &str, status: StatusCode) -> String {
    let from_json = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            ["detail", "title", "error", "message"]
                .iter()
                .find_map(|k| v.get(k).and_then(|d| d.as_str()).map(str::to_owned))
        });
    let text = from_json.unwrap_or_else(|| body.trim().to_owned());
    if text.is_empty() {
        status.canonical_reason().unwrap_or("no message").to_owned()
    } else {
        clip(&text)
    }
}

/// At most [`MESSAGE_CHARS`] characters of `s`, on one line.
fn clip(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MESSAGE_CHARS)
        .collect();
    if s.chars().count() > MESSAGE_CHARS {
        format!("{one_line}...")
    } else {
        one_line
    }
}

/// A URL for logs: without user info or query (either may hold a key).
fn redacted(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.to_string()
}

/// Why a request failed, in words: the innermost cause (reqwest's own text is only
/// "error sending request").
fn reason(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if e.is_timeout() {
        "timed out".into()
    } else {
        cause.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_from_problem_json_or_text() {
        let s = StatusCode::BAD_REQUEST;
        assert_eq!(
            message_of(r#"{"type":"x","title":"Bad","detail":"no H.264"}"#, s),
            "no H.264"
        );
        assert_eq!(message_of("  plain words\n", s), "plain words");
        assert_eq!(message_of("", StatusCode::FORBIDDEN), "Forbidden");
        let long = "é".repeat(1000);
        assert_eq!(message_of(&long, s).chars().count(), MESSAGE_CHARS + 3);
    }

    #[test]
    fn bad_settings_are_refused_before_any_request() {
        assert!(matches!(
            Client::new("ftp://x/whip", None),
            Err(WhipError::BadUrl(_))
        ));
        assert!(matches!(
            Client::new("not a url", None),
            Err(WhipError::BadUrl(_))
        ));
        assert!(matches!(
            Client::new("http://x/whip", Some("two words")),
            Err(WhipError::BadToken)
        ));
        let c = Client::new("https://x.example/whip", Some("secret")).unwrap();
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn logged_urls_lose_credentials_and_query() {
        let u = Url::parse("https://user:pw@x.example/whip?key=k").unwrap();
        assert_eq!(redacted(&u), "https://x.example/whip");
    }
}
