//! Procedural tileable textures: brick, stone, wood, water… in several colours, 32×32, opaque.
//!
//! Every generator draws from periodic noise ([`super::noise`]) or from patterns whose period
//! divides the tile (brick courses, plank widths, tile grids, sine waves with whole wave numbers),
//! so the right edge continues into the left and the bottom into the top: the images tile
//! seamlessly, as game textures must. A final random wrap-around shift moves structure (mortar
//! lines, plate seams) off fixed positions, which a wrap-around image permits for free.
//!
//! Output is a pure function of `(seed, material, colour, variant, size)`: each variant draws from
//! its own ChaCha8 stream keyed by a sha256 of those values. The images are ours (CC0-1.0).
//!
//! Split: every [`HELDOUT_EVERY`]th variant of each (material, colour) is held out. Captions
//! repeat across variants, so for textures "held out" means the image, not the caption.

use image::{Rgba, RgbaImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use super::Split;
use super::noise::{Fbm, PeriodicNoise, Worley};

/// Manifest `source` of the textures.
pub const SOURCE: &str = "autonomy/procedural-textures";
/// SPDX licence of the textures.
pub const LICENSE: &str = "CC0-1.0";
/// Attribution of the textures.
pub const ATTRIBUTION: &str = "Autonomy project (procedural)";
/// Variants generated per (material, colour) pair.
pub const VARIANTS: u32 = 30;
/// Variants whose index is a multiple of this are held out.
pub const HELDOUT_EVERY: u32 = 10;

/// A texture material.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Material {
    /// Staggered bricks with mortar lines.
    Brick,
    /// Rough rock with cracks.
    Stone,
    /// Rounded stones set in dark gaps.
    Cobblestone,
    /// Planks with grain, gaps and butt joints.
    WoodPlanks,
    /// Short blades of grass.
    Grass,
    /// Fine grain with ripples.
    Sand,
    /// Waves with light crests.
    Water,
    /// Brushed plates with bevelled seams and rivets or tread.
    MetalPlate,
    /// Dark crust with glowing cracks.
    Lava,
    /// Earth with pebbles.
    Dirt,
    /// White with soft blue shadows and sparkles.
    Snow,
    /// Pale blue with cracks and sheen.
    Ice,
    /// Clumpy green growth.
    Moss,
    /// Polished stone with veins.
    Marble,
    /// Square tiles with grout.
    Tiles,
}

impl Material {
    /// Every material, in build order.
    pub const ALL: [Material; 15] = [
        Material::Brick,
        Material::Stone,
        Material::Cobblestone,
        Material::WoodPlanks,
        Material::Grass,
        Material::Sand,
        Material::Water,
        Material::MetalPlate,
        Material::Lava,
        Material::Dirt,
        Material::Snow,
        Material::Ice,
        Material::Moss,
        Material::Marble,
        Material::Tiles,
    ];

    /// The material in captions: `"wood planks"`.
    pub fn words(self) -> &'static str {
        match self {
            Material::Brick => "brick",
            Material::Stone => "stone",
            Material::Cobblestone => "cobblestone",
            Material::WoodPlanks => "wood planks",
            Material::Grass => "grass",
            Material::Sand => "sand",
            Material::Water => "water",
            Material::MetalPlate => "metal plate",
            Material::Lava => "lava",
            Material::Dirt => "dirt",
            Material::Snow => "snow",
            Material::Ice => "ice",
            Material::Moss => "moss",
            Material::Marble => "marble",
            Material::Tiles => "tiles",
        }
    }

    /// The material in ids: `"wood-planks"`.
    pub fn slug(self) -> String {
        self.words().replace(' ', "-")
    }

    /// The colours this material comes in: caption word and base sRGB colour.
    pub fn colours(self) -> &'static [(&'static str, [u8; 3])] {
        match self {
            Material::Brick => &[
                ("red", [165, 62, 45]),
                ("brown", [122, 72, 48]),
                ("grey", [128, 126, 122]),
                ("yellow", [205, 170, 100]),
                ("dark", [70, 40, 35]),
            ],
            Material::Stone => &[
                ("grey", [128, 128, 128]),
                ("brown", [125, 105, 85]),
                ("dark", [70, 70, 74]),
                ("light", [185, 182, 175]),
            ],
            Material::Cobblestone => &[
                ("grey", [125, 125, 128]),
                ("brown", [130, 108, 85]),
                ("dark", [75, 75, 80]),
            ],
            Material::WoodPlanks => &[
                ("brown", [150, 105, 60]),
                ("dark", [85, 55, 35]),
                ("light", [205, 165, 110]),
                ("red", [150, 70, 50]),
            ],
            Material::Grass => &[
                ("green", [80, 150, 55]),
                ("dark", [45, 100, 40]),
                ("yellow", [170, 170, 70]),
                ("light", [120, 190, 80]),
            ],
            Material::Sand => &[
                ("yellow", [220, 195, 135]),
                ("white", [235, 228, 210]),
                ("orange", [215, 150, 85]),
                ("grey", [170, 165, 155]),
            ],
            Material::Water => &[
                ("blue", [45, 105, 190]),
                ("dark", [25, 55, 110]),
                ("green", [50, 130, 110]),
                ("teal", [40, 150, 160]),
            ],
            Material::MetalPlate => &[
                ("grey", [140, 145, 150]),
                ("dark", [75, 78, 85]),
                ("blue", [95, 115, 145]),
                ("gold", [200, 160, 70]),
            ],
            Material::Lava => &[
                ("orange", [255, 120, 20]),
                ("red", [230, 45, 20]),
                ("blue", [60, 140, 255]),
            ],
            Material::Dirt => &[
                ("brown", [120, 85, 55]),
                ("dark", [70, 50, 35]),
                ("red", [140, 70, 45]),
                ("grey", [110, 105, 100]),
            ],
            Material::Snow => &[
                ("white", [240, 244, 250]),
                ("blue", [215, 228, 248]),
                ("grey", [204, 205, 208]),
            ],
            Material::Ice => &[
                ("blue", [165, 210, 240]),
                ("white", [220, 238, 248]),
                ("teal", [150, 220, 220]),
            ],
            Material::Moss => &[
                ("green", [85, 125, 45]),
                ("dark", [50, 80, 35]),
                ("yellow", [140, 150, 55]),
            ],
            Material::Marble => &[
                ("white", [232, 230, 225]),
                ("black", [35, 35, 38]),
                ("green", [50, 110, 85]),
                ("pink", [230, 190, 190]),
                ("grey", [150, 150, 155]),
            ],
            Material::Tiles => &[
                ("white", [230, 230, 228]),
                ("blue", [60, 110, 180]),
                ("red", [175, 60, 50]),
                ("green", [70, 140, 90]),
                ("black", [45, 45, 50]),
                ("yellow", [225, 190, 70]),
            ],
        }
    }
}

/// One texture to generate: a material in a colour, one of several variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextureSpec {
    /// The material.
    pub material: Material,
    /// The colour word.
    pub colour: &'static str,
    /// The base colour (sRGB).
    pub rgb: [u8; 3],
    /// Variant index, `0..VARIANTS`.
    pub variant: u32,
}

impl TextureSpec {
    /// The name shared by all variants: `"red-brick"`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.colour, self.material.slug())
    }

    /// The manifest id: `"textures/red-brick-3"`.
    pub fn id(&self) -> String {
        format!("textures/{}-{}", self.name(), self.variant)
    }

    /// The caption: `"red brick texture tileable"`.
    pub fn caption(&self) -> String {
        format!("{} {} texture tileable", self.colour, self.material.words())
    }

    /// Held out for every [`HELDOUT_EVERY`]th variant.
    pub fn split(&self) -> Split {
        if self.variant.is_multiple_of(HELDOUT_EVERY) {
            Split::Heldout
        } else {
            Split::Train
        }
    }

    /// Generates the texture: `size`×`size`, opaque, tileable, a pure function of its inputs.
    pub fn generate(&self, seed: u64, size: u32) -> RgbaImage {
        let key = format!(
            "autonomy-textures/v1/{seed}/{}/{}/{}",
            self.material.slug(),
            self.colour,
            self.variant
        );
        let mut rng = ChaCha8Rng::from_seed(Sha256::digest(key.as_bytes()).into());
        let s = size.max(8) as usize;
        let base = jitter_colour(&mut rng, rgb(self.rgb));
        let canvas = match self.material {
            Material::Brick => brick(&mut rng, base, s),
            Material::Stone => stone(&mut rng, base, s),
            Material::Cobblestone => cobblestone(&mut rng, base, s),
            Material::WoodPlanks => wood_planks(&mut rng, base, s),
            Material::Grass => grass(&mut rng, base, s),
            Material::Sand => sand(&mut rng, base, s),
            Material::Water => water(&mut rng, base, s),
            Material::MetalPlate => metal_plate(&mut rng, base, s),
            Material::Lava => lava(&mut rng, base, s),
            Material::Dirt => dirt(&mut rng, base, s),
            Material::Snow => snow(&mut rng, base, s),
            Material::Ice => ice(&mut rng, base, s),
            Material::Moss => moss(&mut rng, base, s),
            Material::Marble => marble(&mut rng, base, s),
            Material::Tiles => tiles(&mut rng, base, s),
        };
        let (dx, dy) = (rng.random_range(0..s), rng.random_range(0..s));
        canvas.rolled(dx, dy).to_image()
    }
}

/// Every texture of the dataset: each material × colour × `variants`.
pub fn specs(variants: u32) -> Vec<TextureSpec> {
    let mut out = Vec::new();
    for material in Material::ALL {
        for &(colour, rgb) in material.colours() {
            for variant in 0..variants {
                out.push(TextureSpec {
                    material,
                    colour,
                    rgb,
                    variant,
                });
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Colour helpers and the float canvas.

type Rgb = [f32; 3];

fn rgb(c: [u8; 3]) -> Rgb {
    c.map(|v| v as f32 / 255.0)
}

fn scale(c: Rgb, k: f32) -> Rgb {
    c.map(|v| v * k)
}

fn tint(c: Rgb, k: Rgb) -> Rgb {
    [c[0] * k[0], c[1] * k[1], c[2] * k[2]]
}

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    let t = t.clamp(0.0, 1.0);
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn luminance(c: Rgb) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

fn smoothstep(edge0: f32, edge1: f32, x: f32) -> f32 {
    let t = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// A small per-variant shift of brightness and hue, so that variants of one colour differ.
fn jitter_colour(rng: &mut impl Rng, c: Rgb) -> Rgb {
    let k = rng.random_range(0.9..1.1);
    let c = scale(c, k);
    c.map(|v| v * rng.random_range(0.95..1.05))
}

/// Uniform noise in `[-amount, amount]`, as a brightness factor around 1.
fn grain(rng: &mut impl Rng, amount: f32) -> f32 {
    1.0 + rng.random_range(-amount..=amount)
}

struct Canvas {
    size: usize,
    px: Vec<Rgb>,
}

impl Canvas {
    /// A canvas painted by `f(x, y, u, v)`, with `(u, v)` the pixel centre in tile units.
    fn paint(size: usize, mut f: impl FnMut(usize, usize, f32, f32) -> Rgb) -> Canvas {
        let mut px = Vec::with_capacity(size * size);
        for y in 0..size {
            for x in 0..size {
                let u = (x as f32 + 0.5) / size as f32;
                let v = (y as f32 + 0.5) / size as f32;
                px.push(f(x, y, u, v));
            }
        }
        Canvas { size, px }
    }

    fn index(&self, x: i64, y: i64) -> usize {
        let s = self.size as i64;
        (y.rem_euclid(s) * s + x.rem_euclid(s)) as usize
    }

    fn get(&self, x: i64, y: i64) -> Rgb {
        self.px[self.index(x, y)]
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        let i = self.index(x, y);
        self.px[i] = c;
    }

    /// Shifted with wrap-around: still tiles, structure elsewhere.
    fn rolled(&self, dx: usize, dy: usize) -> Canvas {
        let s = self.size as i64;
        Canvas::paint(self.size, |x, y, _, _| {
            self.get(x as i64 + s - dx as i64, y as i64 + s - dy as i64)
        })
    }

    fn transposed(&self) -> Canvas {
        Canvas::paint(self.size, |x, y, _, _| self.get(y as i64, x as i64))
    }

    fn to_image(&self) -> RgbaImage {
        let s = self.size as u32;
        RgbaImage::from_fn(s, s, |x, y| {
            let c = self.px[(y * s + x) as usize];
            let [r, g, b] = c.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8);
            Rgba([r, g, b, 255])
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The generators. Pixel sizes (1 px mortar, 8 px tiles) are tuned for 32×32 and scale with `s`.

fn brick(rng: &mut ChaCha8Rng, base: Rgb, s: usize) -> Canvas {
    let bw = if rng.random_bool(0.6) { s / 2 } else { s / 4 }.max(4);
    let bh = (bw / 2).max(2);
    let (rows, cols) = (s.div_ceil(bh), s.div_ceil(bw));
    let tints: Vec<Rgb> = (0..rows * cols)
        .map(|_| {
            let k = rng.random_range(0.8..1.15);
            [
                k,
                k * rng.random_range(0.95..1.05),
                k * rng.random_range(0.93..1.05),
            ]
        })
        .collect();
    let mortar = if luminance(base) > 0.55 {
        [0.33, 0.32, 0.31]
    } else {
        let m = rng.random_range(0.62..0.82);
        [m, m * 0.98, m * 0.94]
    };
    let surface = Fbm::square(rng, 4, 3);
    Canvas::paint(s, |x, y, u, v| {
        let row = y / bh;
        let offset = if row % 2 == 1 { bw / 2 } else { 0 };
        let xx = (x + offset) % s;
        let (ry, rx) = (y % bh, xx % bw);
        if ry == bh - 1 || rx == bw - 1 {
            return scale(mortar, grain(rng, 0.08));
        }
        let mut c = tint(base, tints[(row % rows) * cols + (xx / bw) % cols]);
        c = scale(c, (1.0 + 0.14 * surface.sample(u, v)) * grain(rng, 0.06));
        if ry == 0 {
            c = scale(c, 1.1);
        } else if ry + 2 == bh && bh > 3 {
            c = scale(c, 0.88);
        }
        c
    })
}

fn stone(rng: &mut ChaCha8Rng, base: Rgb, s: usize) -> Canvas {
    let body = Fbm::square(rng, 3, 3);
    let bumps = Fbm::square(rng, 4, 2);
    let blotch = Fbm::square(rng, 2, 2);
    let grid = rng.random_range(2..=3);
    let slabs = Worley::new(rng, grid, 0.9);
    let tones: Vec<f32> = (0..slabs.len())
        .map(|_| rng.random_range(0.9..1.1))
        .collect();
    let (wx, wy) = (Fbm::square(rng, 2, 2), Fbm::square(rng, 2, 2));
    let second = tint(
        base,
        [
            rng.random_range(0.85..1.1),
            1.0,
            rng.random_range(0.85..1.1),
        ],
    );
    let d = 1.0 / s as f32;
    Canvas::paint(s, |_, _, u, v| {
        let f = body.sample(u, v);
        let mut c = mix(scale(base, 0.75), scale(base, 1.15), (f + 1.0) / 2.0);
        c = mix(c, second, smoothstep(0.1, 0.5, blotch.sample(u, v)) * 0.5);
        // Rough relief lit from the top-left, and a few cracks between slabs.
        let relief = bumps.sample(u - d, v - d) - bumps.sample(u + d, v + d);
        let cell = slabs.cell(u + 0.06 * wx.sample(u, v), v + 0.06 * wy.sample(u, v));
        let crack = if cell.f2 - cell.f1 < 0.9 * d {
            0.55
        } else {
            1.0
        };
        scale(
            c,
            tones[cell.index] * (1.0 + 1.2 * relief) * crack * grain(rng, 0.07),
        )
    })
}

fn cobblestone(rng: &mut ChaCha8Rng, base: Rgb, s: usize) -> Canvas {
    let grid = rng.random_range(3..=4);
    let cells = Worley::new(rng, grid, 0.8);
    let tints: Vec<f32> = (0..cells.len())
        .map(|_| rng.random_range(0.8..1.15))
        .collect();
    let (wx, wy) = (Fbm::square(rng, 2, 2), Fbm::square(rng, 2, 2));
    let gap = 1.4 / s as f32;
    Canvas::paint(s, |_, _, u, v| {
        let c = cells.cell(u + 0.03 * wx.sample(u, v), v + 0.03 * wy.sample(u, v));
        let edge = c.f2 - c.f1;
        if edge < gap {
            return scale(base, 0.3 * grain(rng, 0.15));
        }
        let light = 1.08 - 1.4 * c.f1 - 1.5 * (c.offset[0] + c.offset[1]);
        let rim = 0.7 + 0.3 * smoothstep(gap, gap + 0.06, edge);
        scale(base, tints[c.index] * light * rim * grain(rng, 0.05))
    })
}

fn wood_planks(rng: &mut ChaCha8Rng, base: Rgb, s: usize) -> Canvas {
    let planks = if rng.random_bool(0.7) { 4 } else { 2 };
    let ph = (s / planks).max(3);
    let n = s.div_ceil(ph);
    let tints: Vec<f32> = (0..n).map(|_| rng.random_range(0.82..1.12)).collect();
    let phases: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
    let joints: Vec<(usize, Option<usize>)> = (0..n)
        .map(|_| {
            let j = rng.random_range(0..s);
            let second = rng.random_bool(0.3).then(|| (j + s / 2) % s);
            (j, second)
        })
        .collect();
    let rings = rng.random_range(10..16) as f32;
    let warp = Fbm::new(rng, 2, 4, 2);
    let streaks = Fbm::new(rng, 2, 16, 2);
    let canvas = Canvas::paint(s, |x, y, u, v| {
        let p = (y / ph) % n;
        let r = y % ph;
        if r == ph - 1 {
            return scale(base, 0.38);
        }
        let (j, j2) = joints[p];
        if x == j || Some(x) == j2 {
            return scale(base, 0.5);
        }
        let t = v * rings + 1.2 * warp.sample(u, v) + phases[p];
        let ring = t - t.floor();
        let line = 1.0 - smoothstep(0.0, 0.35, ring.min(1.0 - ring) * 2.0);
        let mut k = tints[p] * (1.0 - 0.2 * line) * (1.0 + 0.08 * streaks.sample(u, v));
        if r == 0 {
            k *= 1.1;
        }
        scale(base, k * grain(rng, 0.03))
    });
    if rng.random_bool(0.5) {
        canvas.transposed()
    } else {
        canvas
    }
}

fn grass(rng: &mut ChaCha8Rng, base: Rgb, s: usize) -> Canvas {
    let low = Fbm::square(rng, 3, 3);
    let mut canvas = Canvas::paint(s, |_, _, u, v| {
        let f = (low.sample(u, v) + 1.0) / 2.0;
        scale(
            mix(scale(base, 0.7), scale(base, 1.05), f),
            grain(rng, 0.08),
        )
    });
    let light = mix(scale(base, 1.3), [0.85, 0.9, 0.4], 0.15);
    let dark = scale(base, 0.55);
    for _ in 0..s * s / 7 {
        let (x0, y0) = (rng.random_range(0..s) as i64, rng.random_range(0..s) as i64);
        let len = rng.random_range(2..=4);
        let lean = rng.random_range(-1..=1);
        let colour = if rng.random_bool(0.6) { light } else { dark };
        for i in 0..len {
            let x = x0 + if i * 2 >= len { lean } else { 0 };
            let tip = i + 1 == len;
            let c = if tip { scale(colour, 1.1) } else { colour };
            canvas.set(x, y0 - i, scale(c, grain(rng, 0.05)));
        }
    }
    canvas
}

fn sand(rng: &mut ChaCha8Rng, base: Rgb, s: usize) -> Canvas {
    const WAVES: [(f32, f32); 6] = [
        (0.0, 3.0),
        (1.0, 3.0),
        (-1.0, 3.0),
        (1.0, 4.0),
        (0.0, 4.0),
        (-1.0, 2.0),
    ];
    let (a, b) = WAVES[rng.random_range(0..WAVES.len())];
    let (a, b) = if rng.random_bool(0.5) { (b, a) } else { (a, b) };
    let phase = rng.random_range(0.0..std::f32::consts::TAU);
    let warp = Fbm::square(rng, 2, 2);
    let low = Fbm::square(rng, 2, 3);
    Canvas::paint(s, |_, _, u, v| {
        let w = (std::f32::consts::TAU * (a * u + b * v) + 1.3 * warp.sample(u, v) + phase).sin();
        let mut k = (0.93 + 0.08 * w) * (1.0 + 0.05 * low.sample(u, v)) * grain(rng, 0.07);
        let speck: f32 = rng.random();
        if speck < 0.04 {
            k *= 0.78;
        } else if speck > 0.97 {
            k *= 1.15;
        }
        scale(base, k)
    })
}

fn water(rng: &mut ChaCha8Rng, base: Rgb, s: usize) -> Canvas {
    const WAVES: [(f32, f32); 6] = [
        (1.0, 3.0),
        (2.0, 3.0),
        (-1.0, 3.0),
        (1.0, 4.0),
        (0.0, 3.0),
        (-2.0, 3.0),
    ];
    let (a1, b1) = WAVES[rng.random_range(0..WAVES.len())];
    let (a2, b2) = WAVES[rng.random_range(0..WAVES.len())];
    let (a2, b2) = (-a2, b2 + 1.0);
    let (w1, w2) = (Fbm::square(rng, 2, 3), Fbm::square(rng, 2, 2));
    let phase = rng.random_range(0.0..std::f32::consts::TAU);
    let foam = mix(base, [0.92, 0.97, 1.0], 0.75);
    let tau = std::f32::consts::TAU;
    Canvas::paint(s, |_, _, u, v| {
        let w = 0.6 * (tau * (a1 * u + b1 * v) + 2.6 * w1.sample(u, v)).sin()
            + 0.4 * (tau * (a2 * u + b2 * v) + 2.0 * w2.sample(u, v) + phase).sin();
        let mut c = mix(scale(base, 0.62), scale(base, 1.15), (w + 1.0) / 2.0);
        if w > 0.72 {
            c = mix(c, foam, (w - 0.72) / 0.28 * 0.8);
        }
        scale(c, grain(rng, 0.02))
    })
}

fn metal_plate(rng: &mut ChaCha8Rng, base: Rgb, s: usize) -> Canvas {
    let ps = if rng.random_bool(0.5) { s } else { s / 2 }.max(8);
    let brushed = Fbm::new(rng, 1, 16, 2);
    let tread = rng.random_bool(0.3);
    let inset = if ps >= 24 { 3 } else { 2 };
    let tau = std::f32::consts::TAU;
    Canvas::paint(s, |x, y, u, v| {
        let (xi, yi) = (x % ps, y % ps);
        let mut k = (1.0 + 0.05 * brushed.sample(u, v)) * (1.0 + 0.06 * (tau * (u + v)).sin());
        if xi == ps - 1 || yi == ps - 1 {
            k = 0.55;
        } else if xi == 0 || yi == 0 {
            k *= 1.3;
        } else if tread {
            // Raised diagonal bumps in alternating directions, 8 px apart.
            let (cx, cy, lx, ly) = (x / 8, y / 8, x % 8, y % 8);
            let (a, b) = if (cx + cy) % 2 == 0 {
                (lx, ly)
            } else {
                (7 - lx, ly)
            };
            if (2..6).contains(&a) && a == b {
                k *= 1.28;
            } else if (2..6).contains(&a) && a == b + 1 {
                k *= 0.72;
            }
        } else {
            let near = |i: usize| i == inset || i == ps - 1 - inset;
            let near_shadow = |i: usize| i == inset + 1 || i == ps - inset;
            if near(xi) && near(yi) {
                k *= 1.45;
            } else if near_shadow(xi) && near_shadow(yi) {
                k *= 0.6;
            }
        }
        scale(base, k * grain(rng, 0.02))
    })
}

fn lava(rng: &mut ChaCha8Rng, base: Rgb, s: usize) -> Canvas {
    let grid = rng.random_range(3..=4);
    let cells = Worley::new(rng, grid, 0.85);
    let (wx, wy) = (Fbm::square(rng, 2, 2), Fbm::square(rng, 2, 2));
    let crust_noise = Fbm::square(rng, 4, 3);
    let crust = mix([0.1, 0.06, 0.05], scale(base, 0.25), 0.5);
    let white_hot = mix(base, [1.0, 1.0, 0.85], 0.65);
    let width = rng.random_range(0.07..0.11);
    Canvas::paint(s, |_, _, u, v| {
        let c = cells.cell(u + 0.05 * wx.sample(u, v), v + 0.05 * wy.sample(u, v));
        let glow = (1.0 - (c.f2 - c.f1) / width).clamp(0.0, 1.0).powf(1.5);
        let crust = scale(crust, 0.75 + 0.35 * (crust_noise.sample(u, v) + 1.0));
        let hot = mix(base, white_hot, glow * glow);
        scale(mix(crust, hot, glow), grain(rng, 0.04))
    })
}

fn dirt(rng: &mut ChaCha8Rng, base: Rgb, s: usize) -> Canvas {
    let low = Fbm::square(rng, 3, 3);
    let clods = Fbm::square(rng, 6, 2);
    let mut canvas = Canvas::paint(s, |_, _, u, v| {
        let f = low.sample(u, v) + 0.7 * clods.sample(u, v);
        let mut k = (0.72 + 0.45 * smoothstep(-0.9, 0.9, f)) * grain(rng, 0.1);
        if rng.random_bool(0.06) {
            k *= 0.6;
        }
        scale(base, k)
    });
    let pebble = mix(scale(base, 1.4), [0.62, 0.6, 0.57], 0.45);
    for _ in 0..rng.random_range(4..9) {
        let (x, y) = (rng.random_range(0..s) as i64, rng.random_range(0..s) as i64);
        let c = scale(pebble, rng.random_range(0.85..1.15));
        canvas.set(x, y, scale(c, 1.15));
        canvas.set(x + 1, y, c);
        if rng.random_bool(0.5) {
            canvas.set(x, y + 1, c);
            canvas.set(x + 1, y + 1, scale(c, 0.9));
            canvas.set(x, y + 2, scale(base, 0.5));
            canvas.set(x + 1, y + 2, scale(base, 0.5));
        } else {
            canvas.set(x, y + 1, scale(base, 0.5));
            canvas.set(x + 1, y + 1, scale(base, 0.5));
        }
    }
    canvas
}

fn snow(rng: &mut ChaCha8Rng, base: Rgb, s: usize) -> Canvas {
    let drifts = Fbm::square(rng, 2, 2);
    let bumps = Fbm::square(rng, 4, 2);
    let shadow = tint(base, [0.85, 0.9, 0.98]);
    let d = 1.0 / s as f32;
    Canvas::paint(s, |_, _, u, v| {
        // Soft lumps lit from the top-left: brightness follows the slope of the bump field.
        let slope = bumps.sample(u - d, v - d) - bumps.sample(u + d, v + d);
        let t = 0.7 + 0.3 * drifts.sample(u, v) + 0.8 * slope;
        let c = mix(shadow, base, t);
        if rng.random_bool(0.025) {
            [1.0, 1.0, 1.0]
        } else {
            scale(c, grain(rng, 0.015))
        }
    })
}

fn ice(rng: &mut ChaCha8Rng, base: Rgb, s: usize) -> Canvas {
    let deep = tint(base, [0.7, 0.82, 0.92]);
    let blotch = Fbm::square(rng, 2, 3);
    let warp = Fbm::square(rng, 2, 2);
    let crack_grid = rng.random_range(2..=3);
    let cracks = Worley::new(rng, crack_grid, 0.9);
    let fine = PeriodicNoise::square(rng, 3);
    let dir = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
    let white = [0.96, 0.99, 1.0];
    let tau = std::f32::consts::TAU;
    Canvas::paint(s, |_, _, u, v| {
        let mut c = mix(deep, base, (blotch.sample(u, v) + 1.0) / 2.0);
        let sheen = (tau * 2.0 * (u + dir * v) + 1.5 * warp.sample(u, v))
            .sin()
            .max(0.0);
        c = mix(c, white, 0.35 * sheen.powi(4));
        let cell = cracks.cell(u, v);
        if cell.f2 - cell.f1 < 0.9 / s as f32 {
            c = mix(c, white, 0.8);
        } else if fine.sample(u, v).abs() < 0.03 {
            c = mix(c, white, 0.45);
        }
        scale(c, grain(rng, 0.02))
    })
}

fn moss(rng: &mut ChaCha8Rng, base: Rgb, s: usize) -> Canvas {
    let clumps = Worley::new(rng, (s / 5).max(2), 0.9);
    let tints: Vec<f32> = (0..clumps.len())
        .map(|_| rng.random_range(0.8..1.2))
        .collect();
    let low = Fbm::square(rng, 3, 3);
    let fine = Fbm::square(rng, 8, 2);
    let highlight = mix(base, [0.75, 0.8, 0.3], 0.35);
    Canvas::paint(s, |_, _, u, v| {
        let c = clumps.cell(u, v);
        let bump = 1.15 - 3.0 * c.f1 - 1.5 * (c.offset[0] + c.offset[1]);
        let mut k = tints[c.index] * bump * (1.0 + 0.15 * fine.sample(u, v));
        if c.f2 - c.f1 < 0.8 / s as f32 {
            k *= 0.6;
        }
        k *= 1.0 - 0.3 * (low.sample(u, v) + 1.0) / 2.0;
        let col = mix(base, highlight, (k - 1.0).max(0.0) * 2.0);
        scale(col, k * grain(rng, 0.06))
    })
}

fn marble(rng: &mut ChaCha8Rng, base: Rgb, s: usize) -> Canvas {
    const DIRS: [(f32, f32); 4] = [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, -1.0)];
    let (a1, b1) = DIRS[rng.random_range(0..DIRS.len())];
    let (a2, b2) = DIRS[rng.random_range(0..DIRS.len())];
    let (w1, w2) = (Fbm::square(rng, 2, 3), Fbm::square(rng, 3, 2));
    let cloud = Fbm::square(rng, 2, 3);
    let (p1, p2) = (rng.random_range(0.0..6.3), rng.random_range(0.0..6.3));
    let vein = if luminance(base) > 0.5 {
        scale(base, 0.45)
    } else {
        mix(base, [1.0, 1.0, 1.0], 0.75)
    };
    let tau = std::f32::consts::TAU;
    Canvas::paint(s, |_, _, u, v| {
        let t1 = (tau * (a1 * u + b1 * v) + 3.0 * w1.sample(u, v) + p1)
            .sin()
            .abs();
        let t2 = (tau * (a2 * u + b2 * v) + 2.5 * w2.sample(u, v) + p2)
            .sin()
            .abs();
        let c = scale(base, 0.95 + 0.08 * cloud.sample(u, v));
        let c = mix(c, vein, 0.4 * (1.0 - smoothstep(0.08, 0.25, t2)));
        let c = mix(c, vein, 0.9 * (1.0 - smoothstep(0.1, 0.35, t1)));
        scale(c, grain(rng, 0.015))
    })
}

fn tiles(rng: &mut ChaCha8Rng, base: Rgb, s: usize) -> Canvas {
    let ts = if rng.random_bool(0.65) { s / 4 } else { s / 2 }.max(4);
    let n = s.div_ceil(ts);
    let grout = if luminance(base) > 0.55 {
        [0.55, 0.55, 0.55]
    } else {
        [0.85, 0.84, 0.8]
    };
    let checker = rng.random_bool(0.25);
    let alternate = if luminance(base) > 0.5 {
        scale(base, 0.72)
    } else {
        mix(base, [0.95, 0.95, 0.93], 0.7)
    };
    let tints: Vec<f32> = (0..n * n).map(|_| rng.random_range(0.93..1.06)).collect();
    Canvas::paint(s, |x, y, _, _| {
        let (xi, yi) = (x % ts, y % ts);
        if xi == ts - 1 || yi == ts - 1 {
            return scale(grout, grain(rng, 0.03));
        }
        let (tx, ty) = ((x / ts) % n, (y / ts) % n);
        let face = if checker && (tx + ty) % 2 == 1 {
            alternate
        } else {
            base
        };
        let mut k = tints[ty * n + tx];
        if xi == 0 || yi == 0 {
            k *= 1.1;
        } else if xi + 2 == ts || yi + 2 == ts {
            k *= 0.9;
        }
        scale(face, k * grain(rng, 0.025))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn luma(img: &RgbaImage, x: u32, y: u32) -> f32 {
        let p = img.get_pixel(x, y).0;
        p[..3].iter().map(|&c| c as f32).sum::<f32>() / 3.0
    }

    /// Mean abs difference between adjacent columns `x` and `x + 1` (wrapping), over all rows.
    fn column_diff(img: &RgbaImage, x: u32) -> f32 {
        let w = img.width();
        (0..img.height())
            .map(|y| (luma(img, x, y) - luma(img, (x + 1) % w, y)).abs())
            .sum::<f32>()
            / img.height() as f32
    }

    fn transpose(img: &RgbaImage) -> RgbaImage {
        RgbaImage::from_fn(img.height(), img.width(), |x, y| *img.get_pixel(y, x))
    }

    /// The wrap-around seam (last column → first) is no worse than the worst interior pair.
    fn seam_ok(img: &RgbaImage) -> bool {
        let w = img.width();
        let seam = column_diff(img, w - 1);
        let worst = (0..w - 1).map(|x| column_diff(img, x)).fold(0.0, f32::max);
        seam <= worst * 1.25 + 2.0
    }

    #[test]
    fn every_material_tiles_seamlessly() {
        for material in Material::ALL {
            for &(colour, rgb) in material.colours() {
                for variant in 0..2 {
                    let spec = TextureSpec {
                        material,
                        colour,
                        rgb,
                        variant,
                    };
                    let img = spec.generate(7, 32);
                    assert!(seam_ok(&img), "{} columns", spec.id());
                    assert!(seam_ok(&transpose(&img)), "{} rows", spec.id());
                }
            }
        }
    }

    #[test]
    fn the_seam_check_catches_a_non_tiling_image() {
        let gradient = RgbaImage::from_fn(32, 32, |x, _| Rgba([(x * 8) as u8, 0, 0, 255]));
        assert!(!seam_ok(&gradient));
    }

    #[test]
    fn deterministic_opaque_and_structured() {
        for material in Material::ALL {
            let (colour, rgb) = material.colours()[0];
            let spec = TextureSpec {
                material,
                colour,
                rgb,
                variant: 3,
            };
            let a = spec.generate(42, 32);
            assert_eq!(a, spec.generate(42, 32), "{}", spec.id());
            assert_ne!(a, spec.generate(43, 32), "{}", spec.id());
            assert!(a.pixels().all(|p| p.0[3] == 255));
            let lumas: Vec<f32> = (0..32 * 32).map(|i| luma(&a, i % 32, i / 32)).collect();
            let mean = lumas.iter().sum::<f32>() / lumas.len() as f32;
            let var = lumas.iter().map(|l| (l - mean).powi(2)).sum::<f32>() / lumas.len() as f32;
            assert!(var.sqrt() > 2.0, "{} is flat", spec.id());
        }
    }

    #[test]
    fn specs_ids_captions_and_split() {
        let all = specs(VARIANTS);
        assert!((1500..=2500).contains(&all.len()), "{}", all.len());
        let ids: std::collections::BTreeSet<_> = all.iter().map(|s| s.id()).collect();
        assert_eq!(ids.len(), all.len());
        let held = all.iter().filter(|s| s.split() == Split::Heldout).count();
        assert_eq!(held * HELDOUT_EVERY as usize, all.len());
        let brick = &all[3];
        assert_eq!(brick.id(), "textures/red-brick-3");
        assert_eq!(brick.caption(), "red brick texture tileable");
        let wood = all
            .iter()
            .find(|s| s.material == Material::WoodPlanks && s.colour == "dark");
        assert_eq!(
            wood.map(|s| s.caption()).as_deref(),
            Some("dark wood planks texture tileable")
        );
    }
}
