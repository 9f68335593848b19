//! The viewer's data channel, when its offer has one (the project's page always does; plain
//! WHEP players don't, and lose nothing).
//!
//! JSON text messages, one object each, `type` says what it is:
//!
//! | direction | `type`    | fields                                   | what for                       |
//! |-----------|-----------|------------------------------------------|--------------------------------|
//! | → viewer  | `hello`   | `session`, `stream`, `name`, `viewers`   | who this viewer is             |
//! | → viewer  | `frame`   | `n`, `rtp`, `captured_ms`, `keyframe`    | capture time of every frame    |
//! | ← viewer  | `ping`    | `id`, `t`                                | clock offset and round trip    |
//! | → viewer  | `pong`    | `id`, `t` (echoed), `server_ms`          |                                |
//! | ← viewer  | `chat`    | `text`                                   | a line for everyone watching   |
//! | → viewer  | `chat`    | `from`, `text`, `server_ms`              | relayed to the stream's viewers|
//! | → viewer  | `viewers` | `count`                                  | the stream's audience changed  |
//! | → viewer  | `error`   | `text`                                   | why a message was refused      |
//!
//! `frame` lets a page match the RTP timestamp of the picture it shows to the moment it
//! was captured (server clock), and `ping`/`pong` give the offset between the clocks:
//! glass-to-glass latency for any source. Every send is non-blocking: a viewer that cannot
//! keep up loses metadata and chat lines, never stalls anything.

use super::Stream;
use crate::fanout::unix_ms;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::{DataChannel, DataChannelEvent};

/// Longest chat line, in characters.
pub const MAX_CHAT_CHARS: usize = 280;
/// A viewer may send this many chat lines per [`CHAT_WINDOW`].
pub const CHAT_LINES: usize = 5;
pub const CHAT_WINDOW: Duration = Duration::from_secs(10);
/// Longest message accepted from a viewer.
pub(crate) const MAX_MESSAGE_BYTES: usize = 2048;

/// Who is on the other end of a channel.
pub(super) struct Viewer {
    pub session: String,
    /// Shown next to their chat lines.
    pub name: String,
    pub stream: Stream,
    /// The frames sent to this viewer (of whichever rendition it is on).
    pub frames: tokio::sync::broadcast::Receiver<Arc<crate::fanout::MediaFrame>>,
    /// Its link and rendition, told to it every [`LINK_EVERY`].
    pub link: Arc<crate::rtc::cc::Link>,
    pub viewing: Arc<crate::fanout::Viewing>,
}

/// How often a viewer is told its rendition and link estimate.
pub const LINK_EVERY: Duration = Duration::from_secs(1);

/// The `link` message: the viewer's rendition, the renditions it can choose, and what its
/// link is estimated to carry.
fn link_message(viewer: &Viewer) -> String {
    let r = &viewer.stream.renditions;
    let index = viewer.viewing.current();
    serde_json::json!({
        "type": "link",
        "rendition": r.get(index).map(|f| f.label()),
        "index": index,
        "renditions": r.labels(),
        "estimator": viewer.link.estimator(),
        "estimate_bps": viewer.link.estimate_bps(),
        "arriving_bps": viewer.link.arriving_bps(),
        "proven_bps": super::reading(&viewer.link).proven_bps(),
        "loss": viewer.link.loss(),
        "rtt_ms": viewer.link.rtt().map(|d| d.as_secs_f64() * 1000.0),
        "switches": viewer.viewing.switches(),
    })
    .to_string()
}

/// Serves the first data channel the viewer opens until the session ends.
pub(super) async fn serve(
    viewer: Viewer,
    mut opened: mpsc::Receiver<Arc<dyn DataChannel>>,
    cancel: CancellationToken,
) {
    let dc = tokio::select! {
        _ = cancel.cancelled() => return,
        dc = opened.recv() => match dc { Some(dc) => dc, None => return },
    };
    // Later channels are not ours to serve; drop their handles as they come.
    drop(opened);
    let mut frames = viewer.frames.resubscribe();
    let mut room = viewer.stream.room.subscribe();
    let mut recent: VecDeque<Instant> = VecDeque::with_capacity(CHAT_LINES);
    let mut tick = tokio::time::interval(LINK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let hello = serde_json::json!({
        "type": "hello",
        "session": viewer.session,
        "stream": viewer.stream.name,
        "name": viewer.name,
        "viewers": viewer.stream.viewers(),
    });
    if !send(&dc, &hello.to_string()).await {
        return;
    }
    loop {
        let keep_going = tokio::select! {
            _ = cancel.cancelled() => false,
            event = dc.poll() => match event {
                Some(DataChannelEvent::OnMessage(m)) => {
                    let reply = handle(&viewer, &m.data, m.is_string, &mut recent);
                    match reply {
                        Some(r) => send(&dc, &r).await,
                        None => true,
                    }
                }
                Some(DataChannelEvent::OnClose) | None => false,
                Some(_) => true,
            },
            frame = frames.recv() => match frame {
                Ok(f) => send(&dc, &f.meta).await,
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => false,
            },
            _ = tick.tick() => send(&dc, &link_message(&viewer)).await,
            line = room.recv() => match line {
                Ok(l) => send(&dc, &l).await,
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => false,
            },
        };
        if !keep_going {
            break;
        }
    }
    let _ = dc.close().await;
}

/// Sends without waiting; a full buffer drops the message. False once the channel is gone.
async fn send(dc: &Arc<dyn DataChannel>, text: &str) -> bool {
    match dc.try_send_text(text).await {
        Ok(()) => true,
        Err(rtc::shared::error::Error::ErrSendBufferFull) => true,
        Err(_) => false,
    }
}

/// A viewer's message, read and checked ([`read_message`]).
#[derive(Debug, PartialEq)]
pub(crate) enum Incoming {
    /// `ping`: its `id` and `t`, echoed in the `pong` (`null` when absent).
    Ping {
        id: serde_json::Value,
        t: serde_json::Value,
    },
    /// `chat`: the line, cleaned (no hidden characters, trimmed), 1 to [`MAX_CHAT_CHARS`]
    /// characters.
    Chat(String),
}

/// Reads one message from a viewer; `Err` is the text of the `error` reply. Pure: the rate
/// limit and the room are [`handle`]'s.
pub(crate) fn read_message(data: &[u8], is_text: bool) -> Result<Incoming, String> {
    if !is_text || data.len() > MAX_MESSAGE_BYTES {
        return Err("messages are JSON text objects of at most 2 KiB".into());
    }
    let Ok(serde_json::Value::Object(mut msg)) = serde_json::from_slice::<serde_json::Value>(data)
    else {
        return Err("messages are JSON objects with a \"type\"".into());
    };
    match msg.get("type").and_then(|t| t.as_str()) {
        Some("ping") => Ok(Incoming::Ping {
            id: msg.remove("id").unwrap_or_default(),
            t: msg.remove("t").unwrap_or_default(),
        }),
        Some("chat") => {
            let Some(text) = msg.get("text").and_then(|t| t.as_str()) else {
                return Err("a chat message needs \"text\"".into());
            };
            // Text only: control characters, line and paragraph separators and bidi
            // overrides would let one line pose as several, or as someone else's.
            let text: String = text.chars().filter(|c| !hidden_trickery(*c)).collect();
            let text = text.trim();
            if text.is_empty() {
                return Err("empty chat line".into());
            }
            if text.chars().count() > MAX_CHAT_CHARS {
                return Err(format!(
                    "chat lines are at most {MAX_CHAT_CHARS} characters"
                ));
            }
            Ok(Incoming::Chat(text.to_owned()))
        }
        _ => Err("unknown message type; expected \"ping\" or \"chat\"".into()),
    }
}

/// The reply to a `ping`.
pub(crate) fn pong(id: &serde_json::Value, t: &serde_json::Value, server_ms: f64) -> String {
    serde_json::json!({
        "type": "pong",
        "id": id,
        "t": t,
        "server_ms": server_ms,
    })
    .to_string()
}

/// The `error` reply saying `text`.
pub(crate) fn error_reply(text: &str) -> String {
    serde_json::json!({"type": "error", "text": text}).to_string()
}

/// Handles one message; returns the reply for this viewer alone, if any. Chat lines go to
/// the whole stream through its room.
fn handle(
    viewer: &Viewer,
    data: &[u8],
    is_text: bool,
    recent: &mut VecDeque<Instant>,
) -> Option<String> {
    match read_message(data, is_text) {
        Err(text) => Some(error_reply(&text)),
        Ok(Incoming::Ping { id, t }) => Some(pong(&id, &t, unix_ms(SystemTime::now()))),
        Ok(Incoming::Chat(text)) => {
            let now = Instant::now();
            while recent
                .front()
                .is_some_and(|t| now.duration_since(*t) > CHAT_WINDOW)
            {
                recent.pop_front();
            }
            if recent.len() >= CHAT_LINES {
                return Some(error_reply(&format!(
                    "slow down: at most {CHAT_LINES} lines every {} s",
                    CHAT_WINDOW.as_secs()
                )));
            }
            recent.push_back(now);
            let line = serde_json::json!({
                "type": "chat",
                "from": viewer.name,
                "text": text,
                "server_ms": unix_ms(SystemTime::now()),
            });
            metrics::counter!("whepcast_chat_lines_total", "stream" => viewer.stream.name.clone())
                .increment(1);
            viewer.stream.announce(line.to_string());
            None
        }
    }
}

/// Characters a chat line must not carry: C0/C1 controls, U+2028/2029 (which break lines
/// even in `textContent`), and the bidirectional marks and overrides.
fn hidden_trickery(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}
