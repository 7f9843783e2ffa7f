#!/usr/bin/env python3
"""A model of Llama-3.2-1B-Instruct's shape with random weights, for the load/RSS/decode benchmark
against llama.cpp (bench/llama32_1b_shape.sh runs it). Two steps, in two peer venvs:

  f16       TOKENIZER_DIR OUT.gguf   gguf-py writes the model in f16 (norms f32): 16 layers,
                                     hidden 2048, MLP 8192, 32 heads over 8 KV heads of 64, tied
                                     embeddings, RoPE theta 500000 with llama3 scaling (factor 32,
                                     as `rope_freqs.weight`, the way llama.cpp's converter writes
                                     it), and the Llama-3 tokenizer and chat template of
                                     TOKENIZER_DIR (tokenizer.json, tokenizer_config.json: the
                                     project's tests/golden/families/llama-3.1-instruct), so both
                                     programs tokenize the benchmark text the same way.
  quantize  SRC.gguf DST.gguf FTYPE  llama_cpp.llama_model_quantize into DST (FTYPE: Q4_K_M, ...).

Weights are N(0, 1/cols) from a fixed seed: speed and memory do not depend on their values.
"""

import json
import math
import sys
from pathlib import Path

FTYPES = {"Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18, "Q8_0": 7}
D, FF, LAYERS, HEADS, KV, HEAD_DIM = 2048, 8192, 16, 32, 8, 64
THETA, CONTEXT = 500000.0, 131072
LLAMA3 = {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def rope_factors():
    """llama3 scaling as per-frequency divisors (the values transformers' `_compute_llama3_parameters`
    divides the inverse frequencies by)."""
    f, lo, hi, old = (LLAMA3[k] for k in ("factor", "low_freq_factor", "high_freq_factor",
                                            "original_max_position_embeddings"))
    out = []
    for i in range(0, HEAD_DIM, 2):
        freq = 1.0 / (THETA ** (i / HEAD_DIM))
        wavelen = 2 * math.pi / freq
        if wavelen < old / hi:
            out.append(1.0)
        elif wavelen > old / lo:
            out.append(f)
        else:
            smooth = (old / wavelen - lo) / (hi - lo)
            out.append(1.0 / ((1 - smooth) / f + smooth))
    return out


def f16(tok_dir, out):
    import numpy as np
    from gguf import GGUFWriter, TokenType

    tok = json.loads((tok_dir / "tokenizer.json").read_text())
    cfg = json.loads((tok_dir / "tokenizer_config.json").read_text())
    vocab = tok["model"]["vocab"]
    added = {t["id"]: t for t in tok["added_tokens"]}
    n_vocab = max(max(vocab.values()), max(added)) + 1
    tokens = [""] * n_vocab
    types = [TokenType.NORMAL] * n_vocab
    for t, i in vocab.items():
        tokens[i] = t
    for i, t in added.items():
        tokens[i] = t["content"]
        types[i] = TokenType.CONTROL if t["special"] else TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    w = GGUFWriter(str(tmp), "llama")
    w.add_name("llama-3.2-1b-shape-random")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(D)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(THETA)
    w.add_vocab_size(n_vocab)
    w.add_file_type(1)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    special = {t["content"]: i for i, t in added.items()}
    w.add_bos_token_id(special[cfg["bos_token"]])
    w.add_eos_token_id(special[cfg["eos_token"]])
    w.add_add_bos_token(True)
    w.add_chat_template(cfg["chat_template"])

    rng = np.random.default_rng(1)

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)).astype(np.float16)

    w.add_tensor("token_embd.weight", mat(n_vocab, D))
    w.add_tensor("rope_freqs.weight", np.array(rope_factors(), dtype=np.float32))
    for i in range(LAYERS):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(D, dtype=np.float32))
        w.add_tensor(p + "attn_q.weight", mat(HEADS * HEAD_DIM, D))
        w.add_tensor(p + "attn_k.weight", mat(KV * HEAD_DIM, D))
        w.add_tensor(p + "attn_v.weight", mat(KV * HEAD_DIM, D))
        w.add_tensor(p + "attn_output.weight", mat(D, HEADS * HEAD_DIM))
        w.add_tensor(p + "ffn_norm.weight", np.ones(D, dtype=np.float32))
        w.add_tensor(p + "ffn_gate.weight", mat(FF, D))
        w.add_tensor(p + "ffn_up.weight", mat(FF, D))
        w.add_tensor(p + "ffn_down.weight", mat(D, FF))
    w.add_tensor("output_norm.weight", np.ones(D, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.rename(out)  # whole files only
    print(f"wrote {out}", file=sys.stderr)


def quantize(src, dst, name):
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[name]
    params.nthread = 2
    tmp = dst.with_suffix(".partial")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0:
        sys.exit(f"llama_model_quantize {dst.name} failed: {rc}")
    tmp.rename(dst)
    print(f"wrote {dst} (llama-cpp-python {llama_cpp.__version__})", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "f16":
        f16(Path(sys.argv[2]), Path(sys.argv[3]))
    elif len(sys.argv) == 5 and sys.argv[1] == "quantize":
        quantize(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(__doc__)
