//! A manifest: the files of an uploaded directory with their sizes and sha256, written
//! after them as the commit marker, and kept beside a local copy once it is complete.

use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use super::{ArtifactError, Result};

/// The object (and local file) name of a manifest.
pub const NAME: &str = "manifest.json";

/// What an uploaded directory holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: Vec<FileEntry>,
}

/// One file: its path inside the directory (`/`-separated), size and sha256 (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

impl Manifest {
    /// Parses a manifest read from `url`; a path that would leave its directory is refused.
    pub fn parse(bytes: &[u8], url: &str) -> Result<Manifest> {
        let bad = |why: String| ArtifactError::Manifest {
            url: url.to_string(),
            why,
        };
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        match m.files.iter().find(|f| !is_inside(&f.path)) {
            Some(f) => Err(bad(format!("the path `{}` leaves its directory", f.path))),
            None => Ok(m),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Whether `dir` holds every file of the manifest with its size.
    pub fn present_in(&self, dir: &Path) -> bool {
        self.files.iter().all(|f| {
            std::fs::metadata(dir.join(&f.path)).is_ok_and(|m| m.is_file() && m.len() == f.size)
        })
    }
}

/// A relative path of normal components only.
fn is_inside(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

/// The files under `dir`, recursively, as sorted `/`-separated relative paths, among the
/// top-level entries `only` (all when None).
pub fn files_under(dir: &Path, only: Option<&[&str]>) -> std::io::Result<Vec<String>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if only.is_none_or(|o| o.contains(&name.as_str())) {
            walk(dir, &name, &mut found)?;
        }
    }
    found.sort();
    Ok(found)
}

fn walk(root: &Path, rel: &str, found: &mut Vec<String>) -> std::io::Result<()> {
    let path = root.join(rel);
    if !path.is_dir() {
        found.push(rel.to_string());
        return Ok(());
    }
    for entry in std::fs::read_dir(&path)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        walk(root, &format!("{rel}/{name}"), found)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_refuse_paths_outside_their_directory() {
        let ok = br#"{"files":[{"path":"peft/a.json","size":1,"sha256":"ab"}]}"#;
        assert_eq!(
            Manifest::parse(ok, "u").unwrap().files[0].path,
            "peft/a.json"
        );
        for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
            let text = format!(r#"{{"files":[{{"path":"{bad}","size":1,"sha256":"ab"}}]}}"#);
            let e = Manifest::parse(text.as_bytes(), "s3://b/m").unwrap_err();
            assert!(e.to_string().starts_with("s3://b/m: not a manifest"), "{e}");
        }
    }

    #[test]
    fn files_are_listed_recursively_and_filtered_at_the_top() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("peft")).unwrap();
        for f in ["a.json", "peft/b.safetensors", "metrics.jsonl"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let all = files_under(dir.path(), None).unwrap();
        assert_eq!(all, ["a.json", "metrics.jsonl", "peft/b.safetensors"]);
        let some = files_under(dir.path(), Some(&["peft", "a.json"])).unwrap();
        assert_eq!(some, ["a.json", "peft/b.safetensors"]);
        let m = Manifest {
            files: vec![FileEntry {
                path: "a.json".into(),
                size: 1,
                sha256: String::new(),
            }],
        };
        assert!(m.present_in(dir.path()));
        std::fs::write(dir.path().join("a.json"), "xy").unwrap();
        assert!(!m.present_in(dir.path()), "a size that differs");
    }
}
