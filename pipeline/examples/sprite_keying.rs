//! Draws `docs/sprite-keying.png`: what the sprite pipeline makes of a picture painted on a
//! plain background, as Stable Diffusion paints one. Fluent Emoji (MIT, from the npm packages
//! `npm ci` installs) are painted at 200 px on a noisy off-white 256 px canvas, keyed with
//! [`key_background`], and shown over a checkerboard and a dark game scene.
//!
//! ```sh
//! cargo run -p autonomy-pipeline --example sprite_keying
//! ```

use std::path::Path;

use anyhow::{Context, Result};
use autonomy_pipeline::dataset::iconify::{IconifyPackage, render_icon};
use autonomy_pipeline::post::{Background, key_background};
use image::imageops::{self, FilterType};
use image::{Rgba, RgbaImage};

const ICONS: [&str; 6] = [
    "gem-stone",
    "crossed-swords",
    "red-apple",
    "mushroom",
    "crown",
    "shield",
];
const CELL: u32 = 256;

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let package = IconifyPackage::load(&root.join("node_modules/@iconify-json/fluent-emoji-flat"))
        .context("the Fluent Emoji package is installed by `npm ci`")?;
    let mut sheet = RgbaImage::new(CELL * 3, CELL * ICONS.len() as u32);
    for (row, name) in ICONS.iter().enumerate() {
        let icon = package
            .icons
            .get(*name)
            .with_context(|| format!("no icon `{name}`"))?;
        let art = render_icon(icon, 200, "#000").with_context(|| format!("rendering {name}"))?;
        let painted = paint_on_background(&art);
        let Background::Keyed { image: keyed, .. } = key_background(&painted) else {
            anyhow::bail!("{name}: the painted background was not keyed");
        };
        let checker = over(&keyed, |x, y| {
            if (x / 16 + y / 16) % 2 == 0 {
                [200.0; 3]
            } else {
                [120.0; 3]
            }
        });
        let scene = over(&keyed, |_, _| [30.0, 34.0, 48.0]);
        for (column, cell) in [&painted, &checker, &scene].into_iter().enumerate() {
            let (x, y) = (column as u32 * CELL, row as u32 * CELL);
            imageops::replace(&mut sheet, cell, i64::from(x), i64::from(y));
        }
    }
    let half = imageops::resize(
        &sheet,
        sheet.width() / 2,
        sheet.height() / 2,
        FilterType::Triangle,
    );
    let out = root.join("docs/sprite-keying.png");
    half.save(&out)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// `art` painted at the middle of an off-white canvas with a little noise, opaque.
fn paint_on_background(art: &RgbaImage) -> RgbaImage {
    let mut canvas = RgbaImage::from_fn(CELL, CELL, |x, y| {
        let noise = ((x * 7919 + y * 104_729) % 9) as i32 - 4;
        let c = |v: i32| (v + noise).clamp(0, 255) as u8;
        Rgba([c(247), c(245), c(242), 255])
    });
    let offset = (CELL - art.width()) / 2;
    for (x, y, p) in art.enumerate_pixels() {
        let a = f64::from(p[3]) / 255.0;
        let q = canvas.get_pixel_mut(x + offset, y + offset);
        for c in 0..3 {
            q[c] = (a * f64::from(p[c]) + (1.0 - a) * f64::from(q[c])).round() as u8;
        }
    }
    canvas
}

/// `keyed` composited over the background `behind(x, y)`.
fn over(keyed: &RgbaImage, behind: impl Fn(u32, u32) -> [f64; 3]) -> RgbaImage {
    RgbaImage::from_fn(keyed.width(), keyed.height(), |x, y| {
        let p = keyed.get_pixel(x, y);
        let a = f64::from(p[3]) / 255.0;
        let b = behind(x, y);
        let mix = |c: usize| (a * f64::from(p[c]) + (1.0 - a) * b[c]).round() as u8;
        Rgba([mix(0), mix(1), mix(2), 255])
    })
}
