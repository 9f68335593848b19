//! Live heap per session: a counting allocator around the system one, a server and its
//! viewers in this process. Sessions are created, receive media and are DELETEd in batches;
//! after each batch (and a pause for tasks to end) it prints the bytes still allocated. A
//! per-session leak shows as a steady climb; a plateau means only caches and high-water marks.
//!
//!     cargo bench --bench leak -- 300      # sessions (default 200), in batches of 10

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;
use support::{TestServer, Viewer};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on unchanged to the system allocator; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is System's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` came from System with layout `l` (every allocation goes through here).
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: as for dealloc; the caller's contract for `realloc` is System's.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn live_kb() -> f64 {
    LIVE.load(Ordering::Relaxed) as f64 / 1024.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let server = TestServer::start("320x240", 30, 2.0).await;
    let whep = server.url("/whep");
    let client = reqwest::Client::new();
    // Time alone, with one viewer watching: anything that grows per frame shows here.
    let watcher = Viewer::connect_with(&whep, false).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start = live_kb();
    for s in 1..=6 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        println!(
            "one viewer, {:>2} s: live heap {:.0} KB ({:+.1})",
            s * 5,
            live_kb(),
            live_kb() - start
        );
    }
    let _ = client.delete(server.url(&watcher.location)).send().await;
    watcher.close().await;
    drop(watcher);
    let mut baseline = None;
    println!("| sessions | live heap KB | per session since the first batch, bytes |");
    println!("|---|---|---|");
    let mut done = 0;
    while done < total {
        let batch =
            futures_util::future::join_all((0..10).map(|_| Viewer::connect_with(&whep, false)))
                .await;
        for v in &batch {
            let mut d = v.decoded.clone();
            let _ =
                tokio::time::timeout(Duration::from_secs(10), d.wait_for(|d| d.rtp_packets > 0))
                    .await;
            let _ = client.delete(server.url(&v.location)).send().await;
            v.close().await;
        }
        drop(batch);
        done += 10;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let kb = live_kb();
        let (n0, kb0) = *baseline.get_or_insert((done, kb));
        let per = if done > n0 {
            (kb - kb0) * 1024.0 / (done - n0) as f64
        } else {
            0.0
        };
        println!("| {done} | {kb:.0} | {per:.0} |");
    }
    server.stop().await;
}
