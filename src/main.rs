//! The `whepcast` command line. Errors here are `anyhow`; the library's are typed.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use whepcast::config::{Bitrate, EncodeSettings, Size};
use whepcast::rtc::RtcConfig;
use whepcast::server::{ServeConfig, Server, StreamConfig};
use whepcast::source::SourceSpec;

/// Broadcast a screen or generated frames to browsers over WebRTC (WHEP), encoding H.264 once.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a stream to browsers: open the printed URL, or POST a WHEP offer to /whep.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// HTTP address to listen on. Use 0.0.0.0:8080 to let other machines watch.
    #[arg(long, env = "WHEPCAST_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// What to broadcast: `pattern` (moving test pattern).
    #[arg(long, env = "WHEPCAST_SOURCE", default_value = "pattern")]
    source: SourceSpec,
    /// Picture size, WIDTHxHEIGHT (both even).
    #[arg(long, env = "WHEPCAST_SIZE", default_value = "1280x720")]
    size: Size,
    /// Frames per second (1-120).
    #[arg(long, env = "WHEPCAST_FPS", default_value_t = 30)]
    fps: u32,
    /// Target bit rate: 2500k, 4M, ...
    #[arg(long, env = "WHEPCAST_BITRATE", default_value = "2500k")]
    bitrate: Bitrate,
    /// Seconds between periodic keyframes (viewers also get one when they join).
    #[arg(long, env = "WHEPCAST_KEYINT", default_value_t = 2.0)]
    keyint: f32,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WHEPCAST_LOG")
                .unwrap_or_else(|_| "whepcast=info,error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = EncodeSettings {
        size: args.size,
        fps: args.fps,
        bitrate: args.bitrate,
        keyint: args.keyint,
    };
    let config = ServeConfig {
        listen: args.listen,
        streams: vec![StreamConfig {
            name: "main".into(),
            source: args.source.clone(),
            settings,
        }],
        rtc: RtcConfig::for_listen_ip(args.listen.ip()),
    };
    let server = Server::bind(config).await.context("cannot start")?;
    let addr = server.local_addr();
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    tracing::info!(
        "serving {} {} at {} fps, {} (keyframe every {}s)",
        args.source,
        args.size,
        args.fps,
        args.bitrate,
        args.keyint
    );
    println!(
        "whepcast: open http://{host}:{}/ to watch (WHEP endpoint: /whep)",
        addr.port()
    );
    server.run(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
