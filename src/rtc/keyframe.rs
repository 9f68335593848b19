//! An interceptor that lets keyframe requests (PLI, FIR) from viewers reach the application.
//!
//! The `webrtc` crate's interceptor chain consumes all inbound RTCP; only packets marked
//! [`Attribute::DeliverToApplication`] come out of a sender track's `poll()`. This one sits
//! last in the chain, keeps PLI/FIR, marks them, and drops the rest (receiver reports and
//! NACKs were already handled by the interceptors before it).

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

/// Slot after every built-in interceptor.
pub const SLOT: usize = 14_000;

#[derive(Default)]
pub struct KeyframeRequests {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

/// Calls `on_request` for every PLI/FIR the viewer sends on `track`, until `cancel` or the
/// track is unbound (so it never outlives its session holding the track).
pub async fn forward(
    track: Arc<TrackLocalStaticRTP>,
    cancel: CancellationToken,
    on_request: impl Fn(),
) {
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            e = track.poll() => e,
        };
        let Some(event) = event else { return };
        if let TrackLocalEvent::OnRtcpPacket(packets) = event {
            if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                on_request();
            }
        }
    }
}

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &mut msg.message.packet {
            for p in packets.iter() {
                let any = p.as_any();
                if any.is::<PictureLossIndication>() {
                    metrics::counter!("whepcast_rtcp_pli_total").increment(1);
                } else if any.is::<FullIntraRequest>() {
                    metrics::counter!("whepcast_rtcp_fir_total").increment(1);
                } else if any.is::<TransportLayerNack>() {
                    metrics::counter!("whepcast_rtcp_nack_total").increment(1);
                }
            }
            packets.retain(|p| is_keyframe_request(p.as_ref()));
            if packets.is_empty() {
                // Feedback carrying the congestion controller's estimate goes on (empty) to
                // the end of the chain, where the connection's statistics read it.
                if super::cc::carries_attributes(&msg) {
                    self.read.push_back(msg);
                }
                return Ok(());
            }
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
