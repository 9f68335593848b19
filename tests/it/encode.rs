//! `whepcast encode`: files that ffprobe reads back as asked, checks that pass and fail with
//! the right exit codes, and a report consistent with the file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn whepcast_encode(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_whepcast"))
        .arg("encode")
        .args(args)
        .output()
        .expect("whepcast runs")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("whepcast-encode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// `ffprobe` facts about the first video stream: codec, width, height, frames counted by
/// decoding, and the container's duration.
fn ffprobe(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=codec_name,profile,width,height,nb_read_frames:format=duration",
        ])
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe is installed (scripts/setup-test.sh installs ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn h264_and_mp4_outputs_are_what_ffprobe_expects() {
    for (name, fps, frames) in [
        ("out.h264", 30, 45),
        ("out.mp4", 30, 45),
        ("slow.mp4", 12, 30),
    ] {
        let path = tmp(name);
        let out = whepcast_encode(&[
            "--source",
            "pattern",
            "--size",
            "640x360",
            "--fps",
            &fps.to_string(),
            "--frames",
            &frames.to_string(),
            "--bitrate",
            "1M",
            "--out",
            path.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let probe = ffprobe(&path);
        let s = &probe["streams"][0];
        assert_eq!(s["codec_name"], "h264", "{name}: {probe}");
        assert_eq!(s["profile"], "Constrained Baseline", "{name}");
        assert_eq!(
            (s["width"].as_u64(), s["height"].as_u64()),
            (Some(640), Some(360)),
            "{name}"
        );
        assert_eq!(
            s["nb_read_frames"],
            frames.to_string(),
            "{name}: every frame, no more"
        );
        if name.ends_with(".mp4") {
            let duration: f64 = probe["format"]["duration"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let want = frames as f64 / fps as f64;
            assert!(
                (duration - want).abs() < 0.001,
                "{name}: duration {duration} vs {want}"
            );
        }
    }
}

#[test]
fn the_pattern_at_720p_passes_its_psnr_threshold_and_an_impossible_one_fails() {
    let path = tmp("check.h264");
    let report = tmp("check.json");
    // Measured on this machine: the pattern encodes at a mean PSNR-Y of ~58 dB (min ~48) at
    // 2.5 Mbit/s 720p — it is mostly flat colour. 45 dB leaves room for encoder and machine
    // differences, yet a colour-matrix, scaling or bit-rate regression drops far below it.
    let out = whepcast_encode(&[
        "--source",
        "pattern",
        "--size",
        "1280x720",
        "--fps",
        "30",
        "--frames",
        "90",
        "--bitrate",
        "2500k",
        "--keyint",
        "1",
        "--min-psnr",
        "45",
        "--max-bitrate-error",
        "50",
        "--out",
        path.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");

    // The report agrees with the file.
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["bytes"], std::fs::metadata(&path).unwrap().len());
    assert_eq!(r["frames"], 90);
    assert_eq!(r["keyframes"], serde_json::json!([0, 30, 60]));
    assert_eq!(r["psnr_y_per_frame"].as_array().unwrap().len(), 90);
    assert_eq!(r["profile"], "Constrained Baseline");
    assert_eq!(r["passed"], true);
    for key in [
        "achieved_bitrate",
        "bitrate_error_percent",
        "encode_fps",
        "level",
        "psnr_y",
    ] {
        assert!(!r[key].is_null(), "report lacks {key}: {r}");
    }
    let file = std::fs::read(&path).unwrap();
    let idrs = whepcast::encode::nal_units(&file)
        .filter(|u| u[0] & 0x1f == 5)
        .count();
    assert!(
        idrs >= 3,
        "file holds the reported keyframes ({idrs} IDR slices)"
    );

    // Same run, impossible threshold: exit 1, naming the check and the shortfall.
    let out = whepcast_encode(&[
        "--source",
        "pattern",
        "--size",
        "1280x720",
        "--frames",
        "30",
        "--min-psnr",
        "99",
        "--out",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("check failed: min-psnr") && stderr.contains("99.00 dB"),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    let out = whepcast_encode(&["--size", "13x7", "--out", tmp("x.h264").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("13x7") && stderr.contains("even"),
        "{stderr}"
    );
    let out = whepcast_encode(&["--out", tmp("x.avi").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(".mp4"));
    let out = whepcast_encode(&[
        "--source",
        "image:/nonexistent.png",
        "--out",
        tmp("x.h264").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.png"));
}

#[test]
fn json_flag_prints_the_report_alone() {
    let path = tmp("j.h264");
    let out = whepcast_encode(&[
        "--size",
        "320x240",
        "--frames",
        "10",
        "--json",
        "--out",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is only JSON");
    assert_eq!(r["frames"], 10);
    assert_eq!(r["width"], 320);
}

/// `--ladder`: every rendition is scaled and encoded as `serve` does, written to its own file
/// that ffprobe reads at that size, and checked on its own; a threshold one rendition misses
/// fails the run.
#[test]
fn the_ladder_encodes_every_rendition_at_its_size_and_rate() {
    let out = tmp("ladder.mp4");
    let o = whepcast_encode(&[
        "--source",
        "pattern",
        "--frames",
        "30",
        "--ladder",
        "auto",
        "--max-bitrate-error",
        "60",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let renditions = report["renditions"]
        .as_array()
        .expect("one report per rendition");
    let sizes: Vec<(u64, u64, u64)> = renditions
        .iter()
        .map(|r| {
            (
                r["width"].as_u64().unwrap(),
                r["height"].as_u64().unwrap(),
                r["target_bitrate"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sizes,
        [
            (1280, 720, 2_500_000),
            (640, 360, 625_000),
            (320, 180, 208_000)
        ]
    );
    for (i, (w, h, _)) in sizes.iter().enumerate() {
        let path = if i == 0 {
            out.clone()
        } else {
            tmp(&format!("ladder-r{i}.mp4"))
        };
        let probe = ffprobe(&path);
        let stream = &probe["streams"][0];
        assert_eq!(
            (stream["width"].as_u64(), stream["height"].as_u64()),
            (Some(*w), Some(*h))
        );
        assert_eq!(stream["nb_read_frames"].as_str(), Some("30"), "{path:?}");
        // Scaled, not garbage: each rendition decodes close to its scaled source.
        assert!(
            renditions[i]["psnr_y"]["mean"].as_f64().unwrap() > 30.0,
            "{i}"
        );
    }
    // A smaller rendition cannot reach what the full size does: one failing check fails all.
    let strict = whepcast_encode(&[
        "--source",
        "pattern",
        "--frames",
        "10",
        "--ladder",
        "1280x720@2500k,320x180@200k",
        "--min-psnr",
        "45",
        "--out",
        tmp("strict.h264").to_str().unwrap(),
    ]);
    assert_eq!(
        strict.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&strict.stdout)
    );
    assert!(String::from_utf8_lossy(&strict.stderr).contains("check failed (320x180): min-psnr"));
}
