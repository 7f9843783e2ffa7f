//! Finding a model's files in an HF directory (the safetensors shards), shared by the decoder,
//! the encoder and `models inspect`, so no model reaches into another's module for it.

use std::path::Path;

use crate::error::{Error, Result};

/// The safetensors files of an HF directory: the index's shards, or the single file.
pub(crate) fn safetensors_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let bytes = std::fs::read(&index).map_err(|e| Error::io(&index, e))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::Model {
            path: index.display().to_string(),
            message: format!("malformed JSON: {e}"),
        })?;
        let map = v
            .get("weight_map")
            .and_then(serde_json::Value::as_object)
            .ok_or_else(|| Error::Model {
                path: index.display().to_string(),
                message: "no weight_map".into(),
            })?;
        let mut files: Vec<std::path::PathBuf> = Vec::with_capacity(map.len().min(1024));
        for (tensor, f) in map {
            let f = f.as_str().ok_or_else(|| Error::Model {
                path: index.display().to_string(),
                message: format!("weight_map entry for tensor {tensor:?} is {f}, not a file name"),
            })?;
            // A shard is a file in the model directory: `../x`, `/etc/x` or `C:x` would make
            // the index read files the directory does not hold.
            use std::path::Component;
            let parts = Path::new(f).components();
            let inside = parts
                .clone()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            let clean: std::path::PathBuf = parts.filter(|c| matches!(c, Component::Normal(_))).collect();
            if !inside || clean.as_os_str().is_empty() {
                return Err(Error::Model {
                    path: index.display().to_string(),
                    message: format!(
                        "shard {f:?} (tensor {tensor:?}) is not a file inside the model directory {}",
                        dir.display()
                    ),
                });
            }
            files.push(clean);
        }
        files.sort();
        files.dedup();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(Error::Model {
        path: dir.display().to_string(),
        message: "no model.safetensors or model.safetensors.index.json".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17: index shard names left the model directory.
    #[test]
    fn index_shards_stay_inside_the_model_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = dir.path().join("model.safetensors.index.json");
        let write = |map: serde_json::Value| {
            std::fs::write(&index, serde_json::json!({ "weight_map": map }).to_string()).expect("write")
        };
        let outside = [
            "../x.safetensors",
            "a/../../x.safetensors",
            "/etc/passwd",
            "",
            "sub/..",
            ".",
        ];
        for shard in outside {
            write(serde_json::json!({"model.norm.weight": "model-1.safetensors", "lm_head.weight": shard}));
            let e = safetensors_files(dir.path()).expect_err(shard).to_string();
            assert!(
                e.contains("model.safetensors.index.json")
                    && e.contains(&format!("shard {shard:?} (tensor \"lm_head.weight\")")),
                "{shard}: {e}"
            );
        }
        write(serde_json::json!({"model.norm.weight": 3}));
        let e = safetensors_files(dir.path()).expect_err("number").to_string();
        assert!(e.contains("tensor \"model.norm.weight\" is 3, not a file name"), "{e}");
        // Shards in the directory (or a subdirectory) are fine, each listed once.
        write(
            serde_json::json!({"a": "m-2.safetensors", "b": "m-1.safetensors", "c": "./m-1.safetensors",
            "d": "sub/m-3.safetensors"}),
        );
        let files = safetensors_files(dir.path()).expect("inside");
        let names: Vec<_> = files
            .iter()
            .map(|f| f.strip_prefix(dir.path()).expect("inside").to_path_buf())
            .collect();
        assert_eq!(
            names,
            ["m-1.safetensors", "m-2.safetensors", "sub/m-3.safetensors"].map(std::path::PathBuf::from)
        );
    }
}
