"""What diffusers' schedulers compute, for the Rust scheduler parity test.

Run by hand (never in CI), from the repository root, with the venv of `make.py`:

    /work/sdenv/bin/python scripts/sd-fixtures/schedulers.py

For each scheduler config — the real SD 1.5 (PNDM) and SD 2.1 (v-prediction) configs, and the
samplers users switch them to with `from_config` (DPM++ 2M with and without Karras sigmas, its Heun
solver, DPM++ 2M SDE, Euler ancestral, DDPM, LCM and TCD (γ 0.3) with fixed fresh noise `sin(0.9·k + 1.7·i)·1.1` at
step i, Euler, LMS and
Heun with and without Karras sigmas, exponential and beta sigmas (the beta ramp needs `scipy`), DDIM, UniPC of orders 1–3 with `bh1`
and `bh2`, DEIS of orders 1–3, DPM2 (KDPM2) plain, Karras and beta, DPM2 ancestral with the same fixed noise, DPM++ with Lu's λ
spacing, zero terminal SNR (`rescale_betas_zero_snr`) in each class that reads it and one that
does not, and DPM++ SDE (plain, Karras, v-prediction with leading spacing) with the same fixed
noise in place of its Brownian increments, and DPM-Solver++ single-step (orders 1–3, midpoint
and Heun, Karras, σ_min with and without `lower_order_final`, v-prediction); LMS needs `scipy`,
DPM++ SDE `torchsde`) — and
several step counts, it records the timesteps and a
whole sampling loop driven by a fixed stand-in for the UNet, `0.5·tanh(x) + 0.1·cos(t/100)`, from
fixed starting latents: text-to-image (from noise) and image-to-image (strength 0.6, noised with
`add_noise` as the img2img pipeline does). Each config is kept as the text `save_pretrained`
writes. k-diffusion's DPM++ 2S a, which diffusers has no class for, is run by k-diffusion's own
`sample_dpmpp_2s_ancestral` (`pip install --no-deps k-diffusion torchdiffeq`) on the σ schedule
of diffusers' DPM2 a, with the stand-in wrapped as k-diffusion wraps a CompVis UNet. Writes
`pipeline/tests/fixtures/sd/schedulers.json`.
"""

import json
import math
import os
import tempfile

import torch
import diffusers.schedulers.scheduling_euler_ancestral_discrete as euler_ancestral
import diffusers.schedulers.scheduling_k_dpm_2_ancestral_discrete as dpm2_ancestral
import diffusers.schedulers.scheduling_ddpm as ddpm
import diffusers.schedulers.scheduling_lcm as lcm
import diffusers.schedulers.scheduling_tcd as tcd
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    TCDScheduler,
    UniPCMultistepScheduler,
)

OUT = os.path.join("pipeline", "tests", "fixtures", "sd", "schedulers.json")

# scheduler/scheduler_config.json of runwayml/stable-diffusion-v1-5 and
# stabilityai/stable-diffusion-2-1.
SD15 = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
SD21 = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

ZSNR = {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}

CASES = [
    ("sd15-pndm", PNDMScheduler, SD15, {}),
    ("sd15-dpm++2m", DPMSolverMultistepScheduler, SD15, {}),
    ("sd15-dpm++2m-karras", DPMSolverMultistepScheduler, SD15, {"use_karras_sigmas": True}),
    ("sd15-dpm++2m-heun-leading", DPMSolverMultistepScheduler, SD15,
     {"solver_type": "heun", "timestep_spacing": "leading"}),
    ("sd15-dpm++2m-trailing-sigma-min", DPMSolverMultistepScheduler, SD15,
     {"timestep_spacing": "trailing", "final_sigmas_type": "sigma_min"}),
    ("sd15-dpm++1", DPMSolverMultistepScheduler, SD15, {"solver_order": 1}),
    ("sd15-euler-karras", EulerDiscreteScheduler, SD15, {"use_karras_sigmas": True}),
    ("sd15-lms", LMSDiscreteScheduler, SD15, {}),
    ("sd15-lms-karras", LMSDiscreteScheduler, SD15, {"use_karras_sigmas": True}),
    ("sd21-lms-v", LMSDiscreteScheduler, SD21, {}),
    ("sd15-heun", HeunDiscreteScheduler, SD15, {}),
    ("sd15-heun-karras", HeunDiscreteScheduler, SD15, {"use_karras_sigmas": True}),
    ("sd21-heun-v", HeunDiscreteScheduler, SD21, {}),
    ("sd21-pndm-v", PNDMScheduler, SD21, {}),
    ("sd21-dpm++2m-karras-v", DPMSolverMultistepScheduler, SD21, {"use_karras_sigmas": True}),
    ("sd21-ddim-v", DDIMScheduler, SD21, {}),
    ("sd15-dpm++2m-sde", DPMSolverMultistepScheduler, SD15, {"algorithm_type": "sde-dpmsolver++"}),
    ("sd15-dpm++2m-sde-karras-heun", DPMSolverMultistepScheduler, SD15,
     {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True, "solver_type": "heun"}),
    ("sd21-dpm++2m-sde-v", DPMSolverMultistepScheduler, SD21, {"algorithm_type": "sde-dpmsolver++"}),
    ("sd15-euler-a", EulerAncestralDiscreteScheduler, SD15, {}),
    ("sd21-euler-a-v-trailing", EulerAncestralDiscreteScheduler, SD21, {"timestep_spacing": "trailing"}),
    ("sd15-lcm", LCMScheduler, SD15, {}),
    ("sd15-lcm-original-20-scaling-5", LCMScheduler, SD15,
     {"original_inference_steps": 20, "timestep_scaling": 5.0}),
    ("sd21-lcm-v", LCMScheduler, SD21, {}),
    # DDPM: clamped x₀ (its default) or not, the large variance, v-prediction; the same fixed noise.
    ("sd15-ddpm", DDPMScheduler, SD15, {}),
    ("sd15-ddpm-clip-large", DDPMScheduler, {k: v for k, v in SD15.items() if k != "clip_sample"},
     {"variance_type": "fixed_large"}),
    ("sd21-ddpm-v-trailing", DDPMScheduler, SD21, {"timestep_spacing": "trailing"}),
    # TCD at its step's default γ (`eta`) 0.3, with the same fixed noise.
    ("sd15-tcd", TCDScheduler, SD15, {}),
    ("sd15-tcd-original-20", TCDScheduler, SD15, {"original_inference_steps": 20}),
    ("sd21-tcd-v", TCDScheduler, SD21, {}),
    ("sd15-unipc", UniPCMultistepScheduler, SD15, {}),
    ("sd15-unipc-karras", UniPCMultistepScheduler, SD15, {"use_karras_sigmas": True}),
    ("sd15-unipc-bh1-order3-leading", UniPCMultistepScheduler, SD15,
     # (bh1 with a final σ of zero is NaN in diffusers: B(h) = h = −∞ times a zero residual.)
     {"solver_type": "bh1", "solver_order": 3, "timestep_spacing": "leading",
      "final_sigmas_type": "sigma_min"}),
    ("sd15-unipc-order3-sigma-min-no-corrector-1", UniPCMultistepScheduler, SD15,
     {"solver_order": 3, "lower_order_final": False, "final_sigmas_type": "sigma_min",
      "disable_corrector": [1], "timestep_spacing": "trailing"}),
    ("sd21-unipc-v", UniPCMultistepScheduler, SD21, {}),
    ("sd15-euler-exponential", EulerDiscreteScheduler, SD15, {"use_exponential_sigmas": True}),
    ("sd15-euler-beta", EulerDiscreteScheduler, SD15, {"use_beta_sigmas": True}),
    ("sd15-heun-exponential", HeunDiscreteScheduler, SD15, {"use_exponential_sigmas": True}),
    ("sd15-lms-beta", LMSDiscreteScheduler, SD15, {"use_beta_sigmas": True}),
    ("sd15-dpm++2m-exponential", DPMSolverMultistepScheduler, SD15, {"use_exponential_sigmas": True}),
    ("sd21-dpm++2m-beta-v", DPMSolverMultistepScheduler, SD21, {"use_beta_sigmas": True}),
    ("sd15-unipc-beta-sigma-min", UniPCMultistepScheduler, SD15,
     {"use_beta_sigmas": True, "final_sigmas_type": "sigma_min"}),
    ("sd15-deis", DEISMultistepScheduler, SD15, {}),
    ("sd15-deis-order3-trailing", DEISMultistepScheduler, SD15,
     {"solver_order": 3, "timestep_spacing": "trailing"}),
    ("sd15-deis-order1-leading", DEISMultistepScheduler, SD15,
     {"solver_order": 1, "timestep_spacing": "leading"}),
    ("sd21-deis-karras-v", DEISMultistepScheduler, SD21, {"use_karras_sigmas": True}),
    ("sd15-deis-order3-exponential-no-lower-final", DEISMultistepScheduler, SD15,
     {"solver_order": 3, "use_exponential_sigmas": True, "lower_order_final": False}),
    ("sd15-dpm2", KDPM2DiscreteScheduler, SD15, {}),
    ("sd15-dpm2-karras", KDPM2DiscreteScheduler, SD15, {"use_karras_sigmas": True}),
    ("sd21-dpm2-v-leading", KDPM2DiscreteScheduler, SD21, {"timestep_spacing": "leading"}),
    ("sd15-dpm2-beta-trailing", KDPM2DiscreteScheduler, SD15,
     {"use_beta_sigmas": True, "timestep_spacing": "trailing"}),
    ("sd15-dpm2-a", KDPM2AncestralDiscreteScheduler, SD15, {}),
    ("sd21-dpm2-a-karras-v", KDPM2AncestralDiscreteScheduler, SD21, {"use_karras_sigmas": True}),
    ("sd15-dpm++2m-lu", DPMSolverMultistepScheduler, SD15, {"use_lu_lambdas": True}),
    ("sd21-dpm++2m-sde-lu-v", DPMSolverMultistepScheduler, SD21,
     {"use_lu_lambdas": True, "algorithm_type": "sde-dpmsolver++"}),
    # Zero terminal SNR, as v-prediction fine-tunes with a `ztsnr` marker are sampled.
    ("sd21-ddim-zsnr-v-trailing", DDIMScheduler, SD21, ZSNR),
    ("sd21-euler-zsnr-v-trailing", EulerDiscreteScheduler, SD21, ZSNR),
    ("sd21-euler-zsnr-v-karras", EulerDiscreteScheduler, SD21,
     {"rescale_betas_zero_snr": True, "use_karras_sigmas": True}),
    ("sd21-euler-a-zsnr-v-trailing", EulerAncestralDiscreteScheduler, SD21, ZSNR),
    ("sd21-dpm++2m-zsnr-v-trailing", DPMSolverMultistepScheduler, SD21, ZSNR),
    ("sd21-unipc-zsnr-v-trailing", UniPCMultistepScheduler, SD21, ZSNR),
    ("sd21-lcm-zsnr-v-trailing", LCMScheduler, SD21, ZSNR),
    ("sd21-tcd-zsnr-v-trailing", TCDScheduler, SD21, ZSNR),
    # Classes without the setting sample the schedule as trained.
    ("sd21-heun-zsnr-unread-v", HeunDiscreteScheduler, SD21, ZSNR),
    # DPM++ SDE, its Brownian increments replaced by the fixed noise of each call.
    ("sd15-dpm++sde", DPMSolverSDEScheduler, SD15, {}),
    ("sd15-dpm++sde-karras", DPMSolverSDEScheduler, SD15, {"use_karras_sigmas": True}),
    ("sd21-dpm++sde-v-leading", DPMSolverSDEScheduler, SD21, {"timestep_spacing": "leading"}),
    # DPM-Solver++ single-step: orders 1–3, midpoint and Heun, Karras, σ_min, v-prediction.
    ("sd15-dpm++2s", DPMSolverSinglestepScheduler, SD15, {}),
    ("sd15-dpm++2s-karras", DPMSolverSinglestepScheduler, SD15, {"use_karras_sigmas": True}),
    ("sd15-dpm++3s", DPMSolverSinglestepScheduler, SD15, {"solver_order": 3}),
    ("sd15-dpm++3s-heun-sigma-min", DPMSolverSinglestepScheduler, SD15,
     {"solver_order": 3, "solver_type": "heun", "final_sigmas_type": "sigma_min"}),
    ("sd15-dpm++2s-heun-sigma-min-no-lower-final", DPMSolverSinglestepScheduler, SD15,
     {"solver_type": "heun", "final_sigmas_type": "sigma_min", "lower_order_final": False}),
    ("sd15-dpm++1s", DPMSolverSinglestepScheduler, SD15, {"solver_order": 1}),
    ("sd21-dpm++2s-v", DPMSolverSinglestepScheduler, SD21, {}),
]
STEPS = [1, 2, 4, 10, 20]
STRENGTH = 0.6


def model(x, t):
    """The stand-in for the UNet."""
    return 0.5 * torch.tanh(x) + 0.1 * math.cos(float(t) / 100.0)


def start():
    """Fixed latents (1, 4, 3, 3): the noise, and the 'image' of image-to-image."""
    i = torch.arange(36, dtype=torch.float32).reshape(1, 4, 3, 3)
    return torch.sin(i * 0.7) * 1.3, torch.cos(i * 0.3) * 0.8


def step_noise(i):
    """The SDE samplers' fresh noise at step `i` (the Rust test makes the same)."""
    k = torch.arange(36, dtype=torch.float32).reshape(1, 4, 3, 3)
    return torch.sin(k * 0.9 + i * 1.7) * 1.1


# Euler ancestral, DPM2 ancestral, LCM, TCD and DDPM draw their noise themselves: hand them `step_noise` of the step being
# taken instead.
STEP = [0]
euler_ancestral.randn_tensor = lambda *args, **kwargs: step_noise(STEP[0])
lcm.randn_tensor = lambda *args, **kwargs: step_noise(STEP[0])
tcd.randn_tensor = lambda *args, **kwargs: step_noise(STEP[0])
ddpm.randn_tensor = lambda *args, **kwargs: step_noise(STEP[0])
dpm2_ancestral.randn_tensor = lambda *args, **kwargs: step_noise(STEP[0])


def run(scheduler, latents, timesteps, first=0):
    sde = str(getattr(scheduler.config, "algorithm_type", "")).startswith("sde")
    if isinstance(scheduler, DPMSolverSDEScheduler):
        # Instead of the Brownian tree's increment over (σ, σ_next): the call's fixed noise.
        scheduler.noise_sampler = lambda sigma, sigma_next: step_noise(STEP[0])
    for k, t in enumerate(timesteps):
        STEP[0] = first + k
        x = scheduler.scale_model_input(latents, t)
        extra = {"variance_noise": step_noise(first + k)} if sde else {}
        latents = scheduler.step(model(x, t), t, latents, **extra).prev_sample
    return latents


def k_diffusion_module(name):
    """A module of k-diffusion (`pip install --no-deps k-diffusion torchdiffeq`) without its
    package's `__init__`, which imports its training code (and torchvision, stubbed here: the
    samplers do not use it)."""
    import importlib
    import importlib.util
    import sys
    import types

    if "k_diffusion" not in sys.modules:
        package = types.ModuleType("k_diffusion")
        package.__path__ = list(importlib.util.find_spec("k_diffusion").submodule_search_locations)
        sys.modules["k_diffusion"] = package
    for stub in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
        sys.modules.setdefault(stub, types.ModuleType(stub))
    sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
    return importlib.import_module(f"k_diffusion.{name}")


# k-diffusion's samplers that diffusers has no class for: (case, base config, recipe sampler,
# k-diffusion function, Karras σ).
K_DIFFUSION_CASES = [
    ("sd15-dpm++2s-a", SD15, "dpm++2s-a", "sample_dpmpp_2s_ancestral", False),
    ("sd15-dpm++2s-a-karras", SD15, "dpm++2s-a-karras", "sample_dpmpp_2s_ancestral", True),
    ("sd21-dpm++2s-a-v", SD21, "dpm++2s-a", "sample_dpmpp_2s_ancestral", False),
]


def k_diffusion_runs(base, function, karras):
    """k-diffusion's `function` on the σ schedule diffusers' DPM2 a uses (its config's
    noise schedule, linspace spacing, Karras σ or not), the stand-in wrapped as k-diffusion
    wraps a CompVis UNet (`CompVisDenoiser`, or `CompVisVDenoiser` for v-prediction), and
    `step_noise(2·j + 1)` as the fresh noise of step j (the Rust test hands the second call of
    each step that noise)."""
    sampling, external = k_diffusion_module("sampling"), k_diffusion_module("external")
    reference = KDPM2AncestralDiscreteScheduler.from_config(base, use_karras_sigmas=karras)

    class Unet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.alphas_cumprod = reference.alphas_cumprod.to(torch.float32)
            self.calls = []

        def apply_model(self, x, t, *args, **kwargs):
            self.calls.append(float(t))
            return model(x, float(t))

    v = base.get("prediction_type") == "v_prediction"
    runs = []
    for steps in STEPS:
        euler = EulerDiscreteScheduler.from_config(base, use_karras_sigmas=karras, timestep_spacing="linspace")
        euler.set_timesteps(steps)
        sigmas = euler.sigmas.to(torch.float64)
        unet = Unet()
        denoiser = (external.CompVisVDenoiser if v else external.CompVisDenoiser)(unet)
        sample = getattr(sampling, function)

        def noise_from(first):
            step = [first]

            def noise(sigma, sigma_next):
                step[0] += 1
                return step_noise(2 * (step[0] - 1) + 1)
            return noise

        noise, image = start()
        with torch.no_grad():
            txt2img = sample(denoiser, noise * sigmas[0].float(), sigmas, disable=True, noise_sampler=noise_from(0), extra_args={"cond": None})
        timesteps = list(unet.calls)
        init = min(int(steps * STRENGTH), steps)
        t_start = steps - init
        if t_start < steps:
            rest = sigmas[t_start:]
            with torch.no_grad():
                img2img = sample(denoiser, image + noise * rest[0].float(), rest, disable=True, noise_sampler=noise_from(t_start), extra_args={"cond": None})
        else:
            img2img = image
        runs.append({
            "steps": steps,
            "timesteps": timesteps,
            "init_noise_sigma": float(sigmas[0]),
            "txt2img": txt2img.flatten().tolist(),
            "img2img_first": 2 * t_start,
            "img2img": img2img.flatten().tolist(),
        })
    return runs


def main():
    cases = []
    for name, cls, base, overrides in CASES:
        config = cls.from_config(base, **overrides).config
        # The file exactly as `save_pretrained` writes it (Python's json: `-Infinity` included).
        with tempfile.TemporaryDirectory() as folder:
            cls.from_config(config).save_config(folder)
            with open(os.path.join(folder, "scheduler_config.json")) as f:
                saved = f.read()
        runs = []
        for steps in STEPS:
            if cls is KDPM2AncestralDiscreteScheduler and steps == 2:
                # σ_max to σ_min in two steps: diffusers' f32 σ_down = √(σₙ² − σ_up²) cancels
                # to within a percent (Autonomy takes the exact σₙ²/σ), so it is not compared.
                continue
            noise, image = start()
            scheduler = cls.from_config(config)
            scheduler.set_timesteps(steps)
            timesteps = scheduler.timesteps.clone()
            txt2img = run(scheduler, noise * scheduler.init_noise_sigma, timesteps)

            # The img2img pipeline's `get_timesteps` and `prepare_latents`.
            scheduler = cls.from_config(config)
            scheduler.set_timesteps(steps)
            init = min(int(steps * STRENGTH), steps)
            t_start = max(steps - init, 0)
            rest = scheduler.timesteps[t_start * scheduler.order:]
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(t_start * scheduler.order)
            if len(rest) > 0:
                img2img = run(
                    scheduler,
                    scheduler.add_noise(image, noise, rest[:1]),
                    rest,
                    t_start * scheduler.order,
                )
            else:
                img2img = image  # nothing runs (the Rust pipeline returns the image as it is)
            runs.append({
                "steps": steps,
                "timesteps": [float(t) for t in timesteps],
                "init_noise_sigma": float(scheduler.init_noise_sigma),
                "txt2img": txt2img.flatten().tolist(),
                "img2img_first": t_start * scheduler.order,
                "img2img": img2img.flatten().tolist(),
            })
        cases.append({"name": name, "scheduler_config": saved, "runs": runs})
    k_cases = [
        {"name": name, "base": "sd15" if base is SD15 else "sd21", "sampler": sampler,
         "runs": k_diffusion_runs(base, function, karras)}
        for name, base, sampler, function, karras in K_DIFFUSION_CASES
    ]
    noise, image = start()
    with open(OUT, "w") as f:
        json.dump({
            "model": "0.5 * tanh(x) + 0.1 * cos(t / 100)",
            "strength": STRENGTH,
            "hub_configs": {"sd15": json.dumps(SD15, indent=2), "sd21": json.dumps(SD21, indent=2)},
            "noise": noise.flatten().tolist(),
            "image": image.flatten().tolist(),
            "cases": cases,
            "k_diffusion": k_cases,
        }, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}: {len(cases)} schedulers × {len(STEPS)} step counts")


if __name__ == "__main__":
    main()
