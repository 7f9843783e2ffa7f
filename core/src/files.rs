//! Whole-file writes that a kill, a full disk or a power cut cannot tear: the one helper every
//! output written whole (summaries, metrics, reports, `.npy`, configs, checkpoints' files,
//! exports) goes through.
//!
//! Why: a plain `fs::write` truncates first and writes after, so a process killed in between
//! leaves an empty or half file under the real name. A torn `config.toml` copy made `sealong run`
//! refuse its own rerun as "a different config"; a torn summary is read back as bad JSON. Here
//! the bytes go to a temporary file in the same directory (a rename is atomic only within one
//! file system), which is flushed to disk (`fsync`) before it is renamed over the target, and
//! the directory is synced after, so the rename itself survives a power cut. A reader sees the
//! old file or the new one, never a mix; a failed write leaves the old file as it was and
//! removes its temporary file.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically (see the module doc).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes).map_err(|e| Error::io(path, e)))
}

/// Writes `path` atomically through `write`, which gets a buffered writer on the temporary
/// file. An error from `write` (or from the file system) leaves `path` untouched.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::Invalid(format!("{} is not a file path", path.display())))?;
    let dir = parent_dir(path);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    // The process id keeps two writers of one path (two runs by mistake) off each other's
    // temporary file; the leading dot keeps it out of directory listings and model fingerprints.
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut w = std::io::BufWriter::new(file);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    remove_stale_temporaries(&dir, &file_name);
    sync_dir(&dir)
}

/// Removes the temporary files of `file_name` that killed writers left behind (found by the kill
/// sweep: a round killed while exporting kept `.model.safetensors.<pid>.tmp` beside the model for
/// good). A temporary whose process still runs is another writer's and stays; where processes
/// cannot be looked up (no `/proc`), nothing is removed.
fn remove_stale_temporaries(dir: &Path, file_name: &str) {
    let proc_fs = Path::new("/proc/self");
    if !proc_fs.exists() {
        return;
    }
    let prefix = format!(".{file_name}.");
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".tmp"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Flushes a directory's entries (a rename or a new file in it) to disk. On platforms where a
/// directory cannot be opened for syncing this is a no-op.
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let d = std::fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
        d.sync_all().map_err(|e| Error::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The directory `path` lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("sub/summary.json");
        write_atomic(&p, b"{\"a\": 1}\n").expect("first");
        assert_eq!(std::fs::read(&p).expect("read"), b"{\"a\": 1}\n");
        write_atomic(&p, b"{}").expect("second");
        assert_eq!(std::fs::read(&p).expect("read"), b"{}");
        assert_eq!(names(&dir.path().join("sub")), ["summary.json"]);
    }

    /// A writer killed between creating its temporary file and renaming it leaves the temporary;
    /// the next write of the same file removes it, unless its process still runs.
    #[cfg(unix)]
    #[test]
    fn a_killed_writers_temporary_is_removed_by_the_next_write() {
        if !Path::new("/proc/self").exists() {
            return;
        }
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("model.safetensors");
        // u32::MAX is above every Linux pid limit: no such process.
        let stale = dir.path().join(format!(".model.safetensors.{}.tmp", u32::MAX));
        std::fs::write(&stale, b"half").expect("stale");
        // A live process's temporary (this process's parent) stays.
        let live = dir.path().join(format!(
            ".model.safetensors.{}.tmp",
            std::os::unix::process::parent_id()
        ));
        std::fs::write(&live, b"busy").expect("live");
        let other = dir.path().join(format!(".other.json.{}.tmp", u32::MAX));
        std::fs::write(&other, b"x").expect("other");
        write_atomic(&p, b"whole").expect("write");
        assert!(!stale.exists(), "the dead writer's temporary is gone");
        assert!(live.exists(), "a running writer's temporary stays");
        assert!(other.exists(), "another file's temporary is not this write's business");
    }

    /// Issue 17: a write that fails half-way (a kill, a full disk, a serialization error)
    /// truncated the old file; now the old bytes stay and the temporary file is removed.
    #[test]
    fn a_failed_write_leaves_the_old_file_intact() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("config.toml");
        write_atomic(&p, b"seed = 1\n").expect("first");
        let e = write_atomic_with(&p, |w| {
            w.write_all(b"seed = 2\n[sam").map_err(|e| Error::io(&p, e))?;
            Err(Error::Invalid("cut off".into()))
        })
        .expect_err("fails");
        assert!(e.to_string().contains("cut off"), "{e}");
        assert_eq!(std::fs::read(&p).expect("read"), b"seed = 1\n", "old file intact");
        assert_eq!(names(dir.path()), ["config.toml"], "no temporary file left");
        // A target that cannot be replaced (a directory) fails with its name and leaves no temp.
        let d = dir.path().join("taken");
        std::fs::create_dir(&d).expect("mkdir");
        std::fs::write(d.join("x"), b"x").expect("x");
        let e = write_atomic(&d, b"data").expect_err("a non-empty directory is in the way");
        assert!(e.to_string().contains("taken"), "{e}");
        assert_eq!(names(dir.path()), ["config.toml", "taken"]);
    }

    #[test]
    fn a_bare_file_name_is_written_in_the_current_directory() {
        assert_eq!(parent_dir(Path::new("x.json")), PathBuf::from("."));
        assert_eq!(parent_dir(Path::new("a/x.json")), PathBuf::from("a"));
    }
}
