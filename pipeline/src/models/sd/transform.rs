//! Adapter changes that depend on the weight they change, merged as LyCORIS merges them: IA³
//! scales each output row (or input column) of the weight, diag-OFT rotates blocks of its
//! output rows, butterfly OFT (BOFT) rotates them in stages of ever wider strides, PEFT's OFT
//! rotates blocks of its input columns, GLoRA adds a low-rank change and the weight times a
//! low-rank matrix. All are computed in f32 on the device the weight loads to; OFT's small block
//! rotations are taken on the host in f64.

use candle_core::{DType, Device, Result, Tensor};

use super::delta::Delta;

/// A LyCORIS change that transforms the weight it applies to.
#[derive(Clone, Debug)]
pub enum Transform {
    /// IA³ (`weight`, `on_input`): `W ⊙ (1 + scale · w)`, `w` one factor per output row, or
    /// per input column when `on_input`.
    Ia3 {
        /// The factors: `(out,)` / `(in,)` for linear layers, `(1, n, 1, 1)` for convolutions.
        factors: Tensor,
        /// Whether they scale input columns rather than output rows.
        on_input: bool,
    },
    /// Diag-OFT (`oft_blocks`, `alpha`, `rescale`): the output rows in blocks of `size`, each
    /// block turned by `scale · (R − I) + I`, with `R = (I + Q)(I − Q)⁻¹` the Cayley transform
    /// of `Q = B − Bᵀ` (so `R` is a rotation), then each row multiplied by its `rescale`.
    Oft {
        /// `(blocks, size, size)`.
        blocks: Tensor,
        /// `alpha`: when positive, `Q` is shrunk to a norm of at most `alpha · rows`.
        constraint: f64,
        /// `(out, 1, …)`, when present.
        rescale: Option<Tensor>,
    },
    /// Butterfly OFT (a 4-D `oft_blocks`, `alpha`, `rescale`; LyCORIS 4's BOFT): `stages`
    /// rotations of the output rows, each as diag-OFT's but not transposed, `scale · (R − I) + I`
    /// over blocks of `size` rows gathered by a butterfly permutation: stage `i` pairs the rows
    /// `2ⁱ · size/2` apart. `Q`'s norm is bounded over all stages together.
    Boft {
        /// `(stages, blocks, size, size)`.
        blocks: Tensor,
        /// `alpha`: when positive, `Q` is shrunk to a norm of at most `alpha · rows`.
        constraint: f64,
        /// `(out, 1, …)`, when present.
        rescale: Option<Tensor>,
    },
    /// PEFT's OFT (`oft_R.weight`; ComfyUI calls it OFTv2): the input columns (a
    /// convolution's flattened with its kernel) in blocks of `size`, each block turned by the
    /// Cayley–Neumann rotation `R = I + 2Q + 2Q² + 2Q³ + Q⁴` (PEFT's default five terms) of
    /// the skew-symmetric `Q` whose upper triangle, row by row, is the block's row of
    /// `triangles`: `W + scale · (W·Rᵀ − W)`, PEFT's merge `W·Rᵀ` at scale 1. A single row
    /// turns every block (PEFT's `block_share`).
    PeftOft {
        /// `(blocks or 1, size·(size − 1)/2)`.
        triangles: Tensor,
    },
    /// GLoRA (`a1`, `a2`, `b1`, `b2`, `alpha`): `W + scale · alpha/rank · (b1·b2 + W·a1·a2)`,
    /// `W·a1·a2` taken over the weight's input axis.
    Glora {
        /// `(in, rank, 1…)`.
        a1: Tensor,
        /// `(rank, in, 1…)`.
        a2: Tensor,
        /// `b1 · b2`, as a LoRA's `up · down`.
        b: Delta,
        /// `alpha / rank`.
        per_rank: f64,
    },
}

impl Transform {
    /// Why the change cannot apply to a weight of shape `weight`, if it cannot.
    pub fn misfit(&self, weight: &[usize]) -> Option<String> {
        match self {
            Transform::Ia3 { factors, on_input } => {
                let axis = usize::from(*on_input);
                let wanted = weight.get(axis).copied().unwrap_or(0);
                (factors.elem_count() != wanted
                    || factors.dims().iter().filter(|&&d| d != 1).count() > 1)
                    .then(|| {
                        format!(
                            "IA³ factors {:?} do not match the {} {} of the weight {weight:?}",
                            factors.dims(),
                            wanted,
                            if *on_input {
                                "input columns"
                            } else {
                                "output rows"
                            }
                        )
                    })
            }
            Transform::Oft {
                blocks, rescale, ..
            } => {
                let rows = weight.first().copied().unwrap_or(0);
                let square = blocks.rank() == 3 && blocks.dims()[1] == blocks.dims()[2];
                let covered = blocks.dims().iter().take(2).product::<usize>();
                if !square || covered != rows {
                    return Some(format!(
                        "OFT blocks {:?} do not split the {rows} output rows of the weight {weight:?} into square blocks",
                        blocks.dims()
                    ));
                }
                misfit_rescale(rescale.as_ref(), rows)
            }
            Transform::Boft {
                blocks, rescale, ..
            } => {
                let rows = weight.first().copied().unwrap_or(0);
                let fits = match blocks.dims() {
                    &[stages, count, size, side] => {
                        size == side
                            && size >= 2
                            && size % 2 == 0
                            && count * size == rows
                            && stages >= 1
                            && (0..stages).all(|i| rows % (size << i) == 0)
                    }
                    _ => false,
                };
                if !fits {
                    return Some(format!(
                        "BOFT blocks {:?} do not turn the {rows} output rows of the weight {weight:?} in butterfly stages of square blocks",
                        blocks.dims()
                    ));
                }
                misfit_rescale(rescale.as_ref(), rows)
            }
            Transform::PeftOft { triangles } => {
                let inputs = weight.iter().skip(1).product::<usize>();
                let fits = match (triangles.dims(), triangle_side(triangles)) {
                    (&[rows, _], Some(size)) => {
                        weight.len() >= 2
                            && inputs % size == 0
                            && [1, inputs / size].contains(&rows)
                    }
                    _ => false,
                };
                (!fits).then(|| {
                    format!(
                        "PEFT OFT rotations {:?} do not split the {inputs} input columns of the weight {weight:?} into blocks",
                        triangles.dims()
                    )
                })
            }
            Transform::Glora { a1, a2, b, .. } => {
                let inputs = weight.get(1).copied().unwrap_or(0);
                let (a1, a2) = (a1.dims(), a2.dims());
                let rank = a2.first().copied().unwrap_or(0);
                let (rows, count) = b.size();
                let fits = a1.first() == Some(&inputs)
                    && a1.get(1) == Some(&rank)
                    && a2.get(1) == Some(&inputs)
                    && a1.iter().skip(2).chain(a2.iter().skip(2)).all(|&d| d == 1)
                    && Some(&rows) == weight.first()
                    && count == weight.iter().product::<usize>();
                (!fits).then(|| {
                    format!(
                        "GLoRA a1 {a1:?}, a2 {a2:?} and b1·b2 ({rows} rows, {count} values) do not fit the weight {weight:?}"
                    )
                })
            }
        }
    }

    /// `weight` (f32) transformed at `scale`.
    pub fn apply(&self, weight: &Tensor, scale: f64) -> Result<Tensor> {
        let device = weight.device();
        let f32_on = |t: &Tensor| t.to_device(device)?.to_dtype(DType::F32);
        let dims = weight.dims().to_vec();
        match self {
            Transform::Ia3 { factors, on_input } => {
                let mut shape = vec![1; dims.len()];
                shape[usize::from(*on_input)] = factors.elem_count();
                let factors = (f32_on(factors)?.reshape(shape)? * scale)? + 1.0;
                weight.broadcast_mul(&factors?)
            }
            Transform::Oft {
                blocks,
                constraint,
                rescale,
            } => {
                let (count, size) = (blocks.dim(0)?, blocks.dim(1)?);
                let rotations = cayley(blocks, *constraint * dims[0] as f64, scale, device)?;
                // W'ₖ = Mₖᵀ · Wₖ over each block k of `size` rows.
                let turned = rotations
                    .transpose(1, 2)?
                    .contiguous()?
                    .matmul(&weight.reshape((count, size, ()))?.contiguous()?)?
                    .reshape(dims.as_slice())?;
                rescaled(turned, rescale.as_ref())
            }
            Transform::Boft {
                blocks,
                constraint,
                rescale,
            } => {
                let (stages, count, size, _) = blocks.dims4()?;
                let rows = dims[0];
                let rotations = cayley(
                    &blocks.reshape((stages * count, size, size))?,
                    *constraint * rows as f64,
                    scale,
                    device,
                )?;
                let mut turned = weight.reshape((rows, ()))?;
                for stage in 0..stages {
                    let (order, back) = butterfly(rows, (size / 2) << stage, device)?;
                    let gathered = turned.index_select(&order, 0)?.reshape((count, size, ()))?;
                    turned = rotations
                        .narrow(0, stage * count, count)?
                        .matmul(&gathered)?
                        .reshape((rows, ()))?
                        .index_select(&back, 0)?;
                }
                rescaled(turned.reshape(dims.as_slice())?, rescale.as_ref())
            }
            Transform::PeftOft { triangles } => {
                let size = triangle_side(triangles).ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "PEFT OFT rows of {:?} values are no block's upper triangle",
                        triangles.dims()
                    ))
                })?;
                let (rows, inputs) = (dims[0], weight.elem_count() / dims[0]);
                let blocks = inputs / size;
                let turns = cayley_neumann(triangles, size, scale, device)?;
                let turns = if turns.dim(0)? == blocks {
                    turns
                } else {
                    turns.broadcast_as((blocks, size, size))?.contiguous()?
                };
                // (W·Mₖ) over each block k of `size` input columns, Mₖ = I + scale·(Rₖ − I)ᵀ.
                weight
                    .reshape((rows, blocks, size))?
                    .transpose(0, 1)?
                    .contiguous()?
                    .matmul(&turns)?
                    .transpose(0, 1)?
                    .reshape(dims.as_slice())
            }
            Transform::Glora {
                a1,
                a2,
                b,
                per_rank,
            } => {
                let inputs = dims[1];
                let (a1, a2) = (
                    f32_on(a1)?.reshape((inputs, ()))?,
                    f32_on(a2)?.reshape(((), inputs))?,
                );
                // W·a1·a2 over the input axis: the weight with its input axis last.
                let last = weight.rank() - 1;
                let moved = if last > 1 {
                    weight.transpose(1, last)?.contiguous()?
                } else {
                    weight.clone()
                };
                let moved_dims = moved.dims().to_vec();
                let product = moved
                    .reshape(((), inputs))?
                    .matmul(&a1)?
                    .matmul(&a2)?
                    .reshape(moved_dims.as_slice())?;
                let product = if last > 1 {
                    product.transpose(1, last)?
                } else {
                    product
                };
                let change = (b.value(device, &dims)? + product)?;
                weight + (change * (scale * per_rank))?
            }
        }
    }
}

/// Why `rescale` is not one factor per output row, if it is not.
fn misfit_rescale(rescale: Option<&Tensor>, rows: usize) -> Option<String> {
    rescale.filter(|r| r.elem_count() != rows).map(|r| {
        format!(
            "OFT rescale {:?} is not one per output row ({rows})",
            r.dims()
        )
    })
}

/// `turned` with each output row multiplied by its `rescale`, when there is one.
fn rescaled(turned: Tensor, rescale: Option<&Tensor>) -> Result<Tensor> {
    let Some(rescale) = rescale else {
        return Ok(turned);
    };
    let mut shape = vec![1; turned.rank()];
    shape[0] = turned.dim(0)?;
    let rescale = rescale
        .to_device(turned.device())?
        .to_dtype(DType::F32)?
        .reshape(shape)?;
    turned.broadcast_mul(&rescale)
}

/// A butterfly stage's row order and its inverse, as index tensors on `device`: within each
/// run of `2·stride` rows, row `c` of the first half is followed by row `c` of the second
/// (so consecutive rows pair up rows `stride` apart), as LyCORIS regroups them.
fn butterfly(rows: usize, stride: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let mut order = vec![0u32; rows];
    let mut back = vec![0u32; rows];
    for (p, slot) in order.iter_mut().enumerate() {
        let (run, within) = (p / (2 * stride), p % (2 * stride));
        let row = run * 2 * stride + (within % 2) * stride + within / 2;
        *slot = row as u32;
        back[row] = p as u32;
    }
    Ok((
        Tensor::from_vec(order, rows, device)?,
        Tensor::from_vec(back, rows, device)?,
    ))
}

/// `scale · (R − I) + I` for each block, `R = (I + Q)(I − Q)⁻¹`, `Q = B − Bᵀ` shrunk to a
/// Frobenius norm of `limit` when `limit` is positive and it is larger (LyCORIS adds 1e-8 to
/// the norm); `(blocks, size, size)` f32 on `device`.
fn cayley(blocks: &Tensor, limit: f64, scale: f64, device: &Device) -> Result<Tensor> {
    let (count, size, _) = blocks.dims3()?;
    let b: Vec<f64> = blocks.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let at = |k: usize, i: usize, j: usize| k * size * size + i * size + j;
    let mut q = vec![0.0; b.len()];
    for k in 0..count {
        for i in 0..size {
            for j in 0..size {
                q[at(k, i, j)] = b[at(k, i, j)] - b[at(k, j, i)];
            }
        }
    }
    if limit > 0.0 {
        let norm = q.iter().map(|v| v * v).sum::<f64>().sqrt() + 1e-8;
        if norm > limit {
            q.iter_mut().for_each(|v| *v *= limit / norm);
        }
    }
    let mut out = Vec::with_capacity(b.len());
    for k in 0..count {
        let block = &q[at(k, 0, 0)..at(k + 1, 0, 0)];
        let identity = |i: usize, j: usize| if i == j { 1.0 } else { 0.0 };
        let minus: Vec<f64> = (0..size * size)
            .map(|n| identity(n / size, n % size) - block[n])
            .collect();
        let inverse = invert(&minus, size).ok_or_else(|| {
            candle_core::Error::Msg("an OFT block's I − Q cannot be inverted".into())
        })?;
        for i in 0..size {
            for j in 0..size {
                // (I + Q)ᵢ· · inverse·ⱼ
                let r: f64 = (0..size)
                    .map(|m| (identity(i, m) + block[i * size + m]) * inverse[m * size + j])
                    .sum();
                out.push((scale * (r - identity(i, j)) + identity(i, j)) as f32);
            }
        }
    }
    Tensor::from_vec(out, (count, size, size), device)
}

/// The side of the square blocks whose upper triangles (without the diagonal) are the rows of
/// `triangles`: `size · (size − 1) / 2` values each, `size` at least 2.
fn triangle_side(triangles: &Tensor) -> Option<usize> {
    let values = *triangles.dims().get(1)?;
    let size = (1..=values + 1).find(|size| size * (size - 1) / 2 >= values)?;
    (size >= 2 && size * (size - 1) / 2 == values).then_some(size)
}

/// `I + scale · (R − I)ᵀ` for each row of `triangles`, `R = I + 2Q + 2Q² + 2Q³ + Q⁴` with `Q`
/// the skew-symmetric `size`×`size` matrix whose upper triangle, row by row, the row holds;
/// `(rows, size, size)` f32 on `device`.
fn cayley_neumann(triangles: &Tensor, size: usize, scale: f64, device: &Device) -> Result<Tensor> {
    let values: Vec<f64> = triangles.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let per_row = size * (size - 1) / 2;
    let multiply = |a: &[f64], b: &[f64]| -> Vec<f64> {
        (0..size * size)
            .map(|n| {
                let (i, j) = (n / size, n % size);
                (0..size).map(|m| a[i * size + m] * b[m * size + j]).sum()
            })
            .collect()
    };
    let mut out = Vec::with_capacity(values.len() / per_row.max(1) * size * size);
    for row in values.chunks_exact(per_row) {
        let mut q = vec![0.0; size * size];
        let mut entries = row.iter();
        for i in 0..size {
            for j in i + 1..size {
                let v = entries.next().copied().unwrap_or(0.0);
                q[i * size + j] = v;
                q[j * size + i] = -v;
            }
        }
        let q2 = multiply(&q, &q);
        let q3 = multiply(&q2, &q);
        let q4 = multiply(&q3, &q);
        for k in 0..size {
            for c in 0..size {
                // (R − I)ᵀ at (k, c) is (R − I) at (c, k).
                let n = c * size + k;
                let turn = 2.0 * (q[n] + q2[n] + q3[n]) + q4[n];
                out.push((f64::from(u8::from(k == c)) + scale * turn) as f32);
            }
        }
    }
    let rows = out.len() / (size * size);
    Tensor::from_vec(out, (rows, size, size), device)
}

/// The inverse of the row-major `size`×`size` matrix `m` (Gauss–Jordan with partial
/// pivoting), or `None` when it is singular.
fn invert(m: &[f64], size: usize) -> Option<Vec<f64>> {
    let width = 2 * size;
    let mut rows: Vec<f64> = (0..size)
        .flat_map(|i| {
            (0..width).map(move |j| match j < size {
                true => m[i * size + j],
                false => f64::from(u8::from(j - size == i)),
            })
        })
        .collect();
    for col in 0..size {
        let pivot = (col..size).max_by(|&a, &b| {
            rows[a * width + col]
                .abs()
                .total_cmp(&rows[b * width + col].abs())
        })?;
        if rows[pivot * width + col].abs() < 1e-12 {
            return None;
        }
        for j in 0..width {
            rows.swap(col * width + j, pivot * width + j);
        }
        let lead = rows[col * width + col];
        for j in 0..width {
            rows[col * width + j] /= lead;
        }
        for i in (0..size).filter(|&i| i != col) {
            let factor = rows[i * width + col];
            for j in 0..width {
                rows[i * width + j] -= factor * rows[col * width + j];
            }
        }
    }
    Some(
        (0..size)
            .flat_map(|i| (size..width).map(move |j| (i, j)))
            .map(|(i, j)| rows[i * width + j])
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn ia3_scales_rows_or_columns() {
        let dev = Device::Cpu;
        let weight = Tensor::new(&[[1f32, 2., 3.], [4., 5., 6.]], &dev).unwrap();
        let rows = Transform::Ia3 {
            factors: Tensor::new(&[1f32, -1.], &dev).unwrap(),
            on_input: false,
        };
        assert_eq!(
            values(&rows.apply(&weight, 0.5).unwrap()),
            [1.5, 3., 4.5, 2., 2.5, 3.]
        );
        let columns = Transform::Ia3 {
            factors: Tensor::new(&[0f32, 1., 2.], &dev).unwrap(),
            on_input: true,
        };
        assert_eq!(
            values(&columns.apply(&weight, 1.0).unwrap()),
            [1., 4., 9., 4., 10., 18.]
        );
        assert!(rows.misfit(&[2, 3]).is_none() && columns.misfit(&[2, 3]).is_none());
        assert!(rows.misfit(&[3, 2]).unwrap().contains("output rows"));
    }

    #[test]
    fn oft_rotates_blocks_of_rows_and_keeps_their_norms() {
        let dev = Device::Cpu;
        let blocks = Tensor::new(&[[[0f32, 0.3], [-0.1, 0.]], [[0., 0.], [0., 0.]]], &dev).unwrap();
        let weight = Tensor::new(&[[1f32, 2.], [3., 4.], [5., 6.], [7., 8.]], &dev).unwrap();
        let oft = Transform::Oft {
            blocks,
            constraint: 0.0,
            rescale: None,
        };
        assert!(oft.misfit(&[4, 2]).is_none());
        assert!(oft.misfit(&[6, 2]).is_some());
        let turned = values(&oft.apply(&weight, 1.0).unwrap());
        // A rotation keeps each column's norm within a block; a zero block changes nothing.
        let norm = |a: f32, b: f32| (a * a + b * b).sqrt();
        assert!(
            (norm(turned[0], turned[2]) - norm(1., 3.)).abs() < 1e-5,
            "{turned:?}"
        );
        assert!(
            (norm(turned[1], turned[3]) - norm(2., 4.)).abs() < 1e-5,
            "{turned:?}"
        );
        assert_ne!(turned[..4], [1., 2., 3., 4.]);
        assert_eq!(turned[4..], [5., 6., 7., 8.]);
        // Scale 0 leaves the weight as it was.
        assert_eq!(
            values(&oft.apply(&weight, 0.0).unwrap()),
            [1., 2., 3., 4., 5., 6., 7., 8.]
        );
    }

    #[test]
    fn boft_turns_rows_in_butterfly_stages() {
        let dev = Device::Cpu;
        // 8 rows in blocks of 2, three stages pairing rows 1, 2 and 4 apart.
        let weight = Tensor::randn(0f32, 1.0, (8, 3), &dev).unwrap();
        let norms = |t: &Tensor| values(&t.sqr().unwrap().sum(0).unwrap());
        let random = Tensor::randn(0f32, 0.5, (3, 4, 2, 2), &dev).unwrap();
        let boft = |blocks: Tensor| Transform::Boft {
            blocks,
            constraint: 0.0,
            rescale: None,
        };
        let all = boft(random.clone());
        assert!(all.misfit(&[8, 3]).is_none());
        assert!(all.misfit(&[6, 3]).unwrap().contains("butterfly"));
        // Rotations all: each column keeps its norm.
        let turned = all.apply(&weight, 1.0).unwrap();
        for (a, b) in norms(&turned).iter().zip(norms(&weight)) {
            assert!((a - b).abs() < 1e-4, "{a} {b}");
        }
        assert_eq!(values(&all.apply(&weight, 0.0).unwrap()), values(&weight));
        // The last stage alone mixes rows 4 apart (0 with 4), no neighbours.
        let last = Tensor::cat(
            &[
                Tensor::zeros((2, 4, 2, 2), DType::F32, &dev).unwrap(),
                random.narrow(0, 2, 1).unwrap(),
            ],
            0,
        )
        .unwrap();
        let turned = boft(last).apply(&weight, 1.0).unwrap();
        let row = |t: &Tensor, i: usize| values(&t.get(i).unwrap());
        let pair = |t: &Tensor, i: usize, j: usize| {
            let (a, b) = (row(t, i), row(t, j));
            a.iter()
                .zip(&b)
                .map(|(x, y)| x * x + y * y)
                .collect::<Vec<f32>>()
        };
        assert_ne!(row(&turned, 0), row(&weight, 0));
        for (a, b) in pair(&turned, 0, 4).iter().zip(pair(&weight, 0, 4)) {
            assert!((a - b).abs() < 1e-4, "rows 0 and 4 turn together: {a} {b}");
        }
    }

    #[test]
    fn peft_oft_turns_blocks_of_input_columns() {
        let dev = Device::Cpu;
        // Q = [[0, ½], [−½, 0]]: R = I + 2Q + 2Q² + 2Q³ + Q⁴ = [[0.5625, 0.75], [−0.75, 0.5625]].
        let shared = Transform::PeftOft {
            triangles: Tensor::new(&[[0.5f32]], &dev).unwrap(),
        };
        let weight = Tensor::new(&[[1f32, 2., 3., 4.]], &dev).unwrap();
        assert!(shared.misfit(&[1, 4]).is_none());
        // W·Rᵀ, the one rotation turning both blocks.
        assert_eq!(
            values(&shared.apply(&weight, 1.0).unwrap()),
            [2.0625, 0.375, 4.6875, 0.0]
        );
        assert_eq!(
            values(&shared.apply(&weight, 0.0).unwrap()),
            [1., 2., 3., 4.]
        );
        // One rotation per block: the second is zero, so its columns stay; a convolution's
        // columns are its input channels with their kernel.
        let each = Transform::PeftOft {
            triangles: Tensor::new(&[[0.5f32], [0.]], &dev).unwrap(),
        };
        let kernel = weight.reshape((1, 1, 2, 2)).unwrap();
        assert!(each.misfit(&[1, 1, 2, 2]).is_none());
        assert_eq!(
            values(&each.apply(&kernel, 0.5).unwrap()),
            [1.53125, 1.1875, 3., 4.]
        );
        let three = Transform::PeftOft {
            triangles: Tensor::zeros((3, 1), DType::F32, &dev).unwrap(),
        };
        assert!(three.misfit(&[1, 4]).unwrap().contains("input columns"));
        let ragged = Transform::PeftOft {
            triangles: Tensor::zeros((1, 2), DType::F32, &dev).unwrap(),
        };
        assert!(ragged.misfit(&[1, 4]).is_some());
        assert_eq!(
            triangle_side(&Tensor::zeros((1, 6), DType::F32, &dev).unwrap()),
            Some(4)
        );
    }

    proptest! {
        /// The Cayley transform of any skew-symmetric block is orthogonal: Rᵀ·R = I.
        #[test]
        fn cayley_blocks_are_rotations(
            entries in prop::collection::vec(-2.0f32..2.0, 9),
            limit in prop::sample::select(vec![0.0f64, 0.5]),
        ) {
            let dev = Device::Cpu;
            let blocks = Tensor::from_vec(entries, (1, 3, 3), &dev).unwrap();
            let r = cayley(&blocks, limit, 1.0, &dev).unwrap().squeeze(0).unwrap();
            let product = values(&r.t().unwrap().matmul(&r).unwrap());
            for (n, value) in product.iter().enumerate() {
                let wanted = if n % 4 == 0 { 1.0 } else { 0.0 };
                prop_assert!((value - wanted).abs() < 1e-4, "{:?}", product);
            }
        }

        /// Gauss–Jordan's inverse times the matrix is the identity.
        #[test]
        fn inverses_multiply_to_the_identity(entries in prop::collection::vec(-3.0f64..3.0, 16)) {
            let mut m = entries;
            // Diagonally dominant, hence invertible.
            for i in 0..4 { m[i * 5] += 13.0; }
            let inverse = invert(&m, 4).unwrap();
            for i in 0..4 {
                for j in 0..4 {
                    let v: f64 = (0..4).map(|k| m[i * 4 + k] * inverse[k * 4 + j]).sum();
                    prop_assert!((v - f64::from(u8::from(i == j))).abs() < 1e-9);
                }
            }
        }
    }
}
