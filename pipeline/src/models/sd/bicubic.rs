//! PyTorch's bicubic interpolation (`interpolate(mode="bicubic", align_corners=False)`) of
//! `(n, c, h, w)` tensors, as two matrix products: SwinIR's auxiliary upsampler and DINOv2's
//! position grid (Depth Anything) resize this way.

use candle_core::{Result, Tensor};

/// `x` `(n, c, h, w)` resized to `(n, c, oh, ow)` as PyTorch's bicubic interpolation resizes
/// it (A = −0.75, pixel centres aligned, edge pixels repeated): one matrix of weights per axis.
pub(crate) fn resize(x: &Tensor, (oh, ow): (usize, usize)) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    resize_in_steps(x, (oh, ow), (h as f32 / oh as f32, w as f32 / ow as f32))
}

/// `x` `(n, c, h, w)` resized to `(n, c, oh, ow)` as PyTorch's bicubic interpolation resizes it
/// when given a scale factor rather than a size: each output pixel `steps` (rows, columns)
/// input pixels on from the last, `1 / scale_factor` (as DINOv2 resizes its position grid).
pub(crate) fn resize_in_steps(
    x: &Tensor,
    (oh, ow): (usize, usize),
    (step_h, step_w): (f32, f32),
) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let weights = |from: usize, to: usize, step: f32| {
        Tensor::from_vec(cubic_weights(from, to, step), (to, from), x.device())?.to_dtype(x.dtype())
    };
    let across = x.broadcast_matmul(&weights(w, ow, step_w)?.t()?.contiguous()?)?;
    weights(h, oh, step_h)?.broadcast_matmul(&across)
}

/// The `(to, from)` weights by which each of `to` samples, `step` samples apart, takes the
/// `from` samples of one axis: four neighbours each, by Keys' cubic with A = −0.75, those past
/// an edge counted on the edge's sample.
fn cubic_weights(from: usize, to: usize, step: f32) -> Vec<f32> {
    const A: f32 = -0.75;
    let near = |t: f32| ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let far = |t: f32| ((A * t - 5.0 * A) * t + 8.0 * A) * t - 4.0 * A;
    let last = from.saturating_sub(1) as i64;
    let mut matrix = vec![0f32; to * from];
    for (o, row) in matrix.chunks_exact_mut(from.max(1)).enumerate() {
        let real = step * (o as f32 + 0.5) - 0.5;
        let start = real.floor();
        let t = real - start;
        for (k, weight) in [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
            .into_iter()
            .enumerate()
        {
            let at = (start as i64 - 1 + k as i64).clamp(0, last) as usize;
            row[at] += weight;
        }
    }
    matrix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizes_bicubically_as_pytorch_does() {
        // PyTorch 2.15's `interpolate(mode="bicubic", align_corners=False)` of the same inputs.
        let check =
            |input: &[f32], (h, w): (usize, usize), size: (usize, usize), expected: &[f32]| {
                let x = Tensor::from_slice(input, (1, 1, h, w), &candle_core::Device::Cpu).unwrap();
                let out = resize(&x, size)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                assert_eq!(out.len(), expected.len());
                for (i, (ours, theirs)) in out.iter().zip(expected).enumerate() {
                    assert!(
                        (ours - theirs).abs() < 2e-5,
                        "{size:?}[{i}]: {ours} ≠ {theirs}"
                    );
                }
            };
        check(
            &[0.0, 1.0, 4.0, 9.0, 16.0],
            (1, 5),
            (1, 8),
            &[
                -0.092834, 0.187561, 1.176514, 2.619385, 5.44165, 8.471436, 13.395081, 16.649841,
            ],
        );
        check(
            &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0],
            (3, 4),
            (7, 5),
            &[
                -0.498067, 0.173434, 1.062683, 1.951933, 2.623433, 0.370741, 1.042242, 1.931492,
                2.820743, 3.492243, 1.840126, 2.511626, 3.400875, 4.290125, 4.961625, 3.939251,
                4.610751, 5.5, 6.389251, 7.06075, 6.038375, 6.709875, 7.599123, 8.488375, 9.159873,
                7.507763, 8.179264, 9.068512, 9.957764, 10.629262, 8.376571, 9.048071, 9.937319,
                10.826571, 11.498069,
            ],
        );
        // The same size is the identity.
        let x = Tensor::from_slice(&[1f32, -2.0, 3.5], (1, 1, 1, 3), &candle_core::Device::Cpu)
            .unwrap();
        let same = resize(&x, (1, 3)).unwrap();
        assert_eq!(
            same.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [1.0, -2.0, 3.5]
        );
    }

    #[test]
    fn resizes_by_a_scale_factor_as_pytorch_does() {
        // PyTorch 2.15: `interpolate(x, scale_factor=(3.1 / 5, 2.1 / 5), mode="bicubic")` of a
        // 5×5 ramp (x[i, j] = i·5 + j, squared): 3×2, its samples 5 / 3.1 and 5 / 2.1 apart.
        let values: Vec<f32> = (0..25).map(|v| (v * v) as f32).collect();
        let x = Tensor::from_vec(values, (1, 1, 5, 5), &candle_core::Device::Cpu).unwrap();
        let out = resize_in_steps(&x, (3, 2), (5.0 / 3.1, 5.0 / 2.1))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let expected = [5.2847, 20.4709, 100.5507, 157.0713, 351.891, 451.8518];
        for (ours, theirs) in out.iter().zip(expected) {
            assert!((ours - theirs).abs() < 1e-3, "{out:?} ≠ {expected:?}");
        }
    }
}
