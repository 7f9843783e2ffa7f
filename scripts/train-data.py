#!/usr/bin/env python3
"""The shipped training questions (data/*/train*.jsonl): where they come from and what they must not share.

    python3 scripts/train-data.py check [--min-questions 1000]
        Reads every training file and every other question file under data/ (dev sets, and any
        test or long-evaluation source file shipped there), and fails, naming file and line, when
        a training record
          - repeats an id or a normalized question of another training record, or
          - has the id or the normalized question of any record in a non-training file,
        or when the training files hold fewer than --min-questions questions in total. Prints
        the count per file. The Rust test tests/tests/suite/train_data.rs checks the same.

    python3 scripts/train-data.py take --source FILE [FILE ...] --format 2wiki --out data/2wiki/train.jsonl
        Appends the records of each FILE, in the order given (a JSON list or JSONL of original
        dataset records, as a public repository redistributes them), to a training file, record
        by record: each record keeps exactly its dataset's fields, in the order the shipped
        files use, with their values unchanged (fields a redistributing repository added, such
        as its own annotations, are left out). Records that are not of the format, MuSiQue
        records marked unanswerable, and records that overlap a non-training file or another
        training record (by id or normalized question) are skipped and counted.

    python3 scripts/train-data.py rebuild --questions FILE --docs FILE --format 2wiki --out data/2wiki/train-rebuilt.jsonl
        For a repository that redistributes a dataset's train questions without their contexts
        ({id, question, answer, type, supporting_facts}, a JSON list or JSONL) beside a pool of
        the paragraphs of those contexts ({title, content: [sentence, ...]}, a JSON list, each
        title once): appends one record per question to a training file, in the format's field
        order, whose `context` holds the question's supporting paragraphs, looked up by title in
        the pool, as [title, [sentence, ...]] in the order the supporting facts first name them.
        The other fields keep their values (`id` is written as `_id`); fields the source does not
        have (2Wiki's `evidences`, HotpotQA's `level`) are left out. Questions are skipped and
        counted as `take` does, and also when a supporting title is not in the pool or a
        supporting sentence index is not an index of that paragraph's sentences. Then compares
        each supporting paragraph written with the same title's paragraphs in the other files of
        the output's directory (contexts of dataset records, {title, text} pools) and prints how
        many have the same sentences, the same text once sentences are joined, the same text once
        whitespace is ignored, or a different text.

All three take --data DIR (before the command) to work on another data directory, e.g. a copy.

A question is normalized by lowercasing it, turning every character that is not a letter or a
digit into a space, and collapsing whitespace, so that case, punctuation and spacing variants of
one question count as the same question.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"

# Each dataset's own fields, in the order the shipped files write them.
FIELDS = {
    "musique": ["id", "paragraphs", "question", "question_decomposition", "answer", "answer_aliases", "answerable"],
    "hotpotqa": ["_id", "question", "answer", "type", "level", "supporting_facts", "context"],
    "2wiki": ["_id", "type", "question", "context", "supporting_facts", "evidences", "answer"],
}


def normalize(question):
    return " ".join("".join(c if c.isalnum() else " " for c in question.lower()).split())


def record_id(r):
    v = r.get("id", r.get("_id"))
    return None if v is None else str(v)


def record_question(r):
    # LongBench-style files keep the question in `input`.
    q = r.get("question", r.get("input"))
    return q if isinstance(q, str) else None


def read_records(path):
    """(line, record) pairs of a JSONL file, or of a JSON list (line = position in the list)."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        return list(enumerate(json.loads(text), start=1))
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                out.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: malformed JSON: {e}")
    return out


def is_train(path):
    return path.name.startswith("train")


def question_files(data):
    """Training files and the other question files under data/ (pools have no questions)."""
    train, other = [], []
    for path in sorted(Path(data).glob("*/*.jsonl")):
        recs = read_records(path)
        if not recs or record_question(recs[0][1]) is None:
            continue
        (train if is_train(path) else other).append((path, recs))
    return train, other


def shown(path):
    try:
        return path.resolve().relative_to(ROOT)
    except ValueError:
        return path


def forbidden_keys(other):
    """id -> where, normalized question -> where, over every non-training question file."""
    ids, questions = {}, {}
    for path, recs in other:
        rel = shown(path)
        for line, r in recs:
            i = record_id(r)
            if i is not None:
                ids.setdefault(i, f"{rel}:{line}")
            q = record_question(r)
            if q is not None:
                questions.setdefault(normalize(q), f"{rel}:{line}")
    return ids, questions


def check(args):
    train, other = question_files(args.data)
    ids, questions = forbidden_keys(other)
    seen_ids, seen_q = {}, {}
    problems = []
    total = 0
    for path, recs in train:
        rel = shown(path)
        for line, r in recs:
            here = f"{rel}:{line}"
            i, q = record_id(r), record_question(r)
            if i is None or q is None:
                problems.append(f"{here}: no id or question")
                continue
            nq = normalize(q)
            if i in ids:
                problems.append(f"{here}: id {i!r} is also in {ids[i]}")
            if nq in questions:
                problems.append(f"{here}: question {q!r} is also in {questions[nq]}")
            if i in seen_ids:
                problems.append(f"{here}: id {i!r} repeats {seen_ids[i]}")
            if nq in seen_q:
                problems.append(f"{here}: question {q!r} repeats {seen_q[nq]}")
            seen_ids.setdefault(i, here)
            seen_q.setdefault(nq, here)
        print(f"{rel}: {len(recs)} training questions")
        total += len(recs)
    for path, recs in other:
        print(f"{shown(path)}: {len(recs)} questions (held out from training)")
    print(f"total: {total} training questions in {len(train)} files")
    if total < args.min_questions:
        problems.append(f"only {total} training questions; at least {args.min_questions} are required")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


def training_keys(train):
    """The ids and normalized questions of the training records already shipped."""
    seen_ids, seen_q = set(), set()
    for _, recs in train:
        for _, r in recs:
            seen_ids.add(record_id(r))
            seen_q.add(normalize(record_question(r) or ""))
    return seen_ids, seen_q


class Admission:
    """What `take` and `rebuild` let into a training file: a record whose id and normalized
    question are in no held-out file and in no training record shipped or already taken."""

    def __init__(self, data):
        train, other = question_files(data)
        self.held_ids, self.held_q = forbidden_keys(other)
        self.seen_ids, self.seen_q = training_keys(train)

    def refuse(self, i, nq):
        """None when the record is new (it is then counted as seen), else the count it goes to."""
        if i in self.held_ids or nq in self.held_q:
            return "overlaps_held_out"
        if i in self.seen_ids or nq in self.seen_q:
            return "repeats_training"
        self.seen_ids.add(i)
        self.seen_q.add(nq)
        return None


def append_lines(out, lines):
    with out.open("a", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def take(args):
    fields = FIELDS[args.format]
    out = Path(args.out)
    admission = Admission(args.data)
    counts = dict(taken=0, not_this_format=0, unanswerable=0, overlaps_held_out=0, repeats_training=0)
    lines = []
    records = [r for source in args.source for _, r in read_records(Path(source))]
    for r in records:
        if not isinstance(r, dict) or any(f not in r for f in fields):
            counts["not_this_format"] += 1
            continue
        if args.format == "musique" and r["answerable"] is not True:
            counts["unanswerable"] += 1
            continue
        refused = admission.refuse(str(record_id(r)), normalize(r["question"]))
        if refused:
            counts[refused] += 1
            continue
        lines.append(json.dumps({f: r[f] for f in fields}, ensure_ascii=False))
        counts["taken"] += 1
    append_lines(out, lines)
    sources = args.source[0] if len(args.source) == 1 else f"{len(args.source)} files ({args.source[0]} ...)"
    print(f"{sources} -> {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def read_pool(path):
    """title -> sentences of a JSON list of {title, content}; a title given twice must have one text."""
    pool = {}
    for n, d in read_records(Path(path)):
        if not isinstance(d, dict) or not isinstance(d.get("title"), str) or not isinstance(d.get("content"), list):
            sys.exit(f"{path}:{n}: not a {{title, content: [sentence, ...]}} record")
        if pool.setdefault(d["title"], d["content"]) != d["content"]:
            sys.exit(f"{path}:{n}: title {d['title']!r} is given twice with different texts")
    return pool


def supporting_paragraphs(r, pool):
    """[title, sentences] for each supporting title in first-named order, or why there are none."""
    facts = r["supporting_facts"]
    if not isinstance(facts, list) or not facts:
        return "not_this_format"
    context, placed = [], set()
    for fact in facts:
        if not (isinstance(fact, list) and len(fact) == 2 and isinstance(fact[0], str)):
            return "not_this_format"
        title, sent = fact
        if title not in pool:
            return "missing_title"
        if not (isinstance(sent, int) and not isinstance(sent, bool) and 0 <= sent < len(pool[title])):
            return "bad_sentence_index"
        if title not in placed:
            placed.add(title)
            context.append([title, pool[title]])
    return context


def other_copies(directory, out):
    """title -> list of (sentences or None, text) over the other files of the output's directory."""
    copies = {}
    for path in sorted(Path(directory).glob("*.jsonl")):
        if path.resolve() == out.resolve():
            continue
        for _, r in read_records(path):
            if not isinstance(r, dict):
                continue
            if isinstance(r.get("context"), list):
                for title, sentences in r["context"]:
                    copies.setdefault(title, []).append((sentences, " ".join(sentences)))
            elif isinstance(r.get("title"), str) and isinstance(r.get("text"), str):
                copies.setdefault(r["title"], []).append((None, r["text"]))
    return copies


def compare(context, copies, agree):
    """Counts, per supporting paragraph, its best agreement with another copy of the same title."""
    squeeze = lambda text: "".join(text.split())
    for title, sentences in context:
        if title not in copies:
            agree["not_elsewhere"] += 1
            continue
        text = " ".join(sentences)
        found = copies[title]
        if any(s == sentences for s, _ in found):
            agree["same_sentences"] += 1
        elif any(t == text for _, t in found):
            agree["same_joined_text"] += 1
        elif any(squeeze(t) == squeeze(text) for _, t in found):
            agree["same_text_but_whitespace"] += 1
        else:
            agree["different_text"] += 1


def rebuild(args):
    out = Path(args.out)
    admission = Admission(args.data)
    pool = read_pool(args.docs)
    copies = other_copies(out.parent, out)
    counts = dict(taken=0, not_this_format=0, missing_title=0, bad_sentence_index=0, overlaps_held_out=0, repeats_training=0)
    agree = dict(same_sentences=0, same_joined_text=0, same_text_but_whitespace=0, different_text=0, not_elsewhere=0)
    lines = []
    for _, r in read_records(Path(args.questions)):
        if (not isinstance(r, dict) or record_id(r) is None
                or any(not isinstance(r.get(f), str) for f in ("question", "answer", "type"))
                or "supporting_facts" not in r):
            counts["not_this_format"] += 1
            continue
        context = supporting_paragraphs(r, pool)
        if isinstance(context, str):
            counts[context] += 1
            continue
        i = record_id(r)
        refused = admission.refuse(i, normalize(r["question"]))
        if refused:
            counts[refused] += 1
            continue
        values = dict(r, _id=i, context=context)
        lines.append(json.dumps({f: values[f] for f in FIELDS[args.format] if f in values}, ensure_ascii=False))
        compare(context, copies, agree)
        counts["taken"] += 1
    append_lines(out, lines)
    print(f"{args.questions} + {args.docs} -> {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"supporting paragraphs written, against other copies in {shown(out.parent)}: "
          + ", ".join(f"{k} {v}" for k, v in agree.items()))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATA), help="the data directory (default: the repository's data/)")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="check counts and overlaps of the shipped training files")
    c.add_argument("--min-questions", type=int, default=1000)
    t = sub.add_parser("take", help="append original records of a source file to a training file")
    t.add_argument("--source", required=True, nargs="+", help="one or more source files, read in this order")
    t.add_argument("--format", required=True, choices=sorted(FIELDS))
    t.add_argument("--out", required=True)
    r = sub.add_parser("rebuild", help="append train questions given without contexts, with their supporting paragraphs from a pool")
    r.add_argument("--questions", required=True, help="the questions: {id, question, answer, type, supporting_facts}")
    r.add_argument("--docs", required=True, help="the paragraph pool: a JSON list of {title, content: [sentence, ...]}")
    r.add_argument("--format", required=True, choices=["2wiki", "hotpotqa"])
    r.add_argument("--out", required=True)
    args = p.parse_args()
    return {"check": check, "take": take, "rebuild": rebuild}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
