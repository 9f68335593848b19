//! Many viewers, one encode.

use crate::support::*;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_viewers_get_moving_video_from_one_encode() {
    let fps = 30;
    let server = TestServer::start("640x360", fps, 2.0).await;
    let t0 = Instant::now();
    let mut viewers = Vec::new();
    for _ in 0..8 {
        viewers.push(Viewer::connect(&server.url("/whep")).await);
    }
    for (i, v) in viewers.iter_mut().enumerate() {
        let d = v
            .wait_for(&format!("viewer {i}: 30 frames"), |d| d.numbers.len() >= 30)
            .await;
        let distinct: std::collections::BTreeSet<_> = d.numbers.iter().collect();
        assert!(
            distinct.len() >= 25,
            "viewer {i} sees a still picture: {:?}",
            d.numbers
        );
    }
    let api = server.api().await;
    let stream = &api["streams"][0];
    assert_eq!(stream["viewers"], 8);
    let encoded = stream["frames_encoded"].as_u64().unwrap();
    // One encode for everyone: never more frames than the clock allowed (8 encodes per
    // frame would be ~8x this).
    let allowed = (t0.elapsed().as_secs_f64() * fps as f64 * 1.1) as u64 + 5;
    assert!(
        encoded <= allowed,
        "encoded {encoded} frames, clock allows {allowed}"
    );
    for v in &viewers {
        v.close().await;
    }
    server.stop().await;
}
