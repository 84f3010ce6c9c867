#!/usr/bin/env python3
"""Writes the vision-language conformance fixtures under tests/fixtures/vlm/.

    $(scripts/conformance-env.sh) scripts/conformance-vlm.py [--out tests/fixtures/vlm]

Tiny random LLaVA-1.5 (CLIP), LLaVA-NeXT (CLIP, anyres) and LLaVA-OneVision (SigLIP, anyres_max) models built
by transformers from seeds, each saved with `save_pretrained` (model and processor: a complete model directory),
plus the same weights under the other tensor layouts these families are found in, synthetic PNG images of several
sizes and aspect ratios, and what transformers' processors and models make of them: input ids with the image
tokens expanded, pixel values, image sizes and logits. Image processing uses transformers' PIL backend (the one
it picks without torchvision). Nothing is downloaded; rerunning rewrites the files byte for byte the same.

The tokenizer is the text conformance fixture's (tests/fixtures/conformance/tokenizer) with `<image>` added.
"""

import argparse
import json
import shutil
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    LlavaOnevisionProcessor,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Config,
    Qwen2VLImageProcessorPil,
    SiglipVisionConfig,
)

ROOT = Path(__file__).resolve().parent.parent
TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    max_position_embeddings=512,
    rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
    tie_word_embeddings=False,
)
VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
)
TILE = 32

# (height, width) of the synthetic images: square, wide, tall, very wide, odd sizes.
IMAGES = {
    "square": (64, 64),
    "wide": (30, 70),
    "tall": (57, 23),
    "strip": (20, 100),
    "odd": (45, 91),
    "large": (150, 200),
}
PROMPT = "USER: <image>\nHow many apples are on the table? ASSISTANT:"
PAIR_PROMPT = "USER: <image> and <image>\nWhich has more apples? ASSISTANT:"


def make_image(name, height, width, seed):
    """Smooth colour gradients plus noise and a bright square: resampling differences show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack(
        [
            128 + 100 * np.sin(x / max(width, 1) * 6.0 + seed),
            128 + 100 * np.cos(y / max(height, 1) * 5.0),
            (x * 3 + y * 5) % 256,
        ],
        axis=-1,
    )
    img += rng.normal(0, 20, img.shape)
    img[height // 4 : height // 2, width // 4 : width // 2] = 250
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


QWEN_VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def tokenizer_with_image_token(extra=()):
    tok = PreTrainedTokenizerFast.from_pretrained(ROOT / "tests/fixtures/conformance/tokenizer")
    tok.add_special_tokens({"additional_special_tokens": ["<image>", *extra]})
    return tok


def init_weights(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            torch.nn.init.normal_(p, std=0.2)
            if "norm" in name and name.endswith("weight"):
                p.add_(1.0)
    return model.eval()


def llava_case(tok):
    image_id = tok.convert_tokens_to_ids("<image>")
    config = LlavaConfig(
        text_config=LlamaConfig(vocab_size=len(tok), **TEXT).to_dict(),
        vision_config=CLIPVisionConfig(**VISION, projection_dim=32).to_dict(),
        image_token_index=image_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=16,
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE}),
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>",
    )
    model = LlavaForConditionalGeneration._from_config(config, attn_implementation="eager", dtype=torch.float32)
    notes = (
        "LLaVA-1.5: CLIP tower (32x32 images, 8x8 patches, 2 layers), features of layer -2 without CLS (16 image "
        "tokens), GELU projector, Llama text model. Images are resized (shortest edge 32, bicubic) and centre-cropped."
    )
    return model, processor, notes


def llava_next_case(tok):
    image_id = tok.convert_tokens_to_ids("<image>")
    pinpoints = [[32, 64], [64, 32], [64, 64], [32, 96], [96, 32]]
    config = LlavaNextConfig(
        text_config=LlamaConfig(vocab_size=len(tok), **TEXT).to_dict(),
        vision_config=CLIPVisionConfig(**VISION, projection_dim=32).to_dict(),
        image_token_index=image_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_grid_pinpoints=pinpoints,
        image_seq_length=16,
    )
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessorPil(
            size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE}, image_grid_pinpoints=pinpoints
        ),
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>",
    )
    model = LlavaNextForConditionalGeneration._from_config(config, attn_implementation="eager", dtype=torch.float32)
    notes = (
        "LLaVA-NeXT anyres: each image is resized into the best of the grid pinpoints (aspect kept, zero padding), "
        "cut into 32x32 tiles, and encoded beside the whole image squashed to 32x32 (the base). Tile features are "
        "put back on one grid, the padding rows or columns are cut (unpadding) and image_newline ends each row."
    )
    return model, processor, notes


def llava_onevision_case(tok):
    image_id = tok.convert_tokens_to_ids("<image>")
    pinpoints = [[h, w] for h in (32, 64, 96) for w in (32, 64, 96)]
    config = LlavaOnevisionConfig(
        text_config=Qwen2Config(vocab_size=len(tok), use_sliding_window=False, **TEXT).to_dict(),
        vision_config=SiglipVisionConfig(**VISION, vision_use_head=False).to_dict(),
        image_token_index=image_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_grid_pinpoints=pinpoints,
        vision_aspect_ratio="anyres_max_2",
    )
    processor = OnevisionImageProcessorOnly(
        image_processor=LlavaOnevisionImageProcessorPil(
            size={"height": TILE, "width": TILE}, image_grid_pinpoints=pinpoints
        ),
        tokenizer=tok,
        num_image_tokens=16,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_2",
        image_token="<image>",
    )
    model = LlavaOnevisionForConditionalGeneration._from_config(
        config, attn_implementation="eager", dtype=torch.float32
    )
    notes = (
        "LLaVA-OneVision: SigLIP tower (no CLS, patch embedding with bias, gelu_pytorch_tanh, last layer's hidden "
        "state before post_layernorm, all 16 positions), Qwen2 text model, anyres with pinpoints up to 3x3 tiles, "
        "anyres_max_2: an unpadded grid of more than 1.1^2 x 2 tiles' features is shrunk (bilinear) by the ratio. "
        "A record with several images encodes each image once (no tiles), padded to a square with the mean colour."
    )
    return model, processor, notes


def qwen2_5_vl_case(tok):
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_VISION_TOKENS}
    text = dict(TEXT)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 100000.0, "mrope_section": [2, 1, 1]}
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tok),
            use_sliding_window=False,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            **text,
        ),
        vision_config=dict(
            depth=3,
            hidden_size=32,
            intermediate_size=48,
            num_heads=2,
            out_hidden_size=32,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,
            fullatt_block_indexes=[1],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    processor = ImageProcessorOnly(
        image_processor=Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112),
        tokenizer=tok,
    )
    model = Qwen2_5_VLForConditionalGeneration._from_config(config, attn_implementation="eager", dtype=torch.float32)
    notes = (
        "Qwen2.5-VL: images smart-resized to multiples of 28 with 56x56 <= pixels <= 112x112 (PIL bicubic), cut "
        "into 14x14 patches (two identical frames), a 3-block ViT with RMSNorm, SwiGLU, 2-D rotary; blocks 0 and 2 "
        "attend within windows of 2x2 merged units (window_size 56), block 1 over the whole image; a 2x2 merger "
        "(ln_q, Linear, GELU, Linear). The text model uses M-RoPE, mrope_section [2, 1, 1] of head_dim 8: "
        "frequencies 0-1 turn with the temporal position, 2 with the row, 3 with the column."
    )
    return model, processor, notes


class ImageProcessorOnly(Qwen2_5_VLProcessor):
    """Qwen2_5_VLProcessor without its video processor, which needs torchvision (no wheel pairs with the pinned
    torch); images go through the same code."""

    def check_argument_for_proper_class(self, attribute_name, arg):
        if attribute_name != "video_processor":
            super().check_argument_for_proper_class(attribute_name, arg)

    def save_pretrained(self, path, **kwargs):
        self.image_processor.save_pretrained(path)
        self.tokenizer.save_pretrained(path)


class OnevisionImageProcessorOnly(LlavaOnevisionProcessor):
    """LlavaOnevisionProcessor without its video processor, which needs torchvision (no wheel pairs with the
    pinned torch); images go through the same code."""

    def check_argument_for_proper_class(self, attribute_name, arg):
        if attribute_name != "video_processor":
            super().check_argument_for_proper_class(attribute_name, arg)

    def save_pretrained(self, path, **kwargs):
        self.image_processor.save_pretrained(path)
        self.tokenizer.save_pretrained(path)


CASES = {
    "llava": (201, llava_case),
    "llava-next": (202, llava_next_case),
    "llava-onevision": (203, llava_onevision_case),
    "qwen2.5-vl": (204, qwen2_5_vl_case),
}


def layouts(case, model, saved_names):
    """The same weights under the names each layout uses: `saved` is what save_pretrained wrote."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    out = {"in-memory": state}
    if case == "llava":
        # llava-hf's published LLaVA-1.5 files: legacy names, CLIP tower with its `vision_model.` level.
        hub = {}
        for name in saved_names:
            tensor = saved_names[name]
            if name.startswith("vision_tower."):
                name = "vision_tower.vision_model." + name[len("vision_tower.") :]
            hub[name] = tensor
        out["hub-legacy"] = hub
    return out


def legacy_config(config: dict) -> dict:
    """The same config in the transformers-4 layout: rope_theta (and Qwen2.5-VL's `mrope` rope_scaling) instead of
    rope_parameters, torch_dtype instead of dtype, and Qwen2.5-VL's language-model keys at the top level."""
    config = json.loads(json.dumps(config))

    def old_rope(c):
        params = c.pop("rope_parameters", None)
        if params is None:
            return
        c["rope_theta"] = params.pop("rope_theta")
        section = params.pop("mrope_section", None)
        if section is not None:
            c["rope_scaling"] = {"type": "mrope", "mrope_section": section}
        elif params.get("rope_type", "default") != "default":
            c["rope_scaling"] = params

    def old_dtype(c):
        if "dtype" in c:
            c["torch_dtype"] = c.pop("dtype")

    old_dtype(config)
    if config["model_type"] == "qwen2_5_vl":
        text = config.pop("text_config")
        old_rope(text)
        text.pop("model_type", None)
        old_dtype(text)
        for key, value in text.items():
            config.setdefault(key, value)
        # Qwen2.5-VL-7B-Instruct's own vision_config: in_chans, spatial_patch_size, no rope keys.
        vision = config["vision_config"]
        vision["in_chans"] = vision.pop("in_channels")
        vision["spatial_patch_size"] = vision["patch_size"]
        vision.pop("rope_parameters", None)
    else:
        old_rope(config["text_config"])
        old_dtype(config["text_config"])
    old_dtype(config.get("vision_config", {}))
    return config


def run_record(model, processor, text, images):
    inputs = processor(text=text, images=images, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    return inputs, logits


def write_case(name, seed, build, tok, out, image_files):
    qwen = name.startswith("qwen")
    if qwen:
        tok = tokenizer_with_image_token(QWEN_VISION_TOKENS)
    case_dir = out / name
    model, processor, notes = build(tok)
    init_weights(model, seed)
    model.save_pretrained(case_dir)
    processor.save_pretrained(case_dir)
    write_json(case_dir / "config.legacy.json", legacy_config(json.loads((case_dir / "config.json").read_text())))
    from safetensors import safe_open

    saved = {}
    with safe_open(case_dir / "model.safetensors", "pt") as f:
        for key in f.keys():
            saved[key] = f.get_tensor(key)
    for layout, tensors in layouts(name, model, saved).items():
        (case_dir / "layouts").mkdir(exist_ok=True)
        save_file(tensors, case_dir / "layouts" / f"{layout}.safetensors")

    image_id = tok.convert_tokens_to_ids("<|image_pad|>" if qwen else "<image>")
    tensors, records = {}, []
    singles = [[k] for k in IMAGES if k != "large"]
    pairs = [["wide", "tall"]] if name != "llava" else []
    if qwen:
        singles.append(["large"])
    for index, names in enumerate(singles + pairs):
        text = PROMPT if len(names) == 1 else PAIR_PROMPT
        if qwen:
            text = text.replace("<image>", QWEN_IMAGE)
        imgs = [Image.open(image_files[n]) for n in names]
        # One record: a nested list tells OneVision's processor the images share it (not tiled).
        inputs, logits = run_record(model, processor, text, [imgs] if len(imgs) > 1 else imgs[0])
        ids = inputs["input_ids"][0].tolist()
        pixels = inputs["pixel_values"]
        record = {
            "images": names,
            "text": text,
            "input_ids": ids,
            "image_tokens": sum(1 for t in ids if t == image_id),
        }
        if "image_sizes" in inputs:
            sizes = inputs["image_sizes"].tolist()
            record["image_sizes"] = sizes
        if "image_grid_thw" in inputs:
            grids = inputs["image_grid_thw"].tolist()
            record["image_grid_thw"] = grids
            start = 0
            for i, (t, h, w) in enumerate(grids):
                tensors[f"pixels.{index}.{i}"] = pixels[start : start + t * h * w].contiguous()
                start += t * h * w
            record["tiles"] = [t * h * w for t, h, w in grids]
        elif pixels.dim() == 5:
            # (images, tiles padded to the most, C, H, W): keep each image's own tiles.
            per_image = []
            for i in range(pixels.shape[0]):
                nonzero = [t for t in range(pixels.shape[1]) if pixels[i, t].abs().sum() > 0]
                count = (max(nonzero) + 1) if nonzero else 0
                per_image.append(count)
                tensors[f"pixels.{index}.{i}"] = pixels[i, :count].contiguous()
            record["tiles"] = per_image
        else:
            for i in range(pixels.shape[0]):
                tensors[f"pixels.{index}.{i}"] = pixels[i : i + 1].contiguous()
            record["tiles"] = [1] * pixels.shape[0]
        # The positions from the last image token on see every image token: their logits check the whole path.
        start = max(i for i, t in enumerate(ids) if t == image_id)
        record["logits_from"] = start
        tensors[f"logits.{index}"] = logits[start:].contiguous()
        records.append(record)
    save_file(tensors, case_dir / "expected.safetensors")
    write_json(
        case_dir / "expected.json",
        {"notes": notes, "image_token_id": image_id, "saved_tensor_names": sorted(saved), "records": records},
    )
    print(f"{name}: {len(records)} records, image tokens {[r['image_tokens'] for r in records]}")


def write_json(path, value):
    path.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "tests/fixtures/vlm")
    args = ap.parse_args()
    out = args.out
    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    tok = tokenizer_with_image_token()
    image_files = {}
    for i, (name, (h, w)) in enumerate(IMAGES.items()):
        path = out / "images" / f"{name}.png"
        make_image(name, h, w, 300 + i).save(path)
        image_files[name] = path
    for name, (seed, build) in CASES.items():
        write_case(name, seed, build, tok, out, image_files)
    write_json(
        out / "MANIFEST.json",
        {
            "generated_by": "scripts/conformance-vlm.py",
            "versions": {p: version(p) for p in ("torch", "transformers", "tokenizers", "safetensors", "pillow")},
            "cases": list(CASES),
            "images": {k: list(v) for k, v in IMAGES.items()},
        },
    )
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
