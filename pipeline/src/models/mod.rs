//! Image generators: the house model, which ships with Autonomy and runs anywhere, and the
//! Stable Diffusion family, loaded from a diffusers folder a user has on disk.

pub mod house;
pub mod locate;
pub mod noise;
pub mod sd;

use candle_core::Tensor;

/// Rolls `(batch, c, h, w)` by `dy` rows and `dx` columns with wrap-around.
pub fn roll(x: &Tensor, dy: usize, dx: usize) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let x = match dy % h {
        0 => x.clone(),
        dy => x.roll(dy as i32, 2)?,
    };
    match dx % w {
        0 => Ok(x),
        dx => x.roll(dx as i32, 3),
    }
}
