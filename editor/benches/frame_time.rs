//! Frame time with the editor open: idle vs while a generation runs on the async compute pool
//! (it must not stall frames). Prints p50/p99 side by side and their ratio.
//!
//! `xvfb-run -a cargo bench -p autonomy_editor --bench frame_time` (needs a display).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use autonomy_editor::{AssetLibrary, Draft, EditorAction, Preview};
use bevy::prelude::*;
use bevy_autonomy::Generation;

/// Frames measured in each phase.
const FRAMES: usize = 240;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Warming,
    Idle,
    Generating,
    Done,
}

#[derive(Resource)]
struct Bench {
    phase: Phase,
    idle: Vec<Duration>,
    busy: Vec<Duration>,
    settle: u32,
    out: Arc<Mutex<(Vec<Duration>, Vec<Duration>)>>,
}

fn measure(world: &mut World) {
    let delta = world.resource::<Time<Real>>().delta();
    let phase = world.resource::<Bench>().phase;
    match phase {
        Phase::Warming => {
            let ready = world.resource::<AssetLibrary>().assets.len() >= 5
                && !world.resource::<Generation>().busy();
            let mut bench = world.resource_mut::<Bench>();
            bench.settle = if ready { bench.settle + 1 } else { 0 };
            if bench.settle > 60 {
                bench.phase = Phase::Idle;
            }
        }
        Phase::Idle => {
            let mut bench = world.resource_mut::<Bench>();
            bench.idle.push(delta);
            if bench.idle.len() == FRAMES {
                bench.phase = Phase::Generating;
                world.write_message(EditorAction::Generate(Draft {
                    name: "bench".into(),
                    size: 64,
                    steps: 40,
                    ..Draft::default()
                }));
            }
        }
        Phase::Generating => {
            let generating = matches!(world.resource::<Preview>(), Preview::Generating(_));
            let mut bench = world.resource_mut::<Bench>();
            if generating {
                bench.busy.push(delta);
            }
            let finished = !generating && !bench.busy.is_empty();
            if finished || bench.busy.len() >= FRAMES * 4 {
                bench.phase = Phase::Done;
                let (idle, busy) = (bench.idle.clone(), bench.busy.clone());
                *bench.out.lock().unwrap() = (idle, busy);
                world.write_message(AppExit::Success);
            }
        }
        Phase::Done => {}
    }
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn main() {
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        eprintln!("the frame-time benchmark needs a display: run it under `xvfb-run -a`");
        std::process::exit(1);
    }
    let mut showcase = common::showcase();
    let out = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let mut app = showcase.app("Autonomy editor — frame time");
    app.insert_resource(Bench {
        phase: Phase::Warming,
        idle: Vec::new(),
        busy: Vec::new(),
        settle: 0,
        out: out.clone(),
    })
    .add_systems(Last, measure);
    app.run();

    let (idle, busy) = out.lock().unwrap().clone();
    if idle.is_empty() || busy.is_empty() {
        eprintln!("the benchmark did not finish");
        std::process::exit(1);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "frame time with the editor open ({} idle frames, {} during generation)",
        idle.len(),
        busy.len()
    );
    println!("| scene | p50 ms | p99 ms |");
    println!("| --- | ---: | ---: |");
    for (name, samples) in [("idle", &idle), ("generating in the background", &busy)] {
        println!(
            "| {name} | {:.1} | {:.1} |",
            ms(percentile(samples, 0.5)),
            ms(percentile(samples, 0.99))
        );
    }
    println!(
        "ratio generating/idle: p50 {:.2}×, p99 {:.2}×",
        ms(percentile(&busy, 0.5)) / ms(percentile(&idle, 0.5)),
        ms(percentile(&busy, 0.99)) / ms(percentile(&idle, 0.99))
    );
}
