//! Wires the stages into a running server: start each stream's pipeline, bind HTTP, serve
//! until told to stop, then close every session.

use crate::broadcast::Broadcast;
use crate::config::EncodeSettings;
use crate::encode::EncodeError;
use crate::http::{self, AppState};
use crate::rtc::RtcConfig;
use crate::source::{self, SourceError, SourceSpec};
use crate::whep::{Sessions, Stream};
use std::future::Future;
use std::net::SocketAddr;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("cannot listen on {addr}: {err}")]
    Bind {
        addr: SocketAddr,
        err: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("HTTP server: {0}")]
    Io(#[from] std::io::Error),
}

/// One stream to serve.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub name: String,
    pub source: SourceSpec,
    pub settings: EncodeSettings,
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub streams: Vec<StreamConfig>,
    pub rtc: RtcConfig,
}

/// A server that is bound and running its pipelines, ready to [`Server::run`].
pub struct Server {
    listener: tokio::net::TcpListener,
    sessions: Sessions,
    // Dropping these stops the pipeline threads; kept until the server ends.
    _pipelines: Vec<Broadcast>,
}

impl Server {
    /// Starts every stream's pipeline and binds the HTTP listener.
    pub async fn bind(config: ServeConfig) -> Result<Self, ServeError> {
        // Made now so the first viewer does not wait for it.
        crate::rtc::shared_certificate().map_err(|e| ServeError::Config(e.to_string()))?;
        let mut pipelines = Vec::new();
        let mut streams = Vec::new();
        for s in &config.streams {
            s.settings.validate().map_err(ServeError::Config)?;
            let src = source::open(&s.source, s.settings.size)?;
            let broadcast = Broadcast::start(src, s.settings)?;
            streams.push(Stream::new(&s.name, s.source.to_string(), broadcast.feed()));
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
            sessions: Sessions::new(config.rtc, streams),
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
