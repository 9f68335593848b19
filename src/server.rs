//! Wires the stages into a running server: start each stream's pipeline, bind HTTP, serve
//! until told to stop, then close every session.

use crate::broadcast::{Broadcast, OpenSource, StartError};
use crate::config::EncodeSettings;
use crate::http::{self, AppState};
use crate::rtc::RtcConfig;
use crate::source::{self, OpenOptions, Source, SourceSpec};
use crate::whep::{Sessions, Stream};
use std::future::Future;
use std::net::SocketAddr;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("stream '{name}': {err}")]
    Stream { name: String, err: StartError },
    #[error("cannot listen on {addr}: {err}")]
    Bind {
        addr: SocketAddr,
        err: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// glibc gives each thread its own arena and raises its mmap threshold after big frees, so a
/// server whose viewers come and go keeps their freed buffers resident. Two arenas and a fixed
/// 64 KiB threshold (big session buffers are mmapped and truly freed) bring RSS back close to
/// where it started after churn (BENCHMARKS.md, session churn). Call it first thing, before
/// any thread starts (the binary does; benchmarks do, to measure what the binary runs).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
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
            open: Box::new(move || source::open(&spec, opts)),
            settings,
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
            open: Box::new(move || Ok(Box::new(source) as Box<dyn Source>)),
            settings,
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
}

/// A server that is bound and running its pipelines, ready to [`Server::run`].
pub struct Server {
    listener: tokio::net::TcpListener,
    sessions: Sessions,
    token: Option<crate::http::Token>,
    // Dropping these stops the pipeline threads; kept until the server ends.
    _pipelines: Vec<Broadcast>,
}

impl Server {
    /// Starts every stream's pipeline and binds the HTTP listener.
    pub async fn bind(config: ServeConfig) -> Result<Self, ServeError> {
        crate::metrics::install();
        // Made now so the first viewer does not wait for it.
        crate::rtc::shared_certificate().map_err(|e| ServeError::Config(e.to_string()))?;
        let mut pipelines = Vec::new();
        let mut streams = Vec::new();
        for s in config.streams {
            let broadcast = Broadcast::start(&s.name, s.open, s.settings).map_err(|err| {
                ServeError::Stream {
                    name: s.name.clone(),
                    err,
                }
            })?;
            let settings = broadcast.feed().settings().to_owned();
            tracing::info!(
                "stream '{}': {} {} at {} fps, {} (keyframe every {}s)",
                s.name,
                s.label,
                settings.size,
                settings.fps,
                settings.bitrate,
                settings.keyint
            );
            streams.push(Stream::new(&s.name, s.label, broadcast.feed()));
            pipelines.push(broadcast);
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|err| ServeError::Bind {
                addr: config.listen,
                err,
            })?;
        Ok(Self {
            listener,
            sessions: Sessions::new(config.rtc, streams, config.max_viewers),
            token: config.token.as_deref().map(crate::http::Token::new),
            _pipelines: pipelines,
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
            token: self.token.clone(),
        });
        let sessions = self.sessions.clone();
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                // Close sessions before axum waits for connections to drain.
                sessions.close_all().await;
            })
            .await;
        self.sessions.close_all().await;
        Ok(result?)
    }
}
