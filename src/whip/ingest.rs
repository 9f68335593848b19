//! WHIP in: a publisher's session (RFC 9725, server side). A browser, OBS or another
//! whepcast POSTs a sendonly offer to `/whip[/NAME]`; its H.264 goes to the stream's
//! [`crate::relay`], which passes it to every viewer without decoding it.
//!
//! One publisher per stream: a second POST gets `409 Conflict` until the first one leaves
//! (DELETE, or its connection dies). Sessions take `PATCH` (trickle, ICE restart) and
//! `DELETE` like WHEP viewers' (shared code: [`crate::whep::IceSession`]).

use crate::fanout::Feed;
use crate::relay::{Event, Inlet};
use crate::rtc::{self, Direction, RtcConfig};
use crate::shutdown::Shutdown;
use crate::whep::{self, random_hex, short, Answer, IceSession, Patched, WhepError};
use ::rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionState,
};

/// A stream that takes WHIP publishers.
pub struct IngestStream {
    pub name: String,
    /// Where its publisher's packets go.
    pub inlet: Inlet,
    /// The stream's fan-out (its end ends the publisher's session).
    pub feed: Feed,
}

/// Every publisher session of the server's WHIP streams.
#[derive(Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

struct Inner {
    rtc: RtcConfig,
    streams: Vec<Slot>,
    map: Mutex<HashMap<String, Arc<Publisher>>>,
    shutdown: Shutdown,
    /// Numbers publisher sessions for the relay.
    next: AtomicU64,
}

struct Slot {
    stream: IngestStream,
    /// The session publishing now (or being set up).
    taken: Mutex<Option<String>>,
}

struct Publisher {
    stream: usize,
    number: u64,
    ice: IceSession,
    cancel: CancellationToken,
    created: Instant,
}

impl Ingest {
    pub fn new(rtc: RtcConfig, streams: Vec<IngestStream>, shutdown: Shutdown) -> Self {
        Self {
            inner: Arc::new(Inner {
                rtc,
                streams: streams
                    .into_iter()
                    .map(|stream| Slot {
                        stream,
                        taken: Mutex::new(None),
                    })
                    .collect(),
                map: Mutex::new(HashMap::new()),
                shutdown,
                next: AtomicU64::new(1),
            }),
        }
    }

    /// The streams that take publishers, in order (the first is `/whip`'s).
    pub fn stream_names(&self) -> Vec<&str> {
        self.inner
            .streams
            .iter()
            .map(|s| s.stream.name.as_str())
            .collect()
    }

    /// Whether `stream` has a publisher now.
    pub fn is_publishing(&self, stream: &str) -> bool {
        self.slot(stream)
            .is_ok_and(|(_, slot)| lock(&slot.taken).is_some())
    }

    fn slot(&self, name: &str) -> Result<(usize, &Slot), WhepError> {
        self.inner
            .streams
            .iter()
            .enumerate()
            .find(|(_, s)| s.stream.name == name)
            .ok_or_else(|| WhepError::UnknownStream {
                name: name.chars().take(64).collect(),
                known: if self.inner.streams.is_empty() {
                    "none takes publishers (start one with --source whip or --stream NAME=whip)"
                        .into()
                } else {
                    self.stream_names().join(", ")
                },
            })
    }

    /// Answers a publisher's offer for `stream`, if it has no publisher yet.
    pub async fn create(&self, stream: &str, offer: String) -> Result<Answer, WhepError> {
        if self.inner.shutdown.is_started() {
            return Err(WhepError::ShuttingDown);
        }
        let (index, slot) = self.slot(stream)?;
        let id = random_hex(16);
        {
            // Taken before the first await: two offers at once cannot both publish.
            let mut taken = lock(&slot.taken);
            if taken.is_some() {
                metrics::counter!("whepcast_publishers_refused_total", "reason" => "busy")
                    .increment(1);
                return Err(WhepError::Busy(slot.stream.name.clone()));
            }
            *taken = Some(id.clone());
        }
        match self.set_up(index, slot, &id, offer).await {
            Ok(answer) => Ok(answer),
            Err(e) => {
                let mut taken = lock(&slot.taken);
                if taken.as_deref() == Some(&id) {
                    *taken = None;
                }
                Err(e)
            }
        }
    }

    async fn set_up(
        &self,
        index: usize,
        slot: &Slot,
        id: &str,
        offer: String,
    ) -> Result<Answer, WhepError> {
        let t0 = Instant::now();
        let choice = rtc::choose_h264_for(&offer, Direction::FromOfferer)?;
        let number = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
        let (gathered_tx, mut gathered_rx) = watch::channel(false);
        let handler = Arc::new(Handler {
            state: state_tx,
            gathered: gathered_tx.clone(),
            inlet: slot.stream.inlet.clone(),
            number,
        });
        // Receiving needs no estimate of our own: the publisher's estimator runs on the
        // transport-wide feedback we send.
        let link = Arc::new(rtc::cc::Link::default());
        let bounds = rtc::cc::Bounds {
            start_bps: 1e6,
            min_bps: 1e5,
            max_bps: 1e7,
        };
        let (pc, _port) = rtc::new_peer_connection(
            &self.inner.rtc,
            &choice,
            rtc::Role::Receive,
            handler,
            &link,
            bounds,
        )
        .await?;
        let remote_ufrag = whep::sdpfrag::ufrag_of(&offer);
        let sdp = match rtc::ingest::answer(&pc, offer, &mut gathered_rx, &self.inner.rtc).await {
            Ok(sdp) => sdp,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e.into());
            }
        };
        let ice = IceSession::new(pc, gathered_tx, remote_ufrag);
        let etag = ice.etag();
        let publisher = Arc::new(Publisher {
            stream: index,
            number,
            ice,
            cancel: self.inner.shutdown.token().child_token(),
            created: Instant::now(),
        });
        lock(&self.inner.map).insert(id.to_owned(), publisher.clone());
        metrics::counter!("whepcast_publishers_total", "stream" => slot.stream.name.clone())
            .increment(1);
        tracing::info!(
            stream = %slot.stream.name, session = %short(id),
            "publisher answered in {:?}", t0.elapsed()
        );
        let (me, id_owned) = (self.clone(), id.to_owned());
        let (restarted, feed, cancel) = (
            publisher.ice.restarted.clone(),
            slot.stream.feed.clone(),
            publisher.cancel.clone(),
        );
        self.inner.shutdown.spawn(async move {
            if let Some(reason) = whep::watch_connection(state_rx, &restarted, &feed, &cancel).await
            {
                // The shared supervisor speaks of viewers; this peer is the publisher.
                me.close(&id_owned, &reason.replace("viewer", "publisher"))
                    .await;
            }
        });
        Ok(Answer {
            session_id: id.to_owned(),
            sdp,
            etag,
        })
    }

    /// `PATCH` on a publisher's session: trickle or ICE restart.
    pub async fn patch(
        &self,
        id: &str,
        if_match: Option<&str>,
        body: &[u8],
    ) -> Result<Patched, WhepError> {
        let publisher = lock(&self.inner.map)
            .get(id)
            .cloned()
            .ok_or_else(|| WhepError::UnknownSession(short(id).to_string()))?;
        publisher
            .ice
            .patch(if_match, body, &publisher.cancel, &self.inner.rtc, id)
            .await
    }

    /// `DELETE`: the publisher leaves; viewers see the waiting picture.
    pub async fn delete(&self, id: &str) -> Result<(), WhepError> {
        if self.close(id, "DELETE").await {
            Ok(())
        } else {
            Err(WhepError::UnknownSession(short(id).to_string()))
        }
    }

    async fn close(&self, id: &str, reason: &str) -> bool {
        let Some(publisher) = lock(&self.inner.map).remove(id) else {
            return false;
        };
        publisher.cancel.cancel();
        publisher.ice.close().await;
        let slot = &self.inner.streams[publisher.stream];
        slot.stream.inlet.send(Event::Ended {
            session: publisher.number,
        });
        {
            let mut taken = lock(&slot.taken);
            if taken.as_deref() == Some(id) {
                *taken = None;
            }
        }
        metrics::counter!("whepcast_publishers_closed_total", "reason" => reason.to_string())
            .increment(1);
        tracing::info!(
            stream = %slot.stream.name, session = %short(id),
            "publisher left after {:.1}s ({reason})",
            publisher.created.elapsed().as_secs_f32()
        );
        true
    }

    /// Closes every publisher session (shutdown).
    pub async fn close_all(&self) {
        let ids: Vec<String> = lock(&self.inner.map).keys().cloned().collect();
        for id in ids {
            self.close(&id, "server shutting down").await;
        }
    }
}

/// Peer connection callbacks run on the connection's driver: only forward or spawn.
struct Handler {
    state: watch::Sender<RTCPeerConnectionState>,
    gathered: watch::Sender<bool>,
    inlet: Inlet,
    number: u64,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(state);
    }
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        tokio::spawn(receive(track, self.inlet.clone(), self.number));
    }
}

/// Hands the publisher's packets to the relay until the track ends.
async fn receive(track: Arc<dyn TrackRemote>, inlet: Inlet, session: u64) {
    let handle = tokio::runtime::Handle::current();
    let for_pli = Arc::downgrade(&track);
    inlet.send(Event::Started {
        session,
        // Weak: the relay holding it must not keep a closed connection's track alive.
        pli: Box::new(move || {
            if let Some(track) = for_pli.upgrade() {
                handle.spawn(async move {
                    let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
                    let pli = PictureLossIndication {
                        sender_ssrc: 0,
                        media_ssrc: ssrc,
                    };
                    let _ = track.write_rtcp(vec![Box::new(pli)]).await;
                });
            }
        }),
    });
    while let Some(event) = track.poll().await {
        if let TrackRemoteEvent::OnRtpPacket(packet) = event {
            inlet.send(Event::Packet { session, packet });
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
