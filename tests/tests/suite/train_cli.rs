//! `sealong train` end to end on the default SmolLM2 (Q4_1 GGUF dequantized for autodiff) with
//! short pairs cut from the shipped MuSiQue paragraphs:
//! - recipe precedence (defaults < --config TOML < flags), the outputs (metrics.jsonl per step,
//!   train_config.json, checkpoints, PEFT adapter, merged model), and that the merged model
//!   through `sealong generate` gives the same greedy tokens as the base with `--adapter`;
//! - a run killed with SIGKILL after a checkpoint, resumed with `--resume`, ends with the same
//!   adapter bytes as an uninterrupted run; without `--resume` the directory is refused;
//! - bad input: a malformed pairs line, a pair without `rejected`, an unknown recipe key, LoRA
//!   flags with `--full`: errors naming the file, line or key, and no output directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sealong_tests::{data_file, sealong, smollm_path};
use serde_json::{Value, json};

/// Six pairs: a paragraph's first sentence as context, a question, a right and a wrong answer.
pub(crate) fn write_pairs(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(data_file("musique/paragraphs.jsonl")).expect("paragraphs");
    let mut out = String::new();
    for (k, line) in text.lines().take(6).enumerate() {
        let v: Value = serde_json::from_str(line).expect("paragraph json");
        let title = v["title"].as_str().expect("title");
        let body: String = v["text"].as_str().expect("text").chars().take(240).collect();
        let prompt = format!("Passage 1:\n{body}\n\nWhat is the passage about?\nAnswer briefly.");
        let rec = json!({
            "id": format!("p{k}"),
            "prompt": prompt,
            "chosen": format!("The passage is about {title}."),
            "rejected": "I do not know what the passage is about.",
        });
        out.push_str(&format!("{rec}\n"));
    }
    let p = dir.join("pairs.jsonl");
    std::fs::write(&p, out).expect("write pairs");
    p
}

fn model() -> String {
    smollm_path().display().to_string()
}

/// The common flags of a small, fast run.
pub(crate) fn train_args(pairs: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "train",
        "--model",
        &model(),
        "--device",
        "cpu",
        "--pairs",
        &pairs.display().to_string(),
        "--out",
        &out.display().to_string(),
        "--lora-r",
        "4",
        "--lora-alpha",
        "8",
        "--batch-size",
        "2",
        "--lr",
        "1e-3",
        "--checkpoint-every",
        "1",
        "--keep-checkpoints",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    sealong(&argv)
}

fn metric_steps(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("metrics json")["step"]
                .as_u64()
                .expect("step")
        })
        .collect()
}

fn generated(model: &str, adapter: Option<&Path>, dump: &Path) -> Vec<u64> {
    let mut args: Vec<String> = [
        "generate",
        "--model",
        model,
        "--device",
        "cpu",
        "--prompt",
        "Passage 1:\nThe Journal of Mathematical Physics is a journal.\n\nWhat is it?",
        "--max-new-tokens",
        "16",
        "--dump-logits",
        &dump.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(a) = adapter {
        args.extend(["--adapter".into(), a.display().to_string()]);
    }
    run(&args).expect("sealong generate");
    let v: Value = serde_json::from_slice(&std::fs::read(dump).expect("dump")).expect("dump json");
    v["generated_ids"]
        .as_array()
        .expect("generated ids")
        .iter()
        .map(|x| x.as_u64().expect("id"))
        .collect()
}

#[test]
fn train_writes_metrics_checkpoints_adapter_and_a_merged_model() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pairs = write_pairs(tmp.path());
    let out = tmp.path().join("run");
    let recipe = tmp.path().join("recipe.toml");
    // The file sets lr and seed; the flag's lr (1e-3) wins, the file's seed stays.
    std::fs::write(&recipe, "lr = 5e-2\nseed = 3\nlora_dropout = 0.0\nwarmup_ratio = 0.0\n").expect("recipe");
    let args = train_args(
        &pairs,
        &out,
        &["--config", &recipe.display().to_string(), "--max-steps", "3"],
    );
    run(&args).expect("sealong train");

    assert_eq!(metric_steps(&out), vec![1, 2, 3]);
    let cfg: Value = serde_json::from_slice(&std::fs::read(out.join("train_config.json")).expect("cfg")).expect("json");
    assert_eq!(cfg["config"]["lr"], json!(1e-3));
    assert_eq!(cfg["config"]["seed"], json!(3));
    assert_eq!(cfg["config"]["mode"]["lora"]["r"], json!(4));
    assert_eq!(cfg["config"]["mode"]["lora"]["dropout"], json!(0.0));
    assert_eq!(cfg["examples"], json!(6));
    for s in 1..=3 {
        assert!(out.join(format!("checkpoints/step-{s:06}/state.json")).is_file());
    }
    let m: Value = serde_json::from_str(
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .expect("m")
            .lines()
            .next()
            .expect("line"),
    )
    .expect("json");
    for k in [
        "loss",
        "nll",
        "reward_accuracy",
        "margin",
        "chosen_reward",
        "rejected_reward",
        "grad_norm",
        "lr",
        "tokens_per_second",
    ] {
        assert!(m[k].is_number(), "metrics lack {k}: {m}");
    }
    assert!(out.join("adapter/adapter_model.safetensors").is_file());
    assert!(out.join("adapter/adapter_config.json").is_file());
    assert!(out.join("merged/model.safetensors").is_file());

    // The merged model and the base with the adapter generate the same greedy tokens, and the
    // trained adapter changed the model.
    let merged = generated(
        &out.join("merged").display().to_string(),
        None,
        &tmp.path().join("m.json"),
    );
    let adapted = generated(&model(), Some(&out.join("adapter")), &tmp.path().join("a.json"));
    assert_eq!(merged, adapted);
    assert_eq!(merged.len(), 16);
    let a: Value = serde_json::from_slice(&std::fs::read(tmp.path().join("a.json")).expect("a")).expect("a");
    let base_dump = tmp.path().join("b.json");
    generated(&model(), None, &base_dump);
    let b: Value = serde_json::from_slice(&std::fs::read(&base_dump).expect("b")).expect("b");
    let la: Vec<f64> = a["last_logits"]
        .as_array()
        .expect("logits")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let lb: Vec<f64> = b["last_logits"]
        .as_array()
        .expect("logits")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let moved = la.iter().zip(&lb).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    assert!(moved > 1e-3, "training did not change the logits ({moved})");
}

const CHILD_ENV: &str = "SEALONG_TRAIN_CHILD_ARGS";

/// Runs `sealong train` with the arguments in the environment (the child of the kill test).
#[test]
#[ignore = "the child process of a_killed_run_resumes_to_the_same_adapter"]
fn train_child() {
    let Ok(args) = std::env::var(CHILD_ENV) else { return };
    let args: Vec<String> = serde_json::from_str(&args).expect("child args");
    run(&args).expect("child train");
}

#[test]
fn a_killed_run_resumes_to_the_same_adapter() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pairs = write_pairs(tmp.path());
    let extra = ["--max-steps", "5", "--lora-dropout", "0.1", "--no-merge"];

    let straight = tmp.path().join("straight");
    run(&train_args(&pairs, &straight, &extra)).expect("uninterrupted run");

    let killed = tmp.path().join("killed");
    let args = train_args(&pairs, &killed, &extra);
    let mut child = sealong_tests::child_test(module_path!(), "train_child")
        .env(CHILD_ENV, serde_json::to_string(&args).expect("args json"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the training child");
    let started = Instant::now();
    let mark = killed.join("checkpoints/step-000002");
    while !mark.is_dir() {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the child wrote no checkpoint"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the child ended ({status}) before its second checkpoint");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap");
    let done = metric_steps(&killed).len();
    assert!(
        done < 5,
        "the child finished ({done} steps) before it was killed; nothing was resumed"
    );

    // Without --resume the directory is refused and left as it is.
    let e = run(&args).err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(e.contains("--resume"), "{e}");
    let mut resumed = args.clone();
    resumed.push("--resume".into());
    // Issue 17: resuming with another recipe is refused, naming the field and both values.
    let other: Vec<String> = resumed
        .iter()
        .map(|a| if a == "1e-3" { "3e-3".to_string() } else { a.clone() })
        .collect();
    let e = run(&other).err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(
        e.contains("lr = 0.001 (this run: 0.003)") && e.contains("checkpoints.meta.json"),
        "{e}"
    );
    run(&resumed).expect("resume");
    assert_eq!(metric_steps(&killed), vec![1, 2, 3, 4, 5]);
    for f in ["adapter_model.safetensors", "adapter_config.json"] {
        let a = std::fs::read(straight.join("adapter").join(f)).expect("straight adapter");
        let b = std::fs::read(killed.join("adapter").join(f)).expect("resumed adapter");
        assert!(a == b, "{f} differs between the uninterrupted and the resumed run");
    }
}

#[test]
fn bad_input_names_the_line_or_key_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let good = write_pairs(tmp.path());
    let cases: Vec<(String, Vec<String>, &str)> = {
        let bad_json = tmp.path().join("bad.jsonl");
        let mut text = std::fs::read_to_string(&good).expect("pairs");
        text.push_str("{\"prompt\": \"q\", \"chosen\": \n");
        std::fs::write(&bad_json, text).expect("write");
        let no_rejected = tmp.path().join("norej.jsonl");
        std::fs::write(&no_rejected, "{\"id\": 1, \"prompt\": \"q\", \"chosen\": \"a\"}\n").expect("write");
        let recipe = tmp.path().join("bad.toml");
        std::fs::write(&recipe, "lr = 1e-4\nlearning_rate = 2\n").expect("write");
        let out = |n: &str| tmp.path().join(n);
        vec![
            (
                "malformed line".into(),
                train_args(&bad_json, &out("o1"), &[]),
                "bad.jsonl:7",
            ),
            (
                "no rejected".into(),
                train_args(&no_rejected, &out("o2"), &[]),
                "norej.jsonl:1",
            ),
            (
                "unknown recipe key".into(),
                train_args(&good, &out("o3"), &["--config", &recipe.display().to_string()]),
                "learning_rate",
            ),
            (
                "full with lora flags".into(),
                train_args(&good, &out("o4"), &["--full"]),
                "--full",
            ),
        ]
    };
    for (what, args, needle) in cases {
        let e = run(&args).err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(e.contains(needle), "{what}: expected {needle:?} in {e:?}");
        let out = PathBuf::from(&args[args.iter().position(|a| a == "--out").expect("--out") + 1]);
        assert!(!out.exists(), "{what}: {} was created", out.display());
    }
}
