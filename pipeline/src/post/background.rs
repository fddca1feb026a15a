//! Keying out a plain background. A generator that paints every pixel (Stable Diffusion) draws
//! a sprite on a background, which the sprite must not keep. Prompted for a plain one ("on a
//! white background"), the background is the colour most of the border shares: it is flooded
//! from the border through every pixel near that colour, so a hole of the same colour inside
//! the subject stays (an eye's white, a window); pixels between near and far get partial alpha
//! with the background's colour taken back out of them (no halo on a dark game scene).

use std::collections::VecDeque;

use image::{Rgba, RgbaImage};

/// How far (RGB Euclidean, 0–441) a border pixel may be from the background colour to count
/// as background when telling whether the border is one colour.
const BORDER_MATCH: f64 = 32.0;

/// The share of border pixels that must be the background's colour for it to be keyed.
const PLAIN_SHARE: f64 = 0.5;

/// How wide the band of partial alpha is, beyond the fully transparent distance.
const SOFT_BAND: f64 = 40.0;

/// What [`key_background`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Background {
    /// The image has transparency of its own: there is nothing to key.
    Transparent,
    /// The plain background was keyed out: the image, and the colour it had.
    Keyed {
        /// The image with the background transparent.
        image: RgbaImage,
        /// The background's colour.
        color: [u8; 3],
    },
    /// No one colour covers most of the border: the image stays as it is.
    Busy,
}

/// Keys out the plain background of an opaque `image` (see the module).
pub fn key_background(image: &RgbaImage) -> Background {
    if image.pixels().any(|p| p[3] < 255) {
        return Background::Transparent;
    }
    let (width, height) = image.dimensions();
    if width < 3 || height < 3 {
        return Background::Busy;
    }
    let border: Vec<(u32, u32)> = (0..width)
        .flat_map(|x| [(x, 0), (x, height - 1)])
        .chain((1..height - 1).flat_map(|y| [(0, y), (width - 1, y)]))
        .collect();
    let colours: Vec<[u8; 3]> = border.iter().map(|&(x, y)| rgb(image, x, y)).collect();
    let color = [0, 1, 2].map(|c| {
        let mut channel: Vec<u8> = colours.iter().map(|rgb| rgb[c]).collect();
        channel.sort_unstable();
        channel[channel.len() / 2]
    });
    let mut near: Vec<f64> = colours
        .iter()
        .map(|c| distance(*c, color))
        .filter(|&d| d <= BORDER_MATCH)
        .collect();
    if (near.len() as f64) < PLAIN_SHARE * colours.len() as f64 {
        return Background::Busy;
    }
    // Transparent up to a little beyond the border's own noise, partial across a band after.
    near.sort_by(f64::total_cmp);
    let noise = near[(near.len() * 95 / 100).min(near.len() - 1)];
    let clear = (noise + 6.0).clamp(10.0, BORDER_MATCH + 8.0);
    let solid = clear + SOFT_BAND;
    let index = |x: u32, y: u32| (y * width + x) as usize;
    let mut reached = vec![false; (width * height) as usize];
    let mut queue: VecDeque<(u32, u32)> = VecDeque::new();
    for &(x, y) in &border {
        if distance(rgb(image, x, y), color) < solid && !reached[index(x, y)] {
            reached[index(x, y)] = true;
            queue.push_back((x, y));
        }
    }
    while let Some((x, y)) = queue.pop_front() {
        let neighbours = [
            (x.wrapping_sub(1), y),
            (x + 1, y),
            (x, y.wrapping_sub(1)),
            (x, y + 1),
        ];
        for (nx, ny) in neighbours {
            if nx < width
                && ny < height
                && !reached[index(nx, ny)]
                && distance(rgb(image, nx, ny), color) < solid
            {
                reached[index(nx, ny)] = true;
                queue.push_back((nx, ny));
            }
        }
    }
    // The subject's edge: the pixels next to the background, and the background's own
    // pixels that are not quite its colour. Each is a mix of the background and the subject's
    // colour nearby (the one farthest from the background within two pixels, off the edge);
    // its alpha is how much subject the mix holds.
    let edge = |x: u32, y: u32| {
        !reached[index(x, y)]
            && [(-1, 0), (1, 0), (0, -1), (0, 1)].iter().any(|&(dx, dy)| {
                let (nx, ny) = (i64::from(x) + dx, i64::from(y) + dy);
                (0..i64::from(width)).contains(&nx)
                    && (0..i64::from(height)).contains(&ny)
                    && reached[index(nx as u32, ny as u32)]
            })
    };
    let subject_near = |x: u32, y: u32| -> Option<[u8; 3]> {
        let (x0, y0) = (x.saturating_sub(2), y.saturating_sub(2));
        let (x1, y1) = ((x + 2).min(width - 1), (y + 2).min(height - 1));
        (y0..=y1)
            .flat_map(|ny| (x0..=x1).map(move |nx| (nx, ny)))
            .filter(|&(nx, ny)| !reached[index(nx, ny)] && !edge(nx, ny))
            .map(|(nx, ny)| rgb(image, nx, ny))
            .max_by(|a, b| distance(*a, color).total_cmp(&distance(*b, color)))
    };
    let mut keyed = image.clone();
    for (x, y, pixel) in keyed.enumerate_pixels_mut() {
        let seen = [pixel[0], pixel[1], pixel[2]];
        let away = distance(seen, color);
        let alpha = if reached[index(x, y)] {
            if away <= clear {
                0.0
            } else {
                mix(seen, color, subject_near(x, y))
                    .unwrap_or(((away - clear) / SOFT_BAND).clamp(0.0, 1.0))
            }
        } else if edge(x, y) {
            mix(seen, color, subject_near(x, y)).unwrap_or(1.0)
        } else {
            continue;
        };
        *pixel = if alpha == 0.0 {
            Rgba([0; 4])
        } else {
            // What was drawn over the background: seen = α·drawn + (1 − α)·background.
            let drawn = [0, 1, 2].map(|c| {
                let (s, b) = (f64::from(seen[c]), f64::from(color[c]));
                (b + (s - b) / alpha).round().clamp(0.0, 255.0) as u8
            });
            Rgba([drawn[0], drawn[1], drawn[2], (alpha * 255.0).round() as u8])
        };
    }
    Background::Keyed {
        image: keyed,
        color,
    }
}

/// How much of `subject` the mix `seen` of it and `background` holds (0–1), or `None` when
/// there is no subject colour near, or it is too close to the background to tell.
fn mix(seen: [u8; 3], background: [u8; 3], subject: Option<[u8; 3]>) -> Option<f64> {
    let subject = subject?;
    let axis: Vec<f64> = (0..3)
        .map(|c| f64::from(subject[c]) - f64::from(background[c]))
        .collect();
    let length = axis.iter().map(|a| a * a).sum::<f64>();
    if length < SOFT_BAND * SOFT_BAND {
        return None;
    }
    let along: f64 = (0..3)
        .map(|c| (f64::from(seen[c]) - f64::from(background[c])) * axis[c])
        .sum();
    Some((along / length).clamp(0.0, 1.0))
}

fn rgb(image: &RgbaImage, x: u32, y: u32) -> [u8; 3] {
    let p = image.get_pixel(x, y);
    [p[0], p[1], p[2]]
}

fn distance(a: [u8; 3], b: [u8; 3]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&a, b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A red disk with a soft edge and a white hole, on a white background with a little noise.
    fn sprite_on_white() -> RgbaImage {
        RgbaImage::from_fn(64, 64, |x, y| {
            let noise = ((x * 7 + y * 13) % 5) as f64 - 2.0;
            let (dx, dy) = (f64::from(x) - 32.0, f64::from(y) - 32.0);
            let r = (dx * dx + dy * dy).sqrt();
            // Coverage of the disk (radius 20), one pixel of soft edge.
            let cover = (20.5 - r).clamp(0.0, 1.0);
            let hole = r < 4.0;
            let (fg, bg) = ([200.0, 30.0, 40.0], [250.0 + noise, 250.0, 248.0 - noise]);
            let c = |i: usize| {
                if hole {
                    bg[i]
                } else {
                    cover * fg[i] + (1.0 - cover) * bg[i]
                }
            };
            Rgba([c(0) as u8, c(1) as u8, c(2) as u8, 255])
        })
    }

    #[test]
    fn a_plain_background_is_keyed_out_and_a_hole_inside_stays() {
        let Background::Keyed { image, color } = key_background(&sprite_on_white()) else {
            panic!("a white background is plain");
        };
        assert!(color.iter().all(|&c| c >= 245), "{color:?}");
        for (x, y) in [(0, 0), (63, 0), (5, 40), (63, 63)] {
            assert_eq!(image.get_pixel(x, y), &Rgba([0; 4]), "({x}, {y})");
        }
        assert_eq!(image.get_pixel(32, 20)[3], 255, "the disk");
        assert_eq!(image.get_pixel(32, 32)[3], 255, "the hole inside the disk");
        // The soft edge: partial alpha, its colour the disk's red with the white taken out.
        let edge: Vec<&Rgba<u8>> = image.pixels().filter(|p| p[3] > 0 && p[3] < 255).collect();
        assert!(!edge.is_empty());
        for p in edge {
            let [r, g, b, _] = p.0.map(i32::from);
            assert!(r > g + 100 && r > b + 100, "{p:?}");
        }
    }

    #[test]
    fn transparent_images_and_busy_borders_are_left_alone() {
        let mut transparent = sprite_on_white();
        transparent.put_pixel(0, 0, Rgba([0; 4]));
        assert_eq!(key_background(&transparent), Background::Transparent);
        let busy = RgbaImage::from_fn(32, 32, |x, y| {
            Rgba([
                (x * 37 % 256) as u8,
                (y * 91 % 256) as u8,
                ((x + y) * 53 % 256) as u8,
                255,
            ])
        });
        assert_eq!(key_background(&busy), Background::Busy);
    }

    proptest! {
        #[test]
        fn keying_only_takes_alpha_away(
            seed in 0u32..1000,
            background in proptest::array::uniform3(0u8..=255),
        ) {
            let image = RgbaImage::from_fn(24, 24, |x, y| {
                let inside = (6..18).contains(&x) && (6..18).contains(&y);
                let wobble = (x * 31 + y * 17 + seed) % 23;
                if inside {
                    Rgba([(wobble * 11) as u8, (seed % 256) as u8, (x * 10) as u8, 255])
                } else {
                    let b = background.map(|c| c.saturating_add((wobble % 3) as u8));
                    Rgba([b[0], b[1], b[2], 255])
                }
            });
            match key_background(&image) {
                Background::Keyed { image: keyed, .. } => {
                    for (before, after) in image.pixels().zip(keyed.pixels()) {
                        prop_assert!(after[3] <= before[3]);
                        if after[3] == 255 {
                            prop_assert_eq!(before, after);
                        }
                    }
                    prop_assert_eq!(keyed.get_pixel(0, 0)[3], 0);
                }
                other => prop_assert!(false, "a plain border is keyed: {:?}", other),
            }
        }
    }
}
