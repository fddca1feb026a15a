//! A weight's change as adapter files store it: LoRA's low-rank `up · down`, LyCORIS's whole
//! differences (`diff`), and LyCORIS's LoHa (a Hadamard product of two low-rank factors) and
//! LoKr (a Kronecker product), whose
//! factors may be whole, products `a · b`, or Tucker decompositions (3×3 convolutions). The
//! change is rebuilt in f32 on the device the weights load to, in the weight's own shape, the
//! way LyCORIS and ComfyUI merge these files. DoRA files add a [`Magnitude`] per weight.

use candle_core::{DType, Device, Result, Tensor};

/// One factor of a LoHa or LoKr change.
#[derive(Clone, Debug)]
pub enum Factor {
    /// Stored whole (`lokr_w1`, `lokr_w2`).
    Whole(Tensor),
    /// `a · b`, `a` `(rows, rank)` and `b` `(rank, columns)` (`hada_w1_a`, `hada_w1_b`, …).
    Product {
        /// The left factor.
        a: Tensor,
        /// The right factor; its first dimension is the rank.
        b: Tensor,
    },
    /// `Σᵢⱼ t[i, j, k, l] · b[j, r] · a[i, p]` → `(p, r, k, l)`: a convolution kernel from a
    /// core `t` `(rank, rank, k, l)` and `a` `(rank, out)`, `b` `(rank, in)` (`hada_t1`,
    /// `lokr_t2`).
    Tucker {
        /// The core.
        t: Tensor,
        /// The output-channel factor.
        a: Tensor,
        /// The input-channel factor; its first dimension is the rank.
        b: Tensor,
    },
}

impl Factor {
    /// Its dimensions, without computing it.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Factor::Whole(t) => t.dims().to_vec(),
            Factor::Product { a, b } => {
                vec![a.dims()[0], b.dims()[1..].iter().product()]
            }
            Factor::Tucker { t, a, b } => {
                let mut dims = vec![a.dims()[1], b.dims()[1]];
                dims.extend_from_slice(&t.dims()[2..]);
                dims
            }
        }
    }

    /// The rank of a decomposed factor (`None` for a whole one).
    pub fn rank(&self) -> Option<usize> {
        match self {
            Factor::Whole(_) => None,
            Factor::Product { b, .. } | Factor::Tucker { b, .. } => b.dims().first().copied(),
        }
    }

    /// Whether its tensors have the ranks the products need.
    pub fn well_formed(&self) -> bool {
        match self {
            Factor::Whole(t) => t.rank() >= 2,
            Factor::Product { a, b } => {
                a.rank() == 2 && b.rank() >= 2 && a.dims()[1] == b.dims()[0]
            }
            Factor::Tucker { t, a, b } => {
                t.rank() == 4
                    && a.rank() == 2
                    && b.rank() == 2
                    && t.dims()[0] == a.dims()[0]
                    && t.dims()[1] == b.dims()[0]
            }
        }
    }

    /// Its value in f32 on `device`, shaped as [`Factor::dims`] says.
    fn value(&self, device: &Device) -> Result<Tensor> {
        let f32_on = |t: &Tensor| t.to_device(device)?.to_dtype(DType::F32);
        match self {
            Factor::Whole(t) => f32_on(t),
            Factor::Product { a, b } => f32_on(a)?.matmul(&f32_on(b)?.flatten_from(1)?),
            Factor::Tucker { t, a, b } => {
                let (t, a, b) = (f32_on(t)?, f32_on(a)?, f32_on(b)?);
                let (r1, r2, kh, kw) = t.dims4()?;
                let (out, inputs) = (a.dim(1)?, b.dim(1)?);
                // Contract j with b: (kh·kw·r1, r2)·(r2, in) → (kh·kw, r1, in).
                let tb = t
                    .permute((2, 3, 0, 1))?
                    .reshape((kh * kw * r1, r2))?
                    .matmul(&b)?
                    .reshape((kh * kw, r1, inputs))?;
                // Then i with a: (kh·kw·in, r1)·(r1, out) → (out, in, kh, kw).
                tb.transpose(1, 2)?
                    .reshape((kh * kw * inputs, r1))?
                    .matmul(&a)?
                    .reshape((kh, kw, inputs, out))?
                    .permute((3, 2, 0, 1))?
                    .contiguous()
            }
        }
    }
}

/// One weight's change at scale 1.
#[derive(Clone, Debug)]
pub enum Delta {
    /// LoRA: `up · down` (`down` `(rank, in, …)`, `up` `(out, rank, …)`), or with a Tucker
    /// core `mid` (LyCORIS's CP-decomposed LoCon) the 1×1 `down` and `up` around it, a
    /// convolution kernel `Σᵢⱼ up[p, i] · mid[i, j, k, l] · down[j, r]`.
    LowRank {
        /// `lora_down` / `lora_A`.
        down: Tensor,
        /// `lora_up` / `lora_B`.
        up: Tensor,
        /// `lora_mid` `(rank, rank, k, l)`.
        mid: Option<Tensor>,
    },
    /// LoHa: `w1 ⊙ w2`.
    Hadamard(Factor, Factor),
    /// LoKr: `w1 ⊗ w2` (a 4-D `w2` is a convolution kernel).
    Kronecker(Factor, Factor),
    /// LyCORIS full: the whole difference (`diff`, a bias's `diff_b`).
    Whole(Tensor),
}

impl Delta {
    /// Its output rows and element count, without computing it.
    pub fn size(&self) -> (usize, usize) {
        let count = |dims: &[usize]| dims.iter().product::<usize>();
        match self {
            Delta::LowRank { down, up, mid } => {
                let rank = down.dims().first().copied().unwrap_or(0).max(1);
                let rows = up.dims().first().copied().unwrap_or(0);
                let up_rank = up.dims().get(1).copied().unwrap_or(0).max(1);
                // The core's kernel positions.
                let kernel = mid
                    .as_ref()
                    .map_or(1, |mid| mid.elem_count() / (rank * up_rank));
                (
                    rows,
                    up.elem_count() / up_rank * (down.elem_count() / rank) * kernel,
                )
            }
            Delta::Hadamard(w1, w2) => {
                let (d1, d2) = (w1.dims(), w2.dims());
                if d1[0] != d2[0] || count(&d1) != count(&d2) {
                    return (0, 0);
                }
                (d1[0], count(&d1))
            }
            Delta::Kronecker(w1, w2) => {
                let (d1, d2) = (w1.dims(), w2.dims());
                (d1[0] * d2[0], count(&d1) * count(&d2))
            }
            Delta::Whole(diff) => (diff.dims().first().copied().unwrap_or(0), diff.elem_count()),
        }
    }

    /// Its value in f32 on `device`, in the shape `dims` of the weight it changes.
    pub fn value(&self, device: &Device, dims: &[usize]) -> Result<Tensor> {
        match self {
            Delta::LowRank {
                down,
                up,
                mid: None,
            } => {
                let f32_on = |t: &Tensor| t.to_device(device)?.to_dtype(DType::F32);
                f32_on(up)?
                    .flatten_from(1)?
                    .matmul(&f32_on(down)?.flatten_from(1)?)?
                    .reshape(dims)
            }
            Delta::LowRank {
                down,
                up,
                mid: Some(mid),
            } => Factor::Tucker {
                t: mid.clone(),
                a: up.flatten_from(1)?.t()?.contiguous()?,
                b: down.flatten_from(1)?,
            }
            .value(device)?
            .reshape(dims),
            Delta::Hadamard(w1, w2) => {
                w1.value(device)?.reshape(dims)? * w2.value(device)?.reshape(dims)?
            }
            Delta::Kronecker(w1, w2) => {
                let w1 = w1.value(device)?.flatten_from(1)?;
                let w2 = w2.value(device)?.flatten_from(1)?;
                let ((a, b), (c, e)) = (w1.dims2()?, w2.dims2()?);
                w1.reshape((a, 1, b, 1))?
                    .broadcast_mul(&w2.reshape((1, c, 1, e))?)?
                    .reshape(dims)
            }
            Delta::Whole(diff) => diff.to_device(device)?.to_dtype(DType::F32)?.reshape(dims),
        }
    }
}

/// DoRA's magnitudes: the changed weight is rescaled so that each input column (LyCORIS's
/// default, shape `(1, in, …)`) or each output row (`(out, 1, …)`, or PEFT's `(out,)`) has
/// this norm.
#[derive(Clone, Debug)]
pub struct Magnitude {
    values: Tensor,
    output_axis: bool,
    scale_inside: bool,
}

impl Magnitude {
    /// The magnitudes `values` of a weight of shape `weight`, or why they do not fit it;
    /// `scale_inside`: the file's scale goes inside the norm, as PEFT applies its
    /// `lora_magnitude_vector` (kohya's and LyCORIS's `dora_scale` interpolate outside it).
    pub fn new(
        values: Tensor,
        weight: &[usize],
        scale_inside: bool,
    ) -> std::result::Result<Self, String> {
        let dims = values.dims();
        let ones = |from: usize| dims.len() == weight.len() && dims[from..].iter().all(|&d| d == 1);
        let input_axis = weight.len() >= 2
            && dims.len() == weight.len()
            && dims[0] == 1
            && dims[1] == weight[1]
            && ones(2);
        let output_axis =
            !weight.is_empty() && dims.first() == weight.first() && (ones(1) || dims.len() == 1);
        if !(input_axis || output_axis) {
            return Err(format!(
                "DoRA magnitudes {dims:?} fit neither the input axis (1, {}, 1…) nor the output axis ({}, 1…) of the weight {weight:?}",
                weight.get(1).copied().unwrap_or(0),
                weight.first().copied().unwrap_or(0)
            ));
        }
        Ok(Self {
            values,
            output_axis: output_axis && !input_axis,
            scale_inside,
        })
    }

    /// `base` with `change` (ΔW · alpha/rank) applied at `scale`, rescaled to the magnitudes
    /// (the norm taken per column or row as they are kept): as LyCORIS and ComfyUI merge DoRA,
    /// `base + scale · (m / ‖W′‖ · W′ − base)` with `W′ = base + change`; as PEFT does,
    /// `m / ‖W′‖ · W′` with `W′ = base + scale · change`.
    pub fn apply(&self, base: &Tensor, change: &Tensor, scale: f64) -> Result<Tensor> {
        let calc = match self.scale_inside {
            true => (base + (change * scale)?)?,
            false => (base + change)?,
        };
        let mut norm = calc.sqr()?;
        let keep = usize::from(!self.output_axis);
        for dim in (0..calc.rank()).filter(|&d| d != keep) {
            norm = norm.sum_keepdim(dim)?;
        }
        let norm = norm.sqrt()?;
        let magnitude = self
            .values
            .to_device(calc.device())?
            .to_dtype(DType::F32)?
            .reshape(norm.shape())?;
        let decomposed = calc.broadcast_mul(&(magnitude / norm)?)?;
        match self.scale_inside {
            true => Ok(decomposed),
            false => base + ((decomposed - base)? * scale)?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(values: &[f32], dims: &[usize]) -> Tensor {
        Tensor::from_slice(values, dims, &Device::Cpu).unwrap()
    }

    #[test]
    fn a_tucker_factor_is_the_three_way_contraction() {
        // t (2, 2, 1, 2), a (2, 3), b (2, 1): out 3, in 1, kernel 1×2.
        let t = [1., 2., 3., 4., 5., 6., 7., 8.];
        let a = [[1., 0., 2.], [0., 1., -1.]];
        let b = [3., -2.];
        let factor = Factor::Tucker {
            t: tensor(&t, &[2, 2, 1, 2]),
            a: tensor(a.as_flattened(), &[2, 3]),
            b: tensor(&b, &[2, 1]),
        };
        assert_eq!(factor.dims(), [3, 1, 1, 2]);
        let got: Vec<f32> = factor
            .value(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for p in 0..3 {
            for l in 0..2 {
                let mut want = 0.0;
                for i in 0..2 {
                    for j in 0..2 {
                        want += t[(i * 2 + j) * 2 + l] * b[j] * a[i][p];
                    }
                }
                assert_eq!(got[p * 2 + l], want, "p {p} l {l}");
            }
        }
    }

    #[test]
    fn a_cp_locon_kernel_convolves_as_its_three_convolutions_in_turn() {
        // LyCORIS runs a CP LoCon as down (1×1), mid (3×3, padded) and up (1×1).
        let device = Device::Cpu;
        let randn = |dims: &[usize]| Tensor::randn(0f32, 1.0, dims, &device).unwrap();
        let (down, mid, up) = (
            randn(&[2, 5, 1, 1]),
            randn(&[3, 2, 3, 3]),
            randn(&[4, 3, 1, 1]),
        );
        let delta = Delta::LowRank {
            down: down.clone(),
            up: up.clone(),
            mid: Some(mid.clone()),
        };
        assert_eq!(delta.size(), (4, 4 * 5 * 9));
        let kernel = delta.value(&device, &[4, 5, 3, 3]).unwrap();
        let xs = randn(&[1, 5, 6, 7]);
        let merged = xs.conv2d(&kernel, 1, 1, 1, 1).unwrap();
        let in_turn = xs
            .conv2d(&down, 0, 1, 1, 1)
            .and_then(|h| h.conv2d(&mid, 1, 1, 1, 1))
            .and_then(|h| h.conv2d(&up, 0, 1, 1, 1))
            .unwrap();
        let diff = super::super::max_abs_diff(&merged, &in_turn);
        assert!(diff < 1e-4, "{diff}");
    }

    #[test]
    fn a_kronecker_change_multiplies_every_pair_of_entries() {
        let w1 = Factor::Whole(tensor(&[1., 2., 3., 4.], &[2, 2]));
        let w2 = Factor::Product {
            a: tensor(&[1., -1.], &[2, 1]),
            b: tensor(&[2., 5., 1.], &[1, 3]),
        };
        let delta = Delta::Kronecker(w1, w2);
        assert_eq!(delta.size(), (4, 24));
        let got = delta
            .value(&Device::Cpu, &[4, 6])
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let w1 = [[1., 2.], [3., 4.]];
        let w2 = [[2., 5., 1.], [-2., -5., -1.]];
        for (row, values) in got.iter().enumerate() {
            for (col, value) in values.iter().enumerate() {
                let want = w1[row / 2][col / 3] * w2[row % 2][col % 3];
                assert_eq!(*value, want, "({row}, {col})");
            }
        }
    }

    #[test]
    fn a_hadamard_change_multiplies_the_two_products_entry_by_entry() {
        let w1 = Factor::Product {
            a: tensor(&[1., 2.], &[2, 1]),
            b: tensor(&[3., 4.], &[1, 2]),
        };
        let w2 = Factor::Product {
            a: tensor(&[1., -1.], &[2, 1]),
            b: tensor(&[1., 0.5], &[1, 2]),
        };
        let delta = Delta::Hadamard(w1, w2);
        assert_eq!(delta.size(), (2, 4));
        let got = delta
            .value(&Device::Cpu, &[2, 2])
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(got, [[3., 2.], [-6., -4.]]);
    }
}
