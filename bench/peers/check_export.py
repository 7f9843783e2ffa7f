#!/usr/bin/env python3
"""Check: sealong's exports load in transformers / peft and compute what sealong computes.

Usage: python3 check_export.py [OUT_DIR]    (installs and re-runs itself in the torch venv)

1. Runs the SmolLM2 export test (tests/tests/suite/export.rs) with SEALONG_EXPORT_CHECK_DIR=OUT_DIR: it
   puts LoRA adapters with small random B on all 7 projections of SmolLM2-135M-Instruct (Q4_1 GGUF),
   writes the merged f32 HF directory (OUT_DIR/merged), the PEFT adapter (OUT_DIR/adapter) and
   sealong's last-position logits for the golden prompt (OUT_DIR/sealong_logits.json).
2. Runs `sealong generate --dump-logits` on the merged directory and on the GGUF with
   `--adapter OUT_DIR/adapter` (the CLI paths).
3. Loads (a) the merged directory with transformers (AutoTokenizer + AutoModelForCausalLM, float32)
   and (b) the base GGUF with transformers (dequantized to float32) plus the adapter with peft, and
   compares last-position logits after the chat-templated prompt with sealong's, and the prompt ids
   transformers' tokenizer of the merged directory gives with sealong's.
4. The other direction: makes an adapter with peft (r=4, alpha=8, all 7 projections, random B) on the
   GGUF and compares its logits with `sealong generate --adapter` on that adapter directory.
Last line: one JSON object with the max |delta| figures.
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
if os.environ.get("PEERS_VENV") != "torch":
    os.execvp("bash", ["bash", f"{HERE}/_venv.sh", "torch", "--", os.path.abspath(__file__), *sys.argv[1:]])

import peft
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(HERE))
out = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="sealong-export-check-")
os.makedirs(out, exist_ok=True)
torch.set_num_threads(max(1, os.cpu_count() or 1))


def run(cmd, **env):
    print("[check_export]", " ".join(cmd), file=sys.stderr)
    subprocess.run(["nice", "-n", "19", *cmd], cwd=ROOT, check=True, env={**os.environ, **env})


run(["cargo", "test", "-q", "-p", "sealong-tests", "--test", "export",
     "smollm_merged_export_generates_like_the_adapted_model"], SEALONG_EXPORT_CHECK_DIR=out)
s = json.load(open(os.path.join(out, "sealong_logits.json")))
merged, adapter, gguf = s["merged_dir"], s["adapter_dir"], s["base_model"]
message = s["user_message"]

dumps = {}
for name, extra in [("cli_merged", ["--model", merged]), ("cli_adapter", ["--model", gguf, "--adapter", adapter])]:
    path = os.path.join(out, f"{name}.json")
    run(["cargo", "run", "-q", "-p", "sealong-cli", "--", "generate", *extra, "--device", "cpu",
         "--prompt", message, "--max-new-tokens", "8", "--dump-logits", path])
    dumps[name] = json.load(open(path))

tok = AutoTokenizer.from_pretrained(merged)
enc = tok.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True, tokenize=True)
hf_ids = list(enc["input_ids"] if isinstance(enc, (dict, transformers.BatchEncoding)) else enc)
ids = s["prompt_ids"]
batch = torch.tensor([ids])


@torch.no_grad()
def last_logits(model):
    return model(input_ids=batch).logits[0, -1].float()


hf_merged = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
l_merged = last_logits(hf_merged)
with torch.no_grad():
    hf_greedy = hf_merged.generate(batch, max_new_tokens=8, do_sample=False)[0, len(ids):].tolist()
del hf_merged
d, f = os.path.split(gguf)
base = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
peft_model = peft.PeftModel.from_pretrained(base, adapter).eval()
l_peft = last_logits(peft_model)
with peft_model.disable_adapter():
    l_base = last_logits(peft_model)

# (c) the other direction: an adapter peft makes (r=4, alpha=8, all 7 projections, random B) is
# read by `sealong generate --adapter`.
torch.manual_seed(0)
base2 = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
made = peft.get_peft_model(base2, peft.LoraConfig(
    r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])).eval()
with torch.no_grad():
    for name, p in made.named_parameters():
        if "lora_B" in name:
            p.normal_(0.0, 0.02)
peft_dir = os.path.join(out, "peft_made_adapter")
made.save_pretrained(peft_dir)
l_made = last_logits(made)
path = os.path.join(out, "cli_peft_made.json")
run(["cargo", "run", "-q", "-p", "sealong-cli", "--", "generate", "--model", gguf, "--adapter", peft_dir,
     "--device", "cpu", "--prompt", message, "--max-new-tokens", "8", "--dump-logits", path])
dumps["cli_peft_made"] = json.load(open(path))


def delta(a, b):
    return float((torch.as_tensor(a, dtype=torch.float32) - torch.as_tensor(b, dtype=torch.float32)).abs().max())


figures = {
    "hf_tokenizer_ids_equal": hf_ids == ids,
    "transformers_merged_vs_sealong_merged_cpu": delta(l_merged, s["merged_cpu_last_logits"]),
    "transformers_merged_vs_sealong_generate_merged": delta(l_merged, dumps["cli_merged"]["last_logits"]),
    "peft_gguf_adapter_vs_sealong_generate_adapter": delta(l_peft, dumps["cli_adapter"]["last_logits"]),
    "peft_gguf_adapter_vs_sealong_burn_adapted": delta(l_peft, s["adapted_burn_last_logits"]),
    "transformers_merged_vs_peft_gguf_adapter": delta(l_merged, l_peft),
    "peft_made_adapter_vs_sealong_generate_adapter": delta(l_made, dumps["cli_peft_made"]["last_logits"]),
    "argmax": {"transformers_merged": int(l_merged.argmax()), "peft": int(l_peft.argmax()),
               "sealong": int(torch.tensor(s["merged_cpu_last_logits"]).argmax())},
    "greedy_8_equal": hf_greedy == dumps["cli_merged"]["generated_ids"][:len(hf_greedy)],
    "logit_scale": float(l_merged.abs().max()),
    "adapter_moves_logits_by": delta(l_peft, l_base),  # so the deltas above are not vacuous
}
for k, v in figures.items():
    print(f"{k}: {v}")
print(json.dumps({"check": "export", "out_dir": out, "torch": torch.__version__,
                  "transformers": transformers.__version__, "peft": peft.__version__, **figures}))
