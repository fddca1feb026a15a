//! Pixel art: palettes and palette-locked pixelation.

use std::collections::BTreeMap;
use std::path::Path;

use image::RgbaImage;
use rayon::prelude::*;

use super::PostError;

/// An ordered set of opaque colours that pixel art is quantised to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Palette {
    colors: Vec<[u8; 3]>,
}

impl Palette {
    /// Parses colours written `#rrggbb` or `rrggbb` (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`PostError::InvalidColor`] for the first entry that is not a colour,
    /// [`PostError::EmptyPalette`] for an empty list.
    pub fn from_hex_list(list: &[&str]) -> Result<Self, PostError> {
        let colors = list
            .iter()
            .enumerate()
            .map(|(index, text)| {
                parse_hex(text).ok_or_else(|| PostError::InvalidColor {
                    value: (*text).to_owned(),
                    index,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_colors(colors)
    }

    /// A palette of exactly these colours.
    ///
    /// # Errors
    /// [`PostError::EmptyPalette`] for an empty list.
    pub fn from_colors(colors: Vec<[u8; 3]>) -> Result<Self, PostError> {
        Self::non_empty(colors, "the colour list".to_owned())
    }

    /// Parses a palette file's `text`; `name` is the file, used in errors.
    ///
    /// A file whose first line is `GIMP Palette` is read as GIMP `.gpl` (`r g b [name]` lines,
    /// `#` comments, `Name:`/`Columns:` headers); anything else as lospec `.hex` (one
    /// `rrggbb` per line). Blank lines are skipped in both.
    ///
    /// # Errors
    /// [`PostError::PaletteSyntax`] naming the file and line of the first bad line,
    /// [`PostError::EmptyPalette`] for a file without colours.
    pub fn parse_file(text: &str, name: &Path) -> Result<Self, PostError> {
        let text = text.trim_start_matches('\u{feff}');
        let gimp = text
            .lines()
            .next()
            .is_some_and(|l| l.trim() == "GIMP Palette");
        let mut colors = Vec::new();
        for (index, line) in text.lines().enumerate().skip(usize::from(gimp)) {
            let line = line.trim();
            let color = if line.is_empty() {
                continue;
            } else if gimp {
                if line.starts_with('#')
                    || line.starts_with("Name:")
                    || line.starts_with("Columns:")
                {
                    continue;
                }
                parse_gpl_color(line)
            } else {
                parse_hex(line)
            };
            colors.push(color.ok_or_else(|| PostError::PaletteSyntax {
                file: name.to_owned(),
                line: index + 1,
                message: if gimp {
                    format!("expected `r g b [name]` with values 0-255, found {line:?}")
                } else {
                    format!("expected a colour `rrggbb`, found {line:?}")
                },
            })?);
        }
        Self::non_empty(colors, name.display().to_string())
    }

    /// Chooses up to `colors` colours once from the opaque pixels (alpha ≥ 50%) of all
    /// `images`, by median cut, so that frames pixelated with it share one palette.
    ///
    /// Deterministic; images with no more distinct colours than `colors` keep them exactly. No
    /// opaque pixels (or `colors == 0`) give an empty palette.
    pub fn choose(images: &[&RgbaImage], colors: usize) -> Palette {
        Self::from_histogram(histogram(images), colors, images.len())
    }

    /// [`choose`](Self::choose) from an already counted [`histogram`].
    pub(super) fn from_histogram(
        histogram: Vec<([u8; 3], u64)>,
        colors: usize,
        images: usize,
    ) -> Palette {
        let mut boxes: Vec<Vec<([u8; 3], u64)>> = vec![histogram];
        boxes.retain(|b| !b.is_empty());
        boxes.truncate(colors);
        while boxes.len() < colors {
            let widest = boxes
                .iter()
                .enumerate()
                .filter(|(_, b)| b.len() > 1)
                .map(|(index, b)| {
                    let (channel, range) = widest_channel(b);
                    let population: u64 = b.iter().map(|(_, n)| n).sum();
                    ((range, population), index, channel)
                })
                .max();
            let Some((_, index, channel)) = widest else {
                break;
            };
            let mut lower = boxes.swap_remove(index);
            lower.sort_unstable_by_key(|&(c, _)| (c[channel], c));
            let half = lower.iter().map(|(_, n)| n).sum::<u64>() / 2;
            let mut seen = 0;
            let median = lower
                .iter()
                .position(|(_, n)| {
                    seen += n;
                    seen >= half
                })
                .unwrap_or(0);
            let upper = lower.split_off((median + 1).min(lower.len() - 1));
            boxes.extend([lower, upper]);
        }
        let mut colors: Vec<[u8; 3]> = boxes.iter().map(|b| mean_color(b)).collect();
        refine(&mut colors, &boxes.concat());
        colors.sort_unstable();
        colors.dedup();
        tracing::debug!(images, colors = colors.len(), "palette chosen");
        Palette { colors }
    }

    /// The colours, in order.
    pub fn colors(&self) -> &[[u8; 3]] {
        &self.colors
    }

    /// A function giving the index of the colour nearest to a colour in Oklab (the first of
    /// equals), or `None` for an empty palette.
    pub(super) fn matcher(&self) -> impl Fn([u8; 3]) -> Option<usize> + Sync + '_ {
        let lab: Vec<[f32; 3]> = self.colors.iter().map(|&c| oklab(c)).collect();
        move |color| nearest_lab(&lab, oklab(color))
    }

    fn non_empty(colors: Vec<[u8; 3]>, what: String) -> Result<Self, PostError> {
        if colors.is_empty() {
            return Err(PostError::EmptyPalette { what });
        }
        Ok(Palette { colors })
    }
}

/// Pixelates `image` to `grid`×`grid`: area average on premultiplied colour, alpha made binary
/// (opaque where the average is at least 50%), every opaque pixel mapped to the nearest
/// `palette` colour in Oklab (an empty palette keeps the averaged colour). Transparent pixels
/// are `(0, 0, 0, 0)`. Deterministic.
pub fn pixelate(image: &RgbaImage, grid: u32, palette: &Palette) -> RgbaImage {
    let mut out = RgbaImage::new(grid, grid);
    if grid == 0 {
        return out;
    }
    let columns = area_weights(image.width(), grid);
    let rows = area_weights(image.height(), grid);
    let nearest = palette.matcher();
    out.par_chunks_mut(grid as usize * 4)
        .zip(&rows)
        .for_each(|(out_row, row_weights)| {
            for (out_pixel, column_weights) in out_row.chunks_exact_mut(4).zip(&columns) {
                let (mut premultiplied, mut alpha, mut area) = ([0.0f64; 3], 0.0, 0.0);
                for &(y, wy) in row_weights {
                    for &(x, wx) in column_weights {
                        let weight = (wx * wy) as f64;
                        let [r, g, b, a] = image.get_pixel(x, y).0.map(f64::from);
                        let a = a / 255.0;
                        for (sum, c) in premultiplied.iter_mut().zip([r, g, b]) {
                            *sum += c * a * weight;
                        }
                        alpha += a * weight;
                        area += weight;
                    }
                }
                if area == 0.0 || alpha / area < 0.5 {
                    continue;
                }
                let color = premultiplied.map(|c| (c / alpha).round().clamp(0.0, 255.0) as u8);
                let [r, g, b] = nearest(color).map_or(color, |i| palette.colors[i]);
                out_pixel.copy_from_slice(&[r, g, b, 255]);
            }
        });
    out
}

/// Opaque for palette purposes: alpha at least 50%.
pub(super) fn is_opaque(alpha: u8) -> bool {
    alpha >= 128
}

/// Parses `#rrggbb` or `rrggbb`.
fn parse_hex(text: &str) -> Option<[u8; 3]> {
    let text = text.trim();
    let mut rgb = [0; 3];
    hex::decode_to_slice(text.strip_prefix('#').unwrap_or(text), &mut rgb).ok()?;
    Some(rgb)
}

/// Parses a GIMP palette line `r g b [name]`.
fn parse_gpl_color(line: &str) -> Option<[u8; 3]> {
    let mut fields = line.split_whitespace().map(str::parse::<u8>);
    let mut next = || fields.next()?.ok();
    Some([next()?, next()?, next()?])
}

/// The channel with the largest spread in a median-cut box, and that spread.
fn widest_channel(colors: &[([u8; 3], u64)]) -> (usize, u8) {
    (0..3)
        .map(|channel| {
            let values = colors.iter().map(|(c, _)| c[channel]);
            let range = values.clone().max().unwrap_or(0) - values.min().unwrap_or(0);
            (channel, range)
        })
        .max_by_key(|&(channel, range)| (range, std::cmp::Reverse(channel)))
        .unwrap_or((0, 0))
}

/// The population-weighted mean colour of a non-empty median-cut box.
/// Index of the colour in `lab` nearest to `target` (the first of equals).
fn nearest_lab(lab: &[[f32; 3]], target: [f32; 3]) -> Option<usize> {
    let distance =
        |c: &[f32; 3]| -> f32 { c.iter().zip(target).map(|(x, y)| (x - y) * (x - y)).sum() };
    lab.iter()
        .map(distance)
        .enumerate()
        .fold(None, |best: Option<(usize, f32)>, (i, d)| match best {
            Some((_, b)) if b <= d => best,
            _ => Some((i, d)),
        })
        .map(|(i, _)| i)
}

/// Every opaque (alpha ≥ 50%) colour of `images` and how many pixels have it, by colour.
pub(super) fn histogram(images: &[&RgbaImage]) -> Vec<([u8; 3], u64)> {
    let mut histogram = BTreeMap::<[u8; 3], u64>::new();
    for pixel in images.iter().flat_map(|image| image.pixels()) {
        if is_opaque(pixel[3]) {
            *histogram.entry([pixel[0], pixel[1], pixel[2]]).or_default() += 1;
        }
    }
    histogram.into_iter().collect()
}

/// Lloyd iterations after median cut: every colour of the histogram goes to its nearest
/// palette entry (Oklab) and each entry moves to the mean of what it got. Median cut splits
/// boxes blindly along one axis; this recentres them on the colours actually used.
fn refine(palette: &mut [[u8; 3]], histogram: &[([u8; 3], u64)]) {
    const ROUNDS: usize = 4;
    for _ in 0..ROUNDS {
        let lab: Vec<[f32; 3]> = palette.iter().map(|&c| oklab(c)).collect();
        let mut members: Vec<Vec<([u8; 3], u64)>> = vec![Vec::new(); palette.len()];
        for &(color, count) in histogram {
            if let Some(i) = nearest_lab(&lab, oklab(color)) {
                members[i].push((color, count));
            }
        }
        for (entry, got) in palette.iter_mut().zip(&members) {
            if !got.is_empty() {
                *entry = mean_color(got);
            }
        }
    }
}

fn mean_color(colors: &[([u8; 3], u64)]) -> [u8; 3] {
    let total: u64 = colors.iter().map(|(_, n)| n).sum();
    [0, 1, 2].map(|channel| {
        let sum: u64 = colors.iter().map(|(c, n)| u64::from(c[channel]) * n).sum();
        ((sum + total / 2) / total.max(1)) as u8
    })
}

/// For each of `dst` output cells along an axis of `src` pixels: the source pixels it covers
/// and their overlap, in units of 1/`dst` source pixel (exact integers).
fn area_weights(src: u32, dst: u32) -> Vec<Vec<(u32, u64)>> {
    let (src64, dst64) = (u64::from(src), u64::from(dst));
    (0..dst64)
        .map(|o| {
            let (start, end) = (o * src64, (o + 1) * src64);
            (start / dst64..end.div_ceil(dst64))
                .filter_map(|s| {
                    let overlap = end.min((s + 1) * dst64) - start.max(s * dst64);
                    (overlap > 0).then_some((s as u32, overlap))
                })
                .collect()
        })
        .collect()
}

/// sRGB to Oklab (Björn Ottosson's matrices).
fn oklab(rgb: [u8; 3]) -> [f32; 3] {
    let [r, g, b] = rgb.map(|c| {
        let c = f32::from(c) / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    });
    let l = (0.412_221_46 * r + 0.536_332_55 * g + 0.051_445_995 * b).cbrt();
    let m = (0.211_903_5 * r + 0.680_699_5 * g + 0.107_396_96 * b).cbrt();
    let s = (0.088_302_46 * r + 0.281_718_85 * g + 0.629_978_7 * b).cbrt();
    [
        0.210_454_26 * l + 0.793_617_8 * m - 0.004_072_047 * s,
        1.977_998_5 * l - 2.428_592_2 * m + 0.450_593_7 * s,
        0.025_904_037 * l + 0.782_771_77 * m - 0.808_675_77 * s,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;
    use proptest::prelude::*;

    fn hex_file(colors: &[[u8; 3]]) -> String {
        colors
            .iter()
            .map(|c| format!("{}\n", hex::encode(c)))
            .collect()
    }

    fn gpl_file(colors: &[[u8; 3]]) -> String {
        let body: String = colors
            .iter()
            .map(|[r, g, b]| format!("{r:>3} {g:>3} {b:>3}\tcolour\n"))
            .collect();
        format!("GIMP Palette\nName: test\nColumns: 4\n# comment\n\n{body}")
    }

    #[test]
    fn from_hex_list_accepts_both_spellings() {
        let palette = Palette::from_hex_list(&["#FF0000", " 00ff80 "]).expect("valid");
        assert_eq!(palette.colors(), &[[255, 0, 0], [0, 255, 128]]);
        let err = Palette::from_hex_list(&["#fff"]).expect_err("short");
        assert!(err.to_string().contains("\"#fff\""), "{err}");
        assert!(matches!(
            Palette::from_hex_list(&[]),
            Err(PostError::EmptyPalette { .. })
        ));
    }

    #[test]
    fn parse_file_reads_lospec_hex_and_gimp_gpl() {
        let colors = [[0, 0, 0], [255, 128, 7], [34, 32, 52]];
        let name = Path::new("p.hex");
        assert_eq!(
            Palette::parse_file(&hex_file(&colors), name)
                .expect("hex")
                .colors,
            colors
        );
        let crlf = hex_file(&colors).replace('\n', "\r\n");
        assert_eq!(
            Palette::parse_file(&crlf, name).expect("crlf").colors,
            colors
        );
        let gpl = Palette::parse_file(&gpl_file(&colors), Path::new("p.gpl")).expect("gpl");
        assert_eq!(gpl.colors, colors);
    }

    #[test]
    fn parse_file_errors_name_file_and_line() {
        let err = Palette::parse_file("000000\n\nzzzzzz\n", Path::new("pal/bad.hex"))
            .expect_err("bad hex");
        assert!(err.to_string().starts_with("pal/bad.hex:3: "), "{err}");
        let err = Palette::parse_file("GIMP Palette\n# c\n1 2 300 x\n", Path::new("bad.gpl"))
            .expect_err("bad gpl");
        assert!(err.to_string().starts_with("bad.gpl:3: "), "{err}");
        let err = Palette::parse_file("GIMP Palette\n", Path::new("e.gpl")).expect_err("empty");
        assert_eq!(err.to_string(), "e.gpl has no colours");
    }

    #[test]
    fn choose_keeps_few_colours_exactly_and_ignores_transparency() {
        let image = RgbaImage::from_fn(8, 8, |x, y| match (x < 4, y < 4) {
            (true, true) => Rgba([255, 0, 0, 255]),
            (false, true) => Rgba([0, 0, 255, 200]),
            (true, false) => Rgba([0, 255, 0, 255]),
            (false, false) => Rgba([255, 255, 255, 10]),
        });
        let palette = Palette::choose(&[&image], 8);
        assert_eq!(palette.colors(), &[[0, 0, 255], [0, 255, 0], [255, 0, 0]]);
        assert_eq!(Palette::choose(&[&image], 1).colors().len(), 1);
        assert!(
            Palette::choose(&[&RgbaImage::new(4, 4)], 8)
                .colors()
                .is_empty()
        );
    }

    #[test]
    fn choose_is_deterministic_and_bounded() {
        let image = RgbaImage::from_fn(32, 32, |x, y| {
            Rgba([(x * 8) as u8, (y * 8) as u8, ((x + y) * 4) as u8, 255])
        });
        let a = Palette::choose(&[&image], 16);
        assert_eq!(a, Palette::choose(&[&image], 16));
        assert!(
            a.colors().len() <= 16 && a.colors().len() >= 12,
            "{}",
            a.colors().len()
        );
    }

    #[test]
    fn pixelate_averages_areas_and_thresholds_alpha() {
        // 4x4 → 2x2: top-left red, top-right half-covered blue (alpha 50%: opaque), bottom-left
        // a quarter covered (transparent), bottom-right green.
        let image = RgbaImage::from_fn(4, 4, |x, y| match (x / 2, y / 2) {
            (0, 0) => Rgba([250, 0, 0, 255]),
            (1, 0) if x == 2 => Rgba([0, 0, 250, 255]),
            (0, 1) if (x, y) == (0, 2) => Rgba([0, 0, 250, 255]),
            (1, 1) => Rgba([0, 250, 0, 255]),
            _ => Rgba([255, 255, 255, 0]),
        });
        let palette = Palette::from_hex_list(&["ff0000", "00ff00", "0000ff"]).expect("valid");
        let out = pixelate(&image, 2, &palette);
        assert_eq!(out.get_pixel(0, 0).0, [255, 0, 0, 255]);
        assert_eq!(out.get_pixel(1, 0).0, [0, 0, 255, 255]);
        assert_eq!(out.get_pixel(0, 1).0, [0, 0, 0, 0]);
        assert_eq!(out.get_pixel(1, 1).0, [0, 255, 0, 255]);
    }

    #[test]
    fn pixelate_uses_premultiplied_colour_and_handles_odd_ratios() {
        // Transparent pixels' hidden colour must not tint the average.
        let image = RgbaImage::from_fn(6, 6, |x, _| {
            Rgba(if x % 2 == 0 {
                [0, 0, 0, 0]
            } else {
                [200, 200, 200, 255]
            })
        });
        let grey = Palette::from_hex_list(&["c8c8c8", "646464"]).expect("valid");
        let out = pixelate(&image, 4, &grey);
        assert_eq!(out.dimensions(), (4, 4));
        assert!(
            out.pixels()
                .all(|p| p.0 == [200, 200, 200, 255] || p[3] == 0)
        );
        assert!(out.pixels().any(|p| p[3] == 255));
        assert_eq!(pixelate(&image, 0, &grey).dimensions(), (0, 0));
    }

    #[test]
    fn palette_is_locked_across_animation_frames() {
        let frames: Vec<RgbaImage> = (0..6u32)
            .map(|t| {
                RgbaImage::from_fn(32, 32, |x, y| {
                    let (dx, dy) = (x as i32 - 16, y as i32 - 16);
                    let alpha = if dx * dx + dy * dy < 14 * 14 { 255 } else { 0 };
                    Rgba([(x * 8) as u8, (y * 8 + t * 20) as u8, (t * 40) as u8, alpha])
                })
            })
            .collect();
        let palette = Palette::choose(&frames.iter().collect::<Vec<_>>(), 8);
        assert_eq!(palette.colors().len(), 8);
        for frame in &frames {
            let out = pixelate(frame, 16, &palette);
            assert_eq!(out.dimensions(), (16, 16));
            for p in out.pixels() {
                assert!(p[3] == 0 || p[3] == 255);
                assert!(p[3] == 0 || palette.colors().contains(&[p[0], p[1], p[2]]));
            }
            assert_eq!(out, pixelate(frame, 16, &palette));
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in "\\PC*", lines in proptest::collection::vec("[ #0-9a-fA-F:GIMPaletN]{0,12}", 0..8)) {
            let _ = Palette::parse_file(&text, Path::new("any.hex"));
            let gpl = format!("GIMP Palette\n{}", lines.join("\n"));
            let _ = Palette::parse_file(&gpl, Path::new("any.gpl"));
            let list: Vec<&str> = lines.iter().map(String::as_str).collect();
            let _ = Palette::from_hex_list(&list);
        }

        #[test]
        fn palette_files_round_trip(colors in proptest::collection::vec(any::<[u8; 3]>(), 1..40)) {
            let hex = Palette::parse_file(&hex_file(&colors), Path::new("p.hex")).expect("hex");
            prop_assert_eq!(hex.colors(), &colors[..]);
            let gpl = Palette::parse_file(&gpl_file(&colors), Path::new("p.gpl")).expect("gpl");
            prop_assert_eq!(gpl.colors(), &colors[..]);
        }
    }
}
