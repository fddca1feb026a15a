//! Trainable variables created from a seed.
//!
//! candle's `VarMap` draws initial weights from an unseeded generator; training must be
//! repeatable (a resumed run equals an uninterrupted one, the same seed gives the same model),
//! so this backend draws them from ChaCha8 in the order the model asks for them.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::sync::Mutex;

/// A `VarMap` whose new variables are initialised from a seeded generator.
pub struct SeededVars {
    map: VarMap,
    rng: Mutex<ChaCha8Rng>,
}

impl SeededVars {
    /// An empty set of variables drawing from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            map: VarMap::new(),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        }
    }

    /// A `VarBuilder` that creates variables here (f32).
    pub fn builder(self, device: &Device) -> (VarMap, VarBuilder<'static>) {
        let map = self.map.clone();
        let vb = VarBuilder::from_backend(Box::new(self), DType::F32, device.clone());
        (map, vb)
    }

    fn draw(&self, shape: &Shape, init: Init, device: &Device) -> Result<Tensor> {
        let n = shape.elem_count();
        let mut rng = self
            .rng
            .lock()
            .map_err(|_| candle_core::Error::Msg("variable generator poisoned".into()))?;
        let values: Vec<f32> = match init {
            Init::Const(v) => vec![v as f32; n],
            Init::Randn { mean, stdev } => {
                let normal = Normal::new(mean, stdev).map_err(candle_core::Error::wrap)?;
                (0..n).map(|_| normal.sample(&mut *rng) as f32).collect()
            }
            Init::Uniform { lo, up } => (0..n).map(|_| rng.random_range(lo..up) as f32).collect(),
            Init::Kaiming { .. } => candle_core::bail!("SeededVars does not draw Kaiming inits"),
        };
        Tensor::from_vec(values, shape.clone(), device)
    }
}

impl SimpleBackend for SeededVars {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        if !self.map.contains_tensor(name) {
            let var = Var::from_tensor(&self.draw(&s, h, dev)?.to_dtype(dtype)?)?;
            self.map
                .data()
                .lock()
                .map_err(|_| candle_core::Error::Msg("variable map poisoned".into()))?
                .insert(name.to_string(), var);
        }
        self.map.get(s, name, h, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("`{name}` must be created with a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map.contains_tensor(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(seed: u64) -> Vec<f32> {
        let (_, vb) = SeededVars::new(seed).builder(&Device::Cpu);
        let a = vb
            .get_with_hints(
                (3, 4),
                "a",
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )
            .unwrap();
        let b = vb
            .get_with_hints(5, "b", Init::Uniform { lo: -1.0, up: 1.0 })
            .unwrap();
        let mut v = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.extend(b.to_vec1::<f32>().unwrap());
        v
    }

    #[test]
    fn same_seed_same_weights() {
        assert_eq!(build(3), build(3));
        assert_ne!(build(3), build(4));
    }

    #[test]
    fn variables_are_trainable_and_shared_by_name() {
        let (map, vb) = SeededVars::new(0).builder(&Device::Cpu);
        let x = vb.get_with_hints(2, "x", Init::Const(1.0)).unwrap();
        let again = vb.get_with_hints(2, "x", Init::Const(5.0)).unwrap();
        assert_eq!(again.to_vec1::<f32>().unwrap(), vec![1.0, 1.0]);
        assert_eq!(map.all_vars().len(), 1);
        assert!(x.is_variable());
    }
}
