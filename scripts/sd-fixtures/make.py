"""Builds the tiny Stable Diffusion fixtures the Rust tests load, and diffusers' reference outputs.

Run by hand (never in CI), from the repository root:

    python3 -m venv /work/sdenv
    /work/sdenv/bin/pip install torch diffusers transformers safetensors peft scipy \
        lycoris-lora einops toml
    /work/sdenv/bin/python scripts/sd-fixtures/make.py

Each fixture is a random-weight pipeline in the real diffusers folder layout (`model_index.json`,
`unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`), small enough to commit. The
tokenizer is a real CLIP byte-level BPE whose merges are learned here from a few game-asset
prompts. `tiny-sd15` also gets two LoRAs, `loras/kohya.safetensors` (kohya's `lora_unet_…` /
`lora_te_…` names with `.alpha`) and `loras/peft.safetensors` (diffusers' `unet.…lora_A` names),
with what diffusers computes when it loads them, `loras/locon.safetensors` (kohya's LoRA on the
3×3 convolutions too, checked against diffusers' loader), and two LyCORIS files, `loras/loha.safetensors`
(LoHa: `hada_w1_a` … `hada_w2_b`, Tucker `hada_t1`/`hada_t2` on half the 3×3 convolutions) and
`loras/lokr.safetensors` (LoKr: Kronecker products of `lokr_w1`(`_a`/`_b`) and
`lokr_w2`(`_a`/`_b`, Tucker `lokr_t2`)), LyCORIS's IA³ (`loras/ia3.safetensors`), full
(`loras/full.safetensors`: `diff`/`diff_b`), diag-OFT (`loras/oft.safetensors`) and GLoRA
(`loras/glora.safetensors`) files, IA³, OFT and GLoRA made and merged by the `lycoris-lora`
package's own modules, and a DoRA file `loras/dora.safetensors` (a LoRA with
`dora_scale` magnitudes on either axis), with what the model computes with them merged as
ComfyUI and LyCORIS merge them; `tiny-sdxl` gets `loras/kohya-xl.safetensors`
(kohya's SDXL naming: `lora_te1_…`, `lora_te2_…`, the UNet in the original model's block
names) with the outputs it gives. `tiny-sdxl-refiner` is SDXL's refiner layout: no first text
encoder or tokenizer, and five time ids (size, crop, aesthetic score) that differ between the
prompt's row and the negative's, checked image-to-image. `tiny-lcm` is an LCM-distilled pipeline
whose UNet takes the guidance scale as an embedding (`time_cond_proj_dim`). `tiny-taesd` is a
TAESD (`AutoencoderTiny`) VAE folder, checked standing in for tiny-sd15's VAE. Next to each folder, `<name>.reference.safetensors` holds what diffusers computes for
fixed inputs: the token ids, the text embeddings, one UNet call, one VAE decode, and a whole
sampling run from fixed initial latents; `tokens.json` holds the tokenizers' ids for awkward
prompts. Everything is seeded: running the script again gives the same files (same torch).
Name fixtures (`make.py tiny-sdxl-refiner`) to rebuild only those; `tokens.json` is rewritten
only by a whole run. The references built only by name: `embeddings`, `clip-skip`,
`prompt-syntax` (needs $LPW, $A1111 and $A1111_CLIP), `a1111-lengths` (prompts of different lengths
guided as A1111 guides them; needs $A1111 and $A1111_CLIP), `a1111-prompts` (A1111's prompt editing, alternation and `AND`;
needs $A1111, $LPW and `lark`), `hires` (the hires pass on tiny-sd15 and tiny-sdxl) and
`peft-oft` (`tiny-sd15/loras/oft_peft.safetensors`, PEFT's OFT, with its outputs added to
tiny-sd15's reference) and `hypernetworks` (three A1111 hypernetworks in
`tiny-sd15/hypernetworks/` and the UNet outputs they give) and `controlnet` (a tiny ControlNet for
tiny-sd15, as a diffusers folder and as an A1111/ComfyUI single file, a control image, and
`StableDiffusionControlNetPipeline`'s outputs with it; `multi-controlnet` and
`controlnet-inpaint` run it further) and `t2i-adapter` (tiny T2I-Adapters and
`StableDiffusionAdapterPipeline`'s outputs) and `annotators` (the ControlNet preprocessors'
networks against `controlnet_aux`) and `depth-anything` (Depth Anything V2 and the first
Depth Anything against their own repositories; needs $DEPTH_ANYTHING_V2 and $DEPTH_ANYTHING,
checkouts of them). `make.py --extend tiny-sd21 tiny-sdxl` adds the references written since
the fixtures were made (a whole run with guidance rescale; SDXL's base handing its latents to the
refiner; tiny-sd15's IA³, full, OFT and GLoRA files) without touching the rest.
"""

import ast
import collections
import copy
import json
import logging
import os
import re
import shutil
import sys
import typing
import types

import torch
import numpy as np
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    DDIMScheduler,
    EulerDiscreteScheduler,
    LatentConsistencyModelPipeline,
    LCMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

OUT = os.path.join("pipeline", "tests", "fixtures", "sd")
PROMPT = "a red potion bottle, pixel art"
NEGATIVE = "blurry"

CORPUS = """
a red potion bottle pixel art sprite of a golden crown with jewels mossy stone bricks texture
wooden crate seamless tileable grass dirt sand water lava ice snow metal rusty iron sword shield
bow arrow magic wand scroll book chest treasure coin gem ruby emerald sapphire diamond apple
bread cheese fish meat mushroom flower tree bush rock cave dungeon castle tower village house
roof wall floor tile door window torch fire smoke cloud sky night day sun moon star hero knight
wizard archer goblin orc dragon slime skeleton ghost bat spider wolf bear cat dog horse bird
blurry ugly low quality watermark text signature cartoon realistic painting detailed 8k
"""


def byte_alphabet():
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters, in CLIP's order."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def learn_bpe(words, merges_wanted):
    """Learns `merges_wanted` CLIP-style merges (`</w>` on a word's last symbol)."""
    table = byte_alphabet()
    counts = collections.Counter(words)
    spelled = {}
    for word in counts:
        symbols = [table[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        spelled[word] = symbols
    merges = []
    for _ in range(merges_wanted):
        pairs = collections.Counter()
        for word, symbols in spelled.items():
            for a, b in zip(symbols, symbols[1:]):
                pairs[(a, b)] += counts[word]
        if not pairs:
            break
        best = max(pairs.items(), key=lambda item: (item[1], item[0]))[0]
        merges.append(best)
        for word, symbols in spelled.items():
            merged = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            spelled[word] = merged
    return merges


def write_tokenizer(folder, pad_token, hub_layout):
    """A CLIP tokenizer saved by transformers into `folder`: as `tokenizer.json`, or with
    `hub_layout` as `vocab.json` + `merges.txt` like the Hub's SD 1.5 and 2.1 folders."""
    merges = learn_bpe(CORPUS.split(), 300)
    alphabet = list(byte_alphabet().values())
    vocab = alphabet + [c + "</w>" for c in alphabet]
    vocab += ["".join(pair) for pair in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    scratch = folder + ".src"
    os.makedirs(scratch, exist_ok=True)
    with open(os.path.join(scratch, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({token: i for i, token in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(scratch, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    os.makedirs(folder, exist_ok=True)
    tokenizer = CLIPTokenizer(
        os.path.join(scratch, "vocab.json"),
        os.path.join(scratch, "merges.txt"),
        pad_token=pad_token,
        model_max_length=77,
    )
    if hub_layout:
        for file in ("vocab.json", "merges.txt"):
            shutil.copy(os.path.join(scratch, file), os.path.join(folder, file))
    shutil.rmtree(scratch)
    return tokenizer, len(vocab)


def build(name, *, v_prediction, linear_projection, head_dims, text_act, pad_token, scheduler,
          hub_layout=False, inpaint=False):
    """One tiny pipeline and its reference outputs."""
    torch.manual_seed(0)
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    tokenizer, vocab_size = write_tokenizer(
        os.path.join(folder, "tokenizer"), pad_token, hub_layout
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act=text_act,
            projection_dim=32,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=9 if inpaint else 4,
        out_channels=4,
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=head_dims,
        # candle's UNet blocks use 32 groups whatever the config says, as every released
        # Stable Diffusion does.
        norm_num_groups=32,
        use_linear_projection=linear_projection,
        upcast_attention=v_prediction,
    )
    vae = tiny_vae()
    # Random init leaves some weights at exactly 0 or 1 (norms, biases); nudge everything so a
    # loader that skipped a tensor would show.
    with torch.no_grad():
        for module in (text_encoder, unet, vae):
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        # A nearly deterministic encoder (log-variance −30): diffusers' image-to-image
        # samples the latent distribution with its own generator, Autonomy takes the mean.
        vae.quant_conv.bias[4:] = -30.0
    scheduler = scheduler(
        prediction_type="v_prediction" if v_prediction else "epsilon",
    )
    kind = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    pipe = kind(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    if hub_layout:
        os.remove(os.path.join(folder, "tokenizer", "tokenizer.json"))
    reference(pipe, name, inpaint)
    return tokenizer


LORA_RANK = 4


def lora_modules(pipe):
    """The linear layers the LoRAs adapt: attention and MLP of both networks."""
    unet = [
        name
        for name, module in pipe.unet.named_modules()
        if isinstance(module, torch.nn.Linear)
        and any(name.endswith(end) for end in ("to_q", "to_k", "to_v", "to_out.0", "ff.net.2"))
    ]
    text = [
        name
        for name, module in pipe.text_encoder.named_modules()
        if isinstance(module, torch.nn.Linear)
        and any(name.endswith(end) for end in ("q_proj", "v_proj", "out_proj", "fc1"))
    ]
    return unet, text


def random_lora(pipe, seed, kohya):
    """A rank-4 LoRA over `lora_modules`: its file contents, in kohya's naming (with `.alpha` 2,
    text encoder under `lora_te_text_model_…` as kohya writes it) or diffusers' PEFT naming
    (no alpha), and its updates as (network, module, down, up, alpha / rank)."""
    g = torch.Generator().manual_seed(seed)
    unet, text = lora_modules(pipe)
    tensors, updates = {}, []
    for network, model, names in (("unet", pipe.unet, unet), ("text", pipe.text_encoder, text)):
        modules = dict(model.named_modules())
        for name in names:
            layer = modules[name]
            down = torch.randn(LORA_RANK, layer.in_features, generator=g) * 0.2
            up = torch.randn(layer.out_features, LORA_RANK, generator=g) * 0.2
            if kohya:
                path = name if network == "unet" else "text_model." + name
                key = ("lora_unet_" if network == "unet" else "lora_te_") + path.replace(".", "_")
                tensors[f"{key}.lora_down.weight"] = down
                tensors[f"{key}.lora_up.weight"] = up
                tensors[f"{key}.alpha"] = torch.tensor(2.0)
                updates.append((network, name, down, up, 2.0 / LORA_RANK))
            else:
                prefix = "unet" if network == "unet" else "text_encoder"
                tensors[f"{prefix}.{name}.lora_A.weight"] = down
                tensors[f"{prefix}.{name}.lora_B.weight"] = up
                updates.append((network, name, down, up, 1.0))
    return tensors, updates


def conv_modules(pipe):
    """The UNet's ResNet 3×3 convolutions, which LyCORIS files also adapt."""
    return [
        name
        for name, module in pipe.unet.named_modules()
        if isinstance(module, torch.nn.Conv2d) and name.endswith(("conv1", "conv2"))
    ]


def norm_modules(model):
    """A network's group and layer norms, which LyCORIS's norm adapter changes."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm))
    ]


def factor(n):
    """A small factor of `n` for LoKr's Kronecker split."""
    return next(f for f in (4, 2, 1) if n % f == 0)


def tucker(t, b, a):
    """LyCORIS's (and ComfyUI's) Tucker rebuild: Σᵢⱼ t[i, j, k, l] · b[j, r] · a[i, p]."""
    return torch.einsum("i j k l, j r, i p -> p r k l", t, b, a)


def random_lycoris(pipe, seed, kind):
    """A LoCon (kohya's LoRA with 3×3 convolutions: `lora_down` (rank, in, 3, 3), `lora_up`
    (out, rank, 1, 1)), LyCORIS LoHa or LoKr over `lora_modules` and the UNet's 3×3
    convolutions, in kohya's naming with `.alpha` 2 (rank 4): its file contents and each
    weight's change at scale 1.

    LoHa: ΔW = (w1a·w1b) ⊙ (w2a·w2b) · alpha/rank, each factor a Tucker rebuild on every other
    convolution. LoKr: ΔW = w1 ⊗ w2 · alpha/rank, w1 whole (decomposed on the text encoder) and
    w2 decomposed (whole on the text encoder, Tucker on every other convolution)."""
    g = torch.Generator().manual_seed(seed)
    r = LORA_RANK
    rand = lambda *shape: torch.randn(*shape, generator=g) * 0.5
    unet, text = lora_modules(pipe)
    tensors, deltas = {}, []
    for network, model, names in (
        ("unet", pipe.unet, unet + conv_modules(pipe)),
        ("text", pipe.text_encoder, text),
    ):
        modules = dict(model.named_modules())
        for n, name in enumerate(names):
            weight = modules[name].weight
            out, inp, kernel = weight.shape[0], weight.shape[1], tuple(weight.shape[2:])
            use_tucker = bool(kernel) and n % 2 == 0
            parts = {}
            if kind == "locon":
                down = rand(r, inp, *kernel) * 0.4
                up = rand(out, r, *((1, 1) if kernel else ())) * 0.4
                parts.update({"lora_down.weight": down, "lora_up.weight": up})
                delta = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)
            elif kind == "loha":
                factors = []
                for i in (1, 2):
                    if use_tucker:
                        t, a, b = rand(r, r, *kernel), rand(r, out), rand(r, inp)
                        parts.update({f"hada_t{i}": t, f"hada_w{i}_a": a, f"hada_w{i}_b": b})
                        factors.append(tucker(t, b, a))
                    else:
                        a, b = rand(out, r), rand(r, inp * int(np.prod(kernel)))
                        parts.update({f"hada_w{i}_a": a, f"hada_w{i}_b": b})
                        factors.append((a @ b).reshape(weight.shape))
                delta = factors[0] * factors[1]
            else:
                (a1, b1) = (factor(out), factor(inp))
                (c, d) = (out // a1, inp // b1)
                if network == "text":
                    w1a, w1b, w2 = rand(a1, r), rand(r, b1), rand(c, d, *kernel)
                    parts.update({"lokr_w1_a": w1a, "lokr_w1_b": w1b, "lokr_w2": w2})
                    w1 = w1a @ w1b
                elif use_tucker:
                    w1, t2, w2a, w2b = rand(a1, b1), rand(r, r, *kernel), rand(r, c), rand(r, d)
                    parts.update({"lokr_w1": w1, "lokr_t2": t2, "lokr_w2_a": w2a, "lokr_w2_b": w2b})
                    w2 = tucker(t2, w2b, w2a)
                else:
                    w1, w2a, w2b = rand(a1, b1), rand(c, r), rand(r, d * int(np.prod(kernel)))
                    parts.update({"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b})
                    w2 = (w2a @ w2b).reshape(c, d, *kernel)
                if kernel:
                    w1 = w1[:, :, None, None]
                delta = torch.kron(w1.contiguous(), w2.contiguous()).reshape(weight.shape)
            path = name if network == "unet" else "text_model." + name
            key = ("lora_unet_" if network == "unet" else "lora_te_") + path.replace(".", "_")
            for part, value in parts.items():
                tensors[f"{key}.{part}"] = value.contiguous()
            tensors[f"{key}.alpha"] = torch.tensor(2.0)
            deltas.append((network, name, delta * (2.0 / r)))
    return tensors, deltas


def axis_norm(weight, output_axis):
    """The L2 norm of `weight` per output row (shape (out, 1, …)) or per input column (shape
    (1, in, …)), as DoRA's magnitudes are kept."""
    if output_axis:
        return weight.reshape(weight.shape[0], -1).norm(dim=1).reshape(weight.shape[0], *[1] * (weight.dim() - 1))
    flat = weight.transpose(0, 1).reshape(weight.shape[1], -1).norm(dim=1)
    return flat.reshape(1, weight.shape[1], *[1] * (weight.dim() - 2))


def random_dora(pipe, seed, scale):
    """A DoRA file as kohya and LyCORIS write it: a LoRA (with `.alpha` 2, rank 4) over
    `lora_modules` and the UNet's 3×3 convolutions, plus a `dora_scale` magnitude per weight, on
    the input axis (LyCORIS's default, (1, in, …)) in the UNet and on the output axis
    ((out, 1, …), as PEFT keeps it) in the text encoder. Returns the file contents and each
    weight's merged value at `scale`, as LyCORIS and ComfyUI merge it:
    W' = W + scale · (m / ‖W + (alpha/rank)·ΔW‖ · (W + (alpha/rank)·ΔW) − W)."""
    g = torch.Generator().manual_seed(seed)
    r = LORA_RANK
    unet, text = lora_modules(pipe)
    tensors, merged_weights = {}, []
    for network, model, names in (
        ("unet", pipe.unet, unet + conv_modules(pipe)),
        ("text", pipe.text_encoder, text),
    ):
        modules = dict(model.named_modules())
        for name in names:
            weight = modules[name].weight.detach()
            out, inp, kernel = weight.shape[0], weight.shape[1], tuple(weight.shape[2:])
            down = torch.randn(r, inp, *kernel, generator=g) * 0.2
            up = torch.randn(out, r, *((1, 1) if kernel else ()), generator=g) * 0.2
            delta = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)
            output_axis = network == "text"
            magnitude = axis_norm(weight, output_axis) * (1 + 0.2 * torch.randn(axis_norm(weight, output_axis).shape, generator=g))
            calc = weight + (2.0 / r) * delta
            decomposed = calc * (magnitude / axis_norm(calc, output_axis))
            merged_weights.append((network, name, weight + scale * (decomposed - weight)))
            path = name if network == "unet" else "text_model." + name
            key = ("lora_unet_" if network == "unet" else "lora_te_") + path.replace(".", "_")
            tensors[f"{key}.lora_down.weight"] = down.contiguous()
            tensors[f"{key}.lora_up.weight"] = up.contiguous()
            tensors[f"{key}.alpha"] = torch.tensor(2.0)
            tensors[f"{key}.dora_scale"] = magnitude.contiguous()
    return tensors, merged_weights


def merged(pipe, loras):
    """Copies of the UNet and text encoder with `W += scale · (alpha/rank) · up @ down`."""
    unet, text = copy.deepcopy(pipe.unet), copy.deepcopy(pipe.text_encoder)
    for updates, scale in loras:
        for network, name, down, up, factor in updates:
            model = unet if network == "unet" else text
            dict(model.named_modules())[name].weight.add_(scale * factor * (up @ down))
    return unet, text


@torch.no_grad()
def lora_reference(pipe, folder, tensors):
    """Writes the LoRAs and the text embeddings and UNet output with them merged, checked
    against diffusers' own LoRA loader where it reads the format."""
    os.makedirs(os.path.join(folder, "loras"), exist_ok=True)
    kohya, kohya_updates = random_lora(pipe, 11, True)
    peft, peft_updates = random_lora(pipe, 12, False)
    for name, state in (("kohya", kohya), ("peft", peft)):
        save_file(state, os.path.join(folder, "loras", f"{name}.safetensors"))
    sample = tensors["unet_sample"]

    def outputs(unet, text):
        context = torch.cat([text(ids(pipe.tokenizer, NEGATIVE))[0], text(ids(pipe.tokenizer, PROMPT))[0]])
        return context, unet(sample, 501, encoder_hidden_states=context).sample

    for label, loras in (
        ("kohya", [(kohya_updates, 0.8)]),
        ("peft", [(peft_updates, 0.5)]),
        ("both", [(kohya_updates, 0.8), (peft_updates, 0.5)]),
    ):
        context, eps = outputs(*merged(pipe, loras))
        tensors[f"lora_{label}_cond"] = context[1:]
        tensors[f"lora_{label}_eps"] = eps
    state, weights = random_dora(pipe, 16, 0.8)
    save_file(state, os.path.join(folder, "loras", "dora.safetensors"))
    unet, text = copy.deepcopy(pipe.unet), copy.deepcopy(pipe.text_encoder)
    for network, name, weight in weights:
        model = unet if network == "unet" else text
        dict(model.named_modules())[name].weight.copy_(weight)
    context, eps = outputs(unet, text)
    tensors["lora_dora_cond"], tensors["lora_dora_eps"] = context[1:], eps
    for kind, seed in (("locon", 15), ("loha", 13), ("lokr", 14)):
        state, deltas = random_lycoris(pipe, seed, kind)
        save_file(state, os.path.join(folder, "loras", f"{kind}.safetensors"))
        unet, text = copy.deepcopy(pipe.unet), copy.deepcopy(pipe.text_encoder)
        for network, name, delta in deltas:
            model = unet if network == "unet" else text
            dict(model.named_modules())[name].weight.add_(0.7 * delta)
        context, eps = outputs(unet, text)
        tensors[f"lora_{kind}_cond"] = context[1:]
        tensors[f"lora_{kind}_eps"] = eps
        if kind == "locon":
            # diffusers reads kohya's convolution LoRAs too: its adapters must agree.
            unet_only = {k: v for k, v in state.items() if k.startswith("lora_unet_")}
            pipe.load_lora_weights(unet_only, adapter_name="locon")
            pipe.set_adapters(["locon"], adapter_weights=[0.7])
            _, theirs = outputs(pipe.unet, pipe.text_encoder)
            pipe.unload_lora_weights()
            unet, _ = copy.deepcopy(pipe.unet), None
            for network, name, delta in deltas:
                if network == "unet":
                    dict(unet.named_modules())[name].weight.add_(0.7 * delta)
            _, ours = outputs(unet, pipe.text_encoder)
            assert torch.allclose(theirs, ours, atol=1e-4), (theirs - ours).abs().max()
    # diffusers reads both formats (kohya's text-encoder names only with transformers 4):
    # its unfused adapters must agree with the merge above.
    pipe.load_lora_weights(os.path.join(folder, "loras"), weight_name="peft.safetensors", adapter_name="peft")
    pipe.set_adapters(["peft"], adapter_weights=[0.5])
    context, eps = outputs(pipe.unet, pipe.text_encoder)
    assert torch.allclose(context[1:], tensors["lora_peft_cond"], atol=1e-5)
    assert torch.allclose(eps, tensors["lora_peft_eps"], atol=1e-4)
    pipe.unload_lora_weights()
    unet_only = {k: v for k, v in kohya.items() if k.startswith("lora_unet_")}
    pipe.load_lora_weights(unet_only, adapter_name="kohya")
    pipe.set_adapters(["kohya"], adapter_weights=[0.8])
    _, eps = outputs(pipe.unet, pipe.text_encoder)
    pipe.unload_lora_weights()
    unet, _ = merged(pipe, [([u for u in kohya_updates if u[0] == "unet"], 0.8)])
    _, expected = outputs(unet, pipe.text_encoder)
    assert torch.allclose(eps, expected, atol=1e-4), (eps - expected).abs().max()
    peft_dora(pipe, folder, tensors, outputs)
    lycoris_whole_reference(pipe, folder, tensors)


def random_lycoris_whole(pipe, seed, kind):
    """A LyCORIS file whose change is not a low-rank product, over `lora_modules` and the UNet's
    3×3 convolutions in kohya's naming, built with LyCORIS's own modules (`lycoris-lora`), and
    each adapted layer's weight and bias as LyCORIS merges the file at 0.7:
    - `ia3`: `weight` scales each output row (or, with `on_input` 1, every other module, each
      input column) by 1 + scale·w;
    - `full`: `diff` (and `diff_b` for layers with a bias) added at the scale;
    - `oft` (diag-oft): `oft_blocks` (blocks, size, size) rotate each block of output rows by
      the Cayley transform R = (I + Q)(I − Q)⁻¹ of Q = B − Bᵀ, merged as (scale·(R − I) + I)ᵀ;
      `alpha` bounds ‖Q‖ to alpha·out (0 on every other module: unbounded), and every third
      module has a `rescale` per output row;
    - `glora`: W + scale·alpha/rank·(b1·b2 + W·a1·a2), `a1` (in, rank), `a2` (rank, in);
    - `locon_cp`: a LoCon (rank 4, alpha 2) CP-decomposed on the 3×3 convolutions (LyCORIS's
      `use_tucker`): a 1×1 `lora_down`, a 3×3 `lora_mid` core and a 1×1 `lora_up`;
    - `norm`: LyCORIS's norm adapter over the group and layer norms instead, `w_norm` and
      `b_norm` added to each norm's weight and bias at the scale;
    - `boft`: butterfly OFT, `oft_blocks` (stages, blocks, size, size) turning the output rows
      stage by stage, each stage's rotations interpolated to the identity by the scale, bounded
      and rescaled as `oft`."""
    from lycoris.modules.diag_oft import DiagOFTModule
    from lycoris.modules.glora import GLoRAModule
    from lycoris.modules.ia3 import IA3Module
    from lycoris.modules.boft import ButterflyOFTModule
    from lycoris.modules.locon import LoConModule
    from lycoris.modules.norms import NormModule

    g = torch.Generator().manual_seed(seed)
    unet, text = lora_modules(pipe)
    if kind == "norm":
        unet, text = norm_modules(pipe.unet), norm_modules(pipe.text_encoder)
    else:
        unet = unet + conv_modules(pipe)
    tensors, merged_layers = {}, []
    for network, model, names in (
        ("unet", pipe.unet, unet),
        ("text", pipe.text_encoder, text),
    ):
        modules = dict(model.named_modules())
        for n, name in enumerate(names):
            layer = modules[name]
            path = name if network == "unet" else "text_model." + name
            key = ("lora_unet_" if network == "unet" else "lora_te_") + path.replace(".", "_")
            if kind == "ia3":
                adapter = IA3Module(key, layer, 1, train_on_input=n % 2 == 1)
                adapter.weight.data.copy_(torch.randn(adapter.weight.shape, generator=g) * 0.3)
                state = {"weight": adapter.weight.data, "on_input": adapter.on_input}
            elif kind == "glora":
                adapter = GLoRAModule(key, layer, 1, lora_dim=4, alpha=2)
                for part in ("a1", "a2", "b1", "b2"):
                    weight = getattr(adapter, part).weight
                    weight.data.copy_(torch.randn(weight.shape, generator=g) * 0.3)
                state = {f"{part}.weight": getattr(adapter, part).weight.data for part in ("a1", "a2", "b1", "b2")}
                state["alpha"] = adapter.alpha
            elif kind == "norm":
                adapter = NormModule(key, layer, 1)
                adapter.w_norm.data.copy_(torch.randn(adapter.w_norm.shape, generator=g) * 0.3)
                adapter.b_norm.data.copy_(torch.randn(adapter.b_norm.shape, generator=g) * 0.3)
                state = {"w_norm": adapter.w_norm.data, "b_norm": adapter.b_norm.data}
            elif kind == "locon_cp":
                adapter = LoConModule(key, layer, 1, lora_dim=4, alpha=2, use_tucker=True)
                parts = ("lora_down", "lora_mid", "lora_up") if adapter.tucker else ("lora_down", "lora_up")
                for part in parts:
                    weight = getattr(adapter, part).weight
                    weight.data.copy_(torch.randn(weight.shape, generator=g) * 0.3)
                state = adapter.custom_state_dict()
            elif kind == "full":
                diff = torch.randn(layer.weight.shape, generator=g) * layer.weight.detach().std() * 0.5
                diff_b = None
                if layer.bias is not None:
                    diff_b = torch.randn(layer.bias.shape, generator=g) * 0.05
                state = {"diff": diff} | ({"diff_b": diff_b} if diff_b is not None else {})
            else:  # oft, boft
                module = ButterflyOFTModule if kind == "boft" else DiagOFTModule
                adapter = module(
                    key, layer, 1, lora_dim=4, constraint=0.0 if n % 2 else 1e-3,
                    rescaled=n % 3 == 0,
                )
                adapter.oft_blocks.data.copy_(torch.randn(adapter.oft_blocks.shape, generator=g) * 0.2)
                state = {"oft_blocks": adapter.oft_blocks.data, "alpha": adapter.alpha}
                if n % 3 == 0:
                    adapter.rescale.data.copy_(1 + 0.2 * torch.randn(adapter.rescale.shape, generator=g))
                    state["rescale"] = adapter.rescale.data
            with torch.no_grad():
                if kind == "full":
                    # W + scale·diff, b + scale·diff_b (LyCORIS 3.2's FullModule cannot merge a
                    # bias: it adds a tensor to its list of original biases).
                    weight = layer.weight + 0.7 * diff
                    bias = None if diff_b is None else layer.bias + 0.7 * diff_b
                elif kind == "norm":
                    weight, bias = adapter.get_merged_weight(multiplier=0.7)
                else:
                    weight = adapter.get_merged_weight(multiplier=0.7)[0]
                    bias = layer.bias
            for part, value in state.items():
                tensors[f"{key}.{part}"] = value.detach().clone().contiguous()
            merged_layers.append((network, name, weight.detach().clone(), None if bias is None else bias.detach().clone()))
    return tensors, merged_layers


@torch.no_grad()
def lycoris_whole_reference(pipe, folder, tensors):
    """Writes `loras/ia3.safetensors`, `loras/full.safetensors`, `loras/oft.safetensors`,
    `loras/glora.safetensors`, `loras/locon_cp.safetensors`, `loras/boft.safetensors` and
    `loras/norm.safetensors` and the text embeddings and UNet output with each merged at 0.7."""
    sample = tensors["unet_sample"]
    for kind, seed in (("ia3", 18), ("full", 19), ("oft", 20), ("glora", 21), ("locon_cp", 22),
                       ("boft", 23), ("norm", 24)):
        state, layers = random_lycoris_whole(pipe, seed, kind)
        save_file(state, os.path.join(folder, "loras", f"{kind}.safetensors"))
        unet, text = copy.deepcopy(pipe.unet), copy.deepcopy(pipe.text_encoder)
        for network, name, weight, bias in layers:
            layer = dict((unet if network == "unet" else text).named_modules())[name]
            assert (weight - layer.weight).abs().max() > 1e-4, f"{kind} changes {name}"
            layer.weight.copy_(weight)
            if bias is not None:
                layer.bias.copy_(bias)
        context = torch.cat([text(ids(pipe.tokenizer, NEGATIVE))[0], text(ids(pipe.tokenizer, PROMPT))[0]])
        tensors[f"lora_{kind}_cond"] = context[1:]
        tensors[f"lora_{kind}_eps"] = unet(sample, 501, encoder_hidden_states=context).sample


def peft_dora(pipe, folder, tensors, outputs):
    """`loras/dora-peft.safetensors`: a DoRA of the UNet's attention in diffusers' PEFT format
    (`lora_A`/`lora_B` and a `lora_magnitude_vector` (out,) per weight), as diffusers' training
    scripts save it, and what diffusers computes with it loaded at 0.6 (PEFT puts the scale
    inside the norm: W' = m/‖W + 0.6·ΔW‖ · (W + 0.6·ΔW))."""
    from peft import LoraConfig, get_peft_model_state_dict
    from diffusers.utils import convert_state_dict_to_diffusers

    torch.manual_seed(17)
    unet = copy.deepcopy(pipe.unet)
    unet.add_adapter(LoraConfig(
        r=LORA_RANK, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        use_dora=True, init_lora_weights=False,
    ))
    state = get_peft_model_state_dict(unet)
    for key, value in state.items():
        if "lora_magnitude_vector" in key:
            value.mul_(1 + 0.2 * torch.randn_like(value))
        else:
            value.mul_(2.0)
    state = {"unet." + k: v.contiguous() for k, v in convert_state_dict_to_diffusers(state).items()}
    save_file(state, os.path.join(folder, "loras", "dora-peft.safetensors"))
    pipe.load_lora_weights(os.path.join(folder, "loras"), weight_name="dora-peft.safetensors", adapter_name="dora")
    pipe.set_adapters(["dora"], adapter_weights=[0.6])
    _, eps = outputs(pipe.unet, pipe.text_encoder)
    pipe.unload_lora_weights()
    _, base = outputs(pipe.unet, pipe.text_encoder)
    assert (eps - base).abs().max() > 1e-2, "the DoRA changes the UNet"
    tensors["lora_dora_peft_eps"] = eps


def ids(tokenizer, text):
    return tokenizer(
        text, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids


def test_image():
    """The 64×64 gradient the Rust tests build too."""
    x, y = np.meshgrid(np.arange(64), np.arange(64))
    rgb = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def test_mask():
    """White (repaint) on the right half."""
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:, 32:] = 255
    return Image.fromarray(mask, "L")


@torch.no_grad()
def reference(pipe, name, inpaint):
    g = torch.Generator().manual_seed(1)
    cond_ids, uncond_ids = ids(pipe.tokenizer, PROMPT), ids(pipe.tokenizer, NEGATIVE)
    cond = pipe.text_encoder(cond_ids)[0]
    uncond = pipe.text_encoder(uncond_ids)[0]
    sample = torch.randn(2, pipe.unet.config.in_channels, 8, 8, generator=g)
    timestep = 501
    eps = pipe.unet(sample, timestep, encoder_hidden_states=torch.cat([uncond, cond])).sample
    latents = torch.randn(1, 4, 8, 8, generator=g)
    decoded = pipe.vae.decode(latents).sample
    image = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    encoded_mean = pipe.vae.encode(image).latent_dist.mean
    init = torch.randn(1, 4, 8, 8, generator=g)
    steps, guidance = 4, 5.0
    extra = {}
    inputs = dict(image=test_image(), mask_image=test_mask(), strength=1.0) if inpaint else {}
    run = pipe(
        PROMPT,
        **inputs,
        negative_prompt=NEGATIVE,
        num_inference_steps=steps,
        guidance_scale=guidance,
        latents=init.clone(),
        output_type="np",
        height=64,
        width=64,
    ).images
    if not inpaint:
        # Image-to-image from the test image at strength 0.5: the generator first samples the
        # (deterministic) latent distribution, then draws the noise; the same noise is stored.
        strength = 0.5
        g = torch.Generator().manual_seed(7)
        torch.randn(1, 4, 8, 8, generator=g)
        noise = torch.randn(1, 4, 8, 8, generator=g)
        img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
        out = img2img(
            PROMPT,
            image=test_image(),
            strength=strength,
            negative_prompt=NEGATIVE,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=torch.Generator().manual_seed(7),
            output_type="np",
        ).images
        extra = {
            "img2img_noise": noise,
            "img2img_strength": torch.tensor([strength]),
            "img2img_image": torch.from_numpy(out).contiguous(),
        }
    tensors = {
        **extra,
        "cond_ids": cond_ids.to(torch.int64),
        "uncond_ids": uncond_ids.to(torch.int64),
        "cond": cond,
        "uncond": uncond,
        "unet_sample": sample,
        "unet_timestep": torch.tensor([float(timestep)]),
        "unet_eps": eps,
        "vae_latents": latents,
        "vae_decoded": decoded,
        "vae_image": image,
        "vae_encoded_mean": encoded_mean,
        "run_init": init,
        "run_steps": torch.tensor([float(steps)]),
        "run_guidance": torch.tensor([guidance]),
        "run_image": torch.from_numpy(run).contiguous(),
        "run_timesteps": pipe.scheduler.timesteps.to(torch.int64),
    }
    if name == "tiny-sd15":
        lora_reference(pipe, os.path.join(OUT, name), tensors)
    if name == "tiny-sd21":
        rescale_reference(pipe, tensors)
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        os.path.join(OUT, f"{name}.reference.safetensors"),
        metadata={"prompt": PROMPT, "negative_prompt": NEGATIVE, "torch": torch.__version__},
    )


def rescale_reference(pipe, tensors):
    """The whole run again with guidance rescale 0.7 (Lin et al.'s φ, how zero-terminal-SNR
    v-prediction models are sampled)."""
    rescale = 0.7
    run = pipe(
        PROMPT,
        negative_prompt=NEGATIVE,
        num_inference_steps=int(tensors["run_steps"].item()),
        guidance_scale=float(tensors["run_guidance"].item()),
        guidance_rescale=rescale,
        latents=tensors["run_init"].clone(),
        output_type="np",
        height=64,
        width=64,
    ).images
    tensors["rescaled_guidance_rescale"] = torch.tensor([rescale])
    tensors["rescaled_image"] = torch.from_numpy(run).contiguous()


def ensemble_reference(tensors):
    """SDXL's ensemble of experts: the base denoises the first 70% of a 5-step run
    (`denoising_end`) and hands its latents to the refiner, which denoises the rest
    (`denoising_start`) and decodes."""
    base = StableDiffusionXLPipeline.from_pretrained(os.path.join(OUT, "tiny-sdxl"))
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(
        os.path.join(OUT, "tiny-sdxl-refiner")
    )
    for pipe in (base, refiner):
        pipe.set_progress_bar_config(disable=True)
    steps, switch, guidance = 5, 0.7, 5.0
    latents = base(
        PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=guidance,
        denoising_end=switch, latents=tensors["run_init"].clone(), output_type="latent",
        height=64, width=64,
    ).images
    image = refiner(
        PROMPT, negative_prompt=NEGATIVE, image=latents, num_inference_steps=steps,
        guidance_scale=guidance, denoising_start=switch, output_type="np",
    ).images
    tensors["ensemble_steps"] = torch.tensor([float(steps)])
    tensors["ensemble_switch"] = torch.tensor([switch])
    tensors["ensemble_latents"] = latents.contiguous()
    tensors["ensemble_image"] = torch.from_numpy(image).contiguous()


def extend(name):
    """Adds the references written since `name` was built to its reference file, leaving the
    folder and the tensors already there as they are."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = os.path.join(OUT, f"{name}.reference.safetensors")
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    tensors = load_file(path)
    if name == "tiny-sd21":
        pipe = StableDiffusionPipeline.from_pretrained(os.path.join(OUT, name), safety_checker=None)
        pipe.set_progress_bar_config(disable=True)
        rescale_reference(pipe, tensors)
    elif name == "tiny-sdxl":
        ensemble_reference(tensors)
    elif name == "tiny-sd15":
        pipe = StableDiffusionPipeline.from_pretrained(os.path.join(OUT, name), safety_checker=None)
        lycoris_whole_reference(pipe, os.path.join(OUT, name), tensors)
    else:
        sys.exit(f"{name}: only tiny-sd15, tiny-sd21 and tiny-sdxl have references to add")
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=metadata)


AWKWARD = [
    "",
    "a red potion bottle, pixel art",
    "  Mossy   STONE bricks\t\n(seamless) ",
    "it's the dragon's 3 eyes!!! 42",
    "crème brûlée on a café table",
    "東京 tower, 🐉 dragon",
    "<|endoftext|> sword <|startoftext|>",
    "wooden " * 60,
]


def xl_text_encoder(folder, sub, act, pad, kind):
    """One of SDXL's tiny text encoders (`kind`: with a projection or without) and its tokenizer
    in `tokenizer<sub>/`."""
    tokenizer, vocab_size = write_tokenizer(os.path.join(folder, "tokenizer" + sub), pad, False)
    model = kind(
        CLIPTextConfig(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
            num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=77,
            hidden_act=act, projection_dim=24, bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1, pad_token_id=tokenizer.pad_token_id,
        )
    )
    return tokenizer, model


def tiny_vae(widths=(8, 8, 16, 16), groups=4, scaling=0.18215):
    """A tiny VAE with four levels (8× downscale) of `widths` channels in `groups` norm
    groups, its latents scaled by `scaling`."""
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=widths,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=groups,
        sample_size=64,
        scaling_factor=scaling,
    )


def xl_vae():
    """SDXL's tiny VAE (its latents scaled by 0.13025)."""
    return tiny_vae(scaling=0.13025)


@torch.no_grad()
def nudge(*modules, vae):
    """As `build`: every weight nudged, and the VAE's encoder nearly deterministic."""
    for module in (*modules, vae):
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    vae.quant_conv.bias[4:] = -30.0


def build_xl(name):
    """A tiny SDXL: two text encoders (the second with a projection, padding with `!`), a UNet
    with the `text_time` added conditioning, Euler sampling; and its reference outputs."""
    torch.manual_seed(0)
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    encoders = [
        xl_text_encoder(folder, "", "quick_gelu", "<|endoftext|>", CLIPTextModel),
        xl_text_encoder(folder, "_2", "gelu", "!", CLIPTextModelWithProjection),
    ]
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2),
        cross_attention_dim=64,
        attention_head_dim=(2, 4, 4),
        norm_num_groups=32,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=24 + 6 * 8,
    )
    vae = xl_vae()
    nudge(encoders[0][1], encoders[1][1], unet, vae=vae)
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=encoders[0][1],
        text_encoder_2=encoders[1][1],
        tokenizer=encoders[0][0],
        tokenizer_2=encoders[1][0],
        unet=unet,
        scheduler=EulerDiscreteScheduler(**SD_BETAS, steps_offset=1),
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
            PROMPT, negative_prompt=NEGATIVE, do_classifier_free_guidance=True
        )
        _, zeros, _, zeros_pooled = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=True)
        assert not zeros.any() and not zeros_pooled.any()
        sample = torch.randn(2, 4, 8, 8, generator=g)
        time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * 2)
        eps = pipe.unet(
            sample, 501, encoder_hidden_states=torch.cat([negative, embeds]),
            added_cond_kwargs={"text_embeds": torch.cat([negative_pooled, pooled]), "time_ids": time_ids},
        ).sample
        init = torch.randn(1, 4, 8, 8, generator=g)
        run = lambda negative_prompt: pipe(
            PROMPT, negative_prompt=negative_prompt, num_inference_steps=4, guidance_scale=5.0,
            latents=init.clone(), output_type="np", height=64, width=64,
        ).images
        tensors = {
            "cond_ids": ids(pipe.tokenizer, PROMPT).to(torch.int64),
            "cond_ids_2": ids(pipe.tokenizer_2, PROMPT).to(torch.int64),
            "cond": embeds,
            "uncond": negative,
            "pooled": pooled,
            "uncond_pooled": negative_pooled,
            "unet_sample": sample,
            "unet_eps": eps,
            "run_init": init,
            "run_steps": torch.tensor([4.0]),
            "run_guidance": torch.tensor([5.0]),
            "run_image": torch.from_numpy(run(NEGATIVE)).contiguous(),
            "run_no_negative_image": torch.from_numpy(run(None)).contiguous(),
            "run_timesteps": pipe.scheduler.timesteps.to(torch.int64),
        }
        xl_lora_reference(pipe, folder, tensors)
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        os.path.join(OUT, f"{name}.reference.safetensors"),
        metadata={"prompt": PROMPT, "negative_prompt": NEGATIVE, "torch": torch.__version__},
    )


def build_xl_refiner(name):
    """A tiny SDXL refiner: only the second text encoder (its next-to-last states alone are the
    context), a UNet whose added conditioning takes five time ids (original size, crop origin,
    aesthetic score) and whose outer blocks have no attention, Euler sampling, image-to-image;
    and its reference outputs."""
    torch.manual_seed(0)
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    tokenizer, encoder = xl_text_encoder(folder, "_2", "gelu", "!", CLIPTextModelWithProjection)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=2,
        cross_attention_dim=32,
        attention_head_dim=(2, 4, 4, 4),
        norm_num_groups=32,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=24 + 5 * 8,
    )
    vae = xl_vae()
    nudge(encoder, unet, vae=vae)
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=vae,
        text_encoder=None,
        text_encoder_2=encoder,
        tokenizer=None,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(**SD_BETAS, steps_offset=1),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
            PROMPT, negative_prompt=NEGATIVE, do_classifier_free_guidance=True
        )
        _, empty, _, empty_pooled = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=True)
        assert empty.abs().sum() > 0, "the refiner encodes an empty negative prompt"
        sample = torch.randn(2, 4, 8, 8, generator=g)
        # diffusers' defaults: aesthetic score 6 for the prompt, 2.5 for the negative.
        time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 2.5], [64.0, 64.0, 0.0, 0.0, 6.0]])
        eps = pipe.unet(
            sample, 501, encoder_hidden_states=torch.cat([negative, embeds]),
            added_cond_kwargs={"text_embeds": torch.cat([negative_pooled, pooled]), "time_ids": time_ids},
        ).sample
        # As `reference`: the generator samples the (deterministic) latent distribution, then
        # draws the noise; the same noise is stored.
        strength, steps, guidance = 0.5, 4, 5.0
        g = torch.Generator().manual_seed(7)
        torch.randn(1, 4, 8, 8, generator=g)
        noise = torch.randn(1, 4, 8, 8, generator=g)
        out = pipe(
            PROMPT, image=test_image(), strength=strength, negative_prompt=NEGATIVE,
            num_inference_steps=steps, guidance_scale=guidance,
            generator=torch.Generator().manual_seed(7), output_type="np",
        ).images
        tensors = {
            "cond_ids": ids(pipe.tokenizer_2, PROMPT).to(torch.int64),
            "cond": embeds,
            "uncond": negative,
            "pooled": pooled,
            "uncond_pooled": negative_pooled,
            "empty": empty,
            "unet_sample": sample,
            "unet_eps": eps,
            "run_steps": torch.tensor([float(steps)]),
            "run_guidance": torch.tensor([guidance]),
            "run_timesteps": pipe.scheduler.timesteps.to(torch.int64),
            "img2img_noise": noise,
            "img2img_strength": torch.tensor([strength]),
            "img2img_image": torch.from_numpy(out).contiguous(),
        }
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        os.path.join(OUT, f"{name}.reference.safetensors"),
        metadata={"prompt": PROMPT, "negative_prompt": NEGATIVE, "torch": torch.__version__},
    )


def build_lcm(name):
    """A tiny LCM-distilled pipeline (`LatentConsistencyModelPipeline`): tiny-sd15's text encoder,
    tokenizer and VAE with a UNet whose timestep embedding also takes the guidance scale
    (`time_cond_proj_dim`), and the LCM scheduler; and its reference outputs. Guidance is that
    embedding of w − 1, not a second, unconditioned batch."""
    torch.manual_seed(0)
    base = StableDiffusionPipeline.from_pretrained(os.path.join(OUT, "tiny-sd15"))
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=32,
        time_cond_proj_dim=16,
    )
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    pipe = LatentConsistencyModelPipeline(
        vae=base.vae,
        text_encoder=base.text_encoder,
        tokenizer=base.tokenizer,
        unet=unet,
        scheduler=LCMScheduler(**SD_BETAS, set_alpha_to_one=True, timestep_spacing="leading"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        cond = pipe.text_encoder(ids(pipe.tokenizer, PROMPT))[0]
        sample = torch.randn(1, 4, 8, 8, generator=g)
        guidance = 8.5
        w = pipe.get_guidance_scale_embedding(torch.tensor([guidance - 1]), embedding_dim=16)
        eps = pipe.unet(sample, 499, encoder_hidden_states=cond, timestep_cond=w).sample
        init = torch.randn(1, 4, 8, 8, generator=g)
        # One step: LCM draws fresh noise between steps, which a second step would need.
        run = lambda guidance: pipe(
            PROMPT, num_inference_steps=1, guidance_scale=guidance, latents=init.clone(),
            output_type="np", height=64, width=64,
        ).images
        tensors = {
            "cond_ids": ids(pipe.tokenizer, PROMPT).to(torch.int64),
            "cond": cond,
            "unet_sample": sample,
            "unet_guidance": torch.tensor([guidance]),
            "unet_guidance_embedding": w,
            "unet_eps": eps,
            "run_init": init,
            "run_image": torch.from_numpy(run(guidance)).contiguous(),
            "run_low_guidance_image": torch.from_numpy(run(1.5)).contiguous(),
            "run_timesteps": pipe.scheduler.timesteps.to(torch.int64),
        }
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        os.path.join(OUT, f"{name}.reference.safetensors"),
        metadata={"prompt": PROMPT, "negative_prompt": NEGATIVE, "torch": torch.__version__},
    )


@torch.no_grad()
def build_taesd(name):
    """A tiny TAESD (`AutoencoderTiny`: ReLU residual blocks, no norms, no attention) in a
    diffusers VAE folder, and what diffusers computes with it: a decode, an encode of the test
    image, and tiny-sd15's whole 4-step run decoded by it in place of its own VAE."""
    torch.manual_seed(0)
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    taesd = AutoencoderTiny(
        encoder_block_out_channels=(16, 16, 16, 16),
        decoder_block_out_channels=(16, 16, 16, 16),
        num_encoder_blocks=(1, 2, 2, 2),
        num_decoder_blocks=(2, 2, 2, 1),
    )
    with torch.no_grad():
        for p in taesd.parameters():
            p.mul_(1.5)
    taesd.save_pretrained(folder, safe_serialization=True)
    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(OUT, "tiny-sd15"), vae=taesd)
    g = torch.Generator().manual_seed(5)
    latents = torch.randn(1, 4, 8, 8, generator=g)
    image = torch.from_numpy(np.asarray(test_image())).permute(2, 0, 1)[None].float() / 127.5 - 1
    init = torch.randn(1, 4, 8, 8, generator=g)
    run = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=5.0,
               latents=init.clone(), output_type="np", height=64, width=64).images
    tensors = {
        "vae_latents": latents,
        "vae_decoded": taesd.decode(latents).sample,
        "vae_image": image,
        "vae_encoded": taesd.encode(image).latents,
        "run_init": init,
        "run_image": torch.from_numpy(run).contiguous(),
    }
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        os.path.join(OUT, f"{name}.reference.safetensors"),
        metadata={"prompt": PROMPT, "negative_prompt": NEGATIVE, "torch": torch.__version__},
    )


def ldm_name(name, layers):
    """A diffusers UNet attention module's name as the original SGM/LDM UNet (and so kohya's SDXL
    LoRAs) names it: `down_blocks.1.attentions.0.…` → `input_blocks.4.1.…` with 2 layers."""
    parts = name.split(".")
    block, kind = parts[0], parts[2] if len(parts) > 2 else ""
    if block == "down_blocks" and kind == "attentions":
        index = 1 + int(parts[1]) * (layers + 1) + int(parts[3])
        return ".".join(["input_blocks", str(index), "1"] + parts[4:])
    if block == "up_blocks" and kind == "attentions":
        index = int(parts[1]) * (layers + 1) + int(parts[3])
        return ".".join(["output_blocks", str(index), "1"] + parts[4:])
    if block == "mid_block" and parts[1] == "attentions":
        return ".".join(["middle_block", "1"] + parts[3:])
    raise ValueError(name)


def xl_outputs(pipe, sample, unet, te1, te2):
    """SDXL's prompt states, pooled prompt and UNet output at t = 501 for `sample` with these
    networks in `pipe`'s place, the negative prompt's first."""
    swapped = StableDiffusionXLPipeline(
        vae=pipe.vae, text_encoder=te1, text_encoder_2=te2, tokenizer=pipe.tokenizer,
        tokenizer_2=pipe.tokenizer_2, unet=unet, scheduler=pipe.scheduler,
    )
    embeds, negative, pooled, negative_pooled = swapped.encode_prompt(
        PROMPT, negative_prompt=NEGATIVE, do_classifier_free_guidance=True
    )
    eps = unet(
        sample, 501, encoder_hidden_states=torch.cat([negative, embeds]),
        added_cond_kwargs={
            "text_embeds": torch.cat([negative_pooled, pooled]),
            "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * 2),
        },
    ).sample
    return embeds, pooled, eps


@torch.no_grad()
def xl_lora_reference(pipe, folder, tensors):
    """A kohya SDXL LoRA (`lora_unet_` in the original UNet's block names, `lora_te1_` and
    `lora_te2_` for the two text encoders, `.alpha` 2) and what the pipeline computes with it
    merged at scale 0.7, checked against diffusers' own loader."""
    g = torch.Generator().manual_seed(13)
    layers = pipe.unet.config.layers_per_block
    networks = (
        ("unet", pipe.unet, ("to_q", "to_k", "to_v", "to_out.0", "ff.net.2")),
        ("te1", pipe.text_encoder, ("q_proj", "v_proj", "out_proj", "fc1")),
        ("te2", pipe.text_encoder_2, ("q_proj", "v_proj", "out_proj", "fc1")),
    )
    state, merged_models = {}, {}
    for network, model, ends in networks:
        copy_ = copy.deepcopy(model)
        modules = dict(copy_.named_modules())
        for name, module in model.named_modules():
            if not (isinstance(module, torch.nn.Linear) and name.endswith(ends)):
                continue
            down = torch.randn(LORA_RANK, module.in_features, generator=g) * 0.2
            up = torch.randn(module.out_features, LORA_RANK, generator=g) * 0.2
            if network == "unet":
                path = ldm_name(name, layers)
            else:  # kohya writes `text_model_…` (transformers 5 drops it from CLIPTextModel)
                path = name if name.startswith("text_model.") else "text_model." + name
            key = f"lora_{network}_" + path.replace(".", "_")
            state[f"{key}.lora_down.weight"] = down
            state[f"{key}.lora_up.weight"] = up
            state[f"{key}.alpha"] = torch.tensor(2.0)
            modules[name].weight.add_(0.7 * (2.0 / LORA_RANK) * (up @ down))
        merged_models[network] = copy_
    os.makedirs(os.path.join(folder, "loras"), exist_ok=True)
    save_file(state, os.path.join(folder, "loras", "kohya-xl.safetensors"))

    def outputs(unet, te1, te2):
        return xl_outputs(pipe, tensors["unet_sample"], unet, te1, te2)

    cond, pooled, eps = outputs(merged_models["unet"], merged_models["te1"], merged_models["te2"])
    tensors["lora_xl_cond"], tensors["lora_xl_pooled"], tensors["lora_xl_eps"] = cond, pooled, eps
    # diffusers reads kohya's SDXL UNet names (its text-encoder names only with transformers 4):
    # its unfused adapter must agree with the UNet merged above.
    unet_only = {k: v for k, v in state.items() if k.startswith("lora_unet_")}
    pipe.load_lora_weights(unet_only, adapter_name="xl")
    pipe.set_adapters(["xl"], adapter_weights=[0.7])
    _, _, theirs = outputs(pipe.unet, pipe.text_encoder, pipe.text_encoder_2)
    pipe.unload_lora_weights()
    _, _, ours = outputs(merged_models["unet"], pipe.text_encoder, pipe.text_encoder_2)
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


SD_BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)

# The sd-webui-lora-block-weight extension's block lists and the module-name fragments its
# `ratiodealer` looks for in A1111's module names (the last one found wins; `embedders` and
# `transformer_resblocks` are the text encoders too).
LBW_IDS26 = ["BASE"] + [f"IN{i:02}" for i in range(12)] + ["M00"] + [f"OUT{i:02}" for i in range(12)]
LBW_IDS12 = ["BASE", "IN04", "IN05", "IN07", "IN08", "M00", "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05"]
LBW_BLOCKS = (["encoder"] + [f"diffusion_model_input_blocks_{i}_" for i in range(12)]
              + ["diffusion_model_middle_block_"] + [f"diffusion_model_output_blocks_{i}_" for i in range(12)]
              + ["embedders", "transformer_resblocks"])


def lbw_to26(values, ids):
    """The extension's `to26`: each value at its block, 0 for the blocks the list leaves out."""
    out = [0.0] * 26
    for value, block in zip(values, ids):
        out[LBW_IDS26.index(block)] = value
    return out


def lbw_ratio(key, ratios):
    """The extension's `ratiodealer`: the ratio of the block whose fragment A1111's module name
    `key` holds, 1 for none."""
    ratio = 1.0
    for i, block in enumerate(LBW_BLOCKS):
        if block in key:
            ratio = ratios[0 if i >= 26 else i]
    return ratio


def a1111_name(network, name, layers):
    """How A1111 names a LoRA's module for the extension: the UNet's in the original blocks,
    `diffusion_model_input_blocks_4_1_…` (its conversion of kohya's names), the text
    encoder's under `…encoder_layers_…`."""
    if network == "unet":
        return "diffusion_model_" + ldm_name(name, layers).replace(".", "_")
    return "transformer_text_model_" + name.replace(".", "_")


def build_pickled_loras(name):
    """tiny-sd15's kohya and PEFT LoRAs as PyTorch pickles, the way A1111-era `.pt` files and
    diffusers' older `pytorch_lora_weights.bin` were saved: `kohya-pickled.pt` in the legacy
    stream layout, `peft-pickled.bin` in the zip layout. Their tensors are the `.safetensors`
    files', so the same references hold."""
    folder = os.path.join(OUT, "tiny-sd15", "loras")
    for source, target, zipped in (("kohya", "kohya-pickled.pt", False), ("peft", "peft-pickled.bin", True)):
        tensors = load_file(os.path.join(folder, f"{source}.safetensors"))
        torch.save(tensors, os.path.join(folder, target), _use_new_zipfile_serialization=zipped)


@torch.no_grad()
def build_peft_oft(name):
    """`tiny-sd15/loras/oft_peft.safetensors`: PEFT's OFT (`oft_R.weight`: per block, the upper
    triangle of a skew-symmetric Q; blocks of 4 input columns), in diffusers' `unet.…` and
    `text_encoder.…` names, with PEFT's default Cayley–Neumann rotation (five terms). On the UNet's
    attention, feed-forward and 3×3 convolutions each block has its own Q; on the text encoder's
    attention and MLP one Q turns every block (`block_share`). Adds to tiny-sd15's reference the
    text embeddings and UNet output with every adapted weight moved 0.7 of the way to PEFT's own
    merge (W·Rᵀ): W + 0.7·(W·Rᵀ − W)."""
    from peft import OFTConfig, get_peft_model_state_dict, inject_adapter_in_model
    from peft.tuners.oft.layer import OFTLayer
    from safetensors import safe_open

    path = os.path.join(OUT, "tiny-sd15.reference.safetensors")
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    tensors = load_file(path)
    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(OUT, "tiny-sd15"), safety_checker=None)
    unet_names, text_names = lora_modules(pipe)
    g = torch.Generator().manual_seed(25)
    state, merged_models = {}, {}
    for network, model, names, share in (
        ("unet", pipe.unet, unet_names + conv_modules(pipe), False),
        ("text_encoder", pipe.text_encoder, text_names, True),
    ):
        adapted = inject_adapter_in_model(
            OFTConfig(r=0, oft_block_size=4, target_modules=names, block_share=share,
                      init_weights=False),
            copy.deepcopy(model),
        )
        layers = [m for m in adapted.modules() if isinstance(m, OFTLayer)]
        assert len(layers) == len(names), f"{network}: {len(layers)} of {len(names)} adapted"
        for layer in layers:
            weight = layer.oft_R["default"].weight
            weight.copy_(torch.randn(weight.shape, generator=g) * 0.3)
        for key, value in get_peft_model_state_dict(adapted).items():
            state[f"{network}.{key}"] = value.detach().clone().contiguous()
        before = {n: m.weight.detach().clone() for n, m in model.named_modules() if n in names}
        for layer in layers:
            layer.merge()
        after = {n: m.get_base_layer().weight.detach().clone()
                 for n, m in adapted.named_modules() if isinstance(m, OFTLayer)}
        target = copy.deepcopy(model)
        modules = dict(target.named_modules())
        for module in names:
            assert (after[module] - before[module]).abs().max() > 1e-3, f"OFT turns {module}"
            modules[module].weight.copy_(before[module] + 0.7 * (after[module] - before[module]))
        merged_models[network] = target
    assert any("oft_R.weight" in k for k in state) and all(k.endswith("oft_R.weight") for k in state), list(state)[:4]
    save_file(state, os.path.join(OUT, "tiny-sd15", "loras", "oft_peft.safetensors"))
    unet, text = merged_models["unet"], merged_models["text_encoder"]
    context = torch.cat([text(ids(pipe.tokenizer, NEGATIVE))[0], text(ids(pipe.tokenizer, PROMPT))[0]])
    tensors["lora_oft_peft_cond"] = context[1:]
    tensors["lora_oft_peft_eps"] = unet(tensors["unet_sample"], 501, encoder_hidden_states=context).sample
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=metadata)


class HypernetworkModule(torch.nn.Module):
    """A1111's `HypernetworkModule` (modules/hypernetworks/hypernetwork.py), as it builds its layers
    and runs: `x + linear(x)·multiplier`, `linear` a sequence of linear layers, each followed by the
    activation (not the last unless `activate_output`), a layer norm and a dropout when asked."""

    activation_dict = {"linear": torch.nn.Identity, "relu": torch.nn.ReLU, "leakyrelu": torch.nn.LeakyReLU,
                       "elu": torch.nn.ELU, "swish": torch.nn.Hardswish, "tanh": torch.nn.Tanh,
                       "sigmoid": torch.nn.Sigmoid}
    activation_dict.update({name.lower(): cls for name, cls in vars(torch.nn.modules.activation).items()
                            if isinstance(cls, type) and cls.__module__ == "torch.nn.modules.activation"})

    def __init__(self, dim, structure, activation, layer_norm, activate_output, dropout):
        super().__init__()
        self.multiplier = 1.0
        layers = []
        for i in range(len(structure) - 1):
            layers.append(torch.nn.Linear(int(dim * structure[i]), int(dim * structure[i + 1])))
            if not (activation in ("linear", None) or (i >= len(structure) - 2 and not activate_output)):
                layers.append(self.activation_dict[activation]())
            if layer_norm:
                layers.append(torch.nn.LayerNorm(int(dim * structure[i + 1])))
            if dropout is not None and dropout[i + 1] > 0:
                layers.append(torch.nn.Dropout(p=dropout[i + 1]))
        self.linear = torch.nn.Sequential(*layers)

    def forward(self, x):
        return x + self.linear(x) * self.multiplier


class HypernetworkAttention:
    """diffusers' attention with A1111's hypernetworks on what the keys and values are made from:
    the context (the hidden states themselves in self-attention) passed through each hypernetwork
    that has layers of its width, in turn, one module for the keys and one for the values."""

    def __init__(self, hypernetworks):
        self.hypernetworks = hypernetworks

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        context_k = context_v = context
        for layers in self.hypernetworks:
            pair = layers.get(context_k.shape[2])
            if pair is not None:
                context_k, context_v = pair[0](context_k), pair[1](context_v)
        batch = hidden_states.shape[0]
        query, key, value = attn.to_q(hidden_states), attn.to_k(context_k), attn.to_v(context_v)
        heads = lambda t: t.view(batch, -1, attn.heads, t.shape[-1] // attn.heads).transpose(1, 2)
        out = torch.nn.functional.scaled_dot_product_attention(heads(query), heads(key), heads(value))
        out = out.transpose(1, 2).reshape(batch, -1, query.shape[-1])
        return attn.to_out[1](attn.to_out[0](out))


def random_hypernetwork(g, dims, structure, activation, layer_norm, activate_output, dropout):
    """A1111 hypernetwork layers for each width in `dims`, (keys' module, values' module), weights
    drawn from `g` large enough to change the picture."""
    layers = {}
    for dim in dims:
        pair = []
        for _ in range(2):
            module = HypernetworkModule(dim, structure, activation, layer_norm, activate_output, dropout)
            for name, value in module.named_parameters():
                if name.endswith("weight") and value.dim() == 2:
                    value.copy_(torch.randn(value.shape, generator=g) * 0.6 / value.shape[1] ** 0.5)
                elif name.endswith("weight"):
                    value.copy_(1 + 0.2 * torch.randn(value.shape, generator=g))
                else:
                    value.copy_(0.1 * torch.randn(value.shape, generator=g))
            module.eval()
            pair.append(module)
        layers[dim] = tuple(pair)
    return layers


@torch.no_grad()
def build_hypernetworks(name):
    """`tiny-sd15/hypernetworks/*.pt`: three A1111 hypernetworks over the tiny UNet's attention
    widths (32: the 32-channel blocks' self-attention and every cross-attention's context; 64: the
    middle block's self-attention), saved as A1111 saves them (`torch.save` of a dict: each width's
    pair of state dicts, then `layer_structure`, `activation_func`, `is_layer_norm`, …):
    - `pixel-style.pt`: layer structure 1, 2, 1, `swish` (A1111's name for Hardswish), layer
      norms, a 0.3 dropout in the middle (so the saved indices skip it), no output activation;
    - `legacy.pt`: the first format, width 32 only, `linear1`/`linear2` keys and no structure (so
      1, 2, 1 and no activation), in the legacy `torch.save` stream;
    - `wide.pt`: 1, 1.5, 0.5, 1 with `mish` after every layer, the output's too.
    Writes `hypernetworks.reference.safetensors`: tiny-sd15's UNet output with `pixel-style` at
    0.8, and with `legacy` at 1 then `wide` at 0.5 (the second taking the first's output), the
    attention as A1111 patches it, plus the output with none (diffusers' own attention)."""
    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(OUT, "tiny-sd15"), safety_checker=None)
    reference = load_file(os.path.join(OUT, "tiny-sd15.reference.safetensors"))
    sample = reference["unet_sample"]
    context = torch.cat([pipe.text_encoder(ids(pipe.tokenizer, NEGATIVE))[0],
                         pipe.text_encoder(ids(pipe.tokenizer, PROMPT))[0]])
    folder = os.path.join(OUT, "tiny-sd15", "hypernetworks")
    os.makedirs(folder, exist_ok=True)
    g = torch.Generator().manual_seed(26)
    files = {
        "pixel-style": (random_hypernetwork(g, (32, 64), [1, 2, 1], "swish", True, False, [0, 0.3, 0]),
                        {"layer_structure": [1, 2, 1], "activation_func": "swish", "is_layer_norm": True,
                         "weight_initialization": "Normal", "activate_output": False, "use_dropout": True,
                         "dropout_structure": [0, 0.3, 0], "last_layer_dropout": False,
                         "optional_info": "pixel art, tiny", "step": 2000, "name": "pixel-style",
                         "sd_checkpoint": "a9263745", "sd_checkpoint_name": "tiny-sd15"}),
        "legacy": (random_hypernetwork(g, (32,), [1, 2, 1], None, False, False, None),
                   {"step": 1500, "name": "legacy", "sd_checkpoint": "7460a6fa", "sd_checkpoint_name": "model.ckpt"}),
        "wide": (random_hypernetwork(g, (32, 64), [1, 1.5, 0.5, 1], "mish", False, True, None),
                 {"layer_structure": [1, 1.5, 0.5, 1], "activation_func": "mish", "is_layer_norm": False,
                  "weight_initialization": "XavierNormal", "activate_output": True, "use_dropout": False,
                  "step": 800, "name": "wide"}),
    }
    for file, (layers, metadata) in files.items():
        state = {}
        for dim, pair in layers.items():
            dicts = tuple(module.state_dict() for module in pair)
            if file == "legacy":
                renamed = {"linear.0.weight": "linear1.weight", "linear.0.bias": "linear1.bias",
                           "linear.1.weight": "linear2.weight", "linear.1.bias": "linear2.bias"}
                dicts = tuple(collections.OrderedDict((renamed[k], v) for k, v in d.items()) for d in dicts)
            state[dim] = dicts
        state.update(metadata)
        torch.save(state, os.path.join(folder, f"{file}.pt"), _use_new_zipfile_serialization=file != "legacy")
    tensors = {"unet_sample": sample}

    def eps(hypernetworks):
        unet = copy.deepcopy(pipe.unet)
        unet.set_attn_processor(HypernetworkAttention(hypernetworks))
        return unet(sample, 501, encoder_hidden_states=context).sample

    none = eps([])
    assert torch.allclose(none, pipe.unet(sample, 501, encoder_hidden_states=context).sample, atol=1e-5)
    tensors["none_eps"] = none
    for label, chosen in (("pixel_style", [("pixel-style", 0.8)]), ("legacy_wide", [("legacy", 1.0), ("wide", 0.5)])):
        hypernetworks = []
        for file, multiplier in chosen:
            layers = files[file][0]
            for pair in layers.values():
                for module in pair:
                    module.multiplier = multiplier
            hypernetworks.append(layers)
        tensors[f"{label}_eps"] = eps(hypernetworks)
        assert (tensors[f"{label}_eps"] - none).abs().max() > 0.05, label
    tensors["context"] = context
    # Each activation A1111 offers that Autonomy runs, on values from −30 to 30.
    tensors["activation_input"] = x = torch.cat([torch.linspace(-30, 30, 61), torch.randn(64, generator=g) * 3])
    for name in ("relu", "leakyrelu", "elu", "celu", "swish", "hardswish", "tanh", "sigmoid", "silu", "mish",
                 "gelu", "softsign", "softplus", "selu", "relu6", "hardsigmoid", "hardtanh", "tanhshrink",
                 "logsigmoid"):
        tensors[f"activation_{name}"] = HypernetworkModule.activation_dict[name]()(x)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, "hypernetworks.reference.safetensors"),
              metadata={"prompt": PROMPT, "negative_prompt": NEGATIVE})


CONTROLNET_DTYPE = torch.float16


def controlnet_ldm_name(key, layers, hint_blocks):
    """A diffusers `ControlNetModel` parameter's name in the original ControlNet (`cldm`) layout,
    as A1111's and ComfyUI's single files (`control_v11p_sd15_canny.pth`, without the
    `control_model.` prefix) store it: the inverse of diffusers' `convert_controlnet_checkpoint`.
    The down path is the UNet's (`input_blocks.0.0` the first convolution, then per level
    `layers` blocks of ResNet `.0` and attention `.1`, and a downsampler `.0.op`), the hint
    encoder `input_hint_block.{0, 2, …}` (its SiLUs at the odd indices), the zero convolutions
    `zero_convs.{i}.0` and `middle_block_out.0`."""
    resnet = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
              ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]

    def renamed(rest):
        head, _, tail = rest.partition(".")
        return ".".join([dict(resnet).get(head, head), tail])

    parts = key.split(".")
    if parts[0] == "time_embedding":
        return f"time_embed.{ {'linear_1': 0, 'linear_2': 2}[parts[1]] }.{parts[2]}"
    if parts[0] == "conv_in":
        return f"input_blocks.0.0.{parts[1]}"
    if parts[0] == "controlnet_cond_embedding":
        if parts[1] == "conv_in":
            return f"input_hint_block.0.{parts[2]}"
        if parts[1] == "blocks":
            return f"input_hint_block.{2 * (int(parts[2]) + 1)}.{parts[3]}"
        if parts[1] == "conv_out":
            return f"input_hint_block.{2 * (hint_blocks + 1)}.{parts[2]}"
    if parts[0] == "controlnet_down_blocks":
        return f"zero_convs.{parts[1]}.0.{parts[2]}"
    if parts[0] == "controlnet_mid_block":
        return f"middle_block_out.0.{parts[1]}"
    if parts[0] == "down_blocks":
        level, kind = int(parts[1]), parts[2]
        first = 1 + level * (layers + 1)
        rest = ".".join(parts[4:])
        if kind == "resnets":
            return f"input_blocks.{first + int(parts[3])}.0.{renamed(rest)}"
        if kind == "attentions":
            return f"input_blocks.{first + int(parts[3])}.1.{rest}"
        if kind == "downsamplers":
            return f"input_blocks.{first + layers}.0.op.{'.'.join(parts[5:])}"
    if parts[0] == "mid_block":
        rest = ".".join(parts[3:])
        if parts[1] == "resnets":
            return f"middle_block.{2 * int(parts[2])}.{renamed(rest)}"
        if parts[1] == "attentions":
            return f"middle_block.1.{rest}"
    raise ValueError(key)


def edge_image():
    """A 64×64 canny-like edge map: one-pixel white lines on black (a circle, a horizon, a
    diagonal), 8-bit RGB."""
    from PIL import ImageDraw

    image = Image.new("RGB", (64, 64), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse([14, 8, 46, 40], outline=(255, 255, 255), width=1)
    draw.line([(4, 50), (59, 50)], fill=(255, 255, 255), width=1)
    draw.line([(6, 60), (30, 4)], fill=(255, 255, 255), width=1)
    draw.line([(50, 44), (50, 62)], fill=(255, 255, 255), width=1)
    return image


def build_canny(name):
    """What OpenCV's `cv2.Canny` (A1111's and ComfyUI's canny preprocessors) makes of a colour
    picture: `canny/picture.png` (96×80: shapes in several colours on a gradient, with noise,
    so that every direction, the colour channels' maxima and the hysteresis are in play) and
    `canny/edges-<low>-<high>.png` for A1111's default thresholds (100, 200), low ones
    (30, 80) and high ones (250, 400)."""
    import cv2
    from PIL import ImageDraw

    folder = os.path.join(OUT, "canny")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(83)
    x, y = np.meshgrid(np.arange(96), np.arange(80))
    base = np.stack([x * 2, y * 3, (x + y)], axis=-1).astype(np.float64)
    picture = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    draw.ellipse([10, 8, 46, 44], fill=(220, 40, 40))
    draw.rectangle([50, 12, 86, 36], fill=(30, 160, 60))
    draw.polygon([(20, 74), (48, 50), (80, 72)], fill=(40, 60, 210))
    draw.line([(4, 60), (92, 44)], fill=(250, 250, 120), width=2)
    pixels = np.asarray(picture).astype(np.int16) + rng.integers(-12, 13, size=(80, 96, 3))
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(os.path.join(folder, "picture.png"))
    for low, high in [(100, 200), (30, 80), (250, 400)]:
        edges = cv2.Canny(pixels, low, high)
        Image.fromarray(edges).save(os.path.join(folder, f"edges-{low}-{high}.png"))
        print(f"canny {low}/{high}: {int((edges > 0).sum())} edge pixels, OpenCV {cv2.__version__}")


def save_control_model_pickle(ldm, path):
    """The original names under `control_model.` in a `torch.save` zip, as the first ControlNet
    releases (`control_sd15_canny.pth`) stored them (without the rest of the model they were
    saved with, which would make the fixture a checkpoint too); named for the shuffle
    ControlNet, whose residuals A1111 pools over the image when the file's name says
    `shuffle`."""
    torch.save({f"control_model.{k}": v for k, v in ldm.items()}, path)


@torch.no_grad()
def build_controlnet(name):
    """A tiny random-weight ControlNet for tiny-sd15 and what diffusers computes with it:
    - `tiny-sd15/controlnet/`: a diffusers `ControlNetModel` folder (`config.json`,
      `diffusion_pytorch_model.safetensors`), `ControlNetModel.from_unet` of tiny-sd15's UNet with a
      hint encoder of widths 4, 8, 8, 16 (three stride-2 convolutions: the hint is downscaled 8×,
      as the VAE downscales 64 px to 8 latents). The zero convolutions (`controlnet_down_blocks.*`,
      `controlnet_mid_block`, `controlnet_cond_embedding.conv_out`) are drawn normal with std
      fan_in^-0.5 (biases 0.05 std), and everything copied from the UNet is nudged by 0.1 of each
      tensor's std, so a test can tell the ControlNet's own encoder from the UNet's. Every weight is
      rounded to f16 and stored as f16 (half the size); the references below are computed in f32
      from the weights read back, so they are exact for f16 storage.
    - `tiny-sd15/controlnet-ldm.safetensors`: the same weights (f16) in the original ControlNet
      names, as A1111/ComfyUI single files name them (no `control_model.` prefix): `time_embed.0/2`,
      `input_blocks.*`, `middle_block.0/1/2`, `input_hint_block.{0,2,…,14}`, `zero_convs.{i}.0`,
      `middle_block_out.0` (see `controlnet_ldm_name`). Checked by feeding it through diffusers'
      own `convert_controlnet_checkpoint` (every tensor and the key set equal to the folder's) and
      by `ControlNetModel.from_single_file`.
    - `tiny-sd15/controlnet-shuffle.pth`: the same again as a pickle, under `control_model.`
      (see `save_control_model_pickle`).
    - `tiny-sd15/control/edges.png`: the 64×64 8-bit RGB edge map of `edge_image`.
    Writes `controlnet.reference.safetensors`:
    - `control_image`: the PNG as diffusers' ControlNet pipelines feed it, (1, 3, 64, 64) in [0, 1]
      (`do_normalize=False`: pixels / 255);
    - one ControlNet call: `cn_sample` (2, 4, 8, 8), `cn_timestep` (501), `cn_context` (the negative
      prompt's states, then the prompt's), `cn_scale` (0.7), the control image repeated to batch 2;
      its residuals `cn_down_{0..5}` (one per UNet skip: conv_in, then each level's ResNet/attention
      and downsampler) and `cn_mid`, already scaled by 0.7; `cn_unet_eps`: tiny-sd15's UNet given
      them;
    - whole runs of `StableDiffusionControlNetPipeline` with tiny-sd15's DDIM from `ctl_init` (the
      tiny-sd15 reference's `run_init`), `ctl_steps` 4, `ctl_guidance` 5, 64×64:
      `ctl_image` with `ctl_scale` 0.8 and `ctl_end` 0.5 (diffusers keeps the ControlNet for step
      i of n while (i + 1)/n ≤ end: of 4 steps the first two (i = 0, 1) get scale 0.8, the last two
      scale 0; the ControlNet is still run there, its residuals times 0); `ctl_plain_image` the same
      at scale 0 (so tiny-sd15's `run_image`); `ctl_guess_image` in guess mode at scale 0.8 and end 1
      (the ControlNet sees only the prompt's half, its residuals scaled by `logspace(-1, 0, 7)`·0.8,
      the last for the middle block, and zeros are added to the negative prompt's half)."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    folder = os.path.join(OUT, "tiny-sd15")
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean.shape[-2:] == (8, 8)
    widths = (4, 8, 8, 16)
    torch.manual_seed(27)
    made = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=widths)
    g = torch.Generator().manual_seed(27)
    zero = ("controlnet_down_blocks.", "controlnet_mid_block.", "controlnet_cond_embedding.conv_out.")
    for key, value in made.named_parameters():
        if key.startswith(zero) and key.endswith("weight"):
            fan_in = value[0].numel()
            value.copy_(torch.randn(value.shape, generator=g) * fan_in ** -0.5)
        elif key.startswith(zero):
            value.copy_(torch.randn(value.shape, generator=g) * 0.05)
        else:
            std = value.std().item() if value.numel() > 1 else 0.0
            value.add_(torch.randn(value.shape, generator=g) * 0.1 * (std or 0.02))
        value.copy_(value.to(CONTROLNET_DTYPE).float())
    unet_state = pipe.unet.state_dict()
    for key, value in made.state_dict().items():
        if key in unet_state:
            assert not torch.equal(value, unet_state[key]), f"{key} is the UNet's"
    out = os.path.join(folder, "controlnet")
    shutil.rmtree(out, ignore_errors=True)
    copy.deepcopy(made).to(CONTROLNET_DTYPE).save_pretrained(out, safe_serialization=True)
    controlnet = ControlNetModel.from_pretrained(out)
    assert controlnet.dtype == torch.float32
    state = controlnet.state_dict()
    assert state.keys() == made.state_dict().keys()
    assert all(torch.equal(v, made.state_dict()[k]) for k, v in state.items()), "read back differs"

    # The original names, checked by diffusers' own converter.
    layers, hint_blocks = controlnet.config.layers_per_block, 2 * (len(widths) - 1)
    ldm = {controlnet_ldm_name(k, layers, hint_blocks): v.to(CONTROLNET_DTYPE).contiguous()
           for k, v in state.items()}
    assert len(ldm) == len(state), "two parameters share an original name"
    converted = convert_controlnet_checkpoint(ldm, controlnet.config)
    assert converted.keys() == state.keys(), sorted(set(converted) ^ set(state))
    for key, value in converted.items():
        assert value.dtype == CONTROLNET_DTYPE and torch.equal(value.float(), state[key]), key
    ldm_path = os.path.join(folder, "controlnet-ldm.safetensors")
    save_file(ldm, ldm_path)
    try:
        single = ControlNetModel.from_single_file(ldm_path, config=out, local_files_only=True)
        assert all(torch.equal(single.state_dict()[k].float(), v) for k, v in state.items())
        print("controlnet-ldm.safetensors: from_single_file matches the folder")
    except Exception as error:  # noqa: BLE001 — only a cross-check; the converter check above holds
        print(f"controlnet-ldm.safetensors: from_single_file not checked: {error!r}"[:400])
    save_control_model_pickle(ldm, os.path.join(folder, "controlnet-shuffle.pth"))

    control = edge_image()
    os.makedirs(os.path.join(folder, "control"), exist_ok=True)
    png = os.path.join(folder, "control", "edges.png")
    control.save(png)
    control = Image.open(png)
    assert control.mode == "RGB" and control.size == (64, 64)
    control_image = torch.from_numpy(np.asarray(control, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]

    reference = load_file(os.path.join(OUT, "tiny-sd15.reference.safetensors"))
    g = torch.Generator().manual_seed(28)
    sample = torch.randn(2, 4, 8, 8, generator=g)
    context = torch.cat([pipe.text_encoder(ids(pipe.tokenizer, NEGATIVE))[0],
                         pipe.text_encoder(ids(pipe.tokenizer, PROMPT))[0]])
    timestep, scale = 501, 0.7
    down, mid = controlnet(sample, timestep, encoder_hidden_states=context,
                           controlnet_cond=control_image.repeat(2, 1, 1, 1),
                           conditioning_scale=scale, return_dict=False)
    eps = pipe.unet(sample, timestep, encoder_hidden_states=context,
                    down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
    plain_eps = pipe.unet(sample, timestep, encoder_hidden_states=context).sample
    print(f"controlnet: UNet output moved by {(eps - plain_eps).abs().max():.4f} (max abs)")
    assert (eps - plain_eps).abs().max() > 0.05
    tensors = {
        "control_image": control_image,
        "cn_sample": sample,
        "cn_timestep": torch.tensor([float(timestep)]),
        "cn_context": context,
        "cn_scale": torch.tensor([scale]),
        **{f"cn_down_{i}": d for i, d in enumerate(down)},
        "cn_mid": mid,
        "cn_unet_eps": eps,
    }

    ctl = StableDiffusionControlNetPipeline(**pipe.components, controlnet=controlnet)
    ctl.set_progress_bar_config(disable=True)
    fed = ctl.prepare_image(control, 64, 64, 1, 1, "cpu", torch.float32)
    assert torch.equal(fed, control_image), "the pipeline feeds the control image otherwise"
    init, steps, guidance, cn_scale, end = reference["run_init"], 4, 5.0, 0.8, 0.5

    def run(**kw):
        settings = dict(controlnet_conditioning_scale=cn_scale, control_guidance_start=0.0,
                        control_guidance_end=end)
        settings.update(kw)
        images = ctl(PROMPT, negative_prompt=NEGATIVE, image=control, num_inference_steps=steps,
                     guidance_scale=guidance, latents=init.clone(), height=64, width=64,
                     output_type="np", **settings).images
        return torch.from_numpy(images).contiguous()

    image, plain = run(), run(controlnet_conditioning_scale=0.0)
    guess = run(guess_mode=True, control_guidance_end=1.0)
    full = run(control_guidance_end=1.0)
    print(f"controlnet: ctl_image − ctl_plain_image {(image - plain).abs().max():.4f} (max abs), "
          f"{(image - plain).abs().mean():.4f} (mean abs)")
    print(f"controlnet: ctl_guess_image − ctl_plain_image {(guess - plain).abs().max():.4f} (max abs); "
          f"end 1 − end 0.5 {(full - image).abs().max():.4f}; "
          f"ctl_plain_image − tiny-sd15 run_image {(plain - reference['run_image']).abs().max():.2e}")
    assert (image - plain).abs().max() > 0.02, "the ControlNet must show"
    assert (guess - plain).abs().max() > 0.02 and (guess - full).abs().max() > 0.02
    assert (full - image).abs().max() > 1e-3, "control_guidance_end must show"
    assert (plain - reference["run_image"]).abs().max() < 1e-4
    tensors.update({
        "ctl_init": init,
        "ctl_steps": torch.tensor([float(steps)]),
        "ctl_guidance": torch.tensor([guidance]),
        "ctl_scale": torch.tensor([cn_scale]),
        "ctl_end": torch.tensor([end]),
        "ctl_image": image,
        "ctl_plain_image": plain,
        "ctl_guess_image": guess,
    })
    save_file({k: v.contiguous() for k, v in tensors.items()},
              os.path.join(OUT, "controlnet.reference.safetensors"),
              metadata={"prompt": PROMPT, "negative_prompt": NEGATIVE, "torch": torch.__version__})


def grid_image():
    """A 64×64 control image unlike `edge_image`: white lines every 16 pixels both ways, and a
    filled square, 8-bit RGB."""
    from PIL import ImageDraw

    image = Image.new("RGB", (64, 64), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    for at in range(5, 64, 16):
        draw.line([(at, 0), (at, 63)], fill=(255, 255, 255), width=1)
        draw.line([(0, at), (63, at)], fill=(255, 255, 255), width=1)
    draw.rectangle([40, 40, 55, 55], fill=(255, 255, 255))
    return image


@torch.no_grad()
def build_multi_controlnet(name):
    """Two ControlNets at once, as diffusers' `MultiControlNetModel` adds their residuals:
    - `tiny-sd15/controlnet-2/`: tiny-sd15's ControlNet with its hint encoder's convolution
      weights (not the zero convolution's) six times larger, stored f16. The first one's output
      hardly depends on the picture (its random hint encoder shrinks it layer by layer: swapping
      its control images moves a run by 3e-5); this one's does (0.19).
    - `tiny-sd15/control/grid.png` (`grid_image`).
    - `multi-controlnet.reference.safetensors`: `multi_image`, the first ControlNet on
      `control/edges.png` at scale 0.8 for the first half of the steps (`control_guidance_end`
      0.5) with `controlnet-2` on the grid at scale 0.6 from a quarter of the steps on
      (`control_guidance_start` 0.25), so that of 4 steps the first runs with the first alone,
      the second with both, the last two with the second alone; the same run otherwise as
      `controlnet`'s `ctl_image` (tiny-sd15's DDIM from its `run_init`, guidance 5).
      `multi_swapped_image`: the control images given the other way round."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    folder = os.path.join(OUT, "tiny-sd15")
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    first = ControlNetModel.from_pretrained(os.path.join(folder, "controlnet"),
                                            torch_dtype=torch.float32)
    second = copy.deepcopy(first)
    for key, value in second.named_parameters():
        if key.startswith("controlnet_cond_embedding.") and ".conv_out." not in key \
                and key.endswith("weight"):
            value.copy_((value * 6).to(CONTROLNET_DTYPE).float())
    out = os.path.join(folder, "controlnet-2")
    shutil.rmtree(out, ignore_errors=True)
    copy.deepcopy(second).to(CONTROLNET_DTYPE).save_pretrained(out, safe_serialization=True)
    second = ControlNetModel.from_pretrained(out, torch_dtype=torch.float32)
    reference = load_file(os.path.join(OUT, "tiny-sd15.reference.safetensors"))
    png = os.path.join(folder, "control", "grid.png")
    grid_image().save(png)
    edges = Image.open(os.path.join(folder, "control", "edges.png")).convert("RGB")
    grid = Image.open(png).convert("RGB")
    ctl = StableDiffusionControlNetPipeline(**pipe.components, controlnet=[first, second])
    ctl.set_progress_bar_config(disable=True)

    def run(images, scales=(0.8, 0.6)):
        out = ctl(PROMPT, negative_prompt=NEGATIVE, image=images, num_inference_steps=4,
                  guidance_scale=5.0, latents=reference["run_init"].clone(), height=64, width=64,
                  controlnet_conditioning_scale=list(scales), control_guidance_start=[0.0, 0.25],
                  control_guidance_end=[0.5, 1.0], output_type="np").images
        return torch.from_numpy(out).contiguous()

    image, swapped = run([edges, grid]), run([grid, edges])
    first_alone = run([edges, grid], scales=(0.8, 0.0))
    print(f"multi-controlnet: − swapped {(image - swapped).abs().max():.4f}, − the first alone "
          f"{(image - first_alone).abs().max():.4f} (max abs)")
    assert (image - swapped).abs().max() > 0.02 and (image - first_alone).abs().max() > 0.02
    save_file({"multi_image": image, "multi_swapped_image": swapped},
              os.path.join(OUT, f"{name}.reference.safetensors"),
              metadata={"prompt": PROMPT, "negative_prompt": NEGATIVE, "torch": torch.__version__})


class TencentResnetBlock(torch.nn.Module):
    """TencentARC's `ResnetBlock` (T2I-Adapter's `ldm/modules/encoders/adapter.py`) as its
    released adapters build it (`sk=True, ksize=1, use_conv=False`)."""

    def __init__(self, in_c, out_c, down):
        super().__init__()
        self.in_conv = torch.nn.Conv2d(in_c, out_c, 1) if in_c != out_c else None
        self.block1 = torch.nn.Conv2d(out_c, out_c, 3, 1, 1)
        self.act = torch.nn.ReLU()
        self.block2 = torch.nn.Conv2d(out_c, out_c, 1)
        self.down = torch.nn.AvgPool2d(2, 2) if down else None

    def forward(self, x):
        if self.down is not None:
            x = self.down(x)
        if self.in_conv is not None:
            x = self.in_conv(x)
        return self.block2(self.act(self.block1(x))) + x


class TencentAdapter(torch.nn.Module):
    """TencentARC's `Adapter(cin, channels, nums_rb, ksize=1, sk=True, use_conv=False)`: the
    original names of the released `t2iadapter_*_sd14v1.pth` / `_sd15v2.pth` files."""

    def __init__(self, cin, channels, nums_rb):
        super().__init__()
        self.unshuffle = torch.nn.PixelUnshuffle(8)
        self.body = torch.nn.ModuleList(
            TencentResnetBlock(channels[i - 1] if i and not j else channels[i], channels[i],
                               down=bool(i and not j))
            for i in range(len(channels)) for j in range(nums_rb))
        self.conv_in = torch.nn.Conv2d(cin, channels[0], 3, 1, 1)
        self.levels, self.nums_rb = len(channels), nums_rb

    def forward(self, x):
        x = self.conv_in(self.unshuffle(x))
        features = []
        for i in range(self.levels):
            for j in range(self.nums_rb):
                x = self.body[i * self.nums_rb + j](x)
            features.append(x)
        return features


class TencentLightBlock(torch.nn.Module):
    """TencentARC's `ExtractorLight` (of `Adapter_light`)."""

    def __init__(self, in_c, inter_c, out_c, nums_rb, down):
        super().__init__()
        self.in_conv = torch.nn.Conv2d(in_c, inter_c, 1)
        self.body = torch.nn.ModuleList(TencentLightResnet(inter_c) for _ in range(nums_rb))
        self.out_conv = torch.nn.Conv2d(inter_c, out_c, 1)
        self.down = torch.nn.AvgPool2d(2, 2) if down else None

    def forward(self, x):
        if self.down is not None:
            x = self.down(x)
        x = self.in_conv(x)
        for block in self.body:
            x = block(x)
        return self.out_conv(x)


class TencentLightResnet(torch.nn.Module):
    """TencentARC's `ResnetBlock_light`."""

    def __init__(self, c):
        super().__init__()
        self.block1 = torch.nn.Conv2d(c, c, 3, 1, 1)
        self.act = torch.nn.ReLU()
        self.block2 = torch.nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return self.block2(self.act(self.block1(x))) + x


class TencentLightAdapter(torch.nn.Module):
    """TencentARC's `Adapter_light(cin, channels, nums_rb)` (`t2iadapter_color_sd14v1.pth`)."""

    def __init__(self, cin, channels, nums_rb, downscale):
        super().__init__()
        self.unshuffle = torch.nn.PixelUnshuffle(downscale)
        self.body = torch.nn.ModuleList(
            TencentLightBlock(cin if i == 0 else channels[i - 1], channels[i] // 4, channels[i],
                              nums_rb, down=i != 0)
            for i in range(len(channels)))

    def forward(self, x):
        x = self.unshuffle(x)
        features = []
        for block in self.body:
            x = block(x)
            features.append(x)
        return features


def tencent_adapter_names(state, nums_rb, light):
    """diffusers' `T2IAdapter` names → TencentARC's originals (the inverse of diffusers'
    `scripts/convert_original_t2i_adapter.py`)."""
    names = {}
    for key, value in state.items():
        parts = key.removeprefix("adapter.").split(".")
        if parts[0] == "body" and light:
            parts[2] = "body" if parts[2] == "resnets" else parts[2]
        elif parts[0] == "body" and parts[2] == "resnets":
            parts = ["body", str(int(parts[1]) * nums_rb + int(parts[3])), *parts[4:]]
        elif parts[0] == "body" and parts[2] == "in_conv":
            parts = ["body", str(int(parts[1]) * nums_rb), *parts[2:]]
        names[".".join(parts)] = value
    return names


@torch.no_grad()
def build_t2i_adapter(name):
    """Tiny random-weight T2I-Adapters (diffusers' `T2IAdapter`, f32) and what diffusers computes:
    - `tiny-sd15/t2i-adapter/`: a `full_adapter` for tiny-sd15 (channels 32, 32, 64: its block
      widths; 2 residual blocks; pixel-unshuffle by 8, so 64 px make 8×8 features, the latents'
      size), its weights drawn normal with std fan_in^-0.5 (so the control image comes through),
      every adapter's rounded to f16 and stored f16; `tiny-sd15/t2i-adapter-original.pth` and
      `adapters/light-original.safetensors`: the full and light ones in TencentARC's original
      names (`TencentAdapter`, `TencentLightAdapter`: its code's networks, which load them
      strictly and give the same features);
    - `adapters/light/`: a one-channel `light_adapter` (channels 16, 32; 2 residual blocks;
      unshuffle by 8) and `adapters/xl/`: a `full_adapter_xl` (channels 8, 16, 16, 16; 1 residual
      block; unshuffle by 16), fitting no tiny model: only their features are checked;
    - `t2i-adapter.reference.safetensors`: `adapter_hint` (`control/grid.png` as the pipeline feeds
      it), `full_features_{i}`, `light_features_{i}` (of its grey: PIL's `L` weights) and
      `xl_features_{i}`; whole runs of `StableDiffusionAdapterPipeline` (tiny-sd15's DDIM from its
      `run_init`, 4 steps, guidance 5, 64×64; it conditions every step): `adapter_image` on the
      grid at `adapter_conditioning_scale` 0.9, `adapter_edges_image` the same on
      `control/edges.png`."""
    from diffusers import StableDiffusionAdapterPipeline, T2IAdapter

    folder = os.path.join(OUT, "tiny-sd15")
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    reference = load_file(os.path.join(OUT, "tiny-sd15.reference.safetensors"))

    def made(path, seed, **config):
        torch.manual_seed(seed)
        adapter = T2IAdapter(**config)
        g = torch.Generator().manual_seed(seed)
        for key, value in adapter.named_parameters():
            if key.endswith("weight"):
                value.copy_(torch.randn(value.shape, generator=g) * value[0].numel() ** -0.5)
            else:
                value.copy_(torch.randn(value.shape, generator=g) * 0.05)
            value.copy_(value.to(CONTROLNET_DTYPE).float())
        shutil.rmtree(path, ignore_errors=True)
        copy.deepcopy(adapter).to(CONTROLNET_DTYPE).save_pretrained(path, safe_serialization=True)
        read = T2IAdapter.from_pretrained(path, torch_dtype=torch.float32)
        assert all(torch.equal(v, adapter.state_dict()[k]) for k, v in read.state_dict().items())
        return read

    full = made(os.path.join(folder, "t2i-adapter"), 41, in_channels=3, channels=[32, 32, 64],
                num_res_blocks=2, downscale_factor=8, adapter_type="full_adapter")
    light = made(os.path.join(OUT, "adapters", "light"), 42, in_channels=1, channels=[16, 32],
                 num_res_blocks=2, downscale_factor=8, adapter_type="light_adapter")
    xl = made(os.path.join(OUT, "adapters", "xl"), 43, in_channels=3, channels=[8, 16, 16, 16],
              num_res_blocks=1, downscale_factor=16, adapter_type="full_adapter_xl")
    grid = Image.open(os.path.join(folder, "control", "grid.png")).convert("RGB")
    edges = Image.open(os.path.join(folder, "control", "edges.png")).convert("RGB")
    hint = torch.from_numpy(np.asarray(grid, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    grey = torch.from_numpy(np.asarray(grid.convert("L"), dtype=np.float32) / 255.0)[None, None]
    tensors = {"adapter_hint": hint}
    for prefix, adapter, x in [("full", full, hint), ("light", light, grey), ("xl", xl, hint)]:
        for i, feature in enumerate(adapter(x)):
            tensors[f"{prefix}_features_{i}"] = feature

    # The same weights in TencentARC's original names, as A1111 and ComfyUI load them, checked
    # by loading them strictly into the original networks and comparing their features.
    originals = [
        ("t2i-adapter-original.pth", full, TencentAdapter(192, [32, 32, 64], 2), 2, False, hint),
        ("adapters/light-original.safetensors", light,
         TencentLightAdapter(64, [16, 32, 32], 2, 8), 2, True, grey),
    ]
    for file, adapter, original, nums_rb, is_light, x in originals:
        names = tencent_adapter_names(adapter.state_dict(), nums_rb, is_light)
        original.load_state_dict(names, strict=True)
        for ours, theirs in zip(original(x), adapter(x)):
            assert torch.equal(ours, theirs), file
        names = {k: v.to(CONTROLNET_DTYPE).contiguous() for k, v in names.items()}
        path = os.path.join(folder if file.endswith(".pth") else OUT, file)
        if path.endswith(".pth"):
            torch.save(names, path)
        else:
            save_file(names, path)

    ctl = StableDiffusionAdapterPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder,
                                         tokenizer=pipe.tokenizer, unet=pipe.unet, adapter=full,
                                         scheduler=pipe.scheduler, safety_checker=None,
                                         feature_extractor=None, requires_safety_checker=False)
    ctl.set_progress_bar_config(disable=True)

    def run(image, scale=0.9):
        out = ctl(PROMPT, negative_prompt=NEGATIVE, image=image, num_inference_steps=4,
                  guidance_scale=5.0, latents=reference["run_init"].clone(), height=64, width=64,
                  adapter_conditioning_scale=scale, output_type="np").images
        return torch.from_numpy(out).contiguous()

    image, on_edges, plain = run(grid), run(edges), run(grid, scale=0.0)
    print(f"t2i-adapter: − plain {(image - plain).abs().max():.4f}, edges − grid "
          f"{(on_edges - image).abs().max():.4f}; plain − tiny-sd15 run_image "
          f"{(plain - reference['run_image']).abs().max():.2e}")
    assert (image - plain).abs().max() > 0.02 and (on_edges - image).abs().max() > 0.02
    assert (plain - reference["run_image"]).abs().max() < 1e-4
    tensors.update({"adapter_image": image, "adapter_edges_image": on_edges})
    save_file({k: v.contiguous() for k, v in tensors.items()},
              os.path.join(OUT, f"{name}.reference.safetensors"),
              metadata={"prompt": PROMPT, "negative_prompt": NEGATIVE, "torch": torch.__version__})


@torch.no_grad()
def build_annotators(name):
    """The preprocessors that make a ControlNet's control image with a network, as
    `controlnet_aux` (what diffusers' examples and ComfyUI's nodes use; A1111's extension has
    the same code) runs them, with tiny random-weight networks in the real files' names:
    - `annotators/hed.pth`: lllyasviel's `ControlNetHED_Apache2` (`ControlNetHED.pth`: `norm`,
      then `block{1..5}.convs.{j}` and `.projection`; 2, 2, 3, 3 and 3 convolutions) at widths
      4, 8, 16, 16, 16 instead of 64 … 512;
    - `annotators/lineart.pth`: the informative-drawings `Generator(3, 1, 3)` of the line-art
      preprocessors (`sk_model.pth`, and `sk_model2.pth` for coarse lines: `model0.1`,
      `model1.{0,3}`, `model2.{i}.conv_block.{1,5}`, `model3.{0,3}` (transposed), `model4.1`)
      at width 8 instead of 64;
    - `annotators/pidinet.pth`: PiDiNet (`table5_pidinet.pth`, what `softedge_pidinet` runs:
      `carv4`'s pixel-difference convolutions, dilation module and attention, the weights
      under `state_dict` with `module.` names) at 4 channels instead of 60, dilation width 4
      instead of 24;
    - `annotators/picture.png`: a 128×64 picture (shapes in colour on a gradient, with noise),
      a size `controlnet_aux` runs at as it is (sides multiples of 64: nothing resized);
    - `annotators/<preprocessor>.png`: what `HEDdetector` (`softedge_hed`, and with `safe`
      `softedge_hedsafe`), `PidiNetDetector` (`softedge_pidinet`, `softedge_pidisafe`),
      `LineartDetector` (`lineart`) and `LineartStandardDetector` (`lineart_standard`, no
      network) make of it at its own size, the HED and PiDiNet detectors' scribbles
      (`scribble_hed`, `scribble_pidinet`), A1111's `scribble_xdog` (no network) and its
      `t2ia_color_grid`, with OpenCV's bicubic resize of the picture to 37×19 and 301×150
      (`bicubic-*.png`);
    - `annotators.reference.safetensors`: the maps before they are rounded to bytes: `hed_edge`
      (the sigmoid of the mean of the five projections, each resized to the picture),
      `pidinet_edge` (PiDiNet's last map, of the picture's BGR),
      `lineart_line` (the generator's sigmoid) and `lineart_standard_intensity`."""
    import cv2
    from PIL import ImageDraw
    from controlnet_aux.hed import ControlNetHED_Apache2, DoubleConvBlock, HEDdetector
    from controlnet_aux.lineart import Generator, LineartDetector, ResidualBlock
    from controlnet_aux.lineart_standard import LineartStandardDetector
    from controlnet_aux.pidi import PidiNetDetector
    from controlnet_aux.pidi.model import PiDiNet, config_model

    folder = os.path.join(OUT, "annotators")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(97)
    x, y = np.meshgrid(np.arange(128), np.arange(64))
    base = np.stack([x * 2, y * 4, 255 - x - y], axis=-1).astype(np.float64)
    picture = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    draw.ellipse([8, 6, 52, 50], fill=(230, 50, 40), outline=(20, 20, 20), width=2)
    draw.rectangle([62, 10, 112, 34], fill=(40, 170, 70))
    draw.polygon([(70, 60), (96, 38), (124, 60)], fill=(30, 50, 200))
    draw.line([(2, 56), (126, 40)], fill=(250, 240, 120), width=3)
    pixels = np.asarray(picture).astype(np.int16) + rng.integers(-10, 11, size=(64, 128, 3))
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(os.path.join(folder, "picture.png"))

    torch.manual_seed(101)
    hed = ControlNetHED_Apache2()
    widths = [4, 8, 16, 16, 16]
    layers = [2, 2, 3, 3, 3]
    for i, (width, count) in enumerate(zip(widths, layers)):
        setattr(hed, f"block{i + 1}", DoubleConvBlock(([3] + widths)[i], width, count))
    # The real network subtracts a learnt colour; the pixels are 0–255.
    hed.norm.copy_(torch.tensor([120.0, 110.0, 100.0]).reshape(1, 3, 1, 1))
    hed.block1.convs[0].weight.mul_(0.05)
    # Projections strong enough that the edges span most of 0–255 (and `safe` has steps).
    for i in range(1, 6):
        getattr(hed, f"block{i}").projection.weight.mul_(12.0)
    hed.eval()
    torch.save(hed.state_dict(), os.path.join(folder, "hed.pth"))
    read = ControlNetHED_Apache2()
    for i, (width, count) in enumerate(zip(widths, layers)):
        setattr(read, f"block{i + 1}", DoubleConvBlock(([3] + widths)[i], width, count))
    read.load_state_dict(torch.load(os.path.join(folder, "hed.pth")), strict=True)

    def tiny_generator(width, blocks, seed):
        torch.manual_seed(seed)
        g = Generator(3, 1, blocks)
        norm = torch.nn.InstanceNorm2d
        g.model0 = torch.nn.Sequential(torch.nn.ReflectionPad2d(3), torch.nn.Conv2d(3, width, 7),
                                       norm(width), torch.nn.ReLU(inplace=True))
        g.model1 = torch.nn.Sequential(
            torch.nn.Conv2d(width, width * 2, 3, stride=2, padding=1), norm(width * 2),
            torch.nn.ReLU(inplace=True),
            torch.nn.Conv2d(width * 2, width * 4, 3, stride=2, padding=1), norm(width * 4),
            torch.nn.ReLU(inplace=True))
        g.model2 = torch.nn.Sequential(*[ResidualBlock(width * 4) for _ in range(blocks)])
        g.model3 = torch.nn.Sequential(
            torch.nn.ConvTranspose2d(width * 4, width * 2, 3, stride=2, padding=1,
                                     output_padding=1), norm(width * 2),
            torch.nn.ReLU(inplace=True),
            torch.nn.ConvTranspose2d(width * 2, width, 3, stride=2, padding=1, output_padding=1),
            norm(width), torch.nn.ReLU(inplace=True))
        g.model4 = torch.nn.Sequential(torch.nn.ReflectionPad2d(3), torch.nn.Conv2d(width, 1, 7),
                                       torch.nn.Sigmoid())
        return g.eval()

    lineart = tiny_generator(8, 3, 103)
    torch.save(lineart.state_dict(), os.path.join(folder, "lineart.pth"))
    full = Generator(3, 1, 3)
    names = {k: tuple(v.shape) for k, v in full.state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in lineart.state_dict().items()}
    assert names.keys() == ours.keys(), (names.keys() ^ ours.keys())

    tensors = {}
    chw = torch.from_numpy(pixels.copy()).float().permute(2, 0, 1)[None]
    projections = read(chw)
    maps = [cv2.resize(p[0, 0].numpy().astype(np.float32), (128, 64),
                       interpolation=cv2.INTER_LINEAR) for p in projections]
    edge = 1 / (1 + np.exp(-np.mean(np.stack(maps, axis=2), axis=2).astype(np.float64)))
    tensors["hed_edge"] = torch.from_numpy(edge.astype(np.float32))
    tensors["lineart_line"] = lineart(chw / 255.0)[0, 0]
    xf = pixels.astype(np.float32)
    g = cv2.GaussianBlur(xf, (0, 0), 6.0)
    intensity = np.min(g - xf, axis=2).clip(0, 255)
    tensors["lineart_standard_intensity"] = torch.from_numpy(intensity.copy())

    outputs = {
        "softedge_hed": HEDdetector(read)(pixels, detect_resolution=64, image_resolution=64,
                                          output_type="np"),
        "softedge_hedsafe": HEDdetector(read)(pixels, detect_resolution=64, image_resolution=64,
                                              safe=True, output_type="np"),
        "lineart": LineartDetector(lineart, lineart)(pixels, detect_resolution=64,
                                                     image_resolution=64, output_type="np"),
        "lineart_standard": LineartStandardDetector()(pixels, detect_resolution=64,
                                                      output_type="np"),
    }
    for key, out in outputs.items():
        assert out.shape == (64, 128, 3), (key, out.shape)
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 0] == out[..., 2]).all()
        Image.fromarray(out[..., 0]).save(os.path.join(folder, f"{key}.png"))
        print(f"{key}: {out.min()}–{out.max()}, mean {out.mean():.1f}")
    # PiDiNet as `table5_pidinet.pth` holds it (its `carv4` pixel-difference convolutions,
    # dilation module and spatial attention; under `state_dict`, each name with `module.`) at
    # 4 channels instead of 60 and a dilation width of 4 instead of 24.
    torch.manual_seed(107)
    pidi = PiDiNet(4, config_model("carv4"), dil=4, sa=True).eval()
    # Random weights as the real network's are not: the classifier sees all four maps, and
    # strongly enough that the edges span most of 0–255 (and `safe` has steps).
    pidi.classifier.weight.copy_(torch.randn_like(pidi.classifier.weight) * 40.0)
    torch.save({"state_dict": {f"module.{k}": v for k, v in pidi.state_dict().items()}},
               os.path.join(folder, "pidinet.pth"))
    bgr = torch.from_numpy(pixels[:, :, ::-1].copy()).float().permute(2, 0, 1)[None] / 255.0
    tensors["pidinet_edge"] = pidi(bgr)[-1][0, 0]
    for key, safe in [("softedge_pidinet", False), ("softedge_pidisafe", True)]:
        out = PidiNetDetector(pidi)(pixels, detect_resolution=64, image_resolution=64, safe=safe,
                                    output_type="np")
        assert out.shape == (64, 128, 3), (key, out.shape)
        Image.fromarray(out[..., 0]).save(os.path.join(folder, f"{key}.png"))
        print(f"{key}: {out.min()}–{out.max()}, mean {out.mean():.1f}")
    # Scribbles: the soft edges thinned to their ridges (`nms`), blurred and thresholded, as
    # `scribble=True` makes them; and A1111's `scribble_xdog` (no network: a difference of
    # Gaussians, σ 0.5 and 5, over 32), its doubling done in integers — A1111's doubles bytes,
    # which wraps for differences over 127 and drops the strongest lines.
    scribbles = {
        "scribble_hed": HEDdetector(read)(pixels, detect_resolution=64, image_resolution=64,
                                          scribble=True, output_type="np"),
        "scribble_pidinet": PidiNetDetector(pidi)(pixels, detect_resolution=64,
                                                  image_resolution=64, scribble=True,
                                                  output_type="np"),
    }
    g1 = cv2.GaussianBlur(pixels.astype(np.float32), (0, 0), 0.5)
    g2 = cv2.GaussianBlur(pixels.astype(np.float32), (0, 0), 5.0)
    dog = (255 - np.min(g2 - g1, axis=2)).clip(0, 255).astype(np.uint8)
    xdog = np.zeros_like(pixels)
    xdog[2 * (255 - dog.astype(np.int32)) > 32] = 255
    scribbles["scribble_xdog"] = xdog
    # A1111's `t2ia_color_grid` (for TencentARC's colour adapter): a 64th of the size by
    # OpenCV's bicubic resize, blown back up in blocks; and that resize alone to 37×19 (scales
    # that are no whole numbers), which the grid's 2×1 cells would hardly test.
    h, w = pixels.shape[:2]
    grid = cv2.resize(cv2.resize(pixels, (w // 64, h // 64), interpolation=cv2.INTER_CUBIC), (w, h),
                      interpolation=cv2.INTER_NEAREST)
    Image.fromarray(grid).save(os.path.join(folder, "t2ia_color_grid.png"))
    Image.fromarray(cv2.resize(pixels, (37, 19), interpolation=cv2.INTER_CUBIC)).save(
        os.path.join(folder, "bicubic-37x19.png"))
    Image.fromarray(cv2.resize(pixels, (301, 150), interpolation=cv2.INTER_CUBIC)).save(
        os.path.join(folder, "bicubic-301x150.png"))
    # Anime line art (`netG.pth`: a U-Net generator of 8 levels, instance norms, `tanh`) at
    # 2 channels instead of 64, on a 256×256 picture (its size is a multiple of 256: nothing
    # resized), from the picture's left half scaled up.
    from controlnet_aux.lineart_anime import LineartAnimeDetector, UnetGenerator
    import functools
    torch.manual_seed(109)
    norm = functools.partial(torch.nn.InstanceNorm2d, affine=False, track_running_stats=False)
    anime = UnetGenerator(3, 1, 8, 2, norm_layer=norm, use_dropout=False).eval()
    torch.save({f"module.{k}": v for k, v in anime.state_dict().items()},
               os.path.join(folder, "lineart-anime.pth"))
    square = np.asarray(Image.fromarray(pixels[:, :64]).resize((256, 256), Image.BICUBIC))
    Image.fromarray(square).save(os.path.join(folder, "square.png"))
    feed = torch.from_numpy(square.copy()).float().permute(2, 0, 1)[None] / 127.5 - 1.0
    tensors["lineart_anime_line"] = anime(feed)[0, 0] * 127.5 + 127.5
    out = LineartAnimeDetector(anime)(square, detect_resolution=256, image_resolution=256,
                                      output_type="np")
    assert out.shape == (256, 256, 3), out.shape
    scribbles["lineart_anime"] = out
    for key, out in scribbles.items():
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 0] == out[..., 2]).all()
        Image.fromarray(out[..., 0]).save(os.path.join(folder, f"{key}.png"))
        print(f"{key}: {int((out[..., 0] > 0).sum())} white pixels")
    save_file({k: v.contiguous() for k, v in tensors.items()},
              os.path.join(OUT, f"{name}.reference.safetensors"),
              metadata={"torch": torch.__version__, "opencv": cv2.__version__})


@torch.no_grad()
def build_depth_anything(name):
    """Depth Anything V2 (A1111's `depth_anything_v2`) as its own repository's `infer_image` runs
    it — needs $DEPTH_ANYTHING_V2, a checkout of github.com/DepthAnything/Depth-Anything-V2 — with
    a tiny random-weight network in the real files' layout (`depth_anything_v2_vits.pth`:
    `pretrained.*`, DINOv2's ViT, and `depth_head.*`, the DPT head):
    - `annotators/depth-anything-v2.pth`: 12 blocks of width 128 (2 heads of 64, as every
      released size has), an MLP as wide as the blocks (4× in the real ones), a 37×37 position
      grid (a 518² input) and a head of 16 features (`out_channels` 8, 16, 32, 32), stored f16;
    - `annotators/depth_anything_v2.png`: the control image of `annotators/picture.png` (128×64:
      the network sees it at 1036×518, its position grid resized) — the relative depth resized
      back to the picture, stretched to 0–255 and truncated, as ComfyUI's and A1111's
      preprocessors make it — and `depth_anything_v2-square.png` of `annotators/square.png`
      (256²: seen at 518², the grid as stored);
    - `depth-anything.reference.safetensors`: the depth before that (`depth_picture`,
      `depth_square`), resized to the picture;
    - the same for the first Depth Anything (A1111's `depth_anything`: `depth_anything.png`,
      `depth_anything-square.png`, `v1_depth_picture`, `v1_depth_square`) as its repository's
      `run.py` makes it — needs $DEPTH_ANYTHING, a checkout of github.com/LiheYoung/Depth-Anything
      — the same file loaded strictly into its `DPT_DINOv2` (the same layout; DINOv2 from the
      checkout's `torchhub`), which takes the last four blocks and resizes back without
      aligning corners."""
    import cv2
    sys.path.insert(0, os.environ["DEPTH_ANYTHING_V2"])
    from depth_anything_v2 import dpt
    from depth_anything_v2.dinov2 import DinoVisionTransformer

    def tiny_vit(model_name):
        return DinoVisionTransformer(img_size=518, patch_size=14, embed_dim=128, depth=12,
                                     num_heads=2, mlp_ratio=1.0, init_values=1.0,
                                     ffn_layer="mlp", block_chunks=0, num_register_tokens=0,
                                     interpolate_antialias=False, interpolate_offset=0.1)

    dpt.DINOv2 = tiny_vit
    torch.manual_seed(113)
    model = dpt.DepthAnythingV2(encoder="vits", features=16, out_channels=[8, 16, 32, 32]).eval()
    # Random weights with some spread: layer scales around 1, the position grid and tokens as
    # large as the patches, the last convolution biased so the depth is mostly above its ReLU.
    for key, value in model.state_dict().items():
        if key.endswith(".gamma"):
            value.copy_(0.5 + torch.rand_like(value))
        elif key.endswith(("pos_embed", "cls_token", "mask_token")):
            value.copy_(torch.randn_like(value))
        elif key.endswith("bias"):
            value.copy_(torch.randn_like(value) * 0.1)
    model.depth_head.scratch.output_conv2[2].bias.fill_(0.3)
    model = model.half().float()
    folder = os.path.join(OUT, "annotators")
    torch.save({k: v.half() for k, v in model.state_dict().items()},
               os.path.join(folder, "depth-anything-v2.pth"))
    tensors = {}
    suffixes = {"picture": "", "square": "-square"}

    def stretched(depth, file):
        """The depth stretched from its least to its most to 0–255 and truncated, saved."""
        depth = depth.numpy()
        control = ((depth - depth.min()) / (depth.max() - depth.min()) * 255.0).astype(np.uint8)
        Image.fromarray(control).save(os.path.join(folder, file))
        return control

    for key, file in [("picture", "picture.png"), ("square", "square.png")]:
        rgb = np.asarray(Image.open(os.path.join(folder, file)).convert("RGB"))
        feed, (h, w) = model.image2tensor(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 518)
        depth = model(feed.cpu())
        resized = torch.nn.functional.interpolate(depth[:, None], (h, w), mode="bilinear",
                                                  align_corners=True)[0, 0]
        tensors[f"depth_{key}"] = resized
        control = stretched(resized, f"depth_anything_v2{suffixes[key]}.png")
        print(f"{key}: fed {tuple(feed.shape)}, depth {depth.min():.3f}–{depth.max():.3f}, "
              f"control mean {control.mean():.1f}, {len(np.unique(control))} levels")
    first = os.environ["DEPTH_ANYTHING"]
    sys.path.insert(0, first)
    sys.path.insert(0, os.path.join(first, "torchhub", "facebookresearch_dinov2_main"))
    from depth_anything.dpt import DPT_DINOv2
    from depth_anything.util.transform import Resize, NormalizeImage, PrepareForNet
    from dinov2.models.vision_transformer import DinoVisionTransformer as HubViT
    from torchvision.transforms import Compose

    hub_load = torch.hub.load
    torch.hub.load = lambda *args, **kwargs: HubViT(
        img_size=518, patch_size=14, embed_dim=128, depth=12, num_heads=2, mlp_ratio=1.0,
        init_values=1.0, ffn_layer="mlp", block_chunks=0)
    try:
        v1 = DPT_DINOv2(encoder="vits", features=16, out_channels=[8, 16, 32, 32]).eval()
    finally:
        torch.hub.load = hub_load
    v1.load_state_dict(
        {k: v.float() for k, v in torch.load(os.path.join(folder, "depth-anything-v2.pth")).items()},
        strict=True)
    transform = Compose([
        Resize(width=518, height=518, resize_target=False, keep_aspect_ratio=True,
               ensure_multiple_of=14, resize_method="lower_bound",
               image_interpolation_method=cv2.INTER_CUBIC),
        NormalizeImage(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        PrepareForNet(),
    ])
    for key, file in [("picture", "picture.png"), ("square", "square.png")]:
        rgb = np.asarray(Image.open(os.path.join(folder, file)).convert("RGB"))
        h, w = rgb.shape[:2]
        feed = torch.from_numpy(transform({"image": rgb / 255.0})["image"]).unsqueeze(0)
        depth = v1(feed)
        resized = torch.nn.functional.interpolate(depth[None], (h, w), mode="bilinear",
                                                  align_corners=False)[0, 0]
        tensors[f"v1_depth_{key}"] = resized
        control = stretched(resized, f"depth_anything{suffixes[key]}.png")
        print(f"v1 {key}: depth {depth.min():.3f}–{depth.max():.3f}, control mean {control.mean():.1f}")
    save_file({k: v.contiguous() for k, v in tensors.items()},
              os.path.join(OUT, f"{name}.reference.safetensors"),
              metadata={"torch": torch.__version__, "opencv": cv2.__version__})


@torch.no_grad()
def build_mlsd(name):
    """M-LSD line segments (A1111's `mlsd`; `mlsd_large_512_fp32.pth`) as `controlnet_aux`'s
    `MLSDdetector` finds and draws them: the released `MobileV2_MLSD_Large` at its own size
    (its widths are fixed) with random weights and batch-norm statistics, stored f16 as
    `annotators/mlsd.pth`; `annotators/mlsd.png`, the detector's lines of `picture.png` (128×64,
    a size it runs at as it is) at its default thresholds (0.1, 0.1); and in
    `mlsd.reference.safetensors` the network's output (`mlsd_map`, its 9 channels: centres and
    displacements at half the size) and the segments it decoded (`mlsd_lines`, x₀ y₀ x₁ y₁ in
    pixels, before they are truncated to draw); and OpenCV's 1-pixel lines of 40 seeded
    segments (`lines-opencv.png`, their ends `line_cases`)."""
    import cv2
    from controlnet_aux.mlsd import MLSDdetector
    from controlnet_aux.mlsd.models.mbv2_mlsd_large import MobileV2_MLSD_Large
    from controlnet_aux.mlsd.utils import pred_lines

    folder = os.path.join(OUT, "annotators")
    torch.manual_seed(127)
    model = MobileV2_MLSD_Large().eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn_like(module.running_mean) * 0.1)
            module.running_var.copy_(0.5 + torch.rand_like(module.running_var))
            module.weight.copy_(0.5 + torch.rand_like(module.weight))
            module.bias.copy_(torch.randn_like(module.bias) * 0.1)
    # Displacements of tens of pixels (the random network's are a fraction of one), so the
    # lines are long and some leave the picture; and a centre map with some relief.
    model.block23.conv3.weight[8:12].mul_(150.0)
    model.block23.conv3.bias[8:12].normal_(0.0, 5.0)
    model.block23.conv3.weight[7].mul_(20.0)
    model = model.half().float()
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    torch.save({k: v.half() for k, v in model.state_dict().items()},
               os.path.join(folder, "mlsd.pth"))
    pixels = np.asarray(Image.open(os.path.join(folder, "picture.png")).convert("RGB"))
    feed = np.concatenate([pixels, np.ones([64, 128, 1])], axis=-1).transpose((2, 0, 1))
    feed = torch.from_numpy(feed[None].astype("float32") / 127.5 - 1.0)
    tensors = {"mlsd_map": model(feed)[0]}
    lines = pred_lines(pixels, model, [64, 128], 0.1, 0.1)
    tensors["mlsd_lines"] = torch.from_numpy(np.asarray(lines, dtype=np.float32))
    out = MLSDdetector(model)(pixels, thr_v=0.1, thr_d=0.1, detect_resolution=64,
                              image_resolution=64, output_type="np")
    assert out.shape == (64, 128, 3), out.shape
    Image.fromarray(out[..., 0]).save(os.path.join(folder, "mlsd.png"))
    print(f"mlsd: {len(lines)} lines, {int((out[..., 0] > 0).sum())} white pixels")
    # OpenCV's own 1-pixel lines (8-connected, clipped to the canvas) of 40 seeded segments,
    # steep, shallow and leaving a 64×48 canvas: `lines-opencv.png`, `line_cases`.
    rng = np.random.default_rng(131)
    cases = rng.integers(-30, 95, size=(40, 4))
    canvas = np.zeros((48, 64), np.uint8)
    for x0, y0, x1, y1 in cases:
        cv2.line(canvas, (int(x0), int(y0)), (int(x1), int(y1)), 255, 1)
    Image.fromarray(canvas).save(os.path.join(folder, "lines-opencv.png"))
    tensors["line_cases"] = torch.from_numpy(cases.astype(np.float32))
    save_file({k: v.contiguous() for k, v in tensors.items()},
              os.path.join(OUT, f"{name}.reference.safetensors"),
              metadata={"torch": torch.__version__, "opencv": cv2.__version__})


@torch.no_grad()
def build_controlnet_inpaint(name):
    """tiny-sd15's ControlNet conditioning the 9-channel tiny-sd-inpaint UNet (the same blocks)
    as diffusers' `StableDiffusionControlNetInpaintPipeline` runs it — the ControlNet takes the
    4 latent channels, the UNet its 9 — repainting the test image's right half (strength 1)
    from tiny-sd-inpaint's `run_init`, 4 steps at guidance 5, the edge map at scale 0.8:
    `controlnet-inpaint.reference.safetensors`'s `ctl_inpaint_image`, beside the same run at
    scale 0 (`ctl_inpaint_plain_image`, tiny-sd-inpaint's own `run_image`)."""
    from diffusers import ControlNetModel, StableDiffusionControlNetInpaintPipeline

    pipe = StableDiffusionInpaintPipeline.from_pretrained(os.path.join(OUT, "tiny-sd-inpaint"))
    controlnet = ControlNetModel.from_pretrained(os.path.join(OUT, "tiny-sd15", "controlnet"),
                                                 torch_dtype=torch.float32)
    reference = load_file(os.path.join(OUT, "tiny-sd-inpaint.reference.safetensors"))
    control = Image.open(os.path.join(OUT, "tiny-sd15", "control", "edges.png")).convert("RGB")
    ctl = StableDiffusionControlNetInpaintPipeline(**pipe.components, controlnet=controlnet)
    ctl.set_progress_bar_config(disable=True)

    def run(scale):
        images = ctl(PROMPT, negative_prompt=NEGATIVE, image=test_image(), mask_image=test_mask(),
                     control_image=control, strength=1.0, num_inference_steps=4,
                     guidance_scale=5.0, latents=reference["run_init"].clone(), height=64,
                     width=64, controlnet_conditioning_scale=scale, output_type="np").images
        return torch.from_numpy(images).contiguous()

    image, plain = run(0.8), run(0.0)
    print(f"controlnet-inpaint: − plain {(image - plain).abs().max():.4f} (max abs); plain − "
          f"tiny-sd-inpaint run_image {(plain - reference['run_image']).abs().max():.2e}")
    assert (image - plain).abs().max() > 0.02, "the ControlNet must show"
    assert (plain - reference["run_image"]).abs().max() < 1e-4
    save_file({"ctl_inpaint_image": image, "ctl_inpaint_plain_image": plain,
               "ctl_inpaint_scale": torch.tensor([0.8])},
              os.path.join(OUT, f"{name}.reference.safetensors"),
              metadata={"prompt": PROMPT, "negative_prompt": NEGATIVE, "torch": torch.__version__})


@torch.no_grad()
def build_lora_block_weights(name):
    """LoRAs weighted per block as the sd-webui-lora-block-weight extension applies `lbw=`: the
    kohya LoRA on tiny-sd15 at 0.8 with 26 block weights, and the kohya SDXL LoRA on tiny-sdxl
    at 0.7 with 12 (the blocks those leave out at 0). Each update is scaled by its module's
    block ratio, found in A1111's name of the module by the extension's own lookup."""
    sd15_weights = [0.5, 3.0, 1.5, 3.0, -0.5, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0,
                    0.25, 3.0, 3.0, 0.0, 1.0, 2.0, 0.75, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    xl_weights = [0.5, 1.0, 1.5, 1.0, 1.0, 0.25, 1.0, 0.0, -0.5, 2.0, 1.0, 1.0]
    tensors = {}
    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(OUT, "tiny-sd15"))
    sample = load_file(os.path.join(OUT, "tiny-sd15.reference.safetensors"))["unet_sample"]
    tensors["unet_sample"] = sample
    kohya, updates = random_lora(pipe, 11, True)
    on_disk = load_file(os.path.join(OUT, "tiny-sd15", "loras", "kohya.safetensors"))
    assert all(torch.equal(on_disk[k], v) for k, v in kohya.items()), "kohya.safetensors changed"
    layers = pipe.unet.config.layers_per_block
    weighted = [
        (network, module, down, up, factor * lbw_ratio(a1111_name(network, module, layers), sd15_weights))
        for network, module, down, up, factor in updates
    ]
    assert len({u[4] for u in weighted}) > 4, "the weights must tell the blocks apart"
    unet, text = merged(pipe, [(weighted, 0.8)])
    context = torch.cat([text(ids(pipe.tokenizer, NEGATIVE))[0], text(ids(pipe.tokenizer, PROMPT))[0]])
    tensors["sd15_cond"] = context[1:]
    tensors["sd15_eps"] = unet(sample, 501, encoder_hidden_states=context).sample

    xl = StableDiffusionXLPipeline.from_pretrained(os.path.join(OUT, "tiny-sdxl"))
    sample = load_file(os.path.join(OUT, "tiny-sdxl.reference.safetensors"))["unet_sample"]
    tensors["xl_unet_sample"] = sample
    state = load_file(os.path.join(OUT, "tiny-sdxl", "loras", "kohya-xl.safetensors"))
    ratios = lbw_to26(xl_weights, LBW_IDS12)
    layers = xl.unet.config.layers_per_block
    models = {"unet": copy.deepcopy(xl.unet), "te1": copy.deepcopy(xl.text_encoder),
              "te2": copy.deepcopy(xl.text_encoder_2)}
    modules = {}
    for network, model in models.items():
        for module, layer in model.named_modules():
            if isinstance(layer, torch.nn.Linear):
                path = ldm_name(module, layers) if network == "unet" and ".attentions." in module else module
                if network != "unet" and not path.startswith("text_model."):
                    path = "text_model." + path
                modules[f"lora_{network}_" + path.replace(".", "_")] = layer
    seen = set()
    for key in state:
        stem = key.split(".")[0]
        if stem in seen:
            continue
        seen.add(stem)
        # A1111 renames kohya's SDXL UNet modules `lora_unet_…` to `diffusion_model_…`.
        a1111 = stem.replace("lora_unet_", "diffusion_model_").replace("lora_te1_", "").replace("lora_te2_", "")
        ratio = lbw_ratio(a1111, ratios)
        down, up = state[f"{stem}.lora_down.weight"], state[f"{stem}.lora_up.weight"]
        alpha = state[f"{stem}.alpha"].item()
        modules[stem].weight.add_(0.7 * ratio * (alpha / down.shape[0]) * (up @ down))
    cond, pooled, eps = xl_outputs(xl, sample, models["unet"], models["te1"], models["te2"])
    tensors.update(xl_cond=cond, xl_pooled=pooled, xl_eps=eps)
    save_file(
        {k: v.detach().contiguous() for k, v in tensors.items()},
        os.path.join(OUT, f"{name}.reference.safetensors"),
        metadata={
            "prompt": PROMPT,
            "negative_prompt": NEGATIVE,
            "sd15_weights": ",".join(map(str, sd15_weights)),
            "xl_weights": ",".join(map(str, xl_weights)),
            "torch": torch.__version__,
        },
    )


def build_embeddings(name):
    """Textual-inversion embeddings as the tools that train them save them, and what diffusers
    computes with them loaded (`load_textual_inversion`, the trigger word being the file's
    stem, as A1111 names them): for tiny-sd15 an A1111 `.pt` (`string_to_param["*"]`, three
    vectors), an A1111 `.safetensors` (`emb_params`, two vectors) and a diffusers
    `learned_embeds` file (one key, one 1-D vector); for tiny-sdxl one with `clip_l` and
    `clip_g` vectors for its two encoders. The references: the prompt's and the negative
    prompt's token ids and text states, tiny-sd15's whole 4-step run, and tiny-sdxl's
    conditioning and pooled prompt."""
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    g = torch.Generator().manual_seed(21)
    width = 32
    pixel = torch.randn(3, width, generator=g)
    torch.save(
        {"string_to_token": {"*": 265}, "string_to_param": {"*": pixel}, "name": "pixel-style",
         "step": 1500, "sd_checkpoint": "0123abcd", "sd_checkpoint_name": "tiny-sd15"},
        os.path.join(folder, "pixel-style.pt"),
    )
    save_file({"emb_params": torch.randn(2, width, generator=g)},
              os.path.join(folder, "bad-hands.safetensors"))
    save_file({"<gem-glow>": torch.randn(width, generator=g)},
              os.path.join(folder, "gem-glow.safetensors"))
    save_file({"clip_l": torch.randn(2, width, generator=g), "clip_g": torch.randn(2, width, generator=g)},
              os.path.join(folder, "xl-pixel.safetensors"))

    prompt, negative = "a red potion bottle, pixel-style, gem-glow", "bad-hands, blurry"
    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(OUT, "tiny-sd15"))
    files = ["pixel-style.pt", "bad-hands.safetensors", "gem-glow.safetensors"]
    pipe.load_textual_inversion([os.path.join(folder, f) for f in files],
                                token=[os.path.splitext(f)[0] for f in files])
    tensors = {}
    for key, text in (("prompt", prompt), ("negative", negative)):
        converted = pipe.maybe_convert_prompt(text, pipe.tokenizer)
        tensors[f"sd15_{key}_ids"] = ids(pipe.tokenizer, converted)[0].to(torch.int64)
        tensors[f"sd15_{key}_states"] = pipe.encode_prompt(text, "cpu", 1, False)[0]
    init = torch.randn(1, 4, 8, 8, generator=g)
    run = pipe(prompt, negative_prompt=negative, num_inference_steps=4, guidance_scale=5.0,
               latents=init.clone(), output_type="np", height=64, width=64).images
    tensors["sd15_run_init"] = init
    tensors["sd15_run_image"] = torch.from_numpy(run).contiguous()

    xl = StableDiffusionXLPipeline.from_pretrained(os.path.join(OUT, "tiny-sdxl"))
    state = load_file(os.path.join(folder, "xl-pixel.safetensors"))
    xl.load_textual_inversion(state["clip_l"], token="xl-pixel", text_encoder=xl.text_encoder,
                              tokenizer=xl.tokenizer)
    xl.load_textual_inversion(state["clip_g"], token="xl-pixel", text_encoder=xl.text_encoder_2,
                              tokenizer=xl.tokenizer_2)
    xl_prompt = "xl-pixel knight"
    embeds, _, pooled, _ = xl.encode_prompt(xl_prompt, device="cpu", do_classifier_free_guidance=False)
    tensors["sdxl_ids"] = ids(xl.tokenizer, xl.maybe_convert_prompt(xl_prompt, xl.tokenizer))[0].to(torch.int64)
    tensors["sdxl_ids_2"] = ids(xl.tokenizer_2, xl.maybe_convert_prompt(xl_prompt, xl.tokenizer_2))[0].to(torch.int64)
    tensors["sdxl_states"] = embeds
    tensors["sdxl_pooled"] = pooled
    save_file(
        {k: v.detach().contiguous() for k, v in tensors.items()},
        os.path.join(OUT, f"{name}.reference.safetensors"),
        metadata={"prompt": prompt, "negative_prompt": negative, "sdxl_prompt": xl_prompt,
                  "torch": torch.__version__},
    )


def build_clip_skip(name):
    """What diffusers computes with `clip_skip = 1` (A1111's "Clip skip 2": the layer before
    the last, through the final layer norm; SDXL's layer before its usual one) for the prompt
    and, encoded the same way as A1111 and ComfyUI do, the negative prompt: tiny-sd15's text
    states and whole 4-step run, tiny-sdxl's conditioning and pooled prompt."""
    tensors = {}
    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(OUT, "tiny-sd15"))
    # diffusers reaches the final norm through `text_model`, which transformers 5's
    # CLIPTextModel no longer has (the norm is its own child): lend it the path.
    object.__setattr__(pipe.text_encoder, "text_model", pipe.text_encoder)
    cond = pipe.encode_prompt(PROMPT, "cpu", 1, False, clip_skip=1)[0]
    uncond = pipe.encode_prompt(NEGATIVE, "cpu", 1, False, clip_skip=1)[0]
    g = torch.Generator().manual_seed(22)
    init = torch.randn(1, 4, 8, 8, generator=g)
    run = pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, num_inference_steps=4,
               guidance_scale=5.0, latents=init.clone(), output_type="np", height=64,
               width=64).images
    tensors.update(sd15_cond=cond, sd15_uncond=uncond, sd15_run_init=init,
                   sd15_run_image=torch.from_numpy(run).contiguous())
    xl = StableDiffusionXLPipeline.from_pretrained(os.path.join(OUT, "tiny-sdxl"))
    for key, text in (("cond", PROMPT), ("uncond", NEGATIVE)):
        embeds, _, pooled, _ = xl.encode_prompt(text, device="cpu", do_classifier_free_guidance=False,
                                                clip_skip=1)
        tensors[f"sdxl_{key}"], tensors[f"sdxl_{key}_pooled"] = embeds, pooled
    save_file(
        {k: v.detach().contiguous() for k, v in tensors.items()},
        os.path.join(OUT, f"{name}.reference.safetensors"),
        metadata={"prompt": PROMPT, "negative_prompt": NEGATIVE, "torch": torch.__version__},
    )


def lpw_functions():
    """The prompt-weighting functions of diffusers' community long-prompt-weighting pipeline,
    read from `examples/community/lpw_stable_diffusion.py` of a diffusers checkout named by
    $LPW (the module's own imports name things diffusers 0.42 no longer has, so only its
    functions are taken)."""
    path = os.environ.get("LPW")
    if not path:
        sys.exit("set LPW to examples/community/lpw_stable_diffusion.py of a diffusers checkout")
    wanted = {"re_attention", "parse_prompt_attention", "get_prompts_with_weights",
              "pad_tokens_and_weights", "get_unweighted_text_embeddings",
              "get_weighted_text_embeddings"}
    tree = ast.parse(open(path).read())
    body = [node for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name in wanted
            or isinstance(node, ast.Assign) and any(getattr(t, "id", None) in wanted for t in node.targets)]
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from diffusers.utils import USE_PEFT_BACKEND, scale_lora_layers, unscale_lora_layers
    namespace = {"re": re, "torch": torch, "Optional": typing.Optional, "Union": typing.Union,
                 "List": typing.List, "DiffusionPipeline": object,
                 "logger": logging.getLogger("lpw"),
                 "StableDiffusionLoraLoaderMixin": StableDiffusionLoraLoaderMixin,
                 "USE_PEFT_BACKEND": USE_PEFT_BACKEND, "scale_lora_layers": scale_lora_layers,
                 "unscale_lora_layers": unscale_lora_layers}
    exec(compile(ast.Module(body=body, type_ignores=[]), path, "exec"), namespace)
    return namespace


def a1111_text_states():
    """A1111's text states for SD 1.x: its `tokenize_line` (how a prompt becomes 75-token
    chunks, `BREAK` starting one and a full one ending at a comma within 20 tokens of its end,
    the default "prompt word wrap length limit"), read from `modules/sd_hijack_clip.py` of a
    stable-diffusion-webui checkout named by $A1111_CLIP, and its `parse_prompt_attention` from
    the `modules/prompt_parser.py` named by $A1111 (the modules import A1111's own, so only
    these are taken); each chunk then encoded alone and weighed with its "Original" emphasis
    (states times weights, rescaled to the mean they had), the chunks laid end to end. Returns a
    function of a pipeline and a prompt."""
    clip, parser = os.environ.get("A1111_CLIP"), os.environ.get("A1111")
    if not clip or not parser:
        sys.exit("set A1111_CLIP to modules/sd_hijack_clip.py and A1111 to "
                 "modules/prompt_parser.py of a stable-diffusion-webui checkout")
    tree = ast.parse(open(parser).read())
    body = [node for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name == "parse_prompt_attention"
            or isinstance(node, ast.Assign)
            and any(getattr(t, "id", None) in ("re_attention", "re_break") for t in node.targets)]
    prompt_parser = {"re": re}
    exec(compile(ast.Module(body=body, type_ignores=[]), parser, "exec"), prompt_parser)
    body = []
    for node in ast.parse(open(clip).read()).body:
        if isinstance(node, ast.ClassDef) and node.name == "PromptChunk":
            body.append(node)
        elif isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "PromptChunkFix":
            body.append(node)
        elif isinstance(node, ast.ClassDef) and node.name == "FrozenCLIPEmbedderWithCustomWordsBase":
            body += [f for f in node.body if getattr(f, "name", None) == "tokenize_line"]
    namespace = {"namedtuple": collections.namedtuple,
                 "opts": types.SimpleNamespace(emphasis="Original", comma_padding_backtrack=20),
                 "prompt_parser": types.SimpleNamespace(**prompt_parser)}
    exec(compile(ast.Module(body=body, type_ignores=[]), clip, "exec"), namespace)

    def states(pipe, prompt):
        tokenizer = pipe.tokenizer
        # Textual inversions loaded by diffusers (`load_textual_inversion`: a word, then
        # `word_1`, … for its further vectors) as A1111's embedding database finds them; their
        # placeholders then take the words' ids, whose vectors the text encoder holds.
        added = tokenizer.added_tokens_encoder
        words = {ids[0]: ids for ids in
                 ([added[w]] + [added[f"{w}_{k}"] for k in range(1, 100) if f"{w}_{k}" in added]
                  for w in added if not re.fullmatch(r".*_\d+|<\|.*\|>", w))}
        found = lambda tokens, at: ((types.SimpleNamespace(vectors=len(words[tokens[at]]), ids=words[tokens[at]]),
                                     len(words[tokens[at]])) if tokens[at] in words else (None, None))
        line = types.SimpleNamespace(
            tokenize=lambda texts: tokenizer(pipe.maybe_convert_prompt(texts, tokenizer), truncation=False,
                                             add_special_tokens=False)["input_ids"],
            comma_token=tokenizer.get_vocab().get(",</w>"), chunk_length=75,
            id_start=tokenizer.bos_token_id, id_end=tokenizer.eos_token_id,
            hijack=types.SimpleNamespace(embedding_db=types.SimpleNamespace(find_embedding_at_position=found)))
        chunks, _ = namespace["tokenize_line"](line, prompt)
        zs = []
        for chunk in chunks:
            for offset, embedding in chunk.fixes:
                chunk.tokens[1 + offset:1 + offset + embedding.vectors] = embedding.ids
            z = pipe.text_encoder(torch.tensor([chunk.tokens]))[0]
            mean = z.mean()
            z = z * torch.tensor([chunk.multipliers]).unsqueeze(-1)
            zs.append(z * (mean / z.mean()))
        return torch.hstack(zs), [chunk.tokens for chunk in chunks]
    return states


def build_prompt_syntax(name):
    """A1111's prompt syntax, on tiny-sd15: how awkward prompts parse and a weighted prompt and
    negative prompt (one chunk each) as diffusers' long-prompt-weighting pipeline reads them
    (see `lpw_functions`); a long prompt (two chunks, the first ending at a comma, a weighted
    word in the second) as A1111 encodes it (see `a1111_text_states`), with a one-chunk negative
    prompt guided as A1111 guides it (see `denoise_composed`); each as text states and a whole
    4-step run from them."""
    lpw = lpw_functions()
    a1111 = a1111_text_states()
    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(OUT, "tiny-sd15"))
    object.__setattr__(pipe.text_encoder, "text_model", pipe.text_encoder)  # as in clip-skip
    weighted = "a (red:1.3) potion bottle, [pixel art], ((glowing)) gem"
    weighted_negative = "(blurry:1.2), ugly"
    # Its 75th and 76th tokens are a word's: the first chunk ends at the comma before them.
    long_prompt = "a red " + ", ".join(CORPUS.split()[:60]) + ", (glowing gem:1.3)"
    parses = ["normal text", "an (important) word", "(unbalanced", "\\(literal\\]",
              "(unnecessary)(parens)", "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
              "[[faint]] (x:0.25) [y:2]", weighted, weighted_negative]
    tensors = {}
    g = torch.Generator().manual_seed(23)
    for key, prompt, negative in (("weighted", weighted, weighted_negative),
                                  ("long", long_prompt, NEGATIVE)):
        cond, uncond = lpw["get_weighted_text_embeddings"](pipe, prompt, negative,
                                                           max_embeddings_multiples=3)
        init = torch.randn(1, 4, 8, 8, generator=g)
        run = pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, num_inference_steps=4,
                   guidance_scale=5.0, latents=init.clone(), output_type="np", height=64,
                   width=64).images
        if key == "weighted":
            # The loop below is the pipeline's where the lengths agree.
            again = denoise_composed(pipe, [(1.0, lambda i: cond)], uncond, 4, 5.0, init).numpy()
            assert np.abs(again - run).max() < 1e-5, np.abs(again - run).max()
        if key == "long":
            cond, chunks = a1111(pipe, prompt)
            comma = pipe.tokenizer.get_vocab()[",</w>"]
            first = chunks[0][1:chunks[0].index(pipe.tokenizer.eos_token_id)]
            assert len(first) < 75 and first[-1] == comma, "the first chunk ends at a comma"
            uncond, _ = a1111(pipe, negative)
            assert (cond.shape[1], uncond.shape[1]) == (154, 77), (cond.shape, uncond.shape)
            run = denoise_composed(pipe, [(1.0, lambda i: cond)], uncond, 4, 5.0, init).numpy()
        tensors.update({f"{key}_cond": cond, f"{key}_uncond": uncond, f"{key}_run_init": init,
                        f"{key}_run_image": torch.from_numpy(run).contiguous()})
    assert tensors["long_cond"].shape[1] == 154, tensors["long_cond"].shape
    save_file(
        {k: v.detach().contiguous() for k, v in tensors.items()},
        os.path.join(OUT, f"{name}.reference.safetensors"),
        metadata={"prompt": weighted, "negative_prompt": weighted_negative,
                  "long_prompt": long_prompt, "long_negative_prompt": NEGATIVE,
                  "parses": json.dumps([[text, lpw["parse_prompt_attention"](text)] for text in parses]),
                  "torch": torch.__version__},
    )


def a1111_prompts():
    """A1111's prompt schedules (`get_learned_conditioning_prompt_schedules` and the grammar it
    parses with) and composable prompts (`get_multicond_prompt_list`), read from
    `modules/prompt_parser.py` of a stable-diffusion-webui checkout named by $A1111 (the module
    imports torch and A1111's own modules, so only those are taken): a function of a prompt and
    a step count giving its schedule, and one of a prompt giving its parts and weights. Needs
    `lark`."""
    path = os.environ.get("A1111")
    if not path:
        sys.exit("set A1111 to modules/prompt_parser.py of a stable-diffusion-webui checkout")
    import lark
    wanted = {"schedule_parser", "get_learned_conditioning_prompt_schedules", "re_AND",
              "re_weight", "get_multicond_prompt_list"}
    tree = ast.parse(open(path).read())
    body = [node for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name in wanted
            or isinstance(node, ast.Assign) and any(getattr(t, "id", None) in wanted for t in node.targets)]
    namespace = {"lark": lark, "re": re, "SdConditioning": list}
    exec(compile(ast.Module(body=body, type_ignores=[]), path, "exec"), namespace)

    def schedule(prompt, steps):
        return namespace["get_learned_conditioning_prompt_schedules"]([prompt], steps)[0]

    def compose(prompt):
        indexes, texts, _ = namespace["get_multicond_prompt_list"]([prompt])
        return [[texts[index], weight] for index, weight in indexes[0]]
    return schedule, compose


def denoise_composed(pipe, parts, negative, steps, guidance, init):
    """diffusers' text-to-image loop (its UNet, scheduler and VAE, as `pipe()` runs them) with
    A1111's composable guidance: the negative prompt's prediction plus each part's difference
    from it times its weight and the scale. `parts` are (weight, embeddings of step i) pairs.
    States of different lengths are evened out as A1111 does by default: a shorter part's last
    state repeated up to the longest part (`reconstruct_multicond_batch`), and the negative
    prompt's, when their length differs, run in a batch of their own."""
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps)
    latents = init * scheduler.init_noise_sigma
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            states = [embeds(i) for _, embeds in parts]
            longest = max(part.shape[1] for part in states)
            conds = torch.cat([torch.cat([part, part[:, -1:].repeat(1, longest - part.shape[1], 1)], 1)
                               for part in states])
            x = scheduler.scale_model_input(latents, t)
            if negative.shape[1] == longest:
                out = pipe.unet(torch.cat([x] * (1 + len(parts))), t,
                                encoder_hidden_states=torch.cat([negative, conds])).sample
            else:
                out = torch.cat([pipe.unet(x, t, encoder_hidden_states=negative).sample,
                                 pipe.unet(torch.cat([x] * len(parts)), t, encoder_hidden_states=conds).sample])
            uncond = out[:1]
            guided = uncond.clone()
            for j, (weight, _) in enumerate(parts):
                guided = guided + (out[j + 1:j + 2] - uncond) * (weight * guidance)
            latents = scheduler.step(guided, t, latents, eta=0.0).prev_sample
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return (image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def build_a1111_prompts(name):
    """A1111's prompt editing (`[from:to:when]`), alternation (`[a|b]`) and composable prompts
    (`a AND b:0.5`), read by A1111's own parser (see `a1111_prompts`): the schedules of
    hand-picked and random prompts; a whole 4-step tiny-sd15 run whose prompt and negative
    prompt change between steps, made by diffusers with each step's texts encoded by the
    long-prompt-weighting functions (see `lpw_functions`) and swapped in from a step-end
    callback at the step A1111's sampler takes them (the first text whose end is not before the
    step counted from 0); how prompts split into weighted parts; and a whole run of a
    composition (one part edited) through diffusers' loop with A1111's composable guidance (see
    `denoise_composed`)."""
    schedules, compose = a1111_prompts()
    lpw = lpw_functions()
    picked = ["test", "a [b:3]", "a [b: 3]", "a [[[b]]:2]", "[(a:2):3]", "a [b : c : 1] d",
              "a[b:[c:d:2]:1]e", "a [unbalanced", "a [b:.5] c", "a [{b|d{:.5] c",
              "((a][:b:c [d:3]", "[a|(b:1.1)]", "[fe|]male", "[fe|||]male", "a | b",
              "[a:b:0.29]", "[[a]:3]:4]", "[a:b:1e1]", "[a:\\]:3]", "[a:b:-2]", "(a:[b:3])",
              "[a|b:3]", "[(a:2):b:3]", "[a:b:3:4]", "[a:3:4]", "[a:b: +2.5e-1 ]", "[a:b:7.]",
              "trailing \\", "[a:b:0]", "[a::5] [:b:5]", "[[a|b]:c:2]", "[a:[b|c]:2]",
              "(x|y)", "[a|b] BREAK [c:d:1]", "fantasy landscape with a [mountain:lake:0.25] and "
              "[an oak:a christmas tree:0.75][ in foreground::0.6][: in background:0.25] "
              "[shoddy:masterful:0.5]"]
    rng = __import__("random").Random(24)
    alphabet = list("ab ") * 3 + list("[]()::|") * 2 + ["1", "3", ".5", "\\", "e"]
    randoms = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14))) for _ in range(400)]
    cases = [[text, steps, schedules(text, steps)]
             for steps in (10, 4, 100) for text in picked] + \
            [[text, 10, schedules(text, 10)] for text in randoms]
    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(OUT, "tiny-sd15"))
    object.__setattr__(pipe.text_encoder, "text_model", pipe.text_encoder)  # as in clip-skip
    prompt = "a [red:blue:2] potion bottle, [(glowing:1.3)|dull] gem"
    negative = "[blurry:ugly:0.5]"
    steps = 4
    prompt_schedule, negative_schedule = schedules(prompt, steps), schedules(negative, steps)
    assert len(prompt_schedule) == 4 and len(negative_schedule) == 2, (prompt_schedule, negative_schedule)

    def text_at(schedule, step):
        return next(text for end, text in schedule if step <= end)

    def embeds(step):
        cond, uncond = lpw["get_weighted_text_embeddings"](
            pipe, text_at(prompt_schedule, step), text_at(negative_schedule, step),
            max_embeddings_multiples=3)
        return torch.cat([uncond, cond])

    def swap(pipe, i, t, kwargs):
        return {"prompt_embeds": embeds(i + 1)} if i + 1 < steps else {}

    first = embeds(0)
    init = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(25))
    run = pipe(prompt_embeds=first[1:], negative_prompt_embeds=first[:1], num_inference_steps=steps,
               guidance_scale=5.0, latents=init.clone(), output_type="np", height=64, width=64,
               callback_on_step_end=swap, callback_on_step_end_tensor_inputs=["prompt_embeds"]).images
    steady = pipe(prompt_embeds=first[1:], negative_prompt_embeds=first[:1], num_inference_steps=steps,
                  guidance_scale=5.0, latents=init.clone(), output_type="np", height=64,
                  width=64).images
    assert abs(run - steady).max() > 1e-3, "the swaps changed nothing"
    tensors = {"run_init": init, "run_image": torch.from_numpy(run).contiguous()}

    splits = ["a castle AND a dragon:0.7 AND fog : -.5 ", "ANDROID and band, (red:1.2)",
              "portrait:1.5", "[a:b:3]", "AND", "a\nb:2", "x AND AND y:+3.", "(a AND b:1.1)"]
    composed = "a [red:blue:2] potion bottle AND (glowing:1.2) gem:0.6 AND pixel art:-0.3"
    parts = compose(composed)
    assert len(parts) == 3 and parts[2][1] == -0.3, parts

    def part_embeds(text):
        schedule = schedules(text, steps)
        return lambda i: lpw["get_weighted_text_embeddings"](
            pipe, text_at(schedule, i), NEGATIVE, max_embeddings_multiples=3)[0]

    negative_embeds = lpw["get_weighted_text_embeddings"](pipe, NEGATIVE, NEGATIVE,
                                                          max_embeddings_multiples=3)[0]
    init = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(26))
    # The loop is diffusers' own: with one unweighted part it is `pipe()`.
    plain = denoise_composed(pipe, [(1.0, lambda i: pipe.encode_prompt(PROMPT, "cpu", 1, False)[0])],
                             pipe.encode_prompt(NEGATIVE, "cpu", 1, False)[0], steps, 5.0, init)
    piped = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=5.0,
                 latents=init.clone(), output_type="np", height=64, width=64).images
    assert abs(plain.numpy() - piped).max() < 1e-5, abs(plain.numpy() - piped).max()
    image = denoise_composed(pipe, [(w, part_embeds(text)) for text, w in parts], negative_embeds,
                             steps, 5.0, init)
    tensors.update(composed_run_init=init, composed_run_image=image)
    save_file(
        {k: v.detach().contiguous() for k, v in tensors.items()},
        os.path.join(OUT, f"{name}.reference.safetensors"),
        metadata={"prompt": prompt, "negative_prompt": negative,
                  "schedules": json.dumps(cases), "composed_prompt": composed,
                  "composed_negative_prompt": NEGATIVE,
                  "splits": json.dumps([[text, compose(text)] for text in splits]),
                  "torch": torch.__version__},
    )


def build_a1111_lengths(name):
    """Prompts whose states differ in length, guided as A1111 guides them (see
    `denoise_composed`), their states as A1111 makes them (see `a1111_text_states`), on
    tiny-sd15, 4 steps at guidance 5: a two-chunk prompt with a one-chunk negative prompt; a
    one-chunk prompt with a two-chunk negative prompt; and a composition of a two-chunk part
    and a weighted one-chunk part with a one-chunk negative prompt. Then the states of a prompt
    whose textual inversion does not fit in what is left of its first chunk (needs the
    `embeddings` folder)."""
    a1111 = a1111_text_states()
    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(OUT, "tiny-sd15"))
    long = " ".join(CORPUS.split()[:90])
    short = "a red potion bottle"
    states = lambda text: a1111(pipe, text)[0]
    assert states(long).shape[1] == 154, states(long).shape
    cases = {"long_prompt": ([(1.0, states(long))], states(NEGATIVE)),
             "long_negative": ([(1.0, states(short))], states(long)),
             "composed": ([(1.0, states(long)), (0.6, states("(glowing:1.2) gem"))], states(NEGATIVE))}
    tensors = {}
    g = torch.Generator().manual_seed(28)
    for key, (parts, negative) in cases.items():
        init = torch.randn(1, 4, 8, 8, generator=g)
        tensors[f"{key}_run_init"] = init
        tensors[f"{key}_run_image"] = denoise_composed(
            pipe, [(weight, lambda i, states=states: states) for weight, states in parts], negative,
            4, 5.0, init)
    # A textual inversion (`pixel-style`, three vectors) that would straddle the first chunk's
    # end starts the second one.
    pipe.load_textual_inversion(os.path.join(OUT, "embeddings", "pixel-style.pt"), token="pixel-style")
    embedding_prompt = "potion " * 73 + "pixel-style gem"
    states, chunks = a1111(pipe, embedding_prompt)
    assert chunks[0][74:] == [pipe.tokenizer.eos_token_id] * 3, chunks[0]
    tensors["embedding_states"] = states
    save_file(
        {k: v.detach().contiguous() for k, v in tensors.items()},
        os.path.join(OUT, f"{name}.reference.safetensors"),
        metadata={"prompt": long, "negative_prompt": NEGATIVE, "short": short,
                  "embedding_prompt": embedding_prompt,
                  "composed": f"{long} AND (glowing:1.2) gem:0.6", "torch": torch.__version__},
    )


def build_hires(name):
    """A1111's hires. fix with its default "Latent" upscaler on tiny-sd15 and tiny-sdxl: a
    4-step run at the native 64 px left as latents, scaled up bilinearly (`interpolate`, as
    A1111 calls it) to 16×16 latents, and redrawn by diffusers' image-to-image pipeline from
    those latents at strength 0.6 over 6 steps. The image-to-image noise is the generator's
    first draw, which is stored. Then both passes with tiny-sdxl handing over to
    tiny-sdxl-refiner at 0.8."""
    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(OUT, "tiny-sd15"))
    init = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(27))
    low = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=5.0,
               latents=init.clone(), output_type="latent", height=64, width=64).images
    up = torch.nn.functional.interpolate(low, size=(16, 16), mode="bilinear", antialias=False)
    strength, steps, seed = 0.6, 6, 8
    fresh = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(seed))
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    image = img2img(PROMPT, image=up, strength=strength, negative_prompt=NEGATIVE,
                    num_inference_steps=steps, guidance_scale=5.0,
                    generator=torch.Generator().manual_seed(seed), output_type="np").images
    assert image.shape == (1, 128, 128, 3), image.shape
    tensors = {"init": init, "low_latents": low, "fresh": fresh,
               "image": torch.from_numpy(image).contiguous()}
    # SDXL: the second pass's size conditioning is the hires size (diffusers takes it from
    # the image it is given).
    xl = StableDiffusionXLPipeline.from_pretrained(os.path.join(OUT, "tiny-sdxl"))
    low = xl(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=5.0,
             latents=init.clone(), output_type="latent", height=64, width=64).images
    up = torch.nn.functional.interpolate(low, size=(16, 16), mode="bilinear", antialias=False)
    xl_img2img = StableDiffusionXLImg2ImgPipeline(**xl.components)
    image = xl_img2img(PROMPT, image=up, strength=strength, negative_prompt=NEGATIVE,
                       num_inference_steps=steps, guidance_scale=5.0,
                       generator=torch.Generator().manual_seed(seed), output_type="np").images
    tensors.update(xl_low_latents=low, xl_image=torch.from_numpy(image).contiguous())
    # SDXL's ensemble of experts in both passes: the base runs the noisier 80 % of each
    # (`denoising_end`; the second pass's from the upscaled latents at the hires strength, its
    # noise the generator's first draw as above) and hands its latents to the refiner
    # (`denoising_start`), which finishes the pass.
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(os.path.join(OUT, "tiny-sdxl-refiner"))
    switch = 0.8
    handed = xl(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=5.0,
                latents=init.clone(), output_type="latent", height=64, width=64,
                denoising_end=switch).images
    low = refiner(PROMPT, negative_prompt=NEGATIVE, image=handed, num_inference_steps=4,
                  guidance_scale=5.0, denoising_start=switch, output_type="latent").images
    up = torch.nn.functional.interpolate(low, size=(16, 16), mode="bilinear", antialias=False)
    handed = xl_img2img(PROMPT, image=up, strength=strength, negative_prompt=NEGATIVE,
                        num_inference_steps=steps, guidance_scale=5.0, denoising_end=switch,
                        generator=torch.Generator().manual_seed(seed), output_type="latent").images
    image = refiner(PROMPT, negative_prompt=NEGATIVE, image=handed, num_inference_steps=steps,
                    guidance_scale=5.0, denoising_start=switch, output_type="np").images
    assert image.shape == (1, 128, 128, 3), image.shape
    tensors.update(ensemble_low_latents=low, ensemble_handed=handed,
                   ensemble_image=torch.from_numpy(image).contiguous())
    save_file(
        {k: v.detach().contiguous() for k, v in tensors.items()},
        os.path.join(OUT, f"{name}.reference.safetensors"),
        metadata={"prompt": PROMPT, "negative_prompt": NEGATIVE, "strength": str(strength),
                  "steps": str(steps), "ensemble_switch": str(switch), "torch": torch.__version__},
    )


UPSCALERS = os.path.join(OUT, "upscalers")


def spandrel_references(name, made, perturb, seed, entry):
    """Saves each of `made`'s networks (file name → model), after `perturb(model)`, as their
    trainers share them (under `entry` in a `.pth`, the bare state dict when `entry` is None, or
    as safetensors) into the upscalers' folder, and writes `<name>.reference.safetensors`: a 21×13 test image drawn from `seed` and
    what spandrel, reading each file back, computes from it."""
    from spandrel import ModelLoader

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(13, 21, 3), dtype=np.uint8)  # 21 wide, 13 high
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    tensors = {"image": torch.from_numpy(image)}
    for file, model in made.items():
        perturb(model)
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        path = os.path.join(UPSCALERS, file)
        if file.endswith(".safetensors"):
            save_file(state, path)
        else:
            torch.save(state if entry is None else {entry: state}, path)
        loaded = ModelLoader().load_from_file(path)
        with torch.no_grad():
            tensors[file] = loaded.model.eval()(pixels)[0].contiguous()
        print(file, loaded.architecture.id, loaded.scale, loaded.tags, tuple(tensors[file].shape),
              float(tensors[file].abs().max()))
    save_file(tensors, os.path.join(OUT, f"{name}.reference.safetensors"),
              metadata={"prompt": "", "negative_prompt": "", "torch": torch.__version__})


def perturb_swin(model):
    """Weights that matter for the Swin networks' fixtures (SwinIR, HAT, Swin2SR): relative
    position tables, Swin v2's score scales (and, as linear layers, its position MLPs), linear
    layers, biases and norms away from their initial values."""
    with torch.no_grad():
        for key, value in model.named_parameters():
            if key.endswith("relative_position_bias_table"):
                value.normal_(0.0, 1.0)
            elif key.endswith("logit_scale"):
                value.add_(torch.randn_like(value) * 0.5)
            elif "norm" in key:
                value.add_(torch.randn_like(value) * 0.2)
            elif value.dim() == 2:
                value.normal_(0.0, value.shape[1] ** -0.5)
            elif value.dim() == 1:
                value.normal_(0.0, 0.05)


def build_swin_upscalers(name):
    """Tiny random-weight SwinIR and HAT upscalers in the layouts their releases share them in
    (`params_ema` in a `.pth`), read back by spandrel for their outputs on a test image whose
    sides are no multiple of the window (so the reflection padding and the shifted windows'
    mask at another size than trained are both in play):
    - `swinir-x4-real.pth`: real-world SR (`003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN`,
      A1111's SwinIR 4x): nearest-neighbour doubling and convolutions, one-convolution
      residual connections;
    - `swinir-x2-classical.safetensors`: classical SR, pixel-shuffle upsampler, three-convolution
      residual connections;
    - `swinir-x3-light.pth`: lightweight SR, one convolution pixel-shuffled at once;
    - `hat-x2.pth`: HAT (`Real_HAT_GAN_SRx4`'s layout, `params_ema`), windows of 4 with
      overlapping windows of 6;
    - `hat-x4-bare.safetensors`: HAT without `qkv` biases, patch norm or closing convolutions."""
    from spandrel.architectures.HAT import HAT
    from spandrel.architectures.SwinIR import SwinIR

    os.makedirs(UPSCALERS, exist_ok=True)
    torch.manual_seed(43)
    made = {
        "swinir-x4-real.pth": SwinIR(img_size=16, window_size=4, embed_dim=12, depths=[2, 2],
                                     num_heads=[2, 3], mlp_ratio=2.0, upscale=4,
                                     upsampler="nearest+conv", resi_connection="1conv"),
        "swinir-x2-classical.safetensors": SwinIR(img_size=16, window_size=4, embed_dim=16,
                                                  depths=[2], num_heads=[4], mlp_ratio=1.5,
                                                  upscale=2, upsampler="pixelshuffle",
                                                  resi_connection="3conv"),
        "swinir-x3-light.pth": SwinIR(img_size=8, window_size=4, embed_dim=8, depths=[3],
                                      num_heads=[2], mlp_ratio=2.0, upscale=3,
                                      upsampler="pixelshuffledirect", resi_connection="1conv"),
        "hat-x2.pth": HAT(img_size=16, window_size=4, overlap_ratio=0.5, embed_dim=12,
                          depths=[2, 2], num_heads=[2, 3], compress_ratio=3, squeeze_factor=4,
                          mlp_ratio=2.0, upscale=2, num_feat=16, resi_connection="1conv"),
        "hat-x4-bare.safetensors": HAT(img_size=16, window_size=4, overlap_ratio=0.5,
                                       embed_dim=16, depths=[3], num_heads=[4], compress_ratio=3,
                                       squeeze_factor=8, mlp_ratio=1.5, upscale=4, num_feat=8,
                                       qkv_bias=False, patch_norm=False,
                                       resi_connection="identity"),
    }
    spandrel_references(name, made, perturb_swin, seed=6, entry="params_ema")


def build_swin_restorers(name):
    """Tiny random-weight SwinIR and Swin2SR restoration networks (no upsampler: `conv_last` of
    the features added to the image at its size, as the denoising and JPEG releases are), read
    back by spandrel on the Swin networks' kind of test image:
    - `swinir-denoise.pth`: windows of 4 (`params`, as `005_colorDN_…` is shared);
    - `swinir-jpeg-w7.safetensors`: windows of 7, which spandrel (and so Autonomy) takes for the
      JPEG releases' pixel range of 255;
    - `swin2sr-jpeg.pth`: Swin2SR's blocks (as `Swin2SR_Jpeg_dynamic`)."""
    from spandrel.architectures.Swin2SR import Swin2SR
    from spandrel.architectures.SwinIR import SwinIR

    os.makedirs(UPSCALERS, exist_ok=True)
    torch.manual_seed(71)
    made = {
        "swinir-denoise.pth": SwinIR(img_size=16, window_size=4, embed_dim=12, depths=[2],
                                     num_heads=[3], mlp_ratio=2.0, upscale=1, upsampler="",
                                     img_range=1.0, resi_connection="1conv"),
        "swinir-jpeg-w7.safetensors": SwinIR(img_size=14, window_size=7, embed_dim=8,
                                             depths=[2], num_heads=[2], mlp_ratio=2.0,
                                             upscale=1, upsampler="", img_range=255.0,
                                             resi_connection="3conv"),
        "swin2sr-jpeg.pth": Swin2SR(img_size=16, window_size=4, embed_dim=12, depths=[2],
                                    num_heads=[2], mlp_ratio=2.0, upscale=1, upsampler="",
                                    resi_connection="1conv"),
    }
    spandrel_references(name, made, perturb_swin, seed=13, entry="params")


def build_swin2sr_upscalers(name):
    """Tiny random-weight Swin2SR upscalers (SwinIR on Swin v2's blocks) in the layout its
    releases share them in (`params` in a `.pth`, or safetensors), read back by spandrel for
    their outputs on the same kind of test image as the Swin networks':
    - `swin2sr-x2-classical.pth`: classical SR (pixel shuffles), two groups;
    - `swin2sr-x4-real.safetensors`: real-world SR (nearest-neighbour doublings), groups closed
      by three convolutions;
    - `swin2sr-x3-light.pth`: lightweight SR (one pixel-shuffled convolution), without `qkv`
      biases or the opening layer norm;
    - `swin2sr-x2-compressed.safetensors`: compressed SR (`pixelshuffle_aux`: an auxiliary
      image between the pixel shuffles, plus the input resized bicubically from its padded
      size to the output's)."""
    from spandrel.architectures.Swin2SR import Swin2SR

    os.makedirs(UPSCALERS, exist_ok=True)
    torch.manual_seed(61)
    made = {
        "swin2sr-x2-classical.pth": Swin2SR(img_size=16, window_size=4, embed_dim=12,
                                            depths=[2, 2], num_heads=[2, 3], mlp_ratio=2.0,
                                            upscale=2, upsampler="pixelshuffle",
                                            resi_connection="1conv"),
        "swin2sr-x4-real.safetensors": Swin2SR(img_size=16, window_size=4, embed_dim=16,
                                               depths=[2], num_heads=[4], mlp_ratio=1.5,
                                               upscale=4, upsampler="nearest+conv",
                                               resi_connection="3conv"),
        "swin2sr-x3-light.pth": Swin2SR(img_size=8, window_size=4, embed_dim=8, depths=[3],
                                        num_heads=[2], mlp_ratio=2.0, upscale=3,
                                        upsampler="pixelshuffledirect", qkv_bias=False,
                                        patch_norm=False, resi_connection="1conv"),
        "swin2sr-x2-compressed.safetensors": Swin2SR(img_size=16, window_size=4, embed_dim=12,
                                                     depths=[2], num_heads=[3], mlp_ratio=2.0,
                                                     upscale=2, upsampler="pixelshuffle_aux",
                                                     resi_connection="1conv"),
    }
    spandrel_references(name, made, perturb_swin, seed=11, entry="params")


def build_dat_upscalers(name):
    """Tiny random-weight DAT (Dual Aggregation Transformer) upscalers in the layout its releases
    share them in (`params` in a `.pth`, as `DAT_x4.pth`, A1111's DAT upscalers), read back by
    spandrel for their outputs on the same kind of test image as the Swin networks' (its sides
    no multiple of the windows, so DAT's zero padding after `qkv` and its shifted windows' mask
    at another size than trained are in play):
    - `dat-x2.pth`: 2-by-4 rectangular windows (4-by-2 in the second branch), pixel-shuffle
      upsampler, one-convolution residual connections, two groups deep enough that both of
      DAT's rules for which blocks shift are used (the third block of an even group, the first
      of an odd one);
    - `dat-x3-light.safetensors`: DAT-light's layout (one pixel-shuffled convolution,
      three-convolution residual connections), no `qkv` biases, 4-by-8 windows."""
    from spandrel.architectures.DAT import DAT

    os.makedirs(UPSCALERS, exist_ok=True)
    torch.manual_seed(47)
    made = {
        "dat-x2.pth": DAT(img_size=16, embed_dim=64, split_size=[2, 4], depth=[3, 2],
                          num_heads=[2, 4], expansion_factor=2.0, upscale=2,
                          resi_connection="1conv", upsampler="pixelshuffle"),
        "dat-x3-light.safetensors": DAT(img_size=16, embed_dim=32, split_size=[4, 8],
                                        depth=[2], num_heads=[2], expansion_factor=1.5,
                                        qkv_bias=False, upscale=3, resi_connection="3conv",
                                        upsampler="pixelshuffledirect"),
    }
    def perturb(model):
        # Weights that matter: norms (and batch norms' running statistics), the dynamic
        # position biases' MLPs and the channel attention's temperatures off their initial values.
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)):
                    module.weight.copy_(1 + 0.2 * torch.randn_like(module.weight))
                    module.bias.normal_(0.0, 0.1)
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.normal_(0.0, 0.1)
                    module.running_var.uniform_(0.5, 1.5)
                if isinstance(module, torch.nn.Linear):
                    module.weight.normal_(0.0, module.weight.shape[1] ** -0.5)
                    if module.bias is not None:
                        module.bias.normal_(0.0, 0.05)
                if isinstance(module, torch.nn.Conv2d) and module.bias is not None:
                    module.bias.normal_(0.0, 0.05)
            for key, value in model.named_parameters():
                if key.endswith("temperature"):
                    value.uniform_(0.5, 2.0)

    spandrel_references(name, made, perturb, seed=8, entry="params")


def perturb_convolutional(model):
    """Weights that matter for the light convolutional upscalers' fixtures: every convolution at
    a scale that keeps its output near its input's (the releases' initialisations leave the
    large kernels and the last convolution near zero), biases and norms off their initial
    values."""
    with torch.no_grad():
        for key, value in model.named_parameters():
            if "norm" in key:
                value.add_(torch.randn_like(value) * 0.2)
            elif value.dim() == 4:
                fan_in = value.shape[1] * value.shape[2] * value.shape[3]
                value.normal_(0.0, fan_in ** -0.5)
            elif value.dim() == 1:
                value.normal_(0.0, 0.05)
        if isinstance(getattr(model, "to_img", None), torch.nn.Module) and \
                hasattr(model.to_img, "offset"):
            # DySample's offsets within a pixel or so, as trained ones are (random ones
            # would send most samples to the border).
            model.to_img.offset.weight.mul_(0.1)
        if type(model).__name__ == "SPAN" and model.is_norm:
            # SPAN feeds its first convolution pixels × 255: a trained one answers in kind.
            model.conv_1.sk.weight.div_(255)
            model.conv_1.conv[0].weight.div_(255)


def build_plksr_upscalers(name):
    """Tiny random-weight networks of the original PLKSR (the paper's, as its authors' code
    saves it: `channe_mixer`, no norms, GELU), read back by spandrel for their outputs on the
    same kind of test image as the others':
    - `plksr-x2-ccm.pth`: its default CCM mixer (3×3, GELU, 1×1), a 9×9 partial large kernel
      over a quarter of the channels, element-wise attention;
    - `plksr-x3-iccm.safetensors`: the ICCM mixer (1×1, GELU, 3×3), without the attention;
    - `plksr-x4-dccm.pth`: the DCCM mixer (3×3, GELU, 3×3), a 7×7 kernel over half the channels;
    - `plksr-x2-sparse.safetensors`: the SparsePLK ablation (four 5×5 kernels dilated 1 to 4);
    - `plksr-x2-rect.pth`: the RectSparsePLK ablation (15×5, 5×15 and 5×5 kernels)."""
    from spandrel.architectures.PLKSR import PLKSR

    os.makedirs(UPSCALERS, exist_ok=True)
    torch.manual_seed(59)
    made = {
        "plksr-x2-ccm.pth": PLKSR(dim=16, n_blocks=2, upscaling_factor=2, kernel_size=9,
                                  ccm_type="CCM"),
        "plksr-x3-iccm.safetensors": PLKSR(dim=12, n_blocks=2, upscaling_factor=3,
                                           kernel_size=5, ccm_type="ICCM", use_ea=False),
        "plksr-x4-dccm.pth": PLKSR(dim=8, n_blocks=1, upscaling_factor=4, kernel_size=7,
                                   split_ratio=0.5, ccm_type="DCCM"),
        "plksr-x2-sparse.safetensors": PLKSR(dim=16, n_blocks=1, upscaling_factor=2,
                                             lk_type="SparsePLK"),
        "plksr-x2-rect.pth": PLKSR(dim=16, n_blocks=1, upscaling_factor=2, kernel_size=15,
                                   lk_type="RectSparsePLK"),
    }
    spandrel_references(name, made, perturb_convolutional, seed=10, entry="params_ema")


def build_light_upscalers(name):
    """Tiny random-weight SPAN and RealPLKSR upscalers (the light convolutional networks most
    community upscalers of 2024 on are trained as, with neosr and traiNNer) in the layouts those
    trainers save (`params_ema` in a `.pth`, or safetensors), read back by spandrel for their
    outputs on the same kind of test image as the others':
    - `span-x4.pth`: SPAN with its input normalisation; each Conv3XC's stored `eval_conv` is
      left stale, as spandrel recomputes it from the training branches on every call;
    - `span-x2-raw.safetensors`: SPAN saved with `no_norm` (the input taken as it is);
    - `realplksr-x2.pth`: RealPLKSR with group norms and element-wise attention, a 7×7 partial
      large kernel over a quarter of the channels;
    - `realplksr-x3-ln.safetensors`: RealPLKSR with layer norms and no element-wise attention;
    - `realplksr-x4-dysample.pth` and `realplksr-x3-dysample.safetensors`: RealPLKSR with
      DySample's learned sampling in place of the pixel shuffle (four sampling groups, and
      three for an odd scale)."""
    from spandrel.architectures.PLKSR import RealPLKSR
    from spandrel.architectures.SPAN import SPAN

    os.makedirs(UPSCALERS, exist_ok=True)
    torch.manual_seed(53)
    made = {
        "span-x4.pth": SPAN(num_in_ch=3, num_out_ch=3, feature_channels=12, upscale=4),
        "span-x2-raw.safetensors": SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8,
                                        upscale=2, norm=False),
        "realplksr-x2.pth": RealPLKSR(dim=16, n_blocks=2, upscaling_factor=2, kernel_size=7,
                                      split_ratio=0.25),
        "realplksr-x3-ln.safetensors": RealPLKSR(dim=12, n_blocks=3, upscaling_factor=3,
                                                 kernel_size=5, split_ratio=0.5, use_ea=False,
                                                 layer_norm=True),
        "realplksr-x4-dysample.pth": RealPLKSR(dim=16, n_blocks=2, upscaling_factor=4,
                                               kernel_size=7, split_ratio=0.25, dysample=True),
        "realplksr-x3-dysample.safetensors": RealPLKSR(dim=12, n_blocks=1, upscaling_factor=3,
                                                       kernel_size=5, split_ratio=0.25,
                                                       dysample=True, layer_norm=True),
    }
    spandrel_references(name, made, perturb_convolutional, seed=9, entry="params_ema")


def build_omnisr_upscalers(name):
    """Tiny random-weight OmniSR upscalers as its releases share them (`OmniSR_X4_DIV2K.pth`: a
    bare state dict, with the `total_ops`/`total_params` counters the authors' profiler left
    on every module), read back by spandrel for their outputs on the same kind of test image as
    the others' (its sides no multiple of the windows, so the zero padding is in play):
    - `omnisr-x4.pth`: windows of 4 with relative position biases, biased convolutions;
    - `omnisr-x3-bare.safetensors`: two groups of two blocks, no position biases (so nothing
      stored tells the window, and spandrel takes the releases' 8), convolutions without
      biases."""
    from spandrel.architectures.OmniSR import OmniSR

    os.makedirs(UPSCALERS, exist_ok=True)
    torch.manual_seed(59)
    made = {
        "omnisr-x4.pth": OmniSR(num_feat=16, block_num=1, pe=True, window_size=4, res_num=1,
                                up_scale=4, bias=True),
        "omnisr-x3-bare.safetensors": OmniSR(num_feat=12, block_num=2, pe=False, window_size=8,
                                             res_num=2, up_scale=3, bias=False),
    }

    def perturb(model):
        perturb_convolutional(model)
        with torch.no_grad():
            for key, value in model.named_parameters():
                if key.endswith("temperature"):
                    value.uniform_(0.5, 2.0)
                elif key.endswith("rel_pos_bias.weight"):
                    value.normal_(0.0, 1.0)
                elif value.dim() == 2:
                    value.normal_(0.0, value.shape[1] ** -0.5)
        for module in model.modules():
            module.register_buffer("total_ops", torch.zeros(1, dtype=torch.float64))
            module.register_buffer("total_params", torch.zeros(1, dtype=torch.float64))

    spandrel_references(name, made, perturb, seed=17, entry=None)


def new_arch_names(state, blocks):
    """ESRGAN's old names (`model.0`, `model.1.sub.…`) as Real-ESRGAN's (basicsr's) write them."""
    renamed = {}
    for key, value in state.items():
        m = re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", key)
        if m:
            renamed[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
            continue
        layer, kind = key.split(".")[1], key.split(".")[-1]
        name = {"0": "conv_first", "3": "conv_up1", "6": "conv_up2", "8": "conv_hr",
                "10": "conv_last"}.get(layer)
        if key.startswith(f"model.1.sub.{blocks}."):
            name = "conv_body"
        assert name, key
        renamed[f"{name}.{kind}"] = value
    return renamed


def build_upscalers(name):
    """Tiny random-weight image upscalers in the layouts model sites share them in, each read
    back by spandrel (what ComfyUI and A1111 load them with) for its outputs on a test image:
    - `rrdb-x4-old.pth`: ESRGAN's RRDBNet in the original names (`model.1.sub.0.RDB1.conv1.0`),
      as 4x-UltraSharp and most community ESRGAN models ship;
    - `rrdb-x4-new.safetensors`: the same network in Real-ESRGAN's names (`body.0.rdb1.conv1`);
    - `rrdb-x2-new.pth`: Real-ESRGAN x2plus's layout: `params_ema`, pixel-unshuffled input;
    - `compact-x4.pth`: Real-ESRGAN's SRVGGNetCompact (realesr-general-x4v3), under `params`.
    Then PIL's Lanczos resizes of a random image, and A1111's hires. fix with a pixel upscaler
    on tiny-sd15: the native pass decoded, rounded to 8 bits, upscaled (Lanczos; the compact
    model to 256 px, then Lanczos down to 128 px), encoded by the VAE (its mean) and redrawn
    by diffusers' image-to-image pipeline as in `build_hires`."""
    from spandrel import ModelLoader
    from spandrel.architectures.Compact import Compact as SRVGGNetCompact
    from spandrel.architectures.ESRGAN import ESRGAN

    os.makedirs(UPSCALERS, exist_ok=True)
    torch.manual_seed(41)
    x4 = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
    x2 = ESRGAN(in_nc=12, out_nc=3, num_filters=8, num_blocks=1, scale=4, shuffle_factor=2)
    compact = SRVGGNetCompact(num_feat=8, num_conv=3, upscale=4)
    with torch.no_grad():
        for module in compact.modules():
            if isinstance(module, torch.nn.PReLU):
                module.weight.uniform_(0.0, 0.5)
    plain = lambda m: {k: v.detach().clone().contiguous() for k, v in m.state_dict().items()}
    torch.save(plain(x4), os.path.join(UPSCALERS, "rrdb-x4-old.pth"))
    save_file(new_arch_names(plain(x4), 1), os.path.join(UPSCALERS, "rrdb-x4-new.safetensors"))
    torch.save({"params_ema": new_arch_names(plain(x2), 1)}, os.path.join(UPSCALERS, "rrdb-x2-new.pth"))
    torch.save({"params": plain(compact)}, os.path.join(UPSCALERS, "compact-x4.pth"))

    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, size=(16, 24, 3), dtype=np.uint8)  # 24 wide, 16 high
    tensors = {"image": torch.from_numpy(image)}
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    for file in ["rrdb-x4-old.pth", "rrdb-x4-new.safetensors", "rrdb-x2-new.pth", "compact-x4.pth"]:
        model = ModelLoader().load_from_file(os.path.join(UPSCALERS, file))
        with torch.no_grad():
            tensors[file] = model.model.eval()(pixels)[0].contiguous()
        print(file, model.architecture.id, model.scale, tuple(tensors[file].shape))

    small = rng.integers(0, 256, size=(17, 23, 3), dtype=np.uint8)
    tensors["lanczos_source"] = torch.from_numpy(small)
    for w, h in [(64, 48), (11, 9), (69, 17), (23, 40)]:
        out = np.asarray(Image.fromarray(small, "RGB").resize((w, h), Image.LANCZOS))
        tensors[f"lanczos_{w}x{h}"] = torch.from_numpy(out.copy())

    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(OUT, "tiny-sd15"))
    scaling = pipe.vae.config.scaling_factor
    init = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(27))
    low = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=5.0,
               latents=init.clone(), output_type="latent", height=64, width=64).images
    with torch.no_grad():
        decoded = pipe.vae.decode(low / scaling).sample
    eight = ((decoded / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0)
    first = Image.fromarray(eight.numpy(), "RGB")
    upscaler = ModelLoader().load_from_file(os.path.join(UPSCALERS, "compact-x4.pth")).model.eval()
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    strength, steps, seed = 0.6, 6, 8
    tensors.update(init=init, low_latents=low, first=eight.contiguous())
    for label in ["lanczos", "compact"]:
        if label == "lanczos":
            big = first.resize((128, 128), Image.LANCZOS)
        else:
            with torch.no_grad():
                up = upscaler(torch.from_numpy(np.asarray(first).copy()).permute(2, 0, 1)[None].float() / 255)
            up = (up.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
            big = Image.fromarray(up, "RGB").resize((128, 128), Image.LANCZOS)
        big = np.asarray(big)
        tensors[f"{label}_upscaled"] = torch.from_numpy(big.copy())
        x = torch.from_numpy(big.copy()).permute(2, 0, 1)[None].float() / 255 * 2 - 1
        with torch.no_grad():
            latents = pipe.vae.encode(x).latent_dist.mean * scaling
        image = img2img(PROMPT, image=latents, strength=strength, negative_prompt=NEGATIVE,
                        num_inference_steps=steps, guidance_scale=5.0,
                        generator=torch.Generator().manual_seed(seed), output_type="np").images
        assert image.shape == (1, 128, 128, 3), image.shape
        tensors[f"{label}_image"] = torch.from_numpy(image).contiguous()
    tensors["fresh"] = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(seed))
    save_file(
        {k: v.detach().contiguous() for k, v in tensors.items()},
        os.path.join(OUT, f"{name}.reference.safetensors"),
        metadata={"prompt": PROMPT, "negative_prompt": NEGATIVE, "strength": str(strength),
                  "steps": str(steps), "torch": torch.__version__},
    )


def ddim(**kw):
    """The DDIM scheduler of the SD 1.5 / 2.1 releases."""
    return DDIMScheduler(
        **SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1, **kw
    )


def main():
    if not os.path.isdir("pipeline"):
        sys.exit("run from the repository root")
    os.makedirs(OUT, exist_ok=True)
    only = sys.argv[1:]
    if only[:1] == ["--extend"]:
        for name in only[1:]:
            extend(name)
        print("extended", ", ".join(only[1:]))
        return
    if only:
        alone = {"tiny-sdxl": build_xl, "tiny-sdxl-refiner": build_xl_refiner, "tiny-lcm": build_lcm,
                 "tiny-taesd": build_taesd, "embeddings": build_embeddings,
                 "clip-skip": build_clip_skip, "prompt-syntax": build_prompt_syntax,
                 "a1111-prompts": build_a1111_prompts, "a1111-lengths": build_a1111_lengths,
                 "hires": build_hires,
                 "upscalers": build_upscalers, "swin-upscalers": build_swin_upscalers,
                 "dat-upscalers": build_dat_upscalers,
                 "light-upscalers": build_light_upscalers,
                 "plksr-upscalers": build_plksr_upscalers,
                 "swin2sr-upscalers": build_swin2sr_upscalers,
                 "lora-block-weights": build_lora_block_weights,
                 "pickled-loras": build_pickled_loras,
                 "swin-restorers": build_swin_restorers, "peft-oft": build_peft_oft,
                 "hypernetworks": build_hypernetworks,
                 "omnisr-upscalers": build_omnisr_upscalers, "canny": build_canny,
                 "controlnet-inpaint": build_controlnet_inpaint,
                 "multi-controlnet": build_multi_controlnet,
                 "t2i-adapter": build_t2i_adapter,
                 "annotators": build_annotators,
                 "depth-anything": build_depth_anything,
                 "mlsd": build_mlsd,
                 "controlnet": build_controlnet}
        for name in only:
            if name not in alone:
                sys.exit(f"{name}: only {', '.join(alone)} build alone; run without names for the rest")
            alone[name](name)
        print("wrote", ", ".join(only))
        return
    tokens = {}
    tokenizer = build(
        "tiny-sd15",
        v_prediction=False,
        linear_projection=False,
        head_dims=2,
        text_act="quick_gelu",
        pad_token="<|endoftext|>",
        hub_layout=True,
        scheduler=ddim,
    )
    tokens["tiny-sd15"] = [[text, ids(tokenizer, text)[0].tolist()] for text in AWKWARD]
    tokenizer = build(
        "tiny-sd21",
        v_prediction=True,
        linear_projection=True,
        head_dims=(2, 4, 4),
        text_act="gelu",
        pad_token="!",
        scheduler=ddim,
    )
    tokens["tiny-sd21"] = [[text, ids(tokenizer, text)[0].tolist()] for text in AWKWARD]
    build(
        "tiny-sd-turbo",
        v_prediction=False,
        linear_projection=True,
        head_dims=(2, 4, 4),
        text_act="gelu",
        pad_token="!",
        scheduler=lambda **kw: EulerDiscreteScheduler(
            **SD_BETAS, steps_offset=1, timestep_spacing="trailing", **kw
        ),
    )
    build(
        "tiny-sd-inpaint",
        v_prediction=False,
        linear_projection=False,
        head_dims=2,
        text_act="quick_gelu",
        pad_token="<|endoftext|>",
        inpaint=True,
        scheduler=ddim,
    )
    build_xl("tiny-sdxl")
    build_xl_refiner("tiny-sdxl-refiner")
    extend("tiny-sdxl")  # the ensemble run needs both
    build_lcm("tiny-lcm")
    build_taesd("tiny-taesd")
    with open(os.path.join(OUT, "tokens.json"), "w", encoding="utf-8") as f:
        f.write("{\n")
        lines = [
            f"  {json.dumps(name)}: [\n"
            + ",\n".join(f"    {json.dumps(case, ensure_ascii=False)}" for case in cases)
            + "\n  ]"
            for name, cases in tokens.items()
        ]
        f.write(",\n".join(lines) + "\n}\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
