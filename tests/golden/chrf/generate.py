#!/usr/bin/env python3
"""Golden chrF values for sealong-rs's `mbr::chrf` (the `--method chrf` MBR utility).

Reference implementation: sacrebleu 2.6.0 (https://github.com/mjpost/sacrebleu, Apache-2.0),
`sacrebleu.metrics.CHRF()` with its defaults: char_order 6, word_order 0, beta 2, case kept,
whitespace removed, no epsilon smoothing. numpy 2.4.6 (BSD-3-Clause) for the MBR row means.
Python 3.11.

Writes chrf.json (beside this script) with:
  * "pairs": (hypothesis, reference, score) cases, score = CHRF().sentence_score(hyp, [ref]).score
    on sacrebleu's 0..100 scale: ASCII, unicode (accents, combining marks, CJK, emoji), empty
    strings, whitespace only (Python's whitespace, incl. U+00A0, U+3000 and U+001C..U+001F),
    repeated n-grams, long answers;
  * "mbr": sample sets taken from the existing fixtures (the answer groups of ../rouge.json and
    ../mbr_embedding.json) plus one unicode set, each with the chrF matrix
    (m[i][j] = score of answers[i] as hypothesis against answers[j] as reference), numpy's row
    means (`m.mean(axis=1)`), the first argmax and the bottom-half pool of a stable ascending sort.

The Rust test (tests/tests/suite/mbr_golden.rs) reads only chrf.json; CI does not run Python.
Regenerate:  python3 -m venv /tmp/venv && /tmp/venv/bin/pip install sacrebleu==2.6.0 numpy==2.4.6
             /tmp/venv/bin/python tests/golden/chrf/generate.py
"""

import json
import os
import sys

import numpy as np
import sacrebleu
from sacrebleu.metrics import CHRF

HERE = os.path.dirname(os.path.abspath(__file__))

PAIRS = [
    ("the cat sat on the mat", "the cat sat on the mat"),
    ("the cat sat on the mat", "a cat was sitting on the mat"),
    ("a cat was sitting on the mat", "the cat sat on the mat"),
    ("The Cat", "the cat"),
    ("abc", "xyz"),
    ("ab", "abc"),
    ("abc", "ab"),
    ("aaaaaaa", "aaa"),
    ("aaa", "aaaaaaa"),
    ("", ""),
    ("", "the answer"),
    ("the answer", ""),
    ("   ", "the answer"),
    ("the answer", " \t\n "),
    ("a", "a"),
    ("a", "b"),
    ("the  answer\tis\n42", "theansweris42"),
    ("Paris", "The answer is Paris."),
    ("The answer is Paris.", "Paris"),
    ("Café au lait, naïve résumé", "cafe au lait, naive resume"),
    ("e\u0301te\u0301", "\u00e9t\u00e9"),
    ("東京は日本の首都です", "日本の首都は東京です"),
    ("👍🏽 looks good 🎉", "looks good 👍"),
    ("no\u00a0break\u3000space", "no break space"),
    ("sep\x1cara\x1ftors", "separators"),
    ("zero\u200bwidth", "zerowidth"),
    ("1,234.56 USD", "1234.56 USD"),
    (
        "Barack Obama was the 44th president of the United States, serving from 2009 to 2017.",
        "The 44th U.S. president was Barack Obama (2009-2017).",
    ),
]

UNICODE_SET = [
    "Der Eiffelturm steht in Paris.",
    "Der Eiffelturm befindet sich in Paris, Frankreich.",
    "エッフェル塔はパリにあります。",
    "It is in Paris 🇫🇷",
    "",
]


def chrf(hyp, ref):
    return CHRF().sentence_score(hyp, [ref]).score


def signature():
    metric = CHRF()
    metric.sentence_score("a", ["a"])
    return str(metric.get_signature())


def mbr(name, answers):
    m = np.array([[chrf(h, r) for r in answers] for h in answers], dtype=np.float64)
    scores = m.mean(axis=1)
    order = np.argsort(scores, kind="stable")
    return {
        "name": name,
        "answers": answers,
        "matrix": m.tolist(),
        "scores": scores.tolist(),
        "chosen": int(np.argmax(scores)),
        "rejected_pool": [int(i) for i in order[: len(answers) // 2]],
    }


def main():
    with open(os.path.join(HERE, "..", "rouge.json"), encoding="utf-8") as f:
        rouge_groups = json.load(f)["mbr"]["groups"]
    with open(os.path.join(HERE, "..", "mbr_embedding.json"), encoding="utf-8") as f:
        emb_groups = json.load(f)["groups"]
    sets = [mbr(f"rouge.json mbr group {g['index']}", g["answers"]) for g in rouge_groups]
    sets += [mbr(f"mbr_embedding.json group {g['index']}", g["answers"]) for g in emb_groups]
    sets.append(mbr("unicode", UNICODE_SET))
    out = {
        "reference": {
            "sacrebleu": sacrebleu.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
            "metric": "CHRF() defaults: char_order 6, word_order 0, beta 2, lowercase False, "
            "whitespace False, eps_smoothing False; sentence_score(hyp, [ref]).score",
            "signature": signature(),
        },
        "pairs": [{"hypothesis": h, "reference": r, "score": chrf(h, r)} for h, r in PAIRS],
        "mbr": sets,
    }
    path = os.path.join(HERE, "chrf.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {path}: {len(out['pairs'])} pairs, {len(sets)} MBR sets")


if __name__ == "__main__":
    main()
