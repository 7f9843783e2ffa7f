#!/usr/bin/env python3
"""Tiny random decoders of the supported families, made by transformers, and transformers' logits
for them: the oracle of tests/tests/suite/families.rs.

    python generate_families.py OUT        (generate_families.sh runs it in the torch peer venv)

Models (random normal weights, torch.manual_seed per model; hidden 32, 2 layers, 4 heads over 2
kv heads of 8, MLP 64, vocabulary 64, context 64):
  llama3        LlamaForCausalLM, llama3 rope_scaling (factor 4, original context 16), untied head
  llama3_tied   the same with tie_word_embeddings
  qwen2_yarn    Qwen2ForCausalLM (q/k/v biases), tied head, YaRN rope_scaling (factor 4, original
                context 16)
  qwen2_swa     Qwen2ForCausalLM with use_sliding_window (window 8) and max_window_layers 1: layer 0
                full attention, layer 1 sliding
  mistral       MistralForCausalLM with sliding_window 8 (every layer), untied head

Each is saved by `save_pretrained` in OUT/<name>/ (config.json + model.safetensors, float32) and,
except qwen2_swa, in OUT/<name>_bf16/ (bfloat16). The llama3, llama3_tied and qwen2_yarn models are
also written as OUT/<name>.gguf (F32) by gguf-py's GGUFWriter the way llama.cpp's
convert_hf_to_gguf.py writes those architectures: Q/K rows permuted for `llama`, Llama-3 scaling as
the `rope_freqs.weight` divisors, YaRN as `{arch}.rope.scaling.type/factor/original_context_length`.

Logits (OUT/logits.safetensors, float32, eager attention, float32 compute; a bf16 directory is
loaded with dtype=float32, so its oracle is the same weights rounded to bf16, computed in
float32), for every model directory D:
  D.prefill   [40, 64]  model(A) for the 40-token sequence A
  D.decode    [40, 64]  A's first 10 tokens in one forward, then one token per forward through the
                        DynamicCache (the logits of every step)
  D.prefill_b [32, 64]  model(B): B shares A's first 10 tokens, then differs
OUT/families.json: the ids of A and B, the prefix length, what each model is, versions.
OUT/yarn_cases.json: transformers' `_compute_yarn_parameters` (inverse frequencies and attention
factor) for YARN_CASES, full-size rope_parameters whose ramp spans many dimensions (the tiny
models' head_dim of 8 leaves it two wide), with beta, mscale, attention_factor and truncate set.
"""

import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

SEQ = 40
SEQ_B = 32
PREFIX = 10
VOCAB = 64
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
)


def configs():
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    llama3_rope = {
        "rope_type": "llama3",
        "rope_theta": 10000.0,
        "factor": 4.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    }
    yarn_rope = {
        "rope_type": "yarn",
        "rope_theta": 10000.0,
        "factor": 4.0,
        "original_max_position_embeddings": 16,
    }
    return {
        "llama3": LlamaConfig(**COMMON, rope_parameters=dict(llama3_rope), tie_word_embeddings=False),
        "llama3_tied": LlamaConfig(**COMMON, rope_parameters=dict(llama3_rope), tie_word_embeddings=True),
        "qwen2_yarn": Qwen2Config(**COMMON, rope_parameters=dict(yarn_rope), tie_word_embeddings=True),
        "qwen2_swa": Qwen2Config(
            **COMMON,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            tie_word_embeddings=False,
            use_sliding_window=True,
            sliding_window=8,
            max_window_layers=1,
        ),
        "mistral": MistralConfig(
            **COMMON,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            tie_word_embeddings=False,
            sliding_window=8,
        ),
    }


YARN_CASES = [
    # Qwen2.5-7B-Instruct's long-context setting.
    dict(rope_type="yarn", rope_theta=1e6, factor=4.0, original_max_position_embeddings=32768),
    dict(rope_type="yarn", rope_theta=1e4, factor=8.0, original_max_position_embeddings=4096,
         beta_fast=16, beta_slow=2, mscale=0.8, mscale_all_dim=0.5, truncate=False),
    dict(rope_type="yarn", rope_theta=5e5, factor=16.0, original_max_position_embeddings=8192,
         attention_factor=0.9),
]
YARN_SHAPE = dict(hidden_size=1024, num_attention_heads=8, head_dim=128, max_position_embeddings=131072)


def yarn_cases():
    from transformers import Qwen2Config
    from transformers.modeling_rope_utils import _compute_yarn_parameters

    out = []
    for c in YARN_CASES:
        cfg = Qwen2Config(**YARN_SHAPE, rope_parameters=dict(c))
        inv, att = _compute_yarn_parameters(cfg)
        out.append({"config": {**YARN_SHAPE, "model_type": "qwen2", "vocab_size": 64, "intermediate_size": 64,
                               "num_hidden_layers": 1, "rope_scaling": c},
                    "attention_factor": att, "inv_freq": [float(x) for x in inv.tolist()]})
    return out


GGUF_MODELS = ["llama3", "llama3_tied", "qwen2_yarn"]
BF16_MODELS = ["llama3", "llama3_tied", "qwen2_yarn", "mistral"]


def build(name, config, seed):
    from transformers import AutoModelForCausalLM

    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").float()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    model.eval()
    return model


def sequences():
    g = np.random.default_rng(1234)
    a = g.integers(3, VOCAB, size=SEQ).tolist()
    b = a[:PREFIX] + g.integers(3, VOCAB, size=SEQ_B - PREFIX).tolist()
    return a, b


@torch.no_grad()
def run_logits(model, a, b):
    from transformers import DynamicCache

    def full(ids):
        return model(torch.tensor([ids])).logits[0].float()

    cache = DynamicCache(config=model.config)
    out = model(torch.tensor([a[:PREFIX]]), past_key_values=cache, use_cache=True)
    steps = [out.logits[0].float()]
    cache = out.past_key_values
    for i in range(PREFIX, len(a)):
        out = model(
            torch.tensor([[a[i]]]),
            past_key_values=cache,
            use_cache=True,
            position_ids=torch.tensor([[i]]),
            cache_position=torch.tensor([i]),
        )
        cache = out.past_key_values
        steps.append(out.logits[0].float())
    return {"prefill": full(a), "decode": torch.cat(steps, 0), "prefill_b": full(b)}


def permute(w, n_head):
    # llama.cpp's convert_hf_to_gguf.py LlamaModel.permute (Q with n_head, K with n_head_kv).
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path, name, model):
    import gguf

    c = model.config
    arch = "qwen2" if c.model_type == "qwen2" else "llama"
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_key_length(c.head_dim)
    w.add_value_length(c.head_dim)
    w.add_rope_dimension_count(c.head_dim)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    rope = c.rope_parameters
    w.add_rope_freq_base(rope["rope_theta"])
    w.add_vocab_size(c.vocab_size)
    w.add_bos_token_id(c.bos_token_id)
    w.add_eos_token_id(c.eos_token_id)
    w.add_file_type(0)
    if rope["rope_type"] == "yarn":
        # convert_hf_to_gguf.py's TextModel.set_gguf_parameters for rope_scaling type yarn.
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(rope["factor"])
        w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    if rope["rope_type"] == "llama3":
        # convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors: per-frequency divisors.
        base, dim = rope["rope_theta"], c.head_dim
        factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
        old = rope["original_max_position_embeddings"]
        freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        low_wavelen, high_wavelen = old / low, old / high
        factors = []
        for f in freqs.tolist():
            wavelen = 2 * math.pi / f
            if wavelen < high_wavelen:
                factors.append(1)
            elif wavelen > low_wavelen:
                factors.append(factor)
            else:
                smooth = (old / wavelen - low) / (high - low)
                factors.append(1 / ((1 - smooth) / factor + smooth))
        w.add_tensor("rope_freqs.weight", np.array(factors, dtype=np.float32))
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    layer = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.o_proj.weight": "attn_output.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    for hf, v in sd.items():
        if hf == "lm_head.weight" and c.tie_word_embeddings:
            continue
        if hf in names:
            out = names[hf]
        else:
            _, _, i, rest = hf.split(".", 3)
            out = f"blk.{i}.{layer[rest]}"
        if arch == "llama" and rest_is(hf, "self_attn.q_proj.weight"):
            v = permute(v, c.num_attention_heads)
        elif arch == "llama" and rest_is(hf, "self_attn.k_proj.weight"):
            v = permute(v, c.num_key_value_heads)
        w.add_tensor(out, np.ascontiguousarray(v, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def rest_is(hf, suffix):
    return hf.startswith("model.layers.") and hf.endswith(suffix)


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main(out):
    import gguf
    import safetensors
    import transformers
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    a, b = sequences()
    logits = {}
    meta = {"models": {}}
    for seed, (name, config) in enumerate(configs().items()):
        model = build(name, config, seed)
        d = out / name
        model.save_pretrained(d, safe_serialization=True)
        variants = [name]
        if name in BF16_MODELS:
            model.to(torch.bfloat16).save_pretrained(out / f"{name}_bf16", safe_serialization=True)
            variants.append(f"{name}_bf16")
        for v in variants:
            # Reload what was written, so the oracle runs exactly the committed weights.
            m = AutoModelForCausalLM.from_pretrained(out / v, dtype=torch.float32, attn_implementation="eager")
            m.eval()
            for k, t in run_logits(m, a, b).items():
                logits[f"{v}.{k}"] = t.contiguous()
            (out / v / "generation_config.json").unlink(missing_ok=True)
        if name in GGUF_MODELS:
            m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
            write_gguf(out / f"{name}.gguf", name, m)
        meta["models"][name] = {
            "architecture": config.architectures[0] if config.architectures else type(model).__name__,
            "model_type": config.model_type,
            "seed": seed,
            "formats": ["f32"] + (["bf16"] if name in BF16_MODELS else []) + (["gguf"] if name in GGUF_MODELS else []),
        }
    save_file(logits, str(out / "logits.safetensors"))
    (out / "yarn_cases.json").write_text(json.dumps(yarn_cases(), indent=1) + "\n")
    meta.update(
        {
            "a": a,
            "b": b,
            "prefix": PREFIX,
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "gguf": getattr(gguf, "__version__", "0.19.0"),
                "safetensors": safetensors.__version__,
                "numpy": np.__version__,
            },
            "sha256": {
                str(p.relative_to(out)): sha256(p)
                for p in sorted(out.rglob("*"))
                if p.is_file() and p.name != "families.json"
            },
        }
    )
    (out / "families.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
