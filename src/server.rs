//! Wires the stages into a running server: start each stream's pipeline, bind HTTP, serve
//! until told to stop, then close every session.

use crate::config::{EncodeSettings, Ladder};
use crate::http::{self, AppState};
use crate::pipeline::{self, OpenSource, Pipeline, StartError};
use crate::relay::Relay;
use crate::rtc::RtcConfig;
use crate::shutdown::Shutdown;
use crate::source::{self, OpenOptions, Source, SourceSpec};
use crate::whep::{Limits, Sessions, Stream};
use crate::whip::ingest::{Ingest, IngestStream};
use std::future::Future;
use std::net::SocketAddr;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("stream '{name}': {err}")]
    Stream {
        name: String,
        #[source]
        err: StartError,
    },
    #[error("cannot listen on {addr}: {err}")]
    Bind {
        addr: SocketAddr,
        #[source]
        err: std::io::Error,
    },
    #[error("stream name '{0}': use 1-64 letters, digits, '-' or '_' (not 'session')")]
    StreamName(String),
    #[error("stream name '{0}' is used twice")]
    DuplicateStream(String),
    #[error("no streams to serve")]
    NoStreams,
    #[error(
        "refusing to share a screen on {0} without a token: anyone who can reach this \
         address could watch it. Set one with WHEPCAST_TOKEN=<secret> (or --token), listen on \
         127.0.0.1, or pass --public if the screen is meant for everyone"
    )]
    ScreenWithoutToken(SocketAddr),
    #[error(
        "refusing to take WHIP publishers on {0} without an ingest token: anyone who can \
         reach this address could publish. Set one with WHEPCAST_INGEST_TOKEN=<secret> (or \
         --ingest-token), listen on 127.0.0.1, or pass --public if anyone may publish"
    )]
    IngestWithoutToken(SocketAddr),
    #[error(
        "the ingest token must be non-empty printable ASCII without spaces; e.g. \
         WHEPCAST_INGEST_TOKEN=$(openssl rand -hex 16)"
    )]
    BadIngestToken,
    #[error("the token is empty; set a secret, e.g. WHEPCAST_TOKEN=$(openssl rand -hex 16)")]
    EmptyToken,
    #[error(
        "the token must be printable ASCII without spaces (it travels in an HTTP header and \
         would never match); e.g. WHEPCAST_TOKEN=$(openssl rand -hex 16)"
    )]
    BadToken,
    #[error(transparent)]
    Rtc(#[from] crate::rtc::RtcError),
    #[error("cannot start the server's thread or runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the server thread ended while starting")]
    ThreadDied,
    #[error("serving HTTP failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Raises the soft limit on open files to the hard one (many systems start programs at
/// 1024 while allowing far more): each viewer holds sockets, and the limit decides how many
/// viewers fit ([`session_capacity`]). Call it at start, as the binary does.
pub fn raise_fd_limit() {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                let wanted = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                    tracing::debug!("could not raise the open-file limit to {}", lim.rlim_max);
                }
            }
        }
    }
}

/// How long stopping waits for the sessions' tasks to return after closing them.
const TASKS_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Descriptors kept for everything but viewers: listening socket, HTTP connections being
/// served, the runtime, sources (an X connection, files), logs.
const RESERVED_FDS: u64 = 128;

/// How many viewer sessions fit in the process's open-file limit when each holds
/// `fds_per_session` descriptors (its UDP sockets, plus the HTTP connection that set it
/// up). `None` when there is no limit to speak of.
pub fn session_capacity(fds_per_session: usize) -> Option<usize> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct passed by pointer.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0
            || lim.rlim_cur == libc::RLIM_INFINITY
        {
            return None;
        }
        let usable = lim.rlim_cur.saturating_sub(RESERVED_FDS).max(1);
        Some((usable / fds_per_session.max(1) as u64).max(1) as usize)
    }
    #[cfg(not(unix))]
    {
        let _ = fds_per_session;
        None
    }
}

/// One stream to serve.
pub struct StreamConfig {
    /// URL-safe name: the stream is at `/whep/{name}` and `/view/{name}`.
    pub name: String,
    /// What the frames come from, for the API and logs.
    pub label: String,
    /// Opens the source (on the stream's pipeline thread).
    pub open: OpenSource,
    /// Encoder settings; the size comes from the source.
    pub settings: EncodeSettings,
    /// The renditions viewers choose from ([`Ladder::Auto`] unless set).
    pub ladder: Ladder,
    /// Whether it shows a screen (which needs a token beyond loopback).
    pub shares_screen: bool,
    /// Whether its pictures come from a WHIP publisher (`--source whip`): the server relays
    /// them ([`crate::relay`]) instead of running a pipeline, and `open` is not used.
    pub ingest: bool,
}

/// Whether `name` can name a stream: it goes in URLs (`/whep/{name}`), and `session` is
/// taken by `/whep/session/{id}`.
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "session"
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl StreamConfig {
    /// A stream from a source the user named on the command line.
    pub fn from_spec(
        name: impl Into<String>,
        spec: SourceSpec,
        opts: OpenOptions,
        settings: EncodeSettings,
    ) -> Self {
        Self {
            name: name.into(),
            label: spec.to_string(),
            shares_screen: matches!(spec, SourceSpec::Screen(_)),
            ingest: spec == SourceSpec::Whip,
            open: Box::new(move |stop| source::open(&spec, opts, stop)),
            settings,
            ladder: Ladder::Auto,
        }
    }

    /// A stream from a source the program made (e.g. a [`source::PushSource`]).
    pub fn from_source<S: Source + Send + 'static>(
        name: impl Into<String>,
        label: impl Into<String>,
        source: S,
        settings: EncodeSettings,
    ) -> Self {
        Self {
            name: name.into(),
            label: label.into(),
            open: Box::new(move |_| Ok(Box::new(source) as Box<dyn Source>)),
            ladder: Ladder::Auto,
            settings,
            shares_screen: false,
            ingest: false,
        }
    }
}

/// Everything `serve` needs.
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub streams: Vec<StreamConfig>,
    pub rtc: RtcConfig,
    /// Bearer token for WHEP and the API (`None`: open).
    pub token: Option<String>,
    /// Most viewers per stream (`None`: no limit).
    pub max_viewers: Option<usize>,
    /// Share a screen beyond loopback without a token: the user said it is meant for all.
    pub public: bool,
    /// Bearer token WHIP publishers must present (`None`: anyone who can reach the server
    /// may publish, which is allowed only on loopback or with `public`).
    pub ingest_token: Option<String>,
}

impl ServeConfig {
    /// The rules every server keeps, whoever configured it (the command line or a program):
    /// valid, distinct stream names; a non-empty token; no screen beyond loopback without
    /// a token unless `public`.
    pub fn check(&self) -> Result<(), ServeError> {
        if self.streams.is_empty() {
            return Err(ServeError::NoStreams);
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.streams {
            if !valid_stream_name(&s.name) {
                return Err(ServeError::StreamName(s.name.clone()));
            }
            if !names.insert(s.name.as_str()) {
                return Err(ServeError::DuplicateStream(s.name.clone()));
            }
        }
        if let Some(t) = self.token.as_deref() {
            if t.trim().is_empty() {
                return Err(ServeError::EmptyToken);
            }
            // `Authorization` values are visible ASCII, and the header's value is trimmed.
            if !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ServeError::BadToken);
            }
        }
        let screen = self.streams.iter().any(|s| s.shares_screen);
        if screen && !self.listen.ip().is_loopback() && self.token.is_none() && !self.public {
            return Err(ServeError::ScreenWithoutToken(self.listen));
        }
        if let Some(t) = self.ingest_token.as_deref() {
            if t.trim().is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ServeError::BadIngestToken);
            }
        }
        let ingest = self.streams.iter().any(|s| s.ingest);
        if ingest && !self.listen.ip().is_loopback() && self.ingest_token.is_none() && !self.public
        {
            return Err(ServeError::IngestWithoutToken(self.listen));
        }
        Ok(())
    }
}

/// A server that is bound and running its pipelines, ready to [`Server::run`].
pub struct Server {
    listener: tokio::net::TcpListener,
    sessions: Sessions,
    ingest: Ingest,
    token: Option<crate::http::Token>,
    ingest_token: Option<crate::http::Token>,
    statuses: Vec<pipeline::Status>,
    shutdown: Shutdown,
    // Dropping these stops the pipeline and relay threads; kept until the server ends.
    _pipelines: Vec<Pipeline>,
    _relays: Vec<Relay>,
}

impl Server {
    /// Starts every stream's pipeline and binds the HTTP listener.
    pub async fn bind(config: ServeConfig) -> Result<Self, ServeError> {
        config.check()?;
        crate::metrics::install();
        // Made now so the first viewer does not wait for it.
        crate::rtc::shared_certificate()?;
        let mut pipelines = Vec::new();
        let mut relays = Vec::new();
        let mut ingest_streams = Vec::new();
        let mut streams = Vec::new();
        let mut statuses = Vec::new();
        for s in config.streams {
            if s.ingest {
                let relay =
                    Relay::start(&s.name, s.settings, &s.ladder).map_err(ServeError::Runtime)?;
                let status = relay.status();
                tracing::info!(
                    "stream '{}': relays a WHIP publisher (POST /whip/{}); until one comes, a waiting picture at {}",
                    s.name,
                    s.name,
                    s.settings.size
                );
                let stream = Stream::new(&s.name, status.feeds());
                ingest_streams.push(IngestStream {
                    name: s.name.clone(),
                    inlet: relay.inlet(),
                    feed: stream.renditions.top().clone(),
                });
                streams.push(stream);
                statuses.push(status);
                relays.push(relay);
                continue;
            }
            let pipeline = Pipeline::start(&s.name, s.label.clone(), s.open, s.settings, &s.ladder)
                .map_err(|err| ServeError::Stream {
                    name: s.name.clone(),
                    err,
                })?;
            let settings = *pipeline.status().settings();
            tracing::info!(
                "stream '{}': {} {} at {} fps, {} (keyframe every {}s); renditions {}",
                s.name,
                s.label,
                settings.size,
                settings.fps,
                settings.bitrate,
                settings.keyint,
                pipeline.renditions().labels().join(", ")
            );
            streams.push(Stream::new(&s.name, pipeline.renditions()));
            statuses.push(pipeline.status());
            pipelines.push(pipeline);
        }
        // Each session binds one UDP socket per local address (nothing else: 910 sessions of
        // one socket fitted in 1024 descriptors), and its offer came on an HTTP connection.
        let fds_per_session = config.rtc.udp_addrs.len() + 1;
        let limits = Limits {
            per_stream: config.max_viewers,
            total: session_capacity(fds_per_session),
        };
        if let Some(total) = limits.total {
            tracing::info!("room for {total} viewers in all (open-file limit; ulimit -n)");
        }
        let shutdown = Shutdown::new();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|err| ServeError::Bind {
                addr: config.listen,
                err,
            })?;
        Ok(Self {
            listener,
            ingest: Ingest::new(config.rtc.clone(), ingest_streams, shutdown.clone()),
            sessions: Sessions::new(config.rtc, streams, limits, shutdown.clone()),
            shutdown,
            token: config.token.as_deref().map(crate::http::Token::new),
            ingest_token: config.ingest_token.as_deref().map(crate::http::Token::new),
            statuses,
            _pipelines: pipelines,
            _relays: relays,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into())
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Serves until `shutdown` resolves, then closes every session.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let app = http::router(AppState {
            sessions: self.sessions.clone(),
            ingest: self.ingest.clone(),
            pipelines: self.statuses.clone().into(),
            token: self.token.clone(),
            ingest_token: self.ingest_token.clone(),
        });
        let sessions = self.sessions.clone();
        let ingest = self.ingest.clone();
        self.shutdown
            .spawn(crate::metrics::upkeep(self.shutdown.token().clone()));
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                // Close sessions before axum waits for connections to drain.
                sessions.close_all().await;
                ingest.close_all().await;
            })
            .await;
        self.sessions.close_all().await;
        self.ingest.close_all().await;
        // Every session's tasks end with its close; wait until they all have.
        self.shutdown.start();
        if tokio::time::timeout(TASKS_GRACE, self.shutdown.finished())
            .await
            .is_err()
        {
            tracing::warn!(
                "{} tasks still running {TASKS_GRACE:?} after shutdown",
                self.shutdown.running()
            );
        }
        result.map_err(ServeError::Serve)
    }
}
