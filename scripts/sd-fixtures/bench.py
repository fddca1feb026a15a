"""The PyTorch side of `cargo bench --bench stable_diffusion`: random-weight pipelines at the
real SD 1.5 and SD-Turbo (SD 2.1) sizes, and diffusers' timings on them.

    python bench.py make <dir>     # writes <dir>/sd15, <dir>/sd-turbo (~9 GB, f32), <dir>/taesd
    python bench.py time <dir>     # prints diffusers' timings as JSON
    python bench.py upscalers <dir> [repeats] [only]  # writes <dir>/upscalers/*.pth, prints
                                      # spandrel's timings (of the keys containing `only`)
    python bench.py controlnet <dir>  # writes <dir>/controlnet-sd15 (from <dir>/sd15's UNet),
                                      # prints diffusers' timings of it with the UNet
    python bench.py annotators <dir>  # writes <dir>/annotators (HED, line art, Depth Anything),
                                      # prints controlnet_aux's timings of the preprocessors
                                      # (needs $DEPTH_ANYTHING_V2: see `annotators`)

The upscalers (needs `spandrel`) are ESRGAN's RRDBNet at 4x-UltraSharp's and
RealESRGAN_x4plus's size (23 blocks, 64 features), Real-ESRGAN's compact SRVGGNet at
realesr-general-x4v3's (32 convolutions, 64 features), SPAN at the paper's size (48
features), RealPLKSR at neosr's defaults (28 blocks, 64 features, 17×17 kernels), SwinIR-M's real-world ×4 network
(A1111's "SwinIR 4x": 6 groups of 6 blocks, 180 features, 8-pixel windows), HAT at
Real_HAT_GAN_SRx4's size (6 groups of 6 blocks, 180 features, 16-pixel windows), DAT at
DAT_x4's and OmniSR at OmniSR_X4_DIV2K's (5 groups of 1 block, 64 features, 8-pixel
windows), each timed
on a 128² image (the transformers in f32 on a GPU too, as spandrel runs SwinIR).

`AUTONOMY_BENCH_TORCH_DEVICE=cuda` times PyTorch on the GPU in f16 (default: the CPU, f32).

Random weights are fine for speed. The tokenizer is the tiny fixture's (its ids fit any
vocabulary); the rest is the released models' architecture, from their configs.
"""

import json
import os
import shutil
import statistics
import sys
import time

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZER = os.path.join(HERE, "..", "..", "pipeline", "tests", "fixtures", "sd", "tiny-sd15", "tokenizer")
VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=4,
    sample_size=512,
)
FAMILIES = {
    # runwayml/stable-diffusion-v1-5
    "sd15": dict(
        unet=dict(cross_attention_dim=768, attention_head_dim=8, sample_size=64),
        text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, hidden_act="quick_gelu"),
        scheduler=lambda: DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                        beta_end=0.012, clip_sample=False,
                                        set_alpha_to_one=False, steps_offset=1),
    ),
    # stabilityai/sd-turbo (the SD 2.1 architecture at 512²)
    "sd-turbo": dict(
        unet=dict(cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                  use_linear_projection=True, sample_size=64),
        text=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                  num_attention_heads=16, hidden_act="gelu"),
        scheduler=lambda: EulerDiscreteScheduler(beta_schedule="scaled_linear",
                                                 beta_start=0.00085, beta_end=0.012,
                                                 steps_offset=1, timestep_spacing="trailing"),
    ),
}


def make(root):
    taesd = os.path.join(root, "taesd")
    if not os.path.isfile(os.path.join(taesd, "config.json")):
        torch.manual_seed(0)
        AutoencoderTiny().save_pretrained(taesd + ".partial", safe_serialization=True)
        os.replace(taesd + ".partial", taesd)
        print("wrote", taesd, file=sys.stderr)
    for name, family in FAMILIES.items():
        folder = os.path.join(root, name)
        if os.path.isfile(os.path.join(folder, "model_index.json")):
            continue
        torch.manual_seed(0)
        # Made on the device timed (far quicker on a GPU), saved f32 either way.
        torch.set_default_device(os.environ.get("AUTONOMY_BENCH_TORCH_DEVICE", "cpu"))
        tokenizer = CLIPTokenizer(os.path.join(TOKENIZER, "vocab.json"),
                                  os.path.join(TOKENIZER, "merges.txt"), model_max_length=77)
        text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77,
                                            **family["text"]))
        unet = UNet2DConditionModel(**family["unet"])
        vae = AutoencoderKL(**VAE)
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                       scheduler=family["scheduler"](), safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
        scratch = folder + ".partial"
        shutil.rmtree(scratch, ignore_errors=True)
        pipe.save_pretrained(scratch, safe_serialization=True)
        os.replace(scratch, folder)
        print("wrote", folder, file=sys.stderr)


def timed(fn, repeats):
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    fn()
    sync()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


@torch.no_grad()
def measure(root, repeats):
    torch.manual_seed(0)
    device = os.environ.get("AUTONOMY_BENCH_TORCH_DEVICE", "cpu")
    dtype = torch.float32 if device == "cpu" else torch.float16
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": device}
    load = lambda name: StableDiffusionPipeline.from_pretrained(
        os.path.join(root, name), safety_checker=None, torch_dtype=dtype
    ).to(device)
    pipe = load("sd15")
    latents = torch.randn(2, 4, 64, 64, device=device, dtype=dtype)
    context = torch.randn(2, 77, 768, device=device, dtype=dtype)
    results["unet_step"] = timed(lambda: pipe.unet(latents, 500, encoder_hidden_states=context), repeats)
    results["vae_decode"] = timed(lambda: pipe.vae.decode(latents[:1]), repeats)
    del pipe
    taesd = AutoencoderTiny.from_pretrained(os.path.join(root, "taesd"), torch_dtype=dtype).to(device)
    results["taesd_decode"] = timed(lambda: taesd.decode(latents[:1]), repeats)
    turbo = load("sd-turbo")
    turbo.set_progress_bar_config(disable=True)
    image = lambda: turbo("mossy stone bricks", num_inference_steps=1, guidance_scale=0.0,
                          height=512, width=512, output_type="np")
    results["turbo_image"] = timed(image, repeats)
    turbo.vae = taesd
    results["turbo_taesd_image"] = timed(image, repeats)
    return results


@torch.no_grad()
def controlnet(root, repeats):
    """A ControlNet at SD 1.5's size (`ControlNetModel.from_unet` of the sd15 UNet, its hint
    encoder the releases' 16-32-96-256), and diffusers' time for the plain UNet step, the
    ControlNet alone and one conditioned UNet step: 64×64 latents, batch 2, a 512² control
    image; and a T2I-Adapter at SD 1.5's size (diffusers' default `full_adapter`: 320, 640, 1280,
    1280 wide, random weights, in `t2i-adapter-sd15`) making its features of one 512² image."""
    from diffusers import ControlNetModel, T2IAdapter

    device = os.environ.get("AUTONOMY_BENCH_TORCH_DEVICE", "cpu")
    dtype = torch.float32 if device == "cpu" else torch.float16
    folder = os.path.join(root, "controlnet-sd15")
    pipe = StableDiffusionPipeline.from_pretrained(
        os.path.join(root, "sd15"), safety_checker=None, torch_dtype=dtype
    ).to(device)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        torch.manual_seed(0)
        made = ControlNetModel.from_unet(pipe.unet.to(torch.float32))
        made.save_pretrained(folder + ".partial", safe_serialization=True)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(folder + ".partial", folder)
        print("wrote", folder, file=sys.stderr)
        pipe.unet.to(dtype)
    net = ControlNetModel.from_pretrained(folder, torch_dtype=dtype).to(device)
    torch.manual_seed(0)
    latents = torch.randn(2, 4, 64, 64, device=device, dtype=dtype)
    context = torch.randn(2, 77, 768, device=device, dtype=dtype)
    hint = torch.rand(2, 3, 512, 512, device=device, dtype=dtype)
    control = lambda: net(latents, 500, encoder_hidden_states=context, controlnet_cond=hint,
                          return_dict=False)

    def step():
        down, mid = control()
        return pipe.unet(latents, 500, encoder_hidden_states=context,
                         down_block_additional_residuals=down, mid_block_additional_residual=mid)

    results = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": device}
    results["unet_step"] = timed(
        lambda: pipe.unet(latents, 500, encoder_hidden_states=context), repeats
    )
    results["controlnet"] = timed(control, repeats)
    results["controlled_step"] = timed(step, repeats)
    folder = os.path.join(root, "t2i-adapter-sd15")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        torch.manual_seed(0)
        T2IAdapter().save_pretrained(folder + ".partial", safe_serialization=True)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(folder + ".partial", folder)
        print("wrote", folder, file=sys.stderr)
    adapter = T2IAdapter.from_pretrained(folder, torch_dtype=dtype).to(device)
    results["adapter"] = timed(lambda: adapter(hint[:1]), repeats)
    return results


@torch.no_grad()
def annotators(root, repeats):
    """The preprocessors at their released sizes (needs `controlnet_aux`): HED
    (`ControlNetHED_Apache2`, `ControlNetHED.pth`), PiDiNet (`table5_pidinet.pth`), the anime
    line-art U-Net (`netG.pth`) and the line-art generator
    (`Generator(3, 1, 3)`, `sk_model.pth`) with random weights in `<root>/annotators/`, a 512²
    picture there (`picture.png`, noise), and `controlnet_aux`'s time for each detector's whole
    call on it at 512 (`softedge_hed`, `softedge_pidinet`, `lineart`, and `lineart_standard`,
    which has no network), M-LSD (`mlsd_large_512_fp32.pth`, `mlsd`), and Depth Anything V2's ViT-S (`depth_anything_v2_vits.pth`) timed
    through its repository's own `infer_image` and the stretch to bytes — $DEPTH_ANYTHING_V2
    is a checkout of github.com/DepthAnything/Depth-Anything-V2 —
    on the CPU."""
    checkout = os.environ.get("DEPTH_ANYTHING_V2")
    if not checkout:
        sys.exit("set DEPTH_ANYTHING_V2 to a checkout of github.com/DepthAnything/Depth-Anything-V2")
    sys.path.insert(0, checkout)
    from depth_anything_v2.dpt import DepthAnythingV2
    import numpy as np
    from PIL import Image
    from controlnet_aux.hed import ControlNetHED_Apache2, HEDdetector
    from controlnet_aux.lineart import Generator, LineartDetector
    from controlnet_aux.lineart_standard import LineartStandardDetector
    import functools
    from controlnet_aux.lineart_anime import LineartAnimeDetector, UnetGenerator
    from controlnet_aux.pidi import PidiNetDetector
    from controlnet_aux.pidi.model import pidinet
    from controlnet_aux.mlsd import MLSDdetector
    from controlnet_aux.mlsd.models.mbv2_mlsd_large import MobileV2_MLSD_Large

    folder = os.path.join(root, "annotators")
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)
    files = {"ControlNetHED.pth": ControlNetHED_Apache2, "sk_model.pth": lambda: Generator(3, 1, 3),
             "table5_pidinet.pth": pidinet,
             "mlsd_large_512_fp32.pth": MobileV2_MLSD_Large,
             "depth_anything_v2_vits.pth": lambda: DepthAnythingV2(
                 encoder="vits", features=64, out_channels=[48, 96, 192, 384]),
             "netG.pth": lambda: UnetGenerator(3, 1, 8, 64, norm_layer=functools.partial(
                 torch.nn.InstanceNorm2d, affine=False, track_running_stats=False))}
    nets = {}
    for file, make_net in files.items():
        path = os.path.join(folder, file)
        # PiDiNet's release keeps its weights under `state_dict`, named `module.…`.
        wrapped = file == "table5_pidinet.pth"
        if not os.path.isfile(path):
            state = make_net().state_dict()
            if wrapped:
                state = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
            torch.save(state, path + ".partial")
            os.replace(path + ".partial", path)
            print("wrote", path, file=sys.stderr)
        net = make_net()
        state = torch.load(path)
        if wrapped:
            state = {k.removeprefix("module."): v for k, v in state["state_dict"].items()}
        net.load_state_dict(state)
        nets[file] = net.float().eval()
    picture_path = os.path.join(folder, "picture.png")
    if not os.path.isfile(picture_path):
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)).save(picture_path)
    picture = np.asarray(Image.open(picture_path).convert("RGB"))
    hed = HEDdetector(nets["ControlNetHED.pth"])
    lineart = LineartDetector(nets["sk_model.pth"], nets["sk_model.pth"])
    standard = LineartStandardDetector()
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": "cpu"}
    results["softedge_hed"] = timed(lambda: hed(picture, output_type="np"), repeats)
    pidi = PidiNetDetector(nets["table5_pidinet.pth"])
    results["softedge_pidinet"] = timed(lambda: pidi(picture, output_type="np"), repeats)
    results["lineart"] = timed(lambda: lineart(picture, output_type="np"), repeats)
    anime = LineartAnimeDetector(nets["netG.pth"])
    results["lineart_anime"] = timed(lambda: anime(picture, output_type="np"), repeats)
    results["lineart_standard"] = timed(lambda: standard(picture, output_type="np"), repeats)
    depth_net = nets["depth_anything_v2_vits.pth"]

    def depth():
        d = depth_net.infer_image(picture[:, :, ::-1].copy(), 518)
        return ((d - d.min()) / (d.max() - d.min()) * 255.0).astype(np.uint8)

    results["depth_anything_v2"] = timed(depth, repeats)
    mlsd = MLSDdetector(nets["mlsd_large_512_fp32.pth"])
    results["mlsd"] = timed(lambda: mlsd(picture, output_type="np"), repeats)
    return results


UPSCALERS = {"esrgan_x4": "esrgan-x4.pth", "compact_x4": "compact-x4.pth",
             "span_x4": "span-x4.pth", "realplksr_x4": "realplksr-x4.pth",
             "swinir_x4": "swinir-x4.pth", "hat_x4": "hat-x4.pth", "dat_x4": "dat-x4.pth",
             "omnisr_x4": "omnisr-x4.pth"}


@torch.no_grad()
def upscalers(root, repeats, only=""):
    from spandrel import ModelLoader
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.DAT import DAT
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.HAT import HAT
    from spandrel.architectures.OmniSR import OmniSR
    from spandrel.architectures.PLKSR import RealPLKSR
    from spandrel.architectures.SPAN import SPAN
    from spandrel.architectures.SwinIR import SwinIR

    folder = os.path.join(root, "upscalers")
    os.makedirs(folder, exist_ok=True)
    made = {"esrgan_x4": lambda: ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4),
            "compact_x4": lambda: Compact(num_feat=64, num_conv=32, upscale=4),
            "span_x4": lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=48, upscale=4),
            "realplksr_x4": lambda: RealPLKSR(dim=64, n_blocks=28, upscaling_factor=4,
                                              kernel_size=17, split_ratio=0.25),
            "swinir_x4": lambda: SwinIR(img_size=64, window_size=8, embed_dim=180, depths=[6] * 6,
                                        num_heads=[6] * 6, mlp_ratio=2.0, upscale=4,
                                        upsampler="nearest+conv", resi_connection="1conv"),
            "hat_x4": lambda: HAT(img_size=64, window_size=16, embed_dim=180, depths=[6] * 6,
                                  num_heads=[6] * 6, compress_ratio=3, squeeze_factor=30,
                                  overlap_ratio=0.5, mlp_ratio=2.0, upscale=4),
            "dat_x4": lambda: DAT(img_size=64, embed_dim=180, split_size=[8, 32], depth=[6] * 6,
                                  num_heads=[6] * 6, expansion_factor=4.0, upscale=4),
            "omnisr_x4": lambda: OmniSR(num_feat=64, block_num=1, pe=True, window_size=8,
                                        res_num=5, up_scale=4, bias=True)}
    device = os.environ.get("AUTONOMY_BENCH_TORCH_DEVICE", "cpu")
    dtype = torch.float32 if device == "cpu" else torch.float16
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": device}
    image = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    image = image.to(device=device, dtype=dtype)
    for key, file in UPSCALERS.items():
        if only not in key:
            continue
        path = os.path.join(folder, file)
        if not os.path.isfile(path):
            torch.manual_seed(0)
            torch.save(made[key]().state_dict(), path + ".partial")
            os.replace(path + ".partial", path)
        # The Swin transformers run in f32, as Autonomy runs them (spandrel runs SwinIR and
        # DAT in f32 only).
        half = key not in ("swinir_x4", "hat_x4", "dat_x4")
        kind = dtype if half else torch.float32
        model = ModelLoader().load_from_file(path).model.eval().to(device=device, dtype=kind)
        results[key] = timed(lambda: model(image.to(kind)), repeats)
    return results


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("make", "time", "upscalers", "controlnet",
                                                 "annotators"):
        sys.exit(__doc__)
    if sys.argv[1] == "make":
        make(sys.argv[2])
    elif sys.argv[1] == "upscalers":
        repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
        only = sys.argv[4] if len(sys.argv) > 4 else ""
        print(json.dumps(upscalers(sys.argv[2], repeats, only)))
    elif sys.argv[1] == "annotators":
        repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
        print(json.dumps(annotators(sys.argv[2], repeats)))
    elif sys.argv[1] == "controlnet":
        repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
        print(json.dumps(controlnet(sys.argv[2], repeats)))
    else:
        repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
        print(json.dumps(measure(sys.argv[2], repeats)))


if __name__ == "__main__":
    main()
