#!/usr/bin/env python3
"""K-quant dequantization goldens: real blocks written by llama.cpp's own quantizer, and the
values gguf-py's `gguf.quants.dequantize` gives for them.

Three steps, in two environments (llama-cpp-python and gguf live in different peer venvs; see
generate_kquants.sh, which runs them):

  tiny      WORK            gguf-py writes WORK/tiny-f32.gguf: a random 2-layer llama-architecture
                            model 256 wide (every row whole super-blocks), in f32.
  quantize  SRC.gguf WORK [NAME...]
                            llama_cpp.llama_model_quantize (allow_requantize) of the default
                            SmolLM2-135M-Instruct Q4_1 GGUF into WORK/<ftype>.gguf for each
                            file type in FTYPES, and of the tiny model into WORK/tiny-<ftype>.gguf
                            for each of TINY_FTYPES; only the SmolLM2 files NAME... when given
                            (the logits test makes its two files this way, in its cache).
  logits    WORK OUT        transformers (which dequantizes GGUF with gguf-py) loads the SmolLM2
                            files of LOGIT_FILES; for the first PROMPTS chat prompts of
                            tests/golden/smollm_chat.json: the f32 logits at the last prompt
                            position, and 48 greedy tokens with each step's top-2 margin, into
                            OUT/kquant_logits.safetensors and OUT/kquant_logits.json.
  extract   WORK OUT        for every tensor type found in those files, ROWS rows of TENSORS
                            tensors of that type: their raw bytes (u8) and gguf-py's f32
                            dequantization, into OUT/kquants.safetensors, with OUT/kquants.json
                            (which file, tensor and rows each came from, sha256 of the files,
                            package versions).

SmolLM2's width (576) is not a multiple of 256, so llama.cpp writes K-quants only where a row is
whole super-blocks (the MLP's down projection, 1,536 wide) and its fallback types elsewhere
(Q4_0, Q5_0, Q5_1, Q8_0): those are extracted too, as what the same files hold. Its Q2_K mix
puts no tensor in Q2_K (the down projection gets Q3_K), hence the tiny 256-wide model, whose
Q2_K file does.
"""

import hashlib
import json
import sys
from pathlib import Path

FTYPES = {
    # name: llama_ftype (llama.h's LLAMA_FTYPE_MOSTLY_*)
    "Q2_K": 10,
    "Q3_K_M": 12,
    "Q4_K_M": 15,
    "Q5_K_M": 17,
    "Q6_K": 18,
    "Q8_0": 7,
}
# The tiny model's file types (name: llama_ftype).
TINY_FTYPES = {"Q2_K": 10, "Q4_K_S": 14, "Q5_K_S": 16}
ROWS = 2      # rows per tensor
# The SmolLM2 files whose logits transformers records: together they hold Q3_K, Q4_K, Q5_K, Q6_K,
# Q5_0, Q5_1 and Q8_0 tensors.
LOGIT_FILES = ["Q4_K_M", "Q3_K_M"]
PROMPTS = 2
GREEDY = 48
TENSORS = 2   # tensors per type (the first and the last of that type in the file)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tiny(work):
    import numpy as np
    from gguf import GGUFWriter

    work.mkdir(parents=True, exist_ok=True)
    d, ff, layers, heads, kv, vocab = 256, 512, 2, 4, 2, 512
    rng = np.random.default_rng(7)
    w = GGUFWriter(str(work / "tiny-f32.gguf"), "llama")
    w.add_context_length(256)
    w.add_embedding_length(d)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(d // heads)
    w.add_vocab_size(vocab)
    w.add_file_type(0)

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    w.add_tensor("token_embd.weight", mat(vocab, d))
    for i in range(layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(d, dtype=np.float32))
        w.add_tensor(p + "attn_q.weight", mat(d, d))
        w.add_tensor(p + "attn_k.weight", mat(d * kv // heads, d))
        w.add_tensor(p + "attn_v.weight", mat(d * kv // heads, d))
        w.add_tensor(p + "attn_output.weight", mat(d, d))
        w.add_tensor(p + "ffn_norm.weight", np.ones(d, dtype=np.float32))
        w.add_tensor(p + "ffn_gate.weight", mat(ff, d))
        w.add_tensor(p + "ffn_up.weight", mat(ff, d))
        w.add_tensor(p + "ffn_down.weight", mat(d, ff))
    w.add_tensor("output_norm.weight", np.ones(d, dtype=np.float32))
    w.add_tensor("output.weight", mat(vocab, d))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize(src, work, names=()):
    import ctypes

    import llama_cpp

    work.mkdir(parents=True, exist_ok=True)
    jobs = [(src, work / f"{n}.gguf", t) for n, t in FTYPES.items() if not names or n in names]
    if not names:
        jobs += [(work / "tiny-f32.gguf", work / f"tiny-{n}.gguf", t) for n, t in TINY_FTYPES.items()]
    for src_file, dst, ftype in jobs:
        if dst.exists():
            continue
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        params.allow_requantize = True
        params.nthread = 2
        tmp = dst.with_suffix(".partial")
        rc = llama_cpp.llama_model_quantize(str(src_file).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            sys.exit(f"llama_model_quantize {dst.name} failed: {rc}")
        tmp.rename(dst)  # whole files only: a killed run leaves no truncated GGUF behind
        print(f"wrote {dst}", file=sys.stderr)
    meta = {"llama_cpp_python": llama_cpp.__version__, "source": src.name, "source_sha256": sha256(src)}
    (work / "quantize.json").write_text(json.dumps(meta, indent=1))


def logits(work, out):
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from importlib import metadata

    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    chat = json.loads((Path(__file__).parent / "smollm_chat.json").read_text())
    tensors, record = {}, {"files": {}, "greedy_new_tokens": GREEDY}
    for name in LOGIT_FILES:
        path = work / f"{name}.gguf"
        model = AutoModelForCausalLM.from_pretrained(str(work), gguf_file=path.name, dtype=torch.float32)
        model.eval()
        cases = []
        with torch.inference_mode():
            for k, prompt in enumerate(chat["prompts"][:PROMPTS]):
                ids = prompt["ids"]
                o = model(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1)
                last, past = o.logits[0, -1].float(), o.past_key_values
                tensors[f"{name}.{k}.logits_final"] = last.clone().contiguous()
                greedy, margins = [], []
                for _ in range(GREEDY):
                    v = torch.topk(last, 2).values
                    nxt = int(torch.argmax(last))
                    greedy.append(nxt)
                    margins.append(float(v[0] - v[1]))
                    o = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
                    last, past = o.logits[0, -1].float(), o.past_key_values
                cases.append({"prompt": k, "greedy_ids": greedy, "margins": margins})
        record["files"][f"{name}.gguf"] = {"sha256": sha256(path), "cases": cases}
    record["reference"] = (
        f"transformers {metadata.version('transformers')} GGUF loading (gguf {metadata.version('gguf')}), "
        f"torch {torch.__version__}, float32, 2 threads; greedy = argmax, EOS does not stop"
    )
    save_file(tensors, str(out / "kquant_logits.safetensors"))
    (out / "kquant_logits.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}/kquant_logits.safetensors", file=sys.stderr)


def extract(work, out):
    from importlib import metadata

    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    cases = []
    seen = {}
    files = [f"{n}.gguf" for n in FTYPES] + [f"tiny-{n}.gguf" for n in TINY_FTYPES]
    for name in files:
        path = work / name
        reader = GGUFReader(path)
        by_type = {}
        for t in reader.tensors:
            if len(t.shape) == 2:
                by_type.setdefault(t.tensor_type.name, []).append(t)
        for qtype, ts in sorted(by_type.items()):
            if qtype in ("F32", "F16", "BF16") or qtype in seen:
                continue
            seen[qtype] = name
            picks = [ts[0]] if len(ts) == 1 else [ts[0], ts[-1]]
            for i, t in enumerate(picks[:TENSORS]):
                raw = np.asarray(t.data)  # [rows, row bytes] of uint8 for the block types
                rows = raw[:ROWS].copy()
                values = dequantize(rows, t.tensor_type).astype(np.float32)
                key = f"{qtype}.{i}"
                tensors[f"{key}.bytes"] = rows.reshape(-1).astype(np.uint8)
                tensors[f"{key}.values"] = values.reshape(-1)
                cases.append(
                    {
                        "key": key,
                        "type": qtype,
                        "file": path.name,
                        "tensor": t.name,
                        "rows": int(rows.shape[0]),
                        "cols": int(values.shape[-1]),
                        "row_bytes": int(rows.shape[1]),
                    }
                )
    save_file(tensors, str(out / "kquants.safetensors"))
    quant = json.loads((work / "quantize.json").read_text())
    manifest = {
        "generator": "tests/golden/generate_kquants.py",
        "quantizer": f"llama_cpp.llama_model_quantize (llama-cpp-python {quant['llama_cpp_python']}), allow_requantize",
        "dequantizer": f"gguf.quants.dequantize (gguf {metadata.version('gguf')}, numpy {np.__version__})",
        "source": quant["source"],
        "source_sha256": quant["source_sha256"],
        "files": {n: sha256(work / n) for n in files},
        "cases": cases,
    }
    (out / "kquants.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {out}/kquants.safetensors: {len(cases)} cases", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "tiny":
        tiny(Path(sys.argv[2]))
    elif len(sys.argv) >= 4 and sys.argv[1] == "quantize":
        quantize(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:])
    elif len(sys.argv) == 4 and sys.argv[1] == "logits":
        logits(Path(sys.argv[2]), Path(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "extract":
        extract(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(__doc__)
