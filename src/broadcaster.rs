//! The library's front door for programs that draw their own frames: start a server, push
//! pictures from any thread, and every browser that opens the printed URL watches them.
//!
//! ```
//! use whepcast::{Broadcaster, config::Size, frame::Pixels};
//!
//! let size = Size::new(320, 240).unwrap();
//! let caster = Broadcaster::builder(size).listen("127.0.0.1:0".parse().unwrap()).start().unwrap();
//! println!("watch at {}", caster.url());
//!
//! let mut rgba = vec![0u8; size.area() * 4];
//! for n in 0..3u8 {
//!     rgba.chunks_exact_mut(4).for_each(|px| px.copy_from_slice(&[n * 80, 40, 200, 255]));
//!     caster.push_frame(Pixels::Rgba { data: &rgba, stride: 320 * 4 }).unwrap();
//! }
//! // Dropping the broadcaster closes every viewer and stops the server.
//! ```

use crate::config::{Bitrate, EncodeSettings, Size};
use crate::frame::{Pixels, Rect};
use crate::rtc::RtcConfig;
use crate::server::{ServeConfig, ServeError, Server, StreamConfig};
use crate::source::{push, FramePusher, SourceError};
use std::net::SocketAddr;
use std::thread::JoinHandle;

/// A running server with one stream fed by [`Broadcaster::push_frame`].
pub struct Broadcaster {
    pusher: FramePusher,
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Settings for [`Broadcaster`]; start with [`Broadcaster::builder`].
pub struct BroadcasterBuilder {
    listen: SocketAddr,
    settings: EncodeSettings,
    name: String,
}

impl BroadcasterBuilder {
    /// HTTP address (default `127.0.0.1:8080`; port 0 picks a free one).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }
    /// Frames per second sent to viewers (default 30): the newest pushed picture is taken
    /// at this rate, whatever rate the program pushes at.
    pub fn fps(mut self, fps: u32) -> Self {
        self.settings.fps = fps;
        self
    }
    pub fn bitrate(mut self, bitrate: Bitrate) -> Self {
        self.settings.bitrate = bitrate;
        self
    }
    /// Seconds between periodic keyframes (default 2).
    pub fn keyint(mut self, seconds: f32) -> Self {
        self.settings.keyint = seconds;
        self
    }
    /// Stream name (default `main`; served at `/whep` and `/whep/{name}`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Starts the server on its own thread and async runtime.
    pub fn start(self) -> Result<Broadcaster, ServeError> {
        let (pusher, source) = push::channel(self.settings.size);
        let config = ServeConfig {
            listen: self.listen,
            streams: vec![StreamConfig::from_source(
                self.name,
                "pushed frames",
                source,
                self.settings,
            )],
            rtc: RtcConfig::for_listen_ip(self.listen.ip()),
            token: None,
            max_viewers: None,
            public: false,
            ingest_token: None,
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("whepcast-server".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(ServeError::Runtime(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Server::bind(config).await {
                        Ok(server) => {
                            let _ = ready_tx.send(Ok(server.local_addr()));
                            let stop = async {
                                let _ = stop_rx.await;
                            };
                            if let Err(e) = server.run(stop).await {
                                tracing::error!("server: {e}");
                            }
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(ServeError::Runtime)?;
        let addr = ready_rx.recv().map_err(|_| ServeError::ThreadDied)??;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        Ok(Broadcaster {
            pusher,
            url: format!("http://{host}:{}/", addr.port()),
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Broadcaster {
    /// A builder for pictures of `size` (both sides even).
    pub fn builder(size: Size) -> BroadcasterBuilder {
        BroadcasterBuilder {
            listen: ([127, 0, 0, 1], 8080).into(),
            settings: EncodeSettings {
                size,
                ..EncodeSettings::default()
            },
            name: "main".into(),
        }
    }

    /// The viewer page's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Offers the next picture (any thread). It must have the size given to the builder;
    /// it replaces a picture not yet sent, so pushing faster than the frame rate is harmless.
    pub fn push_frame(&self, pixels: Pixels<'_>) -> Result<(), SourceError> {
        self.pusher.push(pixels)
    }

    /// Offers the next picture when only `changed` differs from the one pushed before (what
    /// a program that tracks what it redraws knows): only those rectangles are converted and
    /// copied, the cheapest way to stream a mostly still picture. See
    /// [`FramePusher::push_changed`].
    pub fn push_changed(&self, pixels: Pixels<'_>, changed: &[Rect]) -> Result<(), SourceError> {
        self.pusher.push_changed(pixels, changed)
    }

    /// A pusher handle to give to another thread.
    pub fn pusher(&self) -> FramePusher {
        self.pusher.clone()
    }
}

impl Drop for Broadcaster {
    fn drop(&mut self) {
        self.pusher.close();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
