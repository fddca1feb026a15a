//! AdamW and an EMA of the weights, with state that can be saved and restored exactly.
//!
//! candle-nn's `AdamW` keeps its moments private, so a checkpoint could not resume it
//! bit-for-bit; this one exposes them.

use candle_core::{Result, Tensor, Var};
use std::collections::BTreeMap;

/// AdamW hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator guard.
    pub eps: f64,
    /// Decoupled weight decay, applied to matrices only (not biases, norms or offsets).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 3e-4,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    ema: Tensor,
}

/// AdamW over named variables, plus an exponential moving average of them.
pub struct AdamW {
    config: AdamWConfig,
    slots: Vec<Slot>,
    step: u64,
}

impl AdamW {
    /// Starts with zero moments and the EMA equal to the weights; variables are kept in name order.
    pub fn new(vars: BTreeMap<String, Var>, config: AdamWConfig) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                Ok(Slot {
                    m: var.zeros_like()?,
                    v: var.zeros_like()?,
                    // `copy` of a variable records the op; detached, the EMA holds no history.
                    ema: var.as_tensor().copy()?.detach(),
                    name,
                    var,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            config,
            slots,
            step: 0,
        })
    }

    /// Optimizer steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One update with learning rate `lr`, then the EMA with `ema_decay`.
    pub fn step(
        &mut self,
        grads: &candle_core::backprop::GradStore,
        lr: f64,
        ema_decay: f64,
    ) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let correct1 = 1.0 - c.beta1.powi(self.step as i32);
        let correct2 = 1.0 - c.beta2.powi(self.step as i32);
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            // Detached so that no step keeps the previous step's graph alive.
            let g = g.detach();
            let g = &g;
            slot.m = ((&slot.m * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            slot.v = ((&slot.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&slot.m / correct1)? / ((&slot.v / correct2)?.sqrt()? + c.eps)?)?;
            let decay = if slot.var.rank() >= 2 {
                1.0 - lr * c.weight_decay
            } else {
                1.0
            };
            let next = ((slot.var.as_tensor().detach() * decay)? - (update * lr)?)?;
            slot.var.set(&next)?;
            slot.ema = ((&slot.ema * ema_decay)? + (next * (1.0 - ema_decay))?)?;
        }
        Ok(())
    }

    /// Every tensor needed to resume: `weights.*`, `ema.*`, `adam_m.*`, `adam_v.*`.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for s in &self.slots {
            out.insert(format!("weights.{}", s.name), s.var.as_tensor().clone());
            out.insert(format!("ema.{}", s.name), s.ema.clone());
            out.insert(format!("adam_m.{}", s.name), s.m.clone());
            out.insert(format!("adam_v.{}", s.name), s.v.clone());
        }
        out
    }

    /// The EMA weights under their variable names (what a model folder ships).
    pub fn ema(&self) -> BTreeMap<String, Tensor> {
        self.slots
            .iter()
            .map(|s| (s.name.clone(), s.ema.clone()))
            .collect()
    }

    /// Restores what [`AdamW::state`] saved, at optimizer step `step`.
    pub fn restore(&mut self, state: &BTreeMap<String, Tensor>, step: u64) -> Result<()> {
        for s in &mut self.slots {
            let get = |prefix: &str| {
                let key = format!("{prefix}.{}", s.name);
                state
                    .get(&key)
                    .cloned()
                    .ok_or_else(|| candle_core::Error::Msg(format!("checkpoint lacks `{key}`")))
            };
            let weights = get("weights")?;
            if weights.shape() != s.var.shape() {
                candle_core::bail!(
                    "checkpoint `{}` has shape {:?}, the model {:?}",
                    s.name,
                    weights.dims(),
                    s.var.dims()
                );
            }
            s.var.set(&weights)?;
            s.ema = get("ema")?;
            s.m = get("adam_m")?;
            s.v = get("adam_v")?;
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn quadratic_descent(steps: usize) -> (f32, AdamW, Var) {
        let x = Var::new(&[[3f32, -2.0]], &Device::Cpu).unwrap();
        let vars = BTreeMap::from([("x".to_string(), x.clone())]);
        let mut opt = AdamW::new(
            vars,
            AdamWConfig {
                lr: 0.1,
                ..Default::default()
            },
        )
        .unwrap();
        let mut loss = 0.0;
        for _ in 0..steps {
            let l = x.as_tensor().sqr().unwrap().sum_all().unwrap();
            loss = l.to_scalar::<f32>().unwrap();
            opt.step(&l.backward().unwrap(), 0.1, 0.9).unwrap();
        }
        (loss, opt, x)
    }

    #[test]
    fn minimises_a_quadratic() {
        let (loss, opt, _) = quadratic_descent(200);
        assert!(loss < 1e-2, "loss {loss}");
        assert_eq!(opt.step_count(), 200);
    }

    #[test]
    fn optimizer_state_holds_no_autograd_history() {
        // A tracked EMA or moment would chain every step's graph to the next: memory grows
        // without bound during a long run.
        let (_, opt, _) = quadratic_descent(3);
        for (name, tensor) in opt.state() {
            assert!(
                name.starts_with("weights.") || !tensor.track_op(),
                "`{name}` keeps its history"
            );
        }
    }

    #[test]
    fn restored_state_continues_exactly() {
        let (_, full, x_full) = quadratic_descent(20);
        let (_, half, _) = quadratic_descent(10);
        let state = half.state();
        let x = Var::new(&[[0f32, 0.0]], &Device::Cpu).unwrap();
        let mut resumed = AdamW::new(
            BTreeMap::from([("x".to_string(), x.clone())]),
            AdamWConfig {
                lr: 0.1,
                ..Default::default()
            },
        )
        .unwrap();
        resumed.restore(&state, 10).unwrap();
        for _ in 0..10 {
            let l = x.as_tensor().sqr().unwrap().sum_all().unwrap();
            resumed.step(&l.backward().unwrap(), 0.1, 0.9).unwrap();
        }
        let a = x.as_tensor().to_vec2::<f32>().unwrap();
        let b = x_full.as_tensor().to_vec2::<f32>().unwrap();
        assert_eq!(a, b);
        let ea = resumed.ema()["x"].to_vec2::<f32>().unwrap();
        let eb = full.ema()["x"].to_vec2::<f32>().unwrap();
        assert_eq!(ea, eb);
    }
}
