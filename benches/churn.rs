//! Session churn: create and DELETE many sessions, abandon some without DELETE, and check the
//! server gives everything back — RSS, open file descriptors (UDP sockets), active sessions.
//!
//!     scripts/bench.sh churn            # or: cargo bench --bench churn -- 1000 200
//!
//! Each session is a real offer from a webrtc-rs peer that completes ICE/DTLS and receives
//! media before it is deleted (or, for the abandoned ones, closed without a DELETE).

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};
use support::Viewer;

fn rss_and_fds(pid: u32) -> (f64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss_kb / 1024.0, fds)
}

/// Resident kB per mapping (keyed by address range and name) from `/proc/PID/smaps`.
fn mappings(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut out = std::collections::BTreeMap::new();
    let mut current = String::new();
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Rss:") {
            let kb = kb.trim().trim_end_matches(" kB").parse().unwrap_or(0);
            out.insert(current.clone(), kb);
        } else if line
            .split_whitespace()
            .next()
            .is_some_and(|f| f.contains('-'))
        {
            let mut f = line.split_whitespace();
            let range = f.next().unwrap_or_default();
            current = format!("{range} {}", f.nth(4).unwrap_or("[anon]"));
        }
    }
    out
}

/// Which mappings grew between two snapshots: the allocator's heap, thread stacks, files.
fn print_growth(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) {
    let mut rows: Vec<(i64, &String)> = after
        .iter()
        .map(|(k, v)| (*v as i64 - before.get(k).copied().unwrap_or(0) as i64, k))
        .chain(
            before
                .iter()
                .filter(|(k, _)| !after.contains_key(*k))
                .map(|(k, v)| (-(*v as i64), k)),
        )
        .filter(|(d, _)| *d != 0)
        .collect();
    rows.sort();
    println!("\nResident kB gained per mapping (largest first; negative = given back):\n");
    println!("| kB | mapping |\n|---|---|");
    for (d, k) in rows.iter().rev().take(12) {
        println!("| {d:+} | {k} |");
    }
    let total: i64 = rows.iter().map(|(d, _)| d).sum();
    println!("| {total:+} | total |");
}

async fn active(base: &str) -> u64 {
    support::api_at(base).await["sessions"]["active"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let deleted = args.first().copied().unwrap_or(1000);
    let abandoned = args.get(1).copied().unwrap_or(200);
    let (server, base) = support::spawn_serve(&["--size", "640x360"], &[], Stdio::null());
    let pid = server.0.id();
    let client = reqwest::Client::new();

    // Warm up: one session, so the first-use allocations are in the baseline.
    let mut v = Viewer::connect_with(&format!("{base}/whep"), false).await;
    v.wait_for("media", |d| d.rtp_packets > 0).await;
    client
        .delete(format!("{base}{}", v.location))
        .send()
        .await
        .unwrap();
    v.close().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss0, fds0) = rss_and_fds(pid);
    let maps0 = mappings(pid);

    let t = Instant::now();
    for i in 0..deleted + abandoned {
        let mut v = Viewer::connect_with(&format!("{base}/whep"), false).await;
        v.wait_for("media", |d| d.rtp_packets > 0).await;
        if i < deleted {
            let res = client
                .delete(format!("{base}{}", v.location))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
        v.close().await;
    }
    let churn_secs = t.elapsed().as_secs_f64();
    let (rss_peak, _) = rss_and_fds(pid);
    // Abandoned sessions are reaped once their viewers go silent.
    let t = Instant::now();
    while active(&base).await > 0 && t.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reaped_after = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss1, fds1) = rss_and_fds(pid);
    let left = active(&base).await;
    // Idle worker threads (tokio's blocking pool) exit after 10 s; their stacks count in RSS.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (rss2, _) = rss_and_fds(pid);
    let maps2 = mappings(pid);
    println!("| sessions deleted | abandoned | churn s | active after | reaped within s | RSS MB before / peak / +2 s / +12 s | change at +2 s / +12 s | open fds before / after |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {deleted} | {abandoned} | {churn_secs:.0} | {left} | {reaped_after:.1} | {rss0:.1} / {rss_peak:.1} / {rss1:.1} / {rss2:.1} | {:+.1} % / {:+.1} % | {fds0} / {fds1} |",
        (rss1 - rss0) / rss0 * 100.0,
        (rss2 - rss0) / rss0 * 100.0
    );
    print_growth(&maps0, &maps2);
    support::stop(server);
}
