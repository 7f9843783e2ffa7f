//! Mutations of valid seed files. Structure-aware where the format has structure (a JSON value
//! tree, TOML lines, JSONL records, Jinja source, GGUF fields), then byte-level on top: flips,
//! truncation, splices, hostile integers, odd UTF-8.

use serde_json::{Map, Value, json};

use sealong_tests::SplitMix;

/// Integers that break size arithmetic: zero, one, the edges of u8/u16/u32/i32/u64/i64, and
/// counts that no file can back.
pub const HOSTILE_U64: &[u64] = &[
    0,
    1,
    2,
    3,
    7,
    31,
    32,
    255,
    256,
    65_535,
    65_536,
    (1 << 31) - 1,
    1 << 31,
    (1 << 32) - 1,
    1 << 32,
    1 << 40,
    (1 << 53) + 1,
    (1 << 63) - 1,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
];

/// Text tokens that break parsers when dropped anywhere: JSON non-numbers, overflows, lone
/// surrogates, stray delimiters, Jinja and template markers, control bytes.
const TEXT_TOKENS: &[&str] = &[
    "NaN",
    "-Infinity",
    "Infinity",
    "1e999",
    "-1e999",
    "-0",
    "18446744073709551616",
    "-9223372036854775809",
    "\"\\ud800\"",
    "\\ud800",
    "\\u0000",
    "\"",
    "\\",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "=",
    "\n",
    "\r\n",
    "\t",
    "\0",
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "<|im_start|>",
    "<|eot_id|>",
    "</s>",
    "\u{202e}",
    "\u{feff}",
    "\u{10ffff}",
    "e\u{301}",
    "😀",
];

/// Strings for JSON string values.
const HOSTILE_STRINGS: &[&str] = &[
    "",
    " ",
    "\0",
    "\n\n",
    "\u{202e}evil",
    "\u{feff}",
    "\u{10ffff}",
    "a\u{301}\u{301}\u{301}",
    "😀😀",
    "<|im_start|>assistant\n",
    "<|begin_of_text|>",
    "</s>",
    "{{ messages }}",
    "{% for x in y %}",
    "../../etc/passwd",
    "/abs/path",
    "C:x",
    "all-linear",
    "q_proj",
    "llama",
    "qwen2",
    "mistral",
    "gpt2",
    "llama3",
    "yarn",
    "linear",
    "mean",
    "cls",
    "max",
    "orpo",
    "sft",
    "length",
    "stop",
    "nan",
    "inf",
    "-inf",
    "1e400",
];

pub fn pick<'a, T>(rng: &mut SplitMix, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len())]
}

fn chance(rng: &mut SplitMix, num: usize, den: usize) -> bool {
    rng.below(den) < num
}

/// A hostile JSON scalar or small container.
pub fn hostile_value(rng: &mut SplitMix) -> Value {
    match rng.below(12) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 | 3 => json!(*pick(rng, HOSTILE_U64)),
        4 => json!(*pick(rng, &[-1i64, -2, -255, -65_536, -(1 << 31), -i64::MAX, i64::MIN])),
        5 => json!(*pick(rng, &[0.5f64, -0.0, 1e308, -1e308, 5e-324, 1e-9, 2.5e9, 0.1])),
        6..=8 => json!(*pick(rng, HOSTILE_STRINGS)),
        9 => json!("x".repeat(1 + rng.below(4096))),
        10 => json!([]),
        _ => json!({}),
    }
}

/// `[[[ ... v ... ]]]` or `{"a":{"a":...}}` `depth` levels deep.
fn nest(v: Value, depth: usize, objects: bool) -> Value {
    (0..depth).fold(v, |acc, _| if objects { json!({ "a": acc }) } else { json!([acc]) })
}

/// Every object key in `v` (to move known keys to wrong places).
pub fn keys_of(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if !out.contains(k) {
                    out.push(k.clone());
                }
                keys_of(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| keys_of(x, out)),
        _ => {}
    }
}

/// A random node of `v` (the root included), found by a random descent.
fn random_node<'a>(rng: &mut SplitMix, v: &'a mut Value) -> &'a mut Value {
    let descend = match v {
        Value::Object(m) => !m.is_empty() && !chance(rng, 1, 4),
        Value::Array(a) => !a.is_empty() && !chance(rng, 1, 4),
        _ => false,
    };
    if !descend {
        return v;
    }
    match v {
        Value::Object(m) => {
            let i = rng.below(m.len());
            let child = m.values_mut().nth(i).expect("index below len");
            random_node(rng, child)
        }
        Value::Array(a) => {
            let i = rng.below(a.len());
            random_node(rng, &mut a[i])
        }
        _ => unreachable!("only containers descend"),
    }
}

/// One structural edit of a JSON document: a node replaced by a hostile value, a key removed or
/// added (known keys from `keys`), an array emptied, duplicated or grown, deep nesting, a node
/// copied over another.
pub fn mutate_json_value(rng: &mut SplitMix, v: &mut Value, keys: &[String]) {
    let donor = random_node(rng, &mut v.clone()).clone();
    let node = random_node(rng, v);
    match rng.below(10) {
        0..=2 => *node = hostile_value(rng),
        3 => match node {
            Value::Object(m) if !m.is_empty() => {
                let i = rng.below(m.len());
                let k = m.keys().nth(i).cloned().expect("index below len");
                m.shift_remove(&k);
            }
            Value::Array(a) if !a.is_empty() => {
                let i = rng.below(a.len());
                a.remove(i);
            }
            other => *other = hostile_value(rng),
        },
        4 => {
            let key = if keys.is_empty() || chance(rng, 1, 4) {
                pick(rng, HOSTILE_STRINGS).to_string()
            } else {
                pick(rng, keys).clone()
            };
            let value = if chance(rng, 1, 2) { hostile_value(rng) } else { donor };
            match node {
                Value::Object(m) => {
                    m.insert(key, value);
                }
                Value::Array(a) => a.push(value),
                other => {
                    let mut m = Map::new();
                    m.insert(key, value);
                    *other = Value::Object(m);
                }
            }
        }
        5 => match node {
            Value::Array(a) if !a.is_empty() => {
                let i = rng.below(a.len());
                // Grown to at most ~200 KB more, so that cases stay small and fast.
                let x = a[i].clone();
                let size = serde_json::to_vec(&x).map_or(1, |v| v.len() + 1);
                let n = (*pick(rng, &[1usize, 2, 100, 3000])).min((200_000 / size).max(1));
                a.extend(std::iter::repeat_n(x, n));
            }
            Value::String(s) => {
                let n = *pick(rng, &[2usize, 16, 1000]);
                *s = s.repeat(n.min(200_000 / s.len().max(1)).max(1));
            }
            other => *other = json!([other.clone(), other.clone()]),
        },
        6 => {
            let depth = *pick(rng, &[2usize, 20, 100, 127, 140]);
            let objects = chance(rng, 1, 2);
            *node = nest(node.clone(), depth, objects);
        }
        7 => *node = donor,
        8 => {
            // Wrong type, same meaning: a number as a string, a string as a list, ...
            *node = match node.take() {
                Value::Number(n) => json!(n.to_string()),
                Value::String(s) => s.parse::<f64>().map_or_else(|_| json!([s]), |f| json!(f)),
                Value::Bool(b) => json!(u8::from(b)),
                Value::Array(mut a) => a.pop().unwrap_or(Value::Null),
                Value::Object(m) => Value::Array(m.into_iter().map(|(_, x)| x).collect()),
                Value::Null => json!(0),
            }
        }
        _ => {
            if let Value::String(s) = node {
                let at = (0..=s.len())
                    .filter(|&i| s.is_char_boundary(i))
                    .nth(rng.below(s.chars().count() + 1))
                    .unwrap_or(0);
                let tok: &&str = pick(rng, TEXT_TOKENS);
                s.insert_str(at, tok);
            } else {
                *node = hostile_value(rng);
            }
        }
    }
}

/// Byte-level edits of any file: bit flips, interesting bytes, deletions, insertions,
/// truncation, duplicated ranges, splices with another seed, hostile little-endian integers
/// (binary) or tokens (text).
pub fn mutate_bytes(rng: &mut SplitMix, data: &mut Vec<u8>, others: &[&[u8]], text: bool) {
    let ops = 1 + rng.below(4);
    for _ in 0..ops {
        let len = data.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = *pick(
                    rng,
                    &[
                        0u8, 0xff, 0x7f, 0x80, b'"', b'\\', b'{', b'[', b'\n', 0xc0, 0xed, 0xf4, b'0', b'9',
                    ],
                );
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below(16.min(len - i));
                data.drain(i..i + n);
            }
            3 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                data.splice(i..i, bytes);
            }
            4 if len > 0 => data.truncate(rng.below(len)),
            5 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below(64.min(len - i));
                let chunk = data[i..i + n].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, chunk);
            }
            6 if !others.is_empty() => {
                let other = *pick(rng, others);
                let (a, b) = (rng.below(len + 1), rng.below(other.len() + 1));
                data.truncate(a);
                data.extend_from_slice(&other[b..]);
            }
            _ if text => {
                let i = rng.below(len + 1);
                let tok = pick(rng, TEXT_TOKENS).as_bytes().to_vec();
                data.splice(i..i, tok);
            }
            _ if len >= 8 => {
                let i = rng.below(len - 7);
                let v = *pick(rng, HOSTILE_U64);
                if chance(rng, 1, 2) {
                    data[i..i + 8].copy_from_slice(&v.to_le_bytes());
                } else {
                    data[i..i + 4].copy_from_slice(&(v as u32).to_le_bytes());
                }
            }
            _ => data.push(rng.next_u64() as u8),
        }
    }
}

/// A JSON file: mostly structural edits (the result still parses as JSON, so the parser's own
/// checks are what is tested), sometimes byte-level on top (malformed JSON).
pub fn mutate_json(rng: &mut SplitMix, data: &mut Vec<u8>, others: &[&[u8]]) {
    match serde_json::from_slice::<Value>(data) {
        Ok(mut v) if !chance(rng, 1, 8) => {
            let mut keys = Vec::new();
            keys_of(&v, &mut keys);
            for _ in 0..1 + rng.below(3) {
                mutate_json_value(rng, &mut v, &keys);
            }
            *data = if chance(rng, 1, 2) {
                serde_json::to_vec(&v).expect("a Value serializes")
            } else {
                serde_json::to_vec_pretty(&v).expect("a Value serializes")
            };
            if chance(rng, 1, 4) {
                mutate_bytes(rng, data, others, true);
            }
        }
        _ => mutate_bytes(rng, data, others, true),
    }
}

/// A JSONL file: records edited structurally, lines deleted, duplicated (repeated ids),
/// blanked, given CRLF, cut without a newline, replaced by non-objects or invalid UTF-8.
pub fn mutate_jsonl(rng: &mut SplitMix, data: &mut Vec<u8>, others: &[&[u8]]) {
    let mut lines: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    for _ in 0..1 + rng.below(3) {
        let n = lines.len();
        let i = rng.below(n);
        match rng.below(10) {
            0..=4 => {
                let mut l = std::mem::take(&mut lines[i]);
                if let Ok(mut v) = serde_json::from_slice::<Value>(&l) {
                    let mut keys = Vec::new();
                    keys_of(&v, &mut keys);
                    mutate_json_value(rng, &mut v, &keys);
                    l = serde_json::to_vec(&v).expect("a Value serializes");
                } else {
                    mutate_bytes(rng, &mut l, &[], true);
                }
                lines[i] = l;
            }
            5 => {
                let l = lines[i].clone();
                lines.insert(rng.below(n + 1), l);
            }
            6 if n > 1 => {
                lines.remove(i);
            }
            7 => lines.insert(i, pick(rng, &[&b""[..], b"   ", b"\r", b"\t \r"]).to_vec()),
            8 => lines.insert(
                i,
                pick(
                    rng,
                    &[&b"[1]"[..], b"\"x\"", b"null", b"{", b"{}", b"\xff\xfe", b"{\"id\": 1}"],
                )
                .to_vec(),
            ),
            _ => {
                let l = &mut lines[i];
                if chance(rng, 1, 2) {
                    l.push(b'\r');
                } else {
                    let cut = rng.below(l.len() + 1);
                    l.truncate(cut);
                }
            }
        }
    }
    *data = lines.join(&b'\n');
    if chance(rng, 1, 5) {
        mutate_bytes(rng, data, others, true);
    }
}

/// TOML values that break typed fields.
const HOSTILE_TOML: &[&str] = &[
    "-1",
    "0",
    "1e400",
    "nan",
    "inf",
    "-inf",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551616",
    "0.0",
    "1e-300",
    "\"\"",
    "\"x\"",
    "\"../../etc\"",
    "[]",
    "[1, \"a\"]",
    "{}",
    "{ a = 1 }",
    "true",
    "1979-05-27T07:32:00Z",
    "'''\nmulti\n'''",
];

/// A TOML file: lines deleted, duplicated (repeated keys and tables), values replaced with
/// hostile ones, keys moved to other tables, then byte-level edits.
pub fn mutate_toml(rng: &mut SplitMix, data: &mut Vec<u8>, others: &[&[u8]]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let keys: Vec<String> = lines
        .iter()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
        .filter(|k| !k.is_empty() && !k.starts_with('#'))
        .collect();
    for _ in 0..1 + rng.below(3) {
        let n = lines.len().max(1);
        let i = rng.below(n).min(lines.len().saturating_sub(1));
        if lines.is_empty() {
            lines.push(String::new());
        }
        match rng.below(8) {
            0..=3 => {
                let l = lines[i].clone();
                if let Some((k, _)) = l.split_once('=') {
                    lines[i] = format!("{k}= {}", pick(rng, HOSTILE_TOML));
                } else if !keys.is_empty() {
                    lines.insert(i, format!("{} = {}", pick(rng, &keys), pick(rng, HOSTILE_TOML)));
                }
            }
            4 if lines.len() > 1 => {
                lines.remove(i);
            }
            5 => {
                let l = lines[i].clone();
                let at = rng.below(lines.len() + 1);
                lines.insert(at, l);
            }
            6 => {
                let t = pick(
                    rng,
                    &[
                        "[train]",
                        "[synth]",
                        "[sample]",
                        "[score]",
                        "[eval]",
                        "[x]",
                        "[[train]]",
                        "[sample.remote]",
                    ],
                );
                let at = rng.below(lines.len() + 1);
                lines.insert(at, t.to_string());
            }
            _ if !keys.is_empty() => {
                let at = rng.below(lines.len() + 1);
                lines.insert(at, format!("{} = {}", pick(rng, &keys), pick(rng, HOSTILE_TOML)));
            }
            _ => {}
        }
    }
    *data = lines.join("\n").into_bytes();
    data.push(b'\n');
    if chance(rng, 1, 4) {
        mutate_bytes(rng, data, others, true);
    }
}

/// Jinja fragments: loops, recursion, huge ranges and repetitions, exceptions, filters, bad
/// syntax.
const JINJA: &[&str] = &[
    "{% for m in messages %}{{ m['content'] }}{% endfor %}",
    "{% for m in messages %}",
    "{% endfor %}",
    "{% if messages[0]['role'] == 'system' %}",
    "{% endif %}",
    "{{ messages[100]['content'] }}",
    "{{ messages[0]['content'] * 100 }}",
    "{{ 'x' * 1000000000 }}",
    "{{ range(1000000000) | list | length }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "{{ raise_exception('bad') }}",
    "{{ strftime_now('%Y-%m-%d %H %Q %') }}",
    "{{ messages | tojson }}",
    "{{ messages[0].content.split('\\n') | join('|') }}",
    "{{ bos_token + eos_token }}",
    "{% set ns = namespace(x=0) %}{% set ns.x = ns.x + 1 %}",
    "{{ 10 ** 1000 }}",
    "{{ 1 / 0 }}",
    "{{ 1 // 0 }}",
    "{{ (2 ** 62) * 4 }}",
    "{{ x.y.z }}",
    "{{ none.x }}",
    "{{ messages[-999] }}",
    "{{ 'abc'[::-1] }}",
    "{{ 'abc'[9999999999:] }}",
    "{{ [1,2,3] | batch(0) | list }}",
    "{{ 'a' | center(1000000000) }}",
    "{{ 'a' | indent(1000000000) }}",
    "{% include 'x' %}",
    "{% extends 'x' %}",
    "{% raw %}",
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "{{ tools | length }}",
    "{{ add_generation_prompt }}",
];

/// A chat template case (`{"template", "messages", "add_generation_prompt", "bos", "eos"}`):
/// the template source edited as text (Jinja fragments inserted, ranges deleted or duplicated,
/// bytes flipped), or the messages edited as JSON.
pub fn mutate_template_case(rng: &mut SplitMix, data: &mut Vec<u8>, others: &[&[u8]]) {
    let Ok(mut v) = serde_json::from_slice::<Value>(data) else {
        return mutate_bytes(rng, data, others, true);
    };
    if chance(rng, 2, 3) {
        let mut src = v["template"].as_str().unwrap_or_default().as_bytes().to_vec();
        for _ in 0..1 + rng.below(3) {
            if chance(rng, 1, 2) {
                let at = rng.below(src.len() + 1);
                src.splice(at..at, pick(rng, JINJA).bytes());
            } else {
                mutate_bytes(rng, &mut src, &[], true);
            }
        }
        v["template"] = json!(String::from_utf8_lossy(&src));
    } else {
        let mut keys = vec!["role".to_string(), "content".to_string(), "tool_calls".to_string()];
        keys_of(&v["messages"], &mut keys);
        let mut messages = v["messages"].take();
        mutate_json_value(rng, &mut messages, &keys);
        v["messages"] = messages;
        if chance(rng, 1, 4) {
            v["add_generation_prompt"] = json!(rng.below(2) == 0);
        }
    }
    *data = serde_json::to_vec(&v).expect("a Value serializes");
}
