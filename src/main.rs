//! The `whepcast` command line. Errors here are `anyhow`; the library's are typed.

use clap::{Parser, Subcommand};
use std::net::{IpAddr, SocketAddr};
use whepcast::config::{Bitrate, EncodeSettings, Ladder, Size};
use whepcast::rtc::{PortPool, RtcConfig};
use whepcast::server::{ServeConfig, Server, StreamConfig};
use whepcast::source::{OpenOptions, PixelFormat, SourceSpec};

// jemalloc for everything, with its purge thread (see `whepcast::use_jemalloc!`).
whepcast::use_jemalloc!();

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
    /// Publish a stream to a WHIP endpoint (a media server or CDN that fans it out): the
    /// encoder follows the endpoint's bandwidth feedback. Exit 0 when stopped (Ctrl-C,
    /// SIGTERM, end of input; the session is deleted), 2 when the endpoint refuses.
    Publish(PublishArgs),
    /// Encode a source to a file with the broadcaster's encoder, decode it back and check
    /// quality and format. Exit 0 when every check passed, 1 when one failed, 2 on bad input.
    Encode(EncodeArgs),
}

/// What to broadcast and how to encode it (`serve` and `publish`).
#[derive(clap::Args)]
struct InputArgs {
    /// What to broadcast: pattern, screen, screen:N, image:PATH, y4m:PATH, y4m:-
    /// (standard input), raw:PATH, raw:- (needs --size and --pixel-format).
    #[arg(long, env = "WHEPCAST_SOURCE", default_value = "pattern")]
    source: SourceSpec,
    /// Picture size, WIDTHxHEIGHT (both even): the pattern's size (default 1280x720), the size
    /// an image is scaled to, raw frames' size. A screen or y4m input has its own size.
    #[arg(long, env = "WHEPCAST_SIZE")]
    size: Option<Size>,
    /// Layout of raw input frames.
    #[arg(
        long,
        env = "WHEPCAST_PIXEL_FORMAT",
        value_enum,
        default_value = "i420"
    )]
    pixel_format: PixelFormat,
    /// Frames per second (1-120).
    #[arg(long, env = "WHEPCAST_FPS", default_value_t = 30)]
    fps: u32,
    /// Target bit rate: 2500k, 4M, ... (the most a publisher's encoder spends).
    #[arg(long, env = "WHEPCAST_BITRATE", default_value = "2500k")]
    bitrate: Bitrate,
    /// Seconds between periodic keyframes (viewers also get one when they join).
    #[arg(long, env = "WHEPCAST_KEYINT", default_value_t = 2.0)]
    keyint: f32,
}

impl InputArgs {
    fn settings(&self) -> EncodeSettings {
        EncodeSettings {
            size: self.size.unwrap_or_default(),
            fps: self.fps,
            bitrate: self.bitrate,
            keyint: self.keyint,
        }
    }
}

/// STUN/TURN servers for our own ICE agent.
#[derive(clap::Args)]
struct IceArgs {
    /// STUN server (stun:HOST[:PORT]) for the ICE agent and, through WHEP Link headers, for
    /// viewers. Repeatable.
    #[arg(long, env = "WHEPCAST_STUN", value_delimiter = ',')]
    stun: Vec<String>,
    /// TURN server (turn:HOST[:PORT][?transport=udp|tcp], turns:...), used like --stun; needs
    /// --turn-user and --turn-pass. Repeatable.
    #[arg(long, env = "WHEPCAST_TURN", value_delimiter = ',')]
    turn: Vec<String>,
    /// TURN username: one for all --turn servers, or the flag repeated once per server.
    #[arg(long, env = "WHEPCAST_TURN_USER")]
    turn_user: Vec<String>,
    /// TURN password, like --turn-user. Prefer the environment variable.
    #[arg(long, env = "WHEPCAST_TURN_PASS", hide_env_values = true)]
    turn_pass: Vec<String>,
}

impl IceArgs {
    fn servers(&self) -> Result<Vec<whepcast::rtc::IceServer>, whepcast::rtc::IceConfigError> {
        whepcast::rtc::ice::servers(&self.stun, &self.turn, &self.turn_user, &self.turn_pass)
    }
}

#[derive(clap::Args)]
struct PublishArgs {
    /// The WHIP endpoint's URL (e.g. https://host/whip/STREAM). Redirects (307/308) are
    /// followed, and the token is sent to where they lead.
    #[arg(env = "WHEPCAST_PUBLISH_URL")]
    url: String,
    /// Bearer token for the endpoint. Prefer the environment variable: command lines are
    /// visible to other users.
    #[arg(long, env = "WHEPCAST_PUBLISH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    input: InputArgs,
    /// Smaller pictures to send when the endpoint's link cannot carry this one (the encoder
    /// first follows the estimate down to 60 % of a rendition's rate): `auto`, `none`, or a
    /// list as for `serve --ladder`. Only the one being sent is encoded.
    #[arg(long, env = "WHEPCAST_LADDER", default_value = "auto")]
    ladder: Ladder,
    #[command(flatten)]
    ice: IceArgs,
}

#[derive(clap::Args)]
struct EncodeArgs {
    /// What to encode (same sources as serve).
    #[arg(long, default_value = "pattern")]
    source: SourceSpec,
    /// Picture size, WIDTHxHEIGHT (both even); a screen or y4m input has its own.
    #[arg(long)]
    size: Option<Size>,
    /// Layout of raw input frames.
    #[arg(long, value_enum, default_value = "i420")]
    pixel_format: PixelFormat,
    /// Frames per second (timestamps, rate control).
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Frames to encode.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    frames: u64,
    /// Target bit rate: 2500k, 4M, ...
    #[arg(long, default_value = "2500k")]
    bitrate: Bitrate,
    /// Seconds between keyframes; when given, the keyframes written are checked against it.
    #[arg(long)]
    keyint: Option<f32>,
    /// Output file: .h264 (Annex B) or .mp4.
    #[arg(long)]
    out: std::path::PathBuf,
    /// Write the full report as JSON to this file.
    #[arg(long)]
    report: Option<std::path::PathBuf>,
    /// Print the JSON report alone on stdout (no summary, no progress).
    #[arg(long)]
    json: bool,
    /// Fail unless the mean PSNR-Y reaches this many dB.
    #[arg(long)]
    min_psnr: Option<f64>,
    /// Fail when the achieved bit rate is off the target by more than this many percent.
    #[arg(long)]
    max_bitrate_error: Option<f64>,
    /// Encode every rendition of this ladder (as `serve --ladder`), each checked on its own:
    /// the first is written to --out, rendition N to OUT-rN.EXT; the report lists them all.
    #[arg(long)]
    ladder: Option<Ladder>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// HTTP address to listen on. Use 0.0.0.0:8080 to let other machines watch.
    #[arg(long, env = "WHEPCAST_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    input: InputArgs,
    /// More streams, each at /whep/NAME and /view/NAME:
    /// NAME=SOURCE[,size=WxH][,fps=N][,bitrate=RATE][,keyint=S][,ladder=WxH@RATE/WxH@RATE|none].
    /// Repeatable (env: separate
    /// with ';'). When given, --source is not served unless also named here.
    #[arg(long = "stream", env = "WHEPCAST_STREAMS", value_delimiter = ';')]
    streams: Vec<StreamArg>,
    /// Renditions viewers move between as their links allow: `auto` (the stream's size at
    /// --bitrate B, half the size at B/4, a quarter at B/12), `none` (one rendition), or a
    /// list such as 1280x720@2500k,640x360@700k,320x180@200k. Each is encoded only while
    /// someone receives it.
    #[arg(long, env = "WHEPCAST_LADDER", default_value = "auto")]
    ladder: Ladder,
    /// Require `Authorization: Bearer TOKEN` on WHEP and API requests. Prefer the
    /// environment variable: command lines are visible to other users.
    #[arg(long, env = "WHEPCAST_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Allow sharing a screen, or taking WHIP publishers, beyond loopback without a token
    /// (deliberately public).
    #[arg(long, env = "WHEPCAST_PUBLIC")]
    public: bool,
    /// Token WHIP publishers must send (`Authorization: Bearer`) to /whip; needed for
    /// --source whip beyond loopback (unless --public). Prefer the environment variable.
    #[arg(long, env = "WHEPCAST_INGEST_TOKEN", hide_env_values = true)]
    ingest_token: Option<String>,
    /// Most viewers per stream; more get 503 with Retry-After.
    #[arg(long, env = "WHEPCAST_MAX_VIEWERS")]
    max_viewers: Option<usize>,
    #[command(flatten)]
    ice: IceArgs,
    /// Public address of a 1:1 NAT in front of this host: advertised to viewers next to the
    /// local addresses, same ports (forward the --udp-ports range to this host). Repeatable.
    #[arg(long, env = "WHEPCAST_PUBLIC_IP", value_delimiter = ',')]
    public_ip: Vec<IpAddr>,
    /// Also publish the first stream to this WHIP endpoint (a media server or CDN that fans
    /// it out further): the very frames local viewers get, encoded once.
    #[arg(long, env = "WHEPCAST_PUBLISH_URL")]
    publish: Option<String>,
    /// Bearer token for --publish. Prefer the environment variable.
    #[arg(long, env = "WHEPCAST_PUBLISH_TOKEN", hide_env_values = true)]
    publish_token: Option<String>,
    /// UDP ports for media, MIN-MAX (e.g. 50000-50100): one port per viewer, so a single
    /// firewall rule covers whepcast. When all are in use, new viewers get 503 + Retry-After.
    #[arg(long, env = "WHEPCAST_UDP_PORTS")]
    udp_ports: Option<String>,
}

fn main() -> std::process::ExitCode {
    whepcast::server::raise_fd_limit();
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
    let result = match cli.command {
        Command::Encode(args) => return encode(args),
        Command::Publish(args) => runtime.block_on(publish(args)),
        Command::Serve(args) => runtime.block_on(serve(args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // The endpoint refused (token, offer) or a setting is wrong: retrying cannot help.
            let refused = e
                .downcast_ref::<whepcast::whip::WhipError>()
                .is_some_and(|w| w.is_fatal());
            std::process::ExitCode::from(if refused { 2 } else { 1 })
        }
    }
}

/// `whepcast publish`: one stream, one encoder that follows the endpoint's feedback.
async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    use whepcast::whip::{self, PublishConfig};
    let settings = args.input.settings();
    settings.validate()?;
    let client = whip::Client::new(&args.url, args.token.as_deref())?;
    let opts = OpenOptions {
        size: args.input.size,
        pixel_format: Some(args.input.pixel_format),
    };
    let stream = StreamConfig::from_spec("main", args.input.source.clone(), opts, settings);
    let pipeline = whepcast::pipeline::Pipeline::start(
        &stream.name,
        stream.label.clone(),
        stream.open,
        stream.settings,
        // Renditions to step down to when the link cannot carry the picture even at a
        // lower rate; only the one being sent is encoded.
        &args.ladder,
    )?;
    let mut rtc = RtcConfig::for_listen_ip(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    rtc.ice_servers = args.ice.servers()?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
    tracing::info!(
        "publishing {} to {} at up to {}",
        stream.label,
        client.endpoint(),
        settings.bitrate
    );
    let config = PublishConfig {
        name: "whepcast".into(),
        rtc,
        follow_link: true,
    };
    whip::publish(client, pipeline.renditions(), config, cancel).await?;
    if pipeline.status().is_ended() {
        tracing::info!("the input ended");
    }
    Ok(())
}

/// `whepcast encode`: exit 0 pass, 1 a check failed (or encoding broke), 2 bad input.
fn encode(args: EncodeArgs) -> std::process::ExitCode {
    use std::io::IsTerminal;
    use whepcast::check::{self, CheckConfig, CheckError, Container};
    let usage = |msg: String| {
        eprintln!("error: {msg}\n\nUsage: whepcast encode --source SOURCE --size WxH --fps N --frames N --bitrate RATE --out FILE.h264|FILE.mp4");
        std::process::ExitCode::from(2)
    };
    if let Err(e) = Container::from_path(&args.out) {
        return usage(e.to_string());
    }
    let config = CheckConfig {
        source: args.source.clone(),
        open: OpenOptions {
            size: args.size,
            pixel_format: Some(args.pixel_format),
        },
        settings: EncodeSettings {
            size: args.size.unwrap_or_default(),
            fps: args.fps,
            bitrate: args.bitrate,
            keyint: args.keyint.unwrap_or(2.0),
        },
        frames: args.frames,
        out: args.out.clone(),
        min_psnr: args.min_psnr,
        max_bitrate_error: args.max_bitrate_error,
        check_keyint: args.keyint.is_some(),
        rendition: None,
    };
    if let Err(e) = config.settings.validate() {
        return usage(e.to_string());
    }
    // One check per rendition; without --ladder, the source as it is.
    let configs: Vec<CheckConfig> = match &args.ladder {
        None => vec![config],
        Some(ladder) => ladder
            .rungs(config.settings.size, config.settings.bitrate)
            .into_iter()
            .enumerate()
            .map(|(i, rung)| CheckConfig {
                rendition: Some(rung),
                out: if i == 0 {
                    config.out.clone()
                } else {
                    rendition_path(&config.out, i)
                },
                ..config.clone()
            })
            .collect(),
    };
    let quiet = args.json;
    let mut reports = Vec::new();
    for config in &configs {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(config.frames);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} frames, {per_sec}, eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        let mut last_line = 0u64;
        let mut progress = |done: u64, total: u64| match &bar {
            Some(b) => b.set_position(done),
            // Not a terminal (CI logs): a plain line every 10 %.
            None if !quiet && (done * 10 / total > last_line || done == total) => {
                last_line = done * 10 / total;
                eprintln!("encoded {done}/{total} frames");
            }
            None => {}
        };
        let report = match check::run(config, &mut progress) {
            Ok(r) => r,
            Err(
                e @ (CheckError::Start(_)
                | CheckError::Container(_)
                | CheckError::NoFrames
                | CheckError::Settings(_)),
            ) => return usage(e.to_string()),
            Err(e) => {
                eprintln!("error: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        reports.push(report);
    }
    let passed = reports.iter().all(|r| r.passed);
    let json = if args.ladder.is_some() {
        serde_json::to_string_pretty(&serde_json::json!({
            "renditions": reports,
            "passed": passed,
        }))
    } else {
        serde_json::to_string_pretty(&reports[0])
    };
    let json = match json {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(path) = &args.report {
        if let Err(e) = std::fs::write(path, &json) {
            eprintln!("error: writing {}: {e}", path.display());
            return std::process::ExitCode::FAILURE;
        }
    }
    if args.json {
        println!("{json}");
    } else {
        for (i, report) in reports.iter().enumerate() {
            if reports.len() > 1 {
                println!("rendition {i}: {}x{}", report.width, report.height);
            }
            print!("{}", report.human());
        }
    }
    for report in &reports {
        let which = if reports.len() > 1 {
            format!(" ({}x{})", report.width, report.height)
        } else {
            String::new()
        };
        for c in report.checks.iter().filter(|c| !c.passed) {
            eprintln!("check failed{which}: {} — {}", c.name, c.detail);
        }
    }
    if passed {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// `out.mp4` -> `out-r1.mp4`: where rendition `index` of `--ladder` is written.
fn rendition_path(out: &std::path::Path, index: usize) -> std::path::PathBuf {
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("out");
    let ext = out.extension().and_then(|s| s.to_str()).unwrap_or("h264");
    out.with_file_name(format!("{stem}-r{index}.{ext}"))
}

/// `--stream NAME=SOURCE[,key=value...]`.
#[derive(Debug, Clone)]
struct StreamArg {
    name: String,
    source: SourceSpec,
    size: Option<Size>,
    fps: Option<u32>,
    bitrate: Option<Bitrate>,
    keyint: Option<f32>,
    ladder: Option<Ladder>,
}

impl std::str::FromStr for StreamArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}': write NAME=SOURCE, e.g. desk=screen:0,fps=15"))?;
        let name = name.trim();
        if !whepcast::server::valid_stream_name(name) {
            return Err(format!(
                "stream name '{name}': use 1-64 letters, digits, '-' or '_' (not 'session')"
            ));
        }
        let mut parts = rest.split(',');
        let source = parts
            .next()
            .unwrap_or("")
            .parse::<SourceSpec>()
            .map_err(|e| e.to_string())?;
        let mut arg = StreamArg {
            name: name.to_string(),
            source,
            size: None,
            fps: None,
            bitrate: None,
            keyint: None,
            ladder: None,
        };
        for kv in parts {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("'{kv}' in --stream {name}: write key=value"))?;
            match k.trim() {
                "size" => arg.size = Some(v.parse().map_err(|e| format!("{e}"))?),
                "fps" => arg.fps = Some(v.parse().map_err(|_| format!("fps={v}: not a number"))?),
                "bitrate" => arg.bitrate = Some(v.parse().map_err(|e| format!("{e}"))?),
                "keyint" => {
                    arg.keyint = Some(v.parse().map_err(|_| format!("keyint={v}: not a number"))?)
                }
                // Renditions separated by '/' here: ',' separates the stream's settings.
                "ladder" => arg.ladder = Some(v.parse().map_err(|e| format!("{e}"))?),
                other => {
                    return Err(format!(
                    "unknown setting '{other}' in --stream {name}; use size, fps, bitrate, keyint, ladder"
                ))
                }
            }
        }
        Ok(arg)
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let defaults = args.input.settings();
    defaults.validate()?;
    // A bad URL or token is refused before anything starts.
    let publisher = args
        .publish
        .as_deref()
        .map(|url| whepcast::whip::Client::new(url, args.publish_token.as_deref()))
        .transpose()?;
    let stream_args = if args.streams.is_empty() {
        vec![StreamArg {
            name: "main".into(),
            source: args.input.source.clone(),
            size: args.input.size,
            fps: None,
            bitrate: None,
            keyint: None,
            ladder: None,
        }]
    } else {
        args.streams.clone()
    };
    let mut streams = Vec::new();
    for s in stream_args {
        let settings = EncodeSettings {
            fps: s.fps.unwrap_or(defaults.fps),
            bitrate: s.bitrate.unwrap_or(defaults.bitrate),
            keyint: s.keyint.unwrap_or(defaults.keyint),
            ..defaults
        };
        let opts = OpenOptions {
            size: s.size.or(args.input.size),
            pixel_format: Some(args.input.pixel_format),
        };
        let mut stream = StreamConfig::from_spec(s.name, s.source, opts, settings);
        stream.ladder = s.ladder.unwrap_or_else(|| args.ladder.clone());
        streams.push(stream);
    }
    let mut rtc = RtcConfig::for_listen_ip(args.listen.ip());
    rtc.ice_servers = args.ice.servers()?;
    rtc.public_ips = args.public_ip.clone();
    if let Some(range) = &args.udp_ports {
        rtc.ports = Some(PortPool::parse(range)?);
    }
    let publish_rtc = RtcConfig {
        ice_servers: rtc.ice_servers.clone(),
        ..RtcConfig::for_listen_ip(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    };
    let config = ServeConfig {
        listen: args.listen,
        streams,
        rtc,
        token: args.token.clone(),
        max_viewers: args.max_viewers,
        public: args.public,
        ingest_token: args.ingest_token.clone(),
    };
    let server = Server::bind(config).await?;
    let addr = server.local_addr();
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    println!(
        "whepcast: open http://{host}:{}/ to watch (WHEP endpoint: /whep)",
        addr.port()
    );
    // The publisher rides the first stream's renditions like one more viewer. A refusal
    // (token, offer) stops the server too: the user asked for both.
    let stop_publishing = tokio_util::sync::CancellationToken::new();
    let (refused_tx, refused_rx) = tokio::sync::oneshot::channel();
    let publishing = publisher.map(|client| {
        let stream = &server.sessions().streams()[0];
        tracing::info!(
            "publishing stream '{}' to {}",
            stream.name,
            client.endpoint()
        );
        let config = whepcast::whip::PublishConfig {
            name: stream.name.clone(),
            rtc: publish_rtc,
            follow_link: false,
        };
        let task = whepcast::whip::publish(
            client,
            stream.renditions.clone(),
            config,
            stop_publishing.clone(),
        );
        tokio::spawn(async move {
            let result = task.await;
            if let Err(e) = &result {
                tracing::error!("publishing stopped: {e}");
                let _ = refused_tx.send(());
            }
            result
        })
    });
    let stop = async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            Ok(()) = refused_rx => {}
        }
    };
    let served = server.run(stop).await;
    stop_publishing.cancel();
    if let Some(task) = publishing {
        // It deletes its session before returning.
        task.await??;
    }
    served?;
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
