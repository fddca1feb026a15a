//! Round trips through `autonomy_pipeline::post`'s outputs, read back with independent readers.

use autonomy_pipeline::post::{AtlasLayout, encode_gif, sprite_sheet};
use gif::{ColorOutput, DecodeOptions, DisposalMethod, Repeat};
use image::{Rgba, RgbaImage, imageops};
use proptest::prelude::*;

/// A decoded GIF: canvas size, repeat, and each frame with its delay and disposal.
struct Decoded {
    size: (u32, u32),
    repeat: Repeat,
    frames: Vec<(RgbaImage, u16, DisposalMethod)>,
}

fn decode(bytes: &[u8]) -> Decoded {
    let mut options = DecodeOptions::new();
    options.set_color_output(ColorOutput::RGBA);
    let mut decoder = options.read_info(bytes).expect("GIF header");
    let mut frames = Vec::new();
    while let Some(frame) = decoder.read_next_frame().expect("GIF frame") {
        assert_eq!((frame.left, frame.top), (0, 0), "frames cover the canvas");
        let image = RgbaImage::from_raw(
            frame.width.into(),
            frame.height.into(),
            frame.buffer.to_vec(),
        )
        .expect("RGBA buffer");
        frames.push((image, frame.delay, frame.dispose));
    }
    Decoded {
        size: (decoder.width().into(), decoder.height().into()),
        repeat: decoder.repeat(),
        frames,
    }
}

/// A smooth animation (more than 255 colours a frame) inside a disc, transparent outside.
fn smooth_animation(count: u32) -> Vec<RgbaImage> {
    (0..count)
        .map(|t| {
            RgbaImage::from_fn(32, 32, |x, y| {
                let (dx, dy) = (x as i32 - 15, y as i32 - 15);
                if dx * dx + dy * dy > 14 * 14 {
                    return Rgba([0, 0, 0, 0]);
                }
                Rgba([
                    (60 + x * 4) as u8,
                    (60 + y * 4) as u8,
                    (40 + t * 20) as u8,
                    255,
                ])
            })
        })
        .collect()
}

fn psnr_of_opaque(a: &RgbaImage, b: &RgbaImage) -> f64 {
    let (mut squared, mut count) = (0.0, 0.0);
    for (p, q) in a.pixels().zip(b.pixels()).filter(|(p, _)| p[3] == 255) {
        for channel in 0..3 {
            squared += (f64::from(p[channel]) - f64::from(q[channel])).powi(2);
            count += 1.0;
        }
    }
    10.0 * (255.0f64.powi(2) / (squared / count).max(1e-12)).log10()
}

#[test]
fn gif_round_trip_keeps_frames_timing_and_transparency() {
    let frames = smooth_animation(8);
    let decoded = decode(&encode_gif(&frames, 12, true).expect("encode"));
    assert_eq!(decoded.size, (32, 32));
    assert_eq!(decoded.repeat, Repeat::Infinite);
    assert_eq!(decoded.frames.len(), frames.len());
    for (input, (output, delay, dispose)) in frames.iter().zip(&decoded.frames) {
        assert_eq!(*delay, 8, "100 / 12 fps rounded");
        assert_eq!(*dispose, DisposalMethod::Background);
        for (p, q) in input.pixels().zip(output.pixels()) {
            assert_eq!(p[3], q[3], "alpha kept: {p:?} → {q:?}");
        }
        let psnr = psnr_of_opaque(input, output);
        assert!(psnr > 30.0, "PSNR {psnr:.1} dB");
    }
}

#[test]
fn gif_with_few_colours_is_exact_and_can_play_once() {
    let frame = RgbaImage::from_fn(8, 8, |x, y| match (x + y) % 3 {
        0 => Rgba([0, 0, 0, 0]),
        1 => Rgba([250, 10, 10, 255]),
        _ => Rgba([10, 10, 250, 255]),
    });
    let decoded = decode(&encode_gif(std::slice::from_ref(&frame), 60, false).expect("encode"));
    assert_eq!(decoded.repeat, Repeat::Finite(0));
    assert_eq!(decoded.frames[0].1, 2, "delay at least 2");
    for (p, q) in frame.pixels().zip(decoded.frames[0].0.pixels()) {
        assert!(p == q || (p[3] == 0 && q[3] == 0), "{p:?} → {q:?}");
    }
}

#[test]
fn sprite_sheet_frames_cut_back_out_equal_the_inputs() {
    let frames = smooth_animation(7);
    let (sheet, layout) = sprite_sheet(&frames, 3).expect("sheet");
    assert_eq!(sheet.dimensions(), (96, 96));
    let parsed = AtlasLayout::from_json(&layout.to_json()).expect("parse");
    assert_eq!(parsed, layout);
    assert_eq!(parsed.textures.len(), frames.len());
    for (frame, rect) in frames.iter().zip(&parsed.textures) {
        let [x, y] = rect.min;
        let (width, height) = (rect.max[0] - x, rect.max[1] - y);
        let cut = imageops::crop_imm(&sheet, x, y, width, height).to_image();
        assert_eq!(&cut, frame);
    }
}

#[test]
fn atlas_json_reads_back_as_bevy_texture_atlas_layout() {
    let (_, layout) = sprite_sheet(&vec![RgbaImage::new(16, 8); 3], 2).expect("sheet");
    let json: serde_json::Value = serde_json::from_str(&layout.to_json()).expect("JSON");
    assert_eq!(json["size"], serde_json::json!([32, 16]));
    let rects: Vec<[u64; 4]> = json["textures"]
        .as_array()
        .expect("textures")
        .iter()
        .map(|r| {
            let n = |corner: &str, i: usize| r[corner][i].as_u64().expect("integer");
            [n("min", 0), n("min", 1), n("max", 0), n("max", 1)]
        })
        .collect();
    assert_eq!(rects, [[0, 0, 16, 8], [16, 0, 32, 8], [0, 8, 16, 16]]);
}

fn small_frames() -> impl Strategy<Value = Vec<RgbaImage>> {
    (1u32..20, 1u32..20, 1usize..4).prop_flat_map(|(width, height, count)| {
        proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), (width * height * 4) as usize),
            count,
        )
        .prop_map(move |raws| {
            raws.into_iter()
                .map(|raw| RgbaImage::from_raw(width, height, raw).expect("sized"))
                .collect()
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn gif_round_trip_keeps_count_size_and_mask(frames in small_frames(), fps in 1u32..120) {
        let decoded = decode(&encode_gif(&frames, fps, true).expect("encode"));
        prop_assert_eq!(decoded.frames.len(), frames.len());
        prop_assert_eq!(decoded.size, frames[0].dimensions());
        for (input, (output, _, _)) in frames.iter().zip(&decoded.frames) {
            prop_assert_eq!(output.dimensions(), input.dimensions());
            for (p, q) in input.pixels().zip(output.pixels()) {
                prop_assert_eq!(q[3], if p[3] >= 128 { 255 } else { 0 });
            }
        }
    }
}
