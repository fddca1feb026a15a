//! ControlNet against diffusers: a tiny random-weight ControlNet made from tiny SD 1.5's UNet
//! (`scripts/sd-fixtures/make.py controlnet`), its residuals and the UNet they condition for
//! fixed inputs, and whole sampling runs with diffusers' `StableDiffusionControlNetPipeline`.

mod common;

use autonomy_pipeline::generator::{Control, GenerateRequest};
use autonomy_pipeline::models::sd::StableDiffusion;
use autonomy_pipeline::models::sd::controlnet::ControlNetFile;
use candle_core::{Device, Tensor};
use common::sd::{Reference, fixtures};

fn controlled() -> StableDiffusion {
    let mut model = StableDiffusion::load(&fixtures().join("tiny-sd15"), &Device::Cpu).unwrap();
    model
        .add_controlnet(&ControlNetFile {
            path: fixtures().join("tiny-sd15/controlnet"),
            label: "controlnet".into(),
        })
        .unwrap();
    model
}

fn edges() -> image::RgbImage {
    image::open(fixtures().join("tiny-sd15/control/edges.png"))
        .unwrap()
        .to_rgb8()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn close(what: &str, ours: &Tensor, theirs: &Tensor, tolerance: f32) {
    let diff = max_diff(ours, theirs);
    assert!(
        diff <= tolerance,
        "{what}: max |candle − diffusers| = {diff:e}, tolerance {tolerance:e}"
    );
}

#[test]
fn a_controlnets_residuals_and_the_unet_they_condition_match_diffusers() {
    let reference = Reference::of("controlnet");
    let model = controlled();
    let net = model.controlnet().unwrap();
    let (sample, context) = (reference.get("cn_sample"), reference.get("cn_context"));
    let hint = reference.get("control_image").repeat((2, 1, 1, 1)).unwrap();
    let scale = reference.scalar("cn_scale");
    let t = reference.scalar("cn_timestep");
    let residuals = net
        .forward(sample, t, context, None, &hint, scale, false)
        .unwrap();
    assert_eq!(residuals.down.len(), 6);
    for (i, state) in residuals.down.iter().enumerate() {
        close(
            &format!("skip connection {i}"),
            state,
            reference.get(&format!("cn_down_{i}")),
            1e-4,
        );
    }
    close(
        "middle block",
        &residuals.mid,
        reference.get("cn_mid"),
        1e-4,
    );
    let eps = model
        .predict_controlled(sample, t, context, None, None, Some(&residuals))
        .unwrap();
    close("conditioned UNet", &eps, reference.get("cn_unet_eps"), 1e-4);
    let plain = model.predict(sample, t, context, None, None).unwrap();
    assert!(
        max_diff(&plain, &eps) > 0.1,
        "the residuals change the UNet's output"
    );
}

#[test]
fn whole_runs_with_a_controlnet_match_diffusers() {
    let reference = Reference::of("controlnet");
    let model = controlled();
    let control = Control {
        image: edges(),
        scale: reference.scalar("ctl_scale"),
        start: 0.0,
        end: reference.scalar("ctl_end"),
        guess_mode: false,
    };
    let request = GenerateRequest {
        steps: reference.scalar("ctl_steps") as usize,
        guidance: reference.scalar("ctl_guidance"),
        control: Some(control.clone()),
        ..reference.request()
    };
    // diffusers returns (n, H, W, 3); a whole run is held to a tenth of a grey level.
    let run = |request: &GenerateRequest| {
        let image = model.sample(request, reference.get("ctl_init")).unwrap();
        image.permute((0, 2, 3, 1)).unwrap()
    };
    let controlled = run(&request);
    close(
        "run conditioned for the first half of its steps",
        &controlled,
        reference.get("ctl_image"),
        4e-4,
    );
    let plain = run(&GenerateRequest {
        control: None,
        ..request.clone()
    });
    close(
        "run without it",
        &plain,
        reference.get("ctl_plain_image"),
        4e-4,
    );
    assert!(max_diff(&plain, &controlled) > 0.02);
    let guessed = GenerateRequest {
        control: Some(Control {
            end: 1.0,
            guess_mode: true,
            ..control
        }),
        ..request
    };
    close(
        "run in guess mode",
        &run(&guessed),
        reference.get("ctl_guess_image"),
        4e-4,
    );
}

#[test]
fn a_control_image_without_a_controlnet_or_out_of_range_is_refused() {
    let plain = StableDiffusion::load(&fixtures().join("tiny-sd15"), &Device::Cpu).unwrap();
    let control = Control {
        image: edges(),
        scale: 1.0,
        start: 0.0,
        end: 1.0,
        guess_mode: false,
    };
    let request = GenerateRequest {
        steps: 1,
        control: Some(control.clone()),
        ..GenerateRequest::default()
    };
    let noise = Tensor::zeros((1, 4, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = plain.sample(&request, &noise).unwrap_err().to_string();
    assert!(err.contains("without a ControlNet"), "{err}");
    let backwards = GenerateRequest {
        control: Some(Control {
            start: 0.8,
            end: 0.2,
            ..control
        }),
        ..request
    };
    let err = controlled()
        .sample(&backwards, &noise)
        .unwrap_err()
        .to_string();
    assert!(err.contains("from 0.8 to 0.2"), "{err}");
}

#[test]
fn a_controlnet_for_another_unet_is_refused_naming_both() {
    let mut model = StableDiffusion::load(&fixtures().join("tiny-sdxl"), &Device::Cpu).unwrap();
    let err = model
        .add_controlnet(&ControlNetFile {
            path: fixtures().join("tiny-sd15/controlnet"),
            label: "controlnet".into(),
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("a ControlNet for blocks of"), "{err}");
    assert!(model.controlnet().is_none());
}
