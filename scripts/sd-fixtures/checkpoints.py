"""Builds the tiny single-file checkpoints the Rust tests load, and diffusers' reference outputs.

Run by hand (never in CI), from the repository root, in make.py's environment:

    /work/sdenv/bin/python scripts/sd-fixtures/checkpoints.py

A single-file checkpoint is what A1111, ComfyUI and model sites share: one `.safetensors` with
the UNet (`model.diffusion_model.`), the VAE (`first_stage_model.`) and the text encoders
(`cond_stage_model.` for SD 1.x/2.x, `conditioner.embedders.N.` for SDXL) in the original code's
names, in f16, with no config and no tokenizer. Two are made in `checkpoints/`:

- `tiny-sd15.safetensors`: OpenAI CLIP's text tower stored in transformers' names, 8 heads per
  UNet block, 1×1-convolution attention in the VAE, the leftovers real files carry
  (`alphas_cumprod`, the text tower's `position_ids`);
- `tiny-sdxl.safetensors`: OpenAI CLIP plus an OpenCLIP tower (fused `in_proj` query/key/value,
  a `text_projection` multiplied from the right) with 64-wide heads, the `text_time` added
  conditioning.

`tiny-sd15.ckpt` holds the same tensors as `tiny-sd15.safetensors` in A1111's older format, a
`torch.save` archive of a Lightning checkpoint (`state_dict` beside `epoch`, `global_step`, …);
`checkpoints.py --pickle` writes it alone.

`tiny-sd15-lcm.reference.safetensors` makes tiny-sd15 an LCM-distilled checkpoint: one more
UNet tensor, the guidance-scale projection, and what diffusers' LCM pipeline computes with it
(`checkpoints.py --lcm` writes it alone).

Both keep what the families' rules need (heads, vocabulary, 32 norm groups) and are tiny
otherwise; the text towers embed CLIP's whole 49 408-token vocabulary, so the tokenizer they are
read with is the real one (`pipeline/src/models/sd/vocab/clip-merges.txt.gz`).

Each is written from a random-weight diffusers pipeline by the inverse of diffusers' own
single-file conversion, then read back by diffusers' converters (`convert_ldm_unet_checkpoint`,
`convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`, `convert_open_clip_checkpoint`):
every tensor must come back bit for bit. (They are called one by one: `from_single_file` tells
SDXL's towers apart by their widths, which would make this file three times larger.) Next to
each, `<name>.reference.safetensors` holds what that pipeline computes: token ids (also for awkward
prompts), text embeddings, one UNet call, one VAE decode, a whole sampling run.
"""

import gzip
import json
import os
import sys
import tempfile

import torch
from diffusers import (
    EulerDiscreteScheduler,
    LatentConsistencyModelPipeline,
    LCMScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make import (  # noqa: E402
    AWKWARD, NEGATIVE, OUT, PROMPT, SD_BETAS, byte_alphabet, ids, merged, nudge, random_lora,
    tiny_vae,
)

CHECKPOINTS = os.path.join(OUT, "checkpoints")
MERGES = os.path.join("pipeline", "src", "models", "sd", "vocab", "clip-merges.txt.gz")
VOCAB = 49408
RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def clip_tokenizer(folder, pad):
    """OpenAI CLIP's tokenizer, from the merges the Rust crate embeds, saved into `folder`."""
    with gzip.open(MERGES, "rt", encoding="utf-8") as f:
        merges = [line for line in f.read().splitlines()[1:] if line]
    alphabet = list(byte_alphabet().values())
    vocab = alphabet + [c + "</w>" for c in alphabet]
    vocab += ["".join(m.split(" ")) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == VOCAB
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({token: i for i, token in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(
        os.path.join(folder, "vocab.json"),
        os.path.join(folder, "merges.txt"),
        pad_token=pad,
        model_max_length=77,
    )
    tokenizer.save_pretrained(folder)
    return tokenizer


def text_tower(hidden, act, projection=None):
    config = CLIPTextConfig(
        vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=2, num_attention_heads=hidden // 64, max_position_embeddings=77,
        hidden_act=act, projection_dim=projection or hidden, bos_token_id=VOCAB - 2,
        eos_token_id=VOCAB - 1, pad_token_id=VOCAB - 1,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def vae(scaling):
    """A VAE with real SD's 32 norm groups, 32 channels wide."""
    return tiny_vae(widths=(32,) * 4, groups=32, scaling=scaling)


def ldm_unet(state, layers, up_attention):
    """A diffusers UNet state dict in the original names (`model.diffusion_model.…`)."""
    outside = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "add_embedding.linear_1": "label_emb.0.0",
        "add_embedding.linear_2": "label_emb.0.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    out = {}
    for key, value in state.items():
        module, leaf = key.rsplit(".", 1)
        p = module.split(".")
        if module in outside:
            name = outside[module]
        elif p[0] == "down_blocks":
            b = int(p[1])
            if p[2] == "downsamplers":
                name = f"input_blocks.{(b + 1) * (layers + 1)}.0.op"
            else:
                n = 1 + b * (layers + 1) + int(p[3])
                name = (f"input_blocks.{n}.0.{RESNET[p[4]]}" if p[2] == "resnets"
                        else ".".join([f"input_blocks.{n}.1"] + p[4:]))
        elif p[0] == "mid_block":
            name = (f"middle_block.{2 * int(p[2])}.{RESNET[p[3]]}" if p[1] == "resnets"
                    else ".".join(["middle_block.1"] + p[3:]))
        elif p[0] == "up_blocks":
            b = int(p[1])
            if p[2] == "upsamplers":
                name = f"output_blocks.{b * (layers + 1) + layers}.{2 if up_attention[b] else 1}.conv"
            else:
                n = b * (layers + 1) + int(p[3])
                name = (f"output_blocks.{n}.0.{RESNET[p[4]]}" if p[2] == "resnets"
                        else ".".join([f"output_blocks.{n}.1"] + p[4:]))
        else:
            raise ValueError(key)
        out[f"model.diffusion_model.{name}.{leaf}"] = value
    return out


def ldm_vae(state, levels):
    """A diffusers VAE state dict in the original names (`first_stage_model.…`), its middle
    attention as 1×1 convolutions."""
    attention = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
    out = {}
    for key, value in state.items():
        half, rest = key.split(".", 1)
        p = rest.split(".")
        shortcut = lambda parts: ".".join(parts).replace("conv_shortcut", "nin_shortcut")
        if half in ("quant_conv", "post_quant_conv") or p[0] in ("conv_in", "conv_out"):
            name = key
        elif p[0] == "conv_norm_out":
            name = f"{half}.norm_out.{p[1]}"
        elif p[0] == "mid_block" and p[1] == "resnets":
            name = f"{half}.mid.block_{int(p[2]) + 1}.{shortcut(p[3:])}"
        elif p[0] == "mid_block":
            name = f"{half}.mid.attn_1.{attention[p[3]]}.{p[-1]}"
            if p[3] != "group_norm" and p[-1] == "weight":
                value = value[:, :, None, None]
        elif p[0] == "down_blocks":
            name = (f"{half}.down.{p[1]}.block.{p[3]}.{shortcut(p[4:])}" if p[2] == "resnets"
                    else f"{half}.down.{p[1]}.downsample.conv.{p[-1]}")
        elif p[0] == "up_blocks":
            i = levels - 1 - int(p[1])
            name = (f"{half}.up.{i}.block.{p[3]}.{shortcut(p[4:])}" if p[2] == "resnets"
                    else f"{half}.up.{i}.upsample.conv.{p[-1]}")
        else:
            raise ValueError(key)
        out[f"first_stage_model.{name}"] = value
    return out


def ldm_open_clip(state, prefix):
    """A transformers CLIP text state dict as OpenCLIP names it (`…model.`): fused `in_proj`,
    the projection transposed."""
    s = lambda name: state[f"text_model.{name}"]
    out = {
        "token_embedding.weight": s("embeddings.token_embedding.weight"),
        "positional_embedding": s("embeddings.position_embedding.weight"),
        "ln_final.weight": s("final_layer_norm.weight"),
        "ln_final.bias": s("final_layer_norm.bias"),
        "logit_scale": torch.tensor(4.6052),
    }
    if "text_projection.weight" in state:
        out["text_projection"] = state["text_projection.weight"].T.contiguous()
    layers = {int(k.split(".")[3]) for k in state if k.startswith("text_model.encoder.layers.")}
    for i in sorted(layers):
        d, t = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        for leaf in ("weight", "bias"):
            out[d + f"ln_1.{leaf}"] = s(t + f"layer_norm1.{leaf}")
            out[d + f"ln_2.{leaf}"] = s(t + f"layer_norm2.{leaf}")
            out[d + f"attn.in_proj_{leaf}"] = torch.cat(
                [s(t + f"self_attn.{x}_proj.{leaf}") for x in "qkv"]
            )
            out[d + f"attn.out_proj.{leaf}"] = s(t + f"self_attn.out_proj.{leaf}")
            out[d + f"mlp.c_fc.{leaf}"] = s(t + f"mlp.fc1.{leaf}")
            out[d + f"mlp.c_proj.{leaf}"] = s(t + f"mlp.fc2.{leaf}")
    return {prefix + k: v for k, v in out.items()}


def openai_clip(model, prefix):
    """transformers CLIP text state dict under `prefix` (with `text_model.`, as SD files do)."""
    state = {k if k.startswith("text_model.") else f"text_model.{k}": v
             for k, v in model.state_dict().items()}
    return {prefix + k: v for k, v in state.items()}


@torch.no_grad()
def to_f16_values(*modules):
    """Round every weight to f16, as the checkpoint stores them, so the pipeline that makes the
    references holds exactly what the file does."""
    for module in modules:
        for p in module.parameters():
            p.copy_(p.half().float())


def write(pipe, name, checkpoint, open_clip_prefix=None):
    """Saves `checkpoint` in f16 (what is not a float as it is), and checks that diffusers' own
    single-file converters read every component back to `pipe`'s weights bit for bit."""
    path = os.path.join(CHECKPOINTS, f"{name}.safetensors")
    stored = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in checkpoint.items()}
    save_file(stored, path, metadata={"format": "pt"})
    back = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(path).items()}
    converted = {
        "unet": convert_ldm_unet_checkpoint(back, pipe.unet.config),
        "vae": convert_ldm_vae_checkpoint(back, pipe.vae.config),
    }
    if getattr(pipe, "text_encoder", None) is not None:
        converted["text_encoder"] = convert_ldm_clip_checkpoint(back)
    if open_clip_prefix:
        converted["text_encoder_2"] = convert_open_clip_checkpoint(
            pipe.text_encoder_2, back, prefix=open_clip_prefix
        )
    plain = lambda k: k.removeprefix("text_model.")
    for component, got in converted.items():
        got = {plain(k): v for k, v in got.items()}
        want = {plain(k): v for k, v in getattr(pipe, component).state_dict().items()}
        wrong = [k for k in want if k not in got or not torch.equal(want[k], got[k])]
        assert not wrong, f"{name} {component}: {wrong[:5]}"


def decode_and_run(pipe, g, **sizes):
    """One VAE decode and a whole 4-step run at guidance 5 from latents drawn from `g`."""
    latents = torch.randn(1, 4, 8, 8, generator=g)
    init = torch.randn(1, 4, 8, 8, generator=g)
    run = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=5.0,
               latents=init.clone(), output_type="np", height=64, width=64, **sizes).images
    return {
        "vae_latents": latents,
        "vae_decoded": pipe.vae.decode(latents).sample,
        "run_init": init,
        "run_image": torch.from_numpy(run).contiguous(),
    }


def tokens(tokenizer):
    return torch.stack([ids(tokenizer, text)[0] for text in AWKWARD]).to(torch.int64)


@torch.no_grad()
def build_sd15(name):
    torch.manual_seed(0)
    scratch = tempfile.mkdtemp()
    tokenizer = clip_tokenizer(os.path.join(scratch, "tokenizer"), "<|endoftext|>")
    text = text_tower(64, "quick_gelu")
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, block_out_channels=(32, 32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=32,
    )
    autoencoder = vae(0.18215)
    nudge(text, unet, vae=autoencoder)
    to_f16_values(text, unet, autoencoder)
    scheduler = PNDMScheduler(**SD_BETAS, skip_prk_steps=True, steps_offset=1,
                              set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(
        vae=autoencoder, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    checkpoint = {
        **ldm_unet(unet.state_dict(), 1, [False, True, True]),
        **ldm_vae(autoencoder.state_dict(), 4),
        **openai_clip(text, "cond_stage_model.transformer."),
        "cond_stage_model.transformer.text_model.embeddings.position_ids":
            torch.arange(77, dtype=torch.int64)[None],
        "alphas_cumprod": scheduler.alphas_cumprod.clone(),
    }
    write(pipe, name, checkpoint)
    g = torch.Generator().manual_seed(1)
    cond_ids, uncond_ids = ids(pipe.tokenizer, PROMPT), ids(pipe.tokenizer, NEGATIVE)
    cond, uncond = pipe.text_encoder(cond_ids)[0], pipe.text_encoder(uncond_ids)[0]
    sample = torch.randn(2, 4, 8, 8, generator=g)
    eps = pipe.unet(sample, 501, encoder_hidden_states=torch.cat([uncond, cond])).sample
    return {
        "tokens": tokens(pipe.tokenizer),
        "cond_ids": cond_ids.to(torch.int64),
        "cond": cond,
        "uncond": uncond,
        "unet_sample": sample,
        "unet_eps": eps,
        **kohya_lora(pipe, sample),
        **decode_and_run(pipe, g),
    }


def kohya_lora(pipe, sample):
    """`loras/tiny-sd15-kohya.safetensors`, a kohya LoRA for the checkpoint (UNet attention and
    text encoder), and the text states and UNet output with it merged at 0.8, checked against
    diffusers' own loader on the UNet."""
    state, updates = random_lora(pipe, 21, True)
    folder = os.path.join(CHECKPOINTS, "loras")
    os.makedirs(folder, exist_ok=True)
    save_file(state, os.path.join(folder, "tiny-sd15-kohya.safetensors"))

    def outputs(unet, text):
        context = torch.cat([text(ids(pipe.tokenizer, NEGATIVE))[0], text(ids(pipe.tokenizer, PROMPT))[0]])
        return context, unet(sample, 501, encoder_hidden_states=context).sample

    context, eps = outputs(*merged(pipe, [(updates, 0.8)]))
    pipe.load_lora_weights({k: v for k, v in state.items() if k.startswith("lora_unet_")},
                           adapter_name="kohya")
    pipe.set_adapters(["kohya"], adapter_weights=[0.8])
    _, theirs = outputs(pipe.unet, pipe.text_encoder)
    pipe.unload_lora_weights()
    unet, _ = merged(pipe, [([u for u in updates if u[0] == "unet"], 0.8)])
    _, ours = outputs(unet, pipe.text_encoder)
    assert torch.allclose(theirs, ours, atol=1e-4), (theirs - ours).abs().max()
    return {"lora_cond": context[1:], "lora_eps": eps}


@torch.no_grad()
def build_sdxl(name):
    torch.manual_seed(0)
    scratch = tempfile.mkdtemp()
    tokenizers = [
        clip_tokenizer(os.path.join(scratch, "tokenizer"), "<|endoftext|>"),
        clip_tokenizer(os.path.join(scratch, "tokenizer_2"), "!"),
    ]
    text = text_tower(64, "quick_gelu")
    text_2 = text_tower(64, "gelu", projection=32)
    unet = UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, block_out_channels=(64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2), cross_attention_dim=64 + 64,
        attention_head_dim=(1, 1), norm_num_groups=32, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8,
    )
    autoencoder = vae(0.13025)
    nudge(text, text_2, unet, vae=autoencoder)
    to_f16_values(text, text_2, unet, autoencoder)
    pipe = StableDiffusionXLPipeline(
        vae=autoencoder, text_encoder=text, text_encoder_2=text_2, tokenizer=tokenizers[0],
        tokenizer_2=tokenizers[1], unet=unet,
        scheduler=EulerDiscreteScheduler(**SD_BETAS, steps_offset=1, timestep_spacing="leading"),
    )
    checkpoint = {
        **ldm_unet(unet.state_dict(), 1, [True, False]),
        **ldm_vae(autoencoder.state_dict(), 4),
        **openai_clip(text, "conditioner.embedders.0.transformer."),
        **ldm_open_clip(text_2.state_dict(), "conditioner.embedders.1.model."),
    }
    write(pipe, name, checkpoint, "conditioner.embedders.1.model.")
    g = torch.Generator().manual_seed(1)
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        PROMPT, negative_prompt=NEGATIVE, do_classifier_free_guidance=True
    )
    sample = torch.randn(2, 4, 8, 8, generator=g)
    # Autonomy's time ids are the native size's (the checkpoint's 128-latent UNet: 1024 px).
    time_ids = torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]] * 2)
    eps = pipe.unet(
        sample, 501, encoder_hidden_states=torch.cat([negative, embeds]),
        added_cond_kwargs={"text_embeds": torch.cat([negative_pooled, pooled]), "time_ids": time_ids},
    ).sample
    return {
        "tokens": tokens(pipe.tokenizer),
        "tokens_2": tokens(pipe.tokenizer_2),
        "cond": embeds,
        "uncond": negative,
        "pooled": pooled,
        "uncond_pooled": negative_pooled,
        "unet_sample": sample,
        "unet_eps": eps,
        **decode_and_run(pipe, g, original_size=(1024, 1024), target_size=(1024, 1024)),
    }


def write_pickle(name):
    """`<name>.ckpt`: the checkpoint's tensors as A1111's older `.ckpt` files hold them — a
    `torch.save` zip archive of a PyTorch Lightning checkpoint, the weights under `state_dict`
    beside the trainer's bookkeeping."""
    state = load_file(os.path.join(CHECKPOINTS, f"{name}.safetensors"))
    torch.save(
        {
            "state_dict": state,
            "epoch": 6,
            "global_step": 470000,
            "pytorch-lightning_version": "1.4.2",
            "callbacks": {},
        },
        os.path.join(CHECKPOINTS, f"{name}.ckpt"),
    )


def write_legacy_pickles(name):
    """Pickles as PyTorch wrote them before 1.6 (`_use_new_zipfile_serialization=False`: a
    magic number, the protocol and system pickles, the object pickle naming its storages, then
    each storage's element count and bytes): `<name>-vae.legacy.pt`, the checkpoint's VAE in
    A1111's VAE-file names under `state_dict`, and `layouts.legacy.pt`, tensors that are views
    into shared storages at an offset, transposed (Fortran order), f16, f64 and int64, with
    their values in `layouts.reference.safetensors`; and `layouts.pt`, the same tensors in
    today's zip archive."""
    state = load_file(os.path.join(CHECKPOINTS, f"{name}.safetensors"))
    vae = {k[len("first_stage_model."):]: v for k, v in state.items() if k.startswith("first_stage_model.")}
    torch.save({"state_dict": vae}, os.path.join(CHECKPOINTS, f"{name}-vae.legacy.pt"),
               _use_new_zipfile_serialization=False)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 7
    layouts = {
        "matrix": base,
        "rows_2_to_4": base[2:],
        "transposed": base.t(),
        "half": (base * 3).half(),
        "double": base.double()[1],
        "long": torch.arange(5, dtype=torch.int64) * 1000000007,
        "scalar": torch.tensor(2.5),
    }
    torch.save({"state_dict": layouts, "epoch": 3}, os.path.join(CHECKPOINTS, "layouts.legacy.pt"),
               _use_new_zipfile_serialization=False)
    torch.save({"state_dict": layouts, "epoch": 3}, os.path.join(CHECKPOINTS, "layouts.pt"))
    save_file({k: v.clone().contiguous() for k, v in layouts.items()},
              os.path.join(CHECKPOINTS, "layouts.reference.safetensors"))


@torch.no_grad()
def build_sd15_lcm(name):
    """`tiny-sd15-lcm.reference.safetensors`: tiny-sd15.safetensors made an LCM-distilled
    checkpoint by one more tensor, the UNet's guidance-scale projection
    `model.diffusion_model.time_embedding.cond_proj.weight` (the name diffusers' conversion to
    a single file keeps, and stable-diffusion.cpp lists), stored under `cond_proj`; and what
    diffusers' LCM pipeline computes with it, its components read back from the file by
    diffusers' own converters. The tests write the checkpoint themselves (the file plus that
    tensor) rather than commit a second copy."""
    torch.manual_seed(0)
    path = os.path.join(CHECKPOINTS, f"{name}.safetensors")
    back = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(path).items()}
    scratch = tempfile.mkdtemp()
    tokenizer = clip_tokenizer(os.path.join(scratch, "tokenizer"), "<|endoftext|>")
    text = text_tower(64, "quick_gelu")
    # The text tower's own names drop `text_model.` (transformers 5); its position ids are a
    # buffer the file carries and the module rebuilds.
    clip = {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(back).items()}
    wanted = text.state_dict().keys()
    clip = {(k if k in wanted else "text_model." + k): v for k, v in clip.items()}
    missing, unexpected = text.load_state_dict(clip, strict=False)
    assert all("position_ids" in k for k in missing + unexpected), (missing, unexpected)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, block_out_channels=(32, 32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=32, time_cond_proj_dim=16,
    )
    unet_state = convert_ldm_unet_checkpoint(back, unet.config)
    assert "time_embedding.cond_proj.weight" not in unet_state
    cond_proj = (torch.randn(32, 16) * 0.3).half()
    unet_state["time_embedding.cond_proj.weight"] = cond_proj.float()
    unet.load_state_dict(unet_state)
    autoencoder = vae(0.18215)
    autoencoder.load_state_dict(convert_ldm_vae_checkpoint(back, autoencoder.config))
    # What a single LCM file is sampled with: its family's betas, LCM's own defaults.
    scheduler = LCMScheduler(**SD_BETAS, set_alpha_to_one=True, timestep_spacing="leading",
                             original_inference_steps=50, timestep_scaling=10.0)
    pipe = LatentConsistencyModelPipeline(
        vae=autoencoder, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    g = torch.Generator().manual_seed(3)
    cond = pipe.text_encoder(ids(tokenizer, PROMPT))[0]
    sample = torch.randn(1, 4, 8, 8, generator=g)
    guidance = 8.5
    w = pipe.get_guidance_scale_embedding(torch.tensor([guidance - 1]), embedding_dim=16)
    eps = pipe.unet(sample, 499, encoder_hidden_states=cond, timestep_cond=w).sample
    init = torch.randn(1, 4, 8, 8, generator=g)
    # One step: LCM draws fresh noise between steps, which a second step would need.
    run = pipe(PROMPT, num_inference_steps=1, guidance_scale=guidance, latents=init.clone(),
               output_type="np", height=64, width=64).images
    tensors = {
        "cond_proj": cond_proj,
        "cond": cond,
        "unet_sample": sample,
        "unet_guidance": torch.tensor([guidance]),
        "unet_eps": eps,
        "run_init": init,
        "run_image": torch.from_numpy(run).contiguous(),
        "run_timesteps": pipe.scheduler.timesteps.to(torch.int64),
    }
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        os.path.join(CHECKPOINTS, f"{name}-lcm.reference.safetensors"),
        metadata={"prompt": PROMPT, "negative_prompt": NEGATIVE, "torch": torch.__version__},
    )


def main():
    if not os.path.isdir("pipeline"):
        sys.exit("run from the repository root")
    os.makedirs(CHECKPOINTS, exist_ok=True)
    if sys.argv[1:] == ["--lcm"]:
        build_sd15_lcm("tiny-sd15")
        print("wrote tiny-sd15-lcm.reference.safetensors")
        return
    if sys.argv[1:] == ["--pickle"]:
        write_pickle("tiny-sd15")
        write_legacy_pickles("tiny-sd15")
        print("wrote tiny-sd15.ckpt and the legacy pickles")
        return
    for name, build in (("tiny-sd15", build_sd15), ("tiny-sdxl", build_sdxl)):
        tensors = build(name)
        save_file(
            {k: v.contiguous() for k, v in tensors.items()},
            os.path.join(CHECKPOINTS, f"{name}.reference.safetensors"),
            metadata={"prompt": PROMPT, "negative_prompt": NEGATIVE, "torch": torch.__version__},
        )
        print("wrote", name)
    write_pickle("tiny-sd15")
    write_legacy_pickles("tiny-sd15")
    build_sd15_lcm("tiny-sd15")
    for folder, _, files in os.walk(CHECKPOINTS):  # safetensors writes them owner-only
        for file in files:
            os.chmod(os.path.join(folder, file), 0o644)


if __name__ == "__main__":
    main()
