//! Bad input gets a clear error naming the file and line (or key), never a panic, and nothing
//! already written is lost. Includes a property test that feeds random and mutated lines to the
//! readers.

use std::path::Path;

use proptest::prelude::*;
use sealong::data::jsonl::parse_lines;
use sealong::data::records::{LongBenchRecord, MultiHopRecord, MusiqueRecord, Paragraph};
use sealong::loading::{ModelPath, TextAssets};
use sealong::text::Strategy;
use sealong_tests::{data_file, sealong, smollm_path};

fn synth_err(input_bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, input_bytes).expect("write");
    let out = dir.path().join("out.jsonl");
    let e = sealong(&[
        "synth",
        "--source",
        "musique",
        "--input",
        input.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
        "--model",
        smollm_path().to_str().expect("utf8"),
    ])
    .expect_err("bad input must fail");
    assert!(
        !out.exists() || std::fs::read(&out).expect("read").is_empty(),
        "nothing may be written"
    );
    format!("{e:#}")
}

#[test]
fn synth_input_errors_name_file_and_line() {
    let good = std::fs::read_to_string(data_file("musique/train.jsonl")).expect("data");
    let first = good.lines().next().expect("line");
    let msg = synth_err(format!("{first}\n{{not json\n").as_bytes());
    assert!(msg.contains("in.jsonl:2: malformed JSON"), "{msg}");
    let missing = first.replacen("\"question\"", "\"questionX\"", 1);
    let msg = synth_err(format!("{first}\n{missing}\n").as_bytes());
    assert!(msg.contains("in.jsonl:2: missing field `question`"), "{msg}");
    let msg = synth_err(b"");
    assert!(msg.contains("no records"), "{msg}");
    let mut bytes = format!("{first}\n").into_bytes();
    bytes.extend_from_slice(b"{\"id\": \"\xff\xfe\"}\n");
    let msg = synth_err(&bytes);
    assert!(msg.contains("in.jsonl:2: not valid UTF-8"), "{msg}");
    let dup = format!("{first}\n{first}\n");
    let msg = synth_err(dup.as_bytes());
    assert!(msg.contains("appears twice"), "{msg}");
}

#[test]
fn unknown_strategy_lists_the_valid_ones() {
    let e = "plan_solve".parse::<Strategy>().unwrap_err().to_string();
    assert!(
        e.contains("unknown strategy \"plan_solve\"") && e.contains("fact_and_reflection"),
        "{e}"
    );
}

#[test]
fn wrong_model_paths_and_corrupt_gguf_are_named() {
    let e = ModelPath::detect(Path::new("/no/such/model.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/no/such/model.gguf") && e.contains("cannot open"), "{e}");
    let dir = tempfile::tempdir().expect("tmp");
    let e = ModelPath::detect(dir.path()).unwrap_err().to_string();
    assert!(e.contains("neither config.json nor tokenizer.json"), "{e}");
    // A GGUF cut off in its metadata.
    let bytes = std::fs::read(smollm_path()).expect("gguf");
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..200_000]).expect("write");
    let e = TextAssets::load(&ModelPath::detect(&cut).expect("magic ok"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cut.gguf") && (e.contains("truncated") || e.contains("past the end") || e.contains("remain")),
        "{e}"
    );
    let not_gguf = dir.path().join("x.gguf");
    std::fs::write(&not_gguf, b"GGML....").expect("write");
    let e = ModelPath::detect(&not_gguf).unwrap_err().to_string();
    assert!(e.contains("not a GGUF file"), "{e}");
}

fn real_lines() -> Vec<String> {
    [
        "musique/train.jsonl",
        "hotpotqa/dev.jsonl",
        "2wiki/dev.jsonl",
        "musique/paragraphs.jsonl",
    ]
    .iter()
    .map(|f| {
        std::fs::read_to_string(data_file(f))
            .expect("data")
            .lines()
            .next()
            .expect("line")
            .to_string()
    })
    .collect()
}

fn parse_all(bytes: &[u8]) {
    let p = Path::new("fuzz.jsonl");
    // Each reader either parses or returns an error that names the file; none may panic.
    for r in [
        parse_lines::<MusiqueRecord>(bytes, p).err(),
        parse_lines::<MultiHopRecord>(bytes, p).err(),
        parse_lines::<LongBenchRecord>(bytes, p).err(),
        parse_lines::<Paragraph>(bytes, p).err(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(r.to_string().starts_with("fuzz.jsonl:"), "{r}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        parse_all(&bytes);
    }

    #[test]
    fn mutated_real_lines_never_panic(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..12),
    ) {
        let mut bytes = real_lines()[which].clone().into_bytes();
        for (idx, byte, kind) in edits {
            if bytes.is_empty() { break; }
            let i = idx.index(bytes.len());
            match kind {
                0 => bytes[i] = byte,          // overwrite
                1 => { bytes.remove(i); }     // delete
                _ => bytes.insert(i, byte),    // insert
            }
        }
        bytes.push(b'\n');
        parse_all(&bytes);
    }
}
