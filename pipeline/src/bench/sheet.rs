//! The contact sheet: a grid of generated sprites, one prompt per row and one seed per column,
//! upscaled pixel-exactly onto a light checkerboard so that transparency shows.

use image::{Rgba, RgbaImage};

/// Prompts of the contact sheet: styles (flat, noto, silhouette, a held-out twemoji pairing)
/// and textures mixed.
pub const SHEET_PROMPTS: [&str; 8] = [
    "red apple flat food drink",
    "crossed swords silhouette",
    "red brick texture tileable",
    "frog noto animals nature",
    "health potion silhouette",
    "crown twemoji objects",
    "orange lava texture tileable",
    "treasure chest noto objects",
];

/// Side of a checkerboard square, in output pixels.
const CHECKER: u32 = 8;
/// Gap between cells, in output pixels.
const GAP: u32 = 4;
const LIGHT: [u8; 3] = [250, 250, 250];
const DARK: [u8; 3] = [222, 222, 222];
const BACKGROUND: [u8; 4] = [255, 255, 255, 255];

/// Up to `count` prompts for the sheet: [`SHEET_PROMPTS`] whose words the model knows
/// (`known(prompt)`), then `fallback` prompts (e.g. training captions) to fill the rows.
pub fn choose_prompts<'a>(
    known: impl Fn(&str) -> bool,
    fallback: impl IntoIterator<Item = &'a str>,
    count: usize,
) -> Vec<String> {
    let mut chosen: Vec<String> = Vec::with_capacity(count);
    for prompt in SHEET_PROMPTS.into_iter().chain(fallback) {
        if chosen.len() == count {
            break;
        }
        if known(prompt) && !chosen.iter().any(|c| c == prompt) {
            chosen.push(prompt.to_string());
        }
    }
    chosen
}

/// The sheet: `rows[r][c]` drawn at `scale`× (nearest neighbour) over a checkerboard, with a
/// white gap around every cell. Cells may differ in size; each row and column is as large as
/// its largest cell.
pub fn contact_sheet(rows: &[Vec<RgbaImage>], scale: u32) -> RgbaImage {
    let scale = scale.max(1);
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let cell = rows
        .iter()
        .flatten()
        .map(|i| i.width().max(i.height()))
        .max()
        .unwrap_or(0)
        * scale;
    let width = columns * (cell + GAP) + GAP;
    let height = rows.len() as u32 * (cell + GAP) + GAP;
    let mut sheet = RgbaImage::from_pixel(width.max(1), height.max(1), Rgba(BACKGROUND));
    for (r, row) in rows.iter().enumerate() {
        for (c, image) in row.iter().enumerate() {
            let (x0, y0) = (GAP + c as u32 * (cell + GAP), GAP + r as u32 * (cell + GAP));
            for y in 0..image.height() * scale {
                for x in 0..image.width() * scale {
                    let checker = if ((x / CHECKER) + (y / CHECKER)).is_multiple_of(2) {
                        LIGHT
                    } else {
                        DARK
                    };
                    let p = image.get_pixel(x / scale, y / scale);
                    let a = p[3] as u32;
                    let mix = |i: usize| {
                        ((p[i] as u32 * a + checker[i] as u32 * (255 - a) + 127) / 255) as u8
                    };
                    sheet.put_pixel(x0 + x, y0 + y, Rgba([mix(0), mix(1), mix(2), 255]));
                }
            }
        }
    }
    sheet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_upscaled_onto_a_checkerboard() {
        let mut sprite = RgbaImage::new(2, 2);
        sprite.put_pixel(0, 0, Rgba([255, 0, 0, 255]));
        let rows = vec![vec![sprite.clone(), sprite.clone()], vec![sprite]];
        let sheet = contact_sheet(&rows, 4);
        assert_eq!(
            sheet.dimensions(),
            (2 * (8 + GAP) + GAP, 2 * (8 + GAP) + GAP)
        );
        // The opaque red pixel fills a 4×4 block at the first cell's corner.
        assert_eq!(sheet.get_pixel(GAP, GAP).0, [255, 0, 0, 255]);
        assert_eq!(sheet.get_pixel(GAP + 3, GAP + 3).0, [255, 0, 0, 255]);
        // Transparent pixels show the checkerboard; the missing cell stays background.
        assert_eq!(sheet.get_pixel(GAP + 5, GAP + 5).0, [250, 250, 250, 255]);
        let empty = (2 * GAP + 8 + 1, 2 * GAP + 8 + 1);
        assert_eq!(sheet.get_pixel(empty.0, empty.1).0, BACKGROUND);
    }

    #[test]
    fn prompts_the_model_knows_come_first_then_fallbacks() {
        let chosen = choose_prompts(
            |p| !p.contains("crown") && !p.contains("frog"),
            ["a b", "red brick texture tileable", "c d"],
            7,
        );
        assert_eq!(chosen.len(), 7);
        assert_eq!(chosen[0], SHEET_PROMPTS[0]);
        assert!(!chosen.iter().any(|p| p.contains("crown")));
        assert_eq!(chosen[6], "a b");
        assert_eq!(choose_prompts(|_| false, ["x"], 8), Vec::<String>::new());
    }
}
