//! Scribbles — white strokes on black, what scribble ControlNets take — made of a picture as
//! A1111's scribble preprocessors make them: [`from_soft_edges`] thins HED's or PiDiNet's soft
//! edges to strokes (`scribble_hed`, `scribble_pidinet`: `controlnet_aux`'s `scribble=True`),
//! and [`xdog`] needs no network (`scribble_xdog`: a difference of Gaussians).

use image::{GrayImage, Luma, RgbImage};

use super::gaussian::{self, BYTE_RADII, FLOAT_RADII};

/// The σ of both blurs that make strokes of soft edges.
const STROKE_SIGMA: f64 = 3.0;
/// How strong a ridge of the blurred soft edges must be to make a stroke.
const RIDGE: f32 = 127.0;
/// The blurred strokes above this are white.
const STROKE: f32 = 4.0;
/// `scribble_xdog`'s threshold on twice the difference of Gaussians (A1111's default).
const XDOG_THRESHOLD: i32 = 32;

/// The four directions a ridge runs across: a pixel is on a ridge where it is at least its two
/// neighbours along one of them (row, column, both diagonals).
const ACROSS: [(isize, isize); 4] = [(0, 1), (1, 0), (1, 1), (1, -1)];

/// Strokes of a soft-edge map (white where edges are, 0–255), as `controlnet_aux`'s
/// `scribble=True` makes them: the map blurred (σ 3) and kept where it is a ridge — at least
/// its neighbours along a row, a column or a diagonal (OpenCV's dilation, the border left out)
/// — above 127, then those strokes blurred as bytes (σ 3) and all above 4 made white.
pub fn from_soft_edges(edges: &GrayImage) -> GrayImage {
    let (w, h) = (edges.width() as usize, edges.height() as usize);
    let plane: Vec<f32> = edges.pixels().map(|p| f32::from(p[0])).collect();
    let smooth = gaussian::blur(&plane, w, h, &gaussian::kernel(STROKE_SIGMA, FLOAT_RADII));
    let at = |x: isize, y: isize| {
        ((0..w as isize).contains(&x) && (0..h as isize).contains(&y))
            .then(|| smooth[y as usize * w + x as usize])
    };
    let ridges: Vec<f32> = (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as isize, (i / w) as isize);
            let value = smooth[i];
            let ridge = ACROSS.iter().any(|&(dy, dx)| {
                [at(x + dx, y + dy), at(x - dx, y - dy)]
                    .into_iter()
                    .flatten()
                    .all(|neighbour| neighbour <= value)
            });
            if ridge && value > RIDGE { 255.0 } else { 0.0 }
        })
        .collect();
    let strokes = gaussian::blur(&ridges, w, h, &gaussian::kernel(STROKE_SIGMA, BYTE_RADII));
    // OpenCV blurs bytes into bytes: rounded, then compared.
    let bytes = strokes
        .iter()
        .map(|&v| if v.round() > STROKE { 255 } else { 0 })
        .collect();
    GrayImage::from_raw(edges.width(), edges.height(), bytes)
        .unwrap_or_else(|| GrayImage::new(edges.width(), edges.height()))
}

/// A1111's `scribble_xdog` of `picture`: each pixel's darkest channel of the picture blurred at
/// σ 5 less it blurred at σ 0.5, white where twice that is over 32. (A1111 doubles it as a
/// byte, which wraps past 127 and drops the very strongest lines; here it does not wrap.)
pub fn xdog(picture: &RgbImage) -> GrayImage {
    let (w, h) = (picture.width() as usize, picture.height() as usize);
    let (fine, coarse) = (
        gaussian::kernel(0.5, FLOAT_RADII),
        gaussian::kernel(5.0, FLOAT_RADII),
    );
    let mut least = vec![f32::INFINITY; w * h];
    for channel in 0..3 {
        let plane: Vec<f32> = picture.pixels().map(|p| f32::from(p[channel])).collect();
        let sharp = gaussian::blur(&plane, w, h, &fine);
        let soft = gaussian::blur(&plane, w, h, &coarse);
        for ((least, s), f) in least.iter_mut().zip(&soft).zip(&sharp) {
            *least = least.min(s - f);
        }
    }
    GrayImage::from_fn(picture.width(), picture.height(), |x, y| {
        // `dog = uint8(clip(255 - least))`, truncated; white where 2·(255 − dog) > 32.
        let dog = (255.0 - least[y as usize * w + x as usize]).clamp(0.0, 255.0) as i32;
        Luma([if 2 * (255 - dog) > XDOG_THRESHOLD {
            255
        } else {
            0
        }])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A soft vertical line becomes one stroke around it. (Along the line every pixel equals
    /// its neighbours, so all of it above 127 counts as ridge, as OpenCV's dilation has it.)
    #[test]
    fn a_soft_line_becomes_one_stroke() {
        let edges = GrayImage::from_fn(32, 32, |x, _| {
            let d = (x as f32 - 16.0).abs();
            Luma([(250.0 * (-d * d / 8.0).exp()) as u8])
        });
        let strokes = from_soft_edges(&edges);
        let row: Vec<u8> = (0..32).map(|x| strokes.get_pixel(x, 10)[0]).collect();
        let white: Vec<usize> = (0..32).filter(|&x| row[x] == 255).collect();
        assert!(white.contains(&16) && white.len() <= 17, "{row:?}");
        assert!(
            white.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "one stroke: {row:?}"
        );
        assert!(
            row[..5].iter().chain(&row[28..]).all(|&v| v == 0),
            "{row:?}"
        );
        // A faint line (its ridge under 127) makes no stroke.
        let faint = GrayImage::from_fn(32, 32, |x, _| Luma([if x == 16 { 100 } else { 0 }]));
        assert!(from_soft_edges(&faint).pixels().all(|p| p[0] == 0));
    }

    /// A dark line on white comes out of `xdog` white on black; flat colour does not.
    #[test]
    fn xdog_draws_dark_lines() {
        let picture = RgbImage::from_fn(48, 48, |x, _| {
            image::Rgb(if x == 24 { [20; 3] } else { [230; 3] })
        });
        let lines = xdog(&picture);
        assert_eq!(lines.get_pixel(24, 24)[0], 255);
        assert_eq!(lines.get_pixel(8, 24)[0], 0);
    }
}
