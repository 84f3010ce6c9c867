#!/usr/bin/env python3
"""Writes the Hugging Face conformance fixtures under tests/fixtures/conformance/.

    $(scripts/conformance-env.sh) scripts/conformance-fixtures.py [--out tests/fixtures/conformance]

Everything is built here from seeds: one tiny byte-level BPE tokenizer trained on the corpus below, chat
templates rendered by transformers, and tiny random Llama / Mistral / Qwen2 / Qwen3 / SmolLM3 / Gemma 2 / Gemma 3 / Phi-3 models (one per RoPE or attention
variant) with their logits, greedy continuations and numeric-probe masses. Nothing is downloaded. Rerunning
deletes the output folder's contents and rewrites them byte for byte the same (same pinned versions).

The cargo tests read these files without Python; this script is only needed to refresh them.
"""

import argparse
import json
import math
import re
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    SmolLM3Config,
    SmolLM3ForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3TextConfig,
    Gemma3ForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
)

# --------------------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------------------

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
BOS, EOS, PAD = "<|begin_of_text|>", "<|im_end|>", "<|endoftext|>"
VOCAB_TARGET = 400

CORPUS = [
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face.",
    "The user asked a question and the assistant gave a helpful answer.",
    "How many apples are on the table? There are 12 apples on the table.",
    "What is 12 plus 7? 12 plus 7 is 19.",
    "What is 3 plus 4? The answer is 7, so seven is the answer.",
    "She finished 3rd in the race, and he finished 1st, 2nd and 4th before.",
    "There were 1,000 people and 2,500 chairs in the hall on the 21st of May.",
    "Twelve eggs make a dozen, and twenty dozen make 240 eggs.",
    "One, two, three, four, five, six, seven, eight, nine, ten.",
    "Eleven, twelve, thirteen, fourteen, fifteen, sixteen, seventeen.",
    "Twenty, thirty, forty, fifty, sixty, seventy, eighty, ninety, hundred.",
    "A thousand, a million, a billion: numbers grow fast.",
    "The price is 3.5 dollars, or 3.50 if you count the cents.",
    "Name a colour. Red is a colour, and blue is a colour too.",
    "Say hello. Hello! Hello there, how are you today?",
    "Hi, I am fine, thank you. How can I help you today?",
    "Please answer the question in one short sentence.",
    "The answer is 42, and the question was long.",
    "In 2024 the team won 10 games and lost 2 of them.",
    "Count from 1 to 10: 1 2 3 4 5 6 7 8 9 10.",
    "We have 100 apples, 20 pears and 7 plums on the table.",
    "The 2nd user said hello to the 3rd assistant.",
    "Tell me a story about seven cats and twelve dogs.",
    "Thank you for the help! You are welcome.",
    "What is the capital of France? The capital of France is Paris.",
    "The assistant can answer questions about numbers, colours and words.",
    "System: you are a helpful assistant. User: hello. Assistant: hello!",
    "It is 7 o'clock, and the meeting starts at 8 or 9.",
    "Add 5 and 6 to get 11, then add 1 to get 12.",
    "The table has 4 legs, the chair has 3 legs.",
    "Twenty people asked twenty questions in twenty minutes.",
    "Seven is a number, twelve is a number, and twenty is a number.",
    "How are you? I am well, thanks for asking.",
    "Write the number 1,000,000 as one million.",
    "The 1st, 2nd, 3rd and 4th places get a prize.",
    "Please say the colour of the sky: it is blue.",
    "He read 15 books in 12 months, about one book a month.",
    "The recipe needs 2 cups of flour and 3 eggs.",
    "Count the apples: one apple, two apples, three apples.",
]


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on CORPUS, wrapped the way transformers saves a fast tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_TARGET,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)


NUMERIC_RE = re.compile(r"^(?:[0-9]+|[0-9]+(?:st|nd|rd|th)|[0-9]+\.[0-9]+|[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?)$")
NUMBER_WORDS = set(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million "
    "billion".split()
)


def is_numeric_token(token: str) -> bool:
    """The probe's rule (ported from the Rust side): digits, ordinals, decimals, grouped thousands, number words."""
    s = token.replace("Ġ", "").replace("▁", "").replace("Ċ", "").strip()
    if not s:
        return False
    if NUMERIC_RE.match(s):
        return True
    lower = s.lower()
    # all lowercase, or capitalised: the first letter in either case, the rest lowercase
    return lower in NUMBER_WORDS and s[1:] == lower[1:]


def numeric_ids(tokenizer) -> list[int]:
    return [i for i in range(len(tokenizer)) if is_numeric_token(tokenizer.convert_ids_to_tokens(i))]


# --------------------------------------------------------------------------------------------------------------
# Chat templates
# --------------------------------------------------------------------------------------------------------------

# Qwen2.5-Instruct's template, no-tools branch, with its whitespace control.
CHATML = """{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system
' + messages[0]['content'] + '<|im_end|>
' }}
{%- else %}
    {{- '<|im_start|>system
You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>
' }}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant") %}
        {{- '<|im_start|>' + message.role + '
' + message.content + '<|im_end|>' + '
' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant
' }}
{%- endif %}
"""

# SmolLM2-Instruct's template, verbatim (its "\n" are real newlines inside the string literals).
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Llama-3-Instruct's template laid out one block tag per line: the output is only right if the renderer
# uses trim_blocks and lstrip_blocks, as transformers does.
LLAMA3 = """{% set loop_messages = messages %}
{% for message in loop_messages %}
    {% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>

' + message['content'] | trim + '<|eot_id|>' %}
    {% if loop.index0 == 0 %}
        {% set content = bos_token + content %}
    {% endif %}
{{ content }}{% endfor %}
{% if add_generation_prompt %}
{{ '<|start_header_id|>assistant<|end_header_id|>

' }}{% endif %}
"""

# A second template for the list form: it must never be picked when no tools are passed.
TOOL_USE = "{% for message in messages %}TOOLS {{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"

TEMPLATES = {"chatml": CHATML, "smollm2": SMOLLM2, "llama3": LLAMA3}

CONVERSATIONS = {
    "single": (
        [{"role": "user", "content": "What is 12 plus 7? Answer with digits, please."}],
        True,
    ),
    "multi_turn_system": (
        [
            {"role": "system", "content": "  You count things; answer with 1,000 or fewer words.  "},
            {"role": "user", "content": "How many apples?\nThere were 3 on the table."},
            {"role": "assistant", "content": " There are 3 apples (three). "},
            {"role": "user", "content": "And 12 more: how many now?"},
        ],
        True,
    ),
    "multi_turn_no_prompt": (
        [
            {"role": "user", "content": "Say hello twice!\n"},
            {"role": "assistant", "content": "Hello, hello."},
        ],
        False,
    ),
}


def render(tokenizer, messages, add_generation_prompt):
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    ids = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=False, add_generation_prompt=add_generation_prompt
    )
    return text, [int(i) for i in ids]


def chatml_prompt_ids(tokenizer, user_text):
    tokenizer.chat_template = CHATML
    return render(tokenizer, [{"role": "user", "content": user_text}], True)[1]


def write_templates(tokenizer, out: Path):
    entries = []
    for name, template in TEMPLATES.items():
        tokenizer.chat_template = template
        for conv_name, (messages, add_gen) in CONVERSATIONS.items():
            text, ids = render(tokenizer, messages, add_gen)
            entries.append(
                {
                    "template_name": name,
                    "template": template,
                    "conversation": conv_name,
                    "messages": messages,
                    "add_generation_prompt": add_gen,
                    "text": text,
                    "ids": ids,
                }
            )
    tokenizer.chat_template = None
    write_json(out / "templates.json", entries)
    print(f"templates.json: {len(entries)} renders")


def write_template_sources(tokenizer, out: Path):
    """The smollm2 template stored the three ways transformers has saved chat templates."""
    src = out / "template-sources"
    forms = {
        "v5": (SMOLLM2, True),  # chat_template.jinja beside tokenizer_config.json (transformers 5 default)
        "legacy-string": (SMOLLM2, False),  # "chat_template": "<string>"
        "legacy-list": ({"default": SMOLLM2, "tool_use": TOOL_USE}, False),  # [{"name", "template"}, ...]
    }
    messages = CONVERSATIONS["multi_turn_system"][0]
    texts = {}
    for form, (template, jinja_files) in forms.items():
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.chat_template = template
            tokenizer.save_pretrained(tmp, save_jinja_files=jinja_files)
            folder = src / form
            folder.mkdir(parents=True)
            for f in sorted(Path(tmp).iterdir()):
                if f.name != "tokenizer.json":
                    assert f.is_file(), f"unexpected {f} in a saved tokenizer"
                    shutil.copy(f, folder / f.name)
        tokenizer.chat_template = None
        # Reload from tokenizer.json + only this form's files, as the Rust test does.
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(out / "tokenizer" / "tokenizer.json", tmp)
            for f in (src / form).iterdir():
                shutil.copy(f, tmp)
            loaded = AutoTokenizer.from_pretrained(tmp)
            texts[form] = render(loaded, messages, True)
        print(f"template-sources/{form}: {sorted(p.name for p in (src / form).iterdir())}")
    assert (src / "v5" / "chat_template.jinja").exists(), "transformers 5 no longer writes chat_template.jinja"
    assert len(set(map(str, texts.values()))) == 1, f"the three storage forms render differently: {texts}"
    text, ids = texts["v5"]
    write_json(
        src / "expected.json", {"messages": messages, "add_generation_prompt": True, "text": text, "ids": ids}
    )


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------

TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
)
THETA = 100000.0  # never the 10000 default: a loader that ignores rope_parameters must fail


def rope(rope_type="default", **extra):
    return {"rope_type": rope_type, "rope_theta": THETA, **extra}


# name -> (seed, config class, model class, config kwargs, notes)
CASES = {
    "llama": (
        101,
        LlamaConfig,
        LlamaForCausalLM,
        dict(rope_parameters=rope(), tie_word_embeddings=True, max_position_embeddings=128),
        "default rope, rope_theta 100000 (only inside rope_parameters); tied embeddings: no lm_head.weight in the "
        "file. max_position_embeddings 128 (not 64) so the ~60-token chatml prompts plus continuations fit.",
    ),
    "llama-linear": (
        102,
        LlamaConfig,
        LlamaForCausalLM,
        dict(rope_parameters=rope("linear", factor=2.0), tie_word_embeddings=True, max_position_embeddings=128),
        "linear rope: inv_freq / factor (2.0), i.e. positions halved.",
    ),
    "llama-dynamic": (
        103,
        LlamaConfig,
        LlamaForCausalLM,
        dict(rope_parameters=rope("dynamic", factor=2.0), tie_word_embeddings=True, max_position_embeddings=8),
        None,  # filled in by dynamic_notes()
    ),
    "llama-llama3": (
        104,
        LlamaConfig,
        LlamaForCausalLM,
        dict(
            rope_parameters=rope(
                "llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=256
            ),
            tie_word_embeddings=True,
            max_position_embeddings=2048,
        ),
        None,  # filled in by llama3_notes()
    ),
    "llama-yarn": (
        105,
        LlamaConfig,
        LlamaForCausalLM,
        dict(
            rope_parameters=rope("yarn", factor=4.0, original_max_position_embeddings=32),
            tie_word_embeddings=True,
            max_position_embeddings=128,
        ),
        None,  # filled in by yarn_notes()
    ),
    "mistral": (
        106,
        MistralConfig,
        MistralForCausalLM,
        dict(
            rope_parameters=rope(), sliding_window=4, head_dim=8, tie_word_embeddings=False, max_position_embeddings=128
        ),
        "sliding_window 4 on every layer: query i sees keys j with i - 4 < j <= i (itself and 3 before); "
        "untied lm_head; explicit head_dim 8. Two sliding layers see 6 tokens back, and the chatml prompts share "
        "their last 6 tokens, so all greedy continuations (not the first probe masses) coincide.",
    ),
    "qwen2": (
        107,
        Qwen2Config,
        Qwen2ForCausalLM,
        dict(rope_parameters=rope(), use_sliding_window=False, tie_word_embeddings=False, max_position_embeddings=128),
        None,  # filled in by qwen2_notes()
    ),
    "qwen2-sliding": (
        108,
        Qwen2Config,
        Qwen2ForCausalLM,
        dict(
            rope_parameters=rope(),
            use_sliding_window=True,
            sliding_window=4,
            max_window_layers=0,
            tie_word_embeddings=False,
            max_position_embeddings=128,
        ),
        None,  # filled in by qwen2_notes()
    ),
    "qwen3": (
        109,
        Qwen3Config,
        Qwen3ForCausalLM,
        dict(
            rope_parameters=rope(),
            head_dim=8,
            attention_bias=True,
            use_sliding_window=False,
            tie_word_embeddings=False,
            max_position_embeddings=128,
        ),
        "q_norm and k_norm: RMSNorm over each head's 8 dimensions (weight [head_dim], eps rms_norm_eps) after the "
        "q/k projections and before rope. attention_bias true: q, k, v and o projections all carry biases. Untied.",
    ),
    "smollm3": (
        110,
        SmolLM3Config,
        SmolLM3ForCausalLM,
        dict(
            rope_parameters=rope(),
            no_rope_layers=[1, 0],
            tie_word_embeddings=True,
            max_position_embeddings=128,
        ),
        "no_rope_layers [1, 0]: layer 0 applies rope, layer 1 attends without rotary embeddings (1 = rope). "
        "Tied embeddings (SmolLM3's default).",
    ),
    "gemma2": (
        111,
        Gemma2Config,
        Gemma2ForCausalLM,
        dict(
            rope_parameters=rope(),
            head_dim=8,
            query_pre_attn_scalar=16,
            sliding_window=4,
            attn_logit_softcapping=2.0,
            final_logit_softcapping=3.0,
            tie_word_embeddings=True,
            max_position_embeddings=128,
        ),
        "Gemma 2: (1 + w) RMSNorm, norms after attention and around the MLP, embeddings x sqrt(32), "
        "gelu_pytorch_tanh gating, attention scale 16^-0.5, attention softcap 2 (tanh(s/2)*2 before the mask) and "
        "final logit softcap 3, both small so that they matter; layer_types alternate [sliding (window 4), full].",
    ),
    "gemma3": (
        112,
        Gemma3TextConfig,
        Gemma3ForCausalLM,
        dict(
            rope_parameters={
                "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 100000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            },
            head_dim=8,
            query_pre_attn_scalar=8,
            sliding_window=4,
            sliding_window_pattern=2,
            tie_word_embeddings=True,
            max_position_embeddings=128,
        ),
        "Gemma 3 text: as Gemma 2 without softcapping, plus (1 + w) q_norm/k_norm per head; layer 0 slides "
        "(window 4, local rope theta 1e4, default), layer 1 is global (theta 1e5, linear x2). "
        "config.legacy.json: rope_theta + rope_scaling (global), rope_local_base_freq, sliding_window_pattern 2.",
    ),
    "phi3": (
        113,
        Phi3Config,
        Phi3ForCausalLM,
        dict(rope_parameters=rope(), tie_word_embeddings=False, max_position_embeddings=128),
        "Phi-3: fused qkv_proj (rows q 0-31, k 32-47, v 48-63) and gate_up_proj (gate rows 0-63, up 64-127: "
        "act(gate) * up); no biases; untied.",
    ),
    "phi3-partial-rotary": (
        114,
        Phi3Config,
        Phi3ForCausalLM,
        dict(
            rope_parameters={"rope_type": "default", "rope_theta": 100000.0, "partial_rotary_factor": 0.5},
            tie_word_embeddings=False,
            max_position_embeddings=128,
        ),
        "Phi-4-mini style partial rotary: partial_rotary_factor 0.5 turns the first 4 of each head's 8 dimensions "
        "(inv_freq over dim 4) and passes the other 4; config.legacy.json has it at the top level.",
    ),
}

BATCH_LENGTHS = [14, 9, 4]
GREEDY_PROMPTS = ["Hi there!", "What is 3 plus 4?", "Tell me a story about seven cats."]
PROBE_PROMPTS = ["How many apples are on the table?", "Name a colour.", "What is 12 plus 7?", "Say hello."]
GREEDY_NEW_TOKENS = 8
PROBE_NEW_TOKENS = 6


def build_model(seed, config_cls, model_cls, kwargs, tokenizer):
    config = config_cls(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY,
        **kwargs,
    )
    torch.manual_seed(seed)
    model = model_cls._from_config(config, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            torch.nn.init.normal_(p, std=0.2)
            if "norm" in name:
                p.add_(1.0)
    return model.eval()


def reset_dynamic_rope(model):
    """Dynamic rope keeps the longest seq_len it has seen in module state; clear it so that every forward is
    computed from its own position_ids only (what a stateless implementation does)."""
    rot = model.model.rotary_emb
    if "dynamic" in rot.rope_type:
        rot.inv_freq = rot.original_inv_freq.clone()
        rot.max_seq_len_cached = rot.original_max_seq_len


@torch.no_grad()
def forward(model, ids, mask=None, position_ids=None):
    reset_dynamic_rope(model)
    return model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits


def make_batches(case_seed, vocab, pad_id):
    gen = torch.Generator().manual_seed(case_seed)
    seqs = [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in BATCH_LENGTHS]
    width = max(BATCH_LENGTHS)
    batches = {}
    for side in ("left", "right"):
        ids, mask = [], []
        for s in seqs:
            pad = width - len(s)
            if side == "left":
                ids.append([pad_id] * pad + s)
                mask.append([0] * pad + [1] * len(s))
            else:
                ids.append(s + [pad_id] * pad)
                mask.append([1] * len(s) + [0] * pad)
        m = torch.tensor(mask)
        pos = (m.cumsum(-1) - 1).clamp(min=0)
        batches[side] = {"input_ids": ids, "attention_mask": mask, "position_ids": pos.tolist()}
    return batches


def batch_logits(model, batch):
    ids = torch.tensor(batch["input_ids"])
    mask = torch.tensor(batch["attention_mask"])
    pos = torch.tensor(batch["position_ids"])
    return forward(model, ids, mask, pos)


@torch.no_grad()
def greedy(model, prompt_ids, max_new, eos_id, numeric=None):
    """Greedy decoding as `generate` runs it: the prompt in one forward, then one token per forward with the KV
    cache. For dynamic rope this matters: cached keys keep the frequencies they were rotated with. With `numeric`,
    also the probability mass on those ids at each step."""
    reset_dynamic_rope(model)
    out, masses = [], []
    result = model(input_ids=torch.tensor([prompt_ids]), use_cache=True)
    for _ in range(max_new):
        logits = result.logits[0, -1]
        if numeric is not None:
            probs = torch.softmax(logits.double(), dim=-1)
            masses.append(float(probs[numeric].sum()))
        nxt = int(logits.argmax())
        out.append(nxt)
        if nxt == eos_id:
            break
        result = model(input_ids=torch.tensor([[nxt]]), past_key_values=result.past_key_values, use_cache=True)
    # The same tokens as transformers' own `generate`.
    reset_dynamic_rope(model)
    generated = model.generate(
        torch.tensor([prompt_ids]),
        do_sample=False,
        max_new_tokens=max_new,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )[0, len(prompt_ids):].tolist()
    assert generated == out, f"generate gave {generated}, the cached loop {out}"
    return out, masses


def max_diff(a, b, mask):
    keep = torch.tensor(mask, dtype=torch.bool)
    return float((a - b).abs()[keep].max())


def check_against(model, other, batches, what, tol):
    for side, batch in batches.items():
        d = max_diff(batch_logits(model, batch), batch_logits(other, batch), batch["attention_mask"])
        assert d < tol, f"{what}: {side} logits differ by {d}"
    print(f"  {what}: agrees")


def legacy_config(config: dict) -> dict:
    """transformers-4 layout: rope_theta + rope_scaling (with "type"), torch_dtype, no layer_types."""
    legacy = {k: v for k, v in config.items() if k not in ("rope_parameters", "dtype", "layer_types")}
    params = dict(config["rope_parameters"])
    if "full_attention" in params:  # Gemma 3: global set, plus the local base on its own key
        legacy["rope_local_base_freq"] = params["sliding_attention"]["rope_theta"]
        legacy["sliding_window_pattern"] = 2
        params = dict(params["full_attention"])
    legacy["rope_theta"] = params.pop("rope_theta")
    if "partial_rotary_factor" in params:  # 4.x kept it at the top level
        legacy["partial_rotary_factor"] = params.pop("partial_rotary_factor")
    if params["rope_type"] == "default":
        legacy["rope_scaling"] = None
    else:
        legacy["rope_scaling"] = {**params, "type": params["rope_type"]}
    legacy["torch_dtype"] = config["dtype"]
    # 4.x Qwen2 configs kept an integer sliding_window even with use_sliding_window false (5.x writes null)
    if config.get("model_type") == "qwen2" and not config.get("use_sliding_window"):
        legacy["sliding_window"] = 4
    return dict(sorted(legacy.items()))


def dynamic_notes(model):
    rot = model.model.rotary_emb
    base = rot.original_inv_freq.tolist()
    forward(model, torch.zeros(1, 14, dtype=torch.long), position_ids=torch.arange(14)[None])
    scaled = rot.inv_freq.tolist()
    assert scaled != base, "dynamic rope did not rescale past max_position_embeddings"
    print(f"  dynamic inv_freq: {fmt(base)} -> (seq_len 14) {fmt(scaled)}")
    return (
        "dynamic NTK rope, factor 2.0, max_position_embeddings 8. Per forward, seq_len = max(position_ids) + 1 "
        "over the whole batch (13 + 1 = 14 for both batches, also for the shorter rows); when seq_len > 8 "
        "base = rope_theta * (factor * seq_len / 8 - (factor - 1)) ** (dim / (dim - 2)), else the plain "
        f"inv_freq. inv_freq {fmt(base)} becomes {fmt(scaled)} at seq_len 14. Greedy/probe steps recompute from "
        "their own length each step (full forward; prompts are 56-69 tokens, always past 8). transformers "
        "caches the largest seq_len seen in module state (it only resets below 8); the script resets it before "
        "every forward so fixtures are stateless."
    )


def llama3_notes(model):
    rot = model.model.rotary_emb
    p = model.config.rope_parameters
    dim = model.config.head_dim
    plain = 1.0 / (THETA ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    wavelen = (2 * math.pi / plain).tolist()
    low_wl = p["original_max_position_embeddings"] / p["low_freq_factor"]
    high_wl = p["original_max_position_embeddings"] / p["high_freq_factor"]
    bands = ["high (kept)" if w < high_wl else "low (/factor)" if w > low_wl else "medium (smoothed)" for w in wavelen]
    assert len({b.split()[0] for b in bands}) == 3, f"llama3 bands not all covered: {bands}"
    print(f"  llama3 inv_freq: {fmt(plain.tolist())} -> {fmt(rot.inv_freq.tolist())}; bands {bands}")
    return (
        "llama3 rope, factor 8, low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings 256 "
        f"(head_dim 8 wavelengths {fmt(wavelen)} vs high/low thresholds {high_wl}/{low_wl}: bands {bands}). "
        f"inv_freq {fmt(plain.tolist())} -> {fmt(rot.inv_freq.tolist())}. max_position_embeddings 2048 only "
        "keeps transformers' validation quiet (it wants original < max); no attention scaling."
    )


def yarn_notes(model):
    rot = model.model.rotary_emb
    c, p = model.config, model.config.rope_parameters
    dim = c.head_dim
    plain = 1.0 / (THETA ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    scaled = rot.inv_freq.tolist()
    kept = [i for i, (a, b) in enumerate(zip(plain.tolist(), scaled)) if math.isclose(a, b, rel_tol=1e-6)]
    assert 0 < len(kept) < dim // 2, f"yarn left {kept} of {dim // 2} frequencies unscaled"
    print(f"  yarn inv_freq: {fmt(plain.tolist())} -> {fmt(scaled)}, attention_scaling {rot.attention_scaling:.6f}")
    return (
        f"yarn rope, factor {p['factor']}, original_max_position_embeddings {p['original_max_position_embeddings']}, "
        f"max_position_embeddings {c.max_position_embeddings} (transformers reads factor from rope_parameters and "
        "derives it as max/original only when it is null; a mismatch only warns). beta_fast 32 / beta_slow 1 "
        f"(defaults) and truncate true (default) leave frequencies {kept} unscaled and divide the rest by the "
        f"factor: inv_freq {fmt(plain.tolist())} -> {fmt(scaled)}. attention_factor = 0.1 * ln(factor) + 1 = "
        f"{rot.attention_scaling:.4f} (not in the config: derived), multiplied into both cos and sin, so q.k "
        "carries its square; the softmax scale stays 1/sqrt(head_dim)."
    )


def qwen2_notes(model):
    c = model.config
    if c.use_sliding_window:
        return (
            f"use_sliding_window true, sliding_window 4, max_window_layers 0 -> transformers derives layer_types "
            f"{c.layer_types} (layer i slides when i >= max_window_layers); config.json stores layer_types. Query i "
            "sees keys j with i - 4 < j <= i, so, as for mistral, the greedy continuations coincide. q/k/v projections "
            "have biases; untied lm_head."
        )
    return (
        f"use_sliding_window false: transformers 5 writes sliding_window null and layer_types {c.layer_types}. "
        "config.legacy.json carries sliding_window 4 with use_sliding_window false, as 4.x Qwen2 configs did "
        "(an integer that must be ignored). q/k/v projections have biases; untied lm_head."
    )


def fmt(values):
    return [float(f"{v:.6g}") for v in values]


def write_model_case(name, tokenizer, out: Path, numeric):
    seed, config_cls, model_cls, kwargs, notes = CASES[name]
    folder = out / "models" / name
    folder.mkdir(parents=True)
    print(f"models/{name}")
    model = build_model(seed, config_cls, model_cls, kwargs, tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        for f in ("config.json", "model.safetensors"):
            shutil.copy(Path(tmp) / f, folder / f)
    config = json.loads((folder / "config.json").read_text())
    write_json(folder / "config.legacy.json", legacy_config(config))

    notes = notes or {
        "llama-dynamic": dynamic_notes,
        "llama-llama3": llama3_notes,
        "llama-yarn": yarn_notes,
        "qwen2": qwen2_notes,
        "qwen2-sliding": qwen2_notes,
    }[name](model)

    batches = make_batches(seed, len(tokenizer), tokenizer.pad_token_id)
    logits = {side: batch_logits(model, b).contiguous() for side, b in batches.items()}
    save_file(logits, folder / "logits.safetensors")

    # The saved files, loaded back both ways, and the sdpa kernels must give the same logits.
    reloaded = model_cls.from_pretrained(folder, attn_implementation="eager").eval()
    check_against(model, reloaded, batches, "reloaded config.json", 1e-6)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(folder / "model.safetensors", tmp)
        shutil.copy(folder / "config.legacy.json", Path(tmp) / "config.json")
        legacy = model_cls.from_pretrained(tmp, attn_implementation="eager").eval()
    def without_type(params):  # 4.x configs kept a "type" key beside rope_type; the validator ignores it
        return {k: without_type(v) if isinstance(v, dict) else v for k, v in params.items() if k != "type"}

    legacy_rope = without_type(legacy.config.rope_parameters)
    assert legacy_rope == model.config.rope_parameters, f"legacy rope {legacy_rope} != {model.config.rope_parameters}"
    assert getattr(legacy.config, "layer_types", None) == getattr(model.config, "layer_types", None)
    check_against(model, legacy, batches, "config.legacy.json", 1e-6)
    if not getattr(model.config, "attn_logit_softcapping", None):  # sdpa has no softcapping
        sdpa = model_cls.from_pretrained(folder, attn_implementation="sdpa").eval()
        check_against(model, sdpa, batches, "sdpa", 1e-5)

    eos = tokenizer.eos_token_id
    greedy_runs = []
    for text in GREEDY_PROMPTS:
        prompt = chatml_prompt_ids(tokenizer, text)
        cont, _ = greedy(model, prompt, GREEDY_NEW_TOKENS, eos)
        greedy_runs.append({"prompt_ids": prompt, "continuation": cont})

    probes = []
    for text in PROBE_PROMPTS:
        prompt = chatml_prompt_ids(tokenizer, text)
        cont, masses = greedy(model, prompt, PROBE_NEW_TOKENS, eos, numeric)
        probes.append({"text": text, "ids": prompt, "step_mass": masses, "continuation": cont})
    lengths = [len(r["prompt_ids"]) + len(r["continuation"]) for r in greedy_runs]
    lengths += [len(p["ids"]) + len(p["continuation"]) for p in probes]
    if config["rope_parameters"].get("rope_type") != "dynamic":  # dynamic is meant to run past it
        assert max(lengths) <= config["max_position_embeddings"], f"{name}: {max(lengths)} positions"
    mean = sum(sum(p["step_mass"]) / len(p["step_mass"]) for p in probes) / len(probes)

    write_json(
        folder / "expected.json",
        {
            "case": name,
            "architecture": config["model_type"],
            "notes": notes,
            "batches": batches,
            "greedy": greedy_runs,
            "probe": {
                "numeric_ids": numeric,
                "max_new_tokens": PROBE_NEW_TOKENS,
                "prompts": probes,
                "numeric_mass_mean": mean,
            },
            "versions": {"torch": version("torch"), "transformers": version("transformers")},
        },
    )
    print(f"  notes: {notes}")
    print(f"  greedy: {[g['continuation'] for g in greedy_runs]}; numeric mass mean {mean:.4f}")


# --------------------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------------------


def to_json(obj, indent=0):
    """Sorted keys, one value per line, but lists of scalars on one line."""
    pad = " " * (indent + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{pad}{json.dumps(k)}: {to_json(v, indent + 1)}" for k, v in sorted(obj.items())]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(obj, list) and any(isinstance(x, (dict, list)) for x in obj):
        items = [pad + to_json(x, indent + 1) for x in obj]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    return json.dumps(obj, separators=(", ", ": "))


def write_json(path: Path, obj):
    path.write_text(to_json(obj) + "\n", encoding="utf-8")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "tests/fixtures/conformance")
    args = ap.parse_args()
    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(out / "tokenizer")
    vocab = len(tokenizer)
    numeric = numeric_ids(tokenizer)
    assert len(numeric) >= 5, "the tokenizer has too few numeric tokens for the probe"
    print(f"tokenizer: V = {vocab}; numeric tokens {[(i, tokenizer.convert_ids_to_tokens(i)) for i in numeric]}")

    write_templates(tokenizer, out)
    write_template_sources(tokenizer, out)
    for name in CASES:
        write_model_case(name, tokenizer, out, numeric)

    write_json(
        out / "MANIFEST.json",
        {
            "generated_by": "scripts/conformance-fixtures.py",
            "versions": {p: version(p) for p in ("torch", "transformers", "tokenizers", "trl", "peft", "safetensors")},
            "cases": list(CASES),
            "vocab_size": vocab,
            "pad_id": tokenizer.pad_token_id,
            "eos_id": tokenizer.eos_token_id,
            "bos_id": tokenizer.bos_token_id,
        },
    )
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
