//! An interceptor that lets keyframe requests (PLI, FIR) from viewers reach the application.
//!
//! The `webrtc` crate's interceptor chain consumes all inbound RTCP; only packets marked
//! [`Attribute::DeliverToApplication`] come out of a sender track's `poll()`. This one sits
//! last in the chain, keeps PLI/FIR, marks them, and drops the rest (receiver reports and
//! NACKs were already handled by the interceptors before it).

use super::tap::{Hooks, PassThrough, Tap};
use rtc::interceptor::{Attribute, Packet, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

/// Slot after every built-in interceptor.
pub const SLOT: usize = 14_000;

/// The keyframe tap: a [`Tap`] that keeps PLI/FIR for the application.
pub type KeyframeRequests = Tap<PassThrough, KeepKeyframeRequests>;

/// A new keyframe tap for a connection's chain.
pub fn requests() -> KeyframeRequests {
    Tap {
        inner: PassThrough::default(),
        hooks: KeepKeyframeRequests,
    }
}

/// Counts PLI, FIR and NACK, keeps PLI/FIR (marked for the application) and drops the rest.
pub struct KeepKeyframeRequests;

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

impl Hooks<PassThrough> for KeepKeyframeRequests {
    fn read(&mut self, msg: &mut TaggedPacket) -> bool {
        let Packet::Rtcp(packets) = &mut msg.message.packet else {
            return true;
        };
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
            // Feedback carrying the congestion controller's estimate goes on (empty) to the
            // end of the chain, where the connection's statistics read it.
            return super::cc::carries_attributes(msg);
        }
        msg.message.add(Attribute::DeliverToApplication);
        true
    }
}
