//! `autonomy train` as a user runs it: Ctrl-C saves a checkpoint and exits with 130, and
//! `--resume` carries on from it to the requested step count.

use image::{Rgba, RgbaImage};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn ctrl_c_saves_and_resume_continues() {
    let data = tempfile::tempdir().unwrap();
    for (i, colour) in [[200u8, 30, 30], [30, 200, 30], [30, 30, 200]]
        .iter()
        .enumerate()
    {
        let img = RgbaImage::from_pixel(16, 16, Rgba([colour[0], colour[1], colour[2], 255]));
        img.save(data.path().join(format!("tile_{i}.png"))).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let (d, o) = (data.path().to_str().unwrap(), out.path().to_str().unwrap());
    let child = Command::new(env!("CARGO_BIN_EXE_autonomy"))
        .args(["train", "--data", d, "--out", o, "--preset", "tiny"])
        .args([
            "--steps",
            "1000000",
            "--batch",
            "4",
            "--checkpoint-every",
            "5",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let checkpoint = out.path().join("checkpoint.safetensors");
    let started = Instant::now();
    while !checkpoint.is_file() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint written"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    let step: u64 = stderr
        .split("interrupted at step ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no step in: {stderr}"));
    assert!(step >= 5);

    let target = (step + 3).to_string();
    let resumed = Command::new(env!("CARGO_BIN_EXE_autonomy"))
        .args([
            "train", "--data", d, "--out", o, "--resume", "--steps", &target,
        ])
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let card = std::fs::read_to_string(out.path().join("MODEL.md")).unwrap();
    assert!(card.contains(&format!("steps: {target} ×")), "{card}");
}
