//! Base models by Hugging Face id, downloaded into the Hub's own cache layout
//! (`<cache>/models--org--name/{blobs,snapshots/<commit>,refs}`) so the Hub's tools share it.
//! Each file: a HEAD for its ETag and size, then a GET that resumes a partial blob with a
//! `Range` request (retried on a dropped connection), checked against the SHA-256 the Hub
//! gives for large files (or the size), renamed into place; nothing partial ever has its
//! final name.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Where and how to reach the Hub: `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_CACHE` / `HF_HOME`.
#[derive(Clone)]
pub struct HubConfig {
    pub endpoint: String,
    pub token: Option<String>,
    pub cache: PathBuf,
}

impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HubConfig {{ endpoint: {:?}, cache: {:?}, token: redacted }}",
            self.endpoint, self.cache
        )
    }
}

impl HubConfig {
    pub fn from_env() -> HubConfig {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let base = var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(std::env::temp_dir);
            base.join("huggingface")
        });
        HubConfig {
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into()),
            token: var("HF_TOKEN"),
            cache: var("HF_HUB_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join("hub")),
        }
    }
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("cannot reach the Hugging Face Hub at {endpoint} for `{repo}` (offline? set HF_ENDPOINT, or register a local directory): {why}")]
    Unreachable {
        endpoint: String,
        repo: String,
        why: String,
    },
    #[error("`{repo}`: {what}")]
    Repo { repo: String, what: String },
    #[error("`{repo}`: {file}: {what}")]
    File {
        repo: String,
        file: String,
        what: String,
    },
}

/// Whether a snapshot directory holds its weights yet.
pub fn has_weights(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
    })
}

/// `org/name`, as the Hub names models.
pub fn is_repo_id(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// The files a model directory needs.
fn wanted(file: &str) -> bool {
    !file.contains('/')
        && (file.ends_with(".safetensors") || file.ends_with(".json") || file.ends_with(".jinja"))
}

#[derive(serde::Deserialize)]
struct RepoInfo {
    sha: String,
    siblings: Vec<Sibling>,
}

#[derive(serde::Deserialize)]
struct Sibling {
    rfilename: String,
}

fn repo_dir(cfg: &HubConfig, repo: &str) -> PathBuf {
    cfg.cache
        .join(format!("models--{}", repo.replace('/', "--")))
}

/// Downloads `repo` (revision `main`) and returns its snapshot directory; reports
/// `(file, bytes done, bytes total)` to `progress`.
pub async fn download(
    repo: &str,
    cfg: &HubConfig,
    progress: Option<&(dyn Fn(&str, u64, u64) + Send + Sync)>,
) -> Result<PathBuf, HubError> {
    download_part(repo, cfg, progress, true).await
}

/// [`download`] of the small files only (config, tokenizer, templates) when `weights` is
/// false: enough to check a job before its weights arrive.
pub async fn download_part(
    repo: &str,
    cfg: &HubConfig,
    progress: Option<&(dyn Fn(&str, u64, u64) + Send + Sync)>,
    weights: bool,
) -> Result<PathBuf, HubError> {
    let client = client(cfg);
    let info = repo_info(&client, cfg, repo).await?;
    let root = repo_dir(cfg, repo);
    let snapshot = root.join("snapshots").join(&info.sha);
    let files = info.siblings.iter().filter(|s| wanted(&s.rfilename));
    for s in files.filter(|s| weights || !s.rfilename.ends_with(".safetensors")) {
        let f = &s.rfilename;
        if snapshot.join(f).exists() {
            continue;
        }
        let url = format!("{}/{repo}/resolve/{}/{f}", cfg.endpoint, info.sha);
        let blob = fetch_blob(&client, &url, &root.join("blobs"), repo, f, progress).await?;
        link(&snapshot, f, &blob).map_err(|e| file_err(repo, f, e))?;
    }
    let refs = root.join("refs");
    std::fs::create_dir_all(&refs).map_err(|e| repo_err(repo, e))?;
    std::fs::write(refs.join("main"), &info.sha).map_err(|e| repo_err(repo, e))?;
    Ok(snapshot)
}

fn client(cfg: &HubConfig) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = &cfg.token {
        if let Ok(v) = format!("Bearer {t}").parse() {
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

fn repo_err(repo: &str, e: impl std::fmt::Display) -> HubError {
    HubError::Repo {
        repo: repo.into(),
        what: e.to_string(),
    }
}

fn file_err(repo: &str, file: &str, e: impl std::fmt::Display) -> HubError {
    HubError::File {
        repo: repo.into(),
        file: file.into(),
        what: e.to_string(),
    }
}

async fn repo_info(
    client: &reqwest::Client,
    cfg: &HubConfig,
    repo: &str,
) -> Result<RepoInfo, HubError> {
    let url = format!("{}/api/models/{repo}/revision/main", cfg.endpoint);
    let r = client
        .get(&url)
        .send()
        .await
        .map_err(|e| HubError::Unreachable {
            endpoint: cfg.endpoint.clone(),
            repo: repo.into(),
            why: e.to_string(),
        })?;
    if !r.status().is_success() {
        return Err(repo_err(
            repo,
            format!(
                "the Hub answered {} (no such model, or it needs HF_TOKEN)",
                r.status()
            ),
        ));
    }
    r.json()
        .await
        .map_err(|e| repo_err(repo, format!("unexpected model info: {e}")))
}

/// The blob of one file: `<blobs>/<etag>`, downloaded (or completed) and checked.
async fn fetch_blob(
    client: &reqwest::Client,
    url: &str,
    blobs: &Path,
    repo: &str,
    file: &str,
    progress: Option<&(dyn Fn(&str, u64, u64) + Send + Sync)>,
) -> Result<PathBuf, HubError> {
    let head = client
        .head(url)
        .send()
        .await
        .map_err(|e| file_err(repo, file, e))?;
    if !head.status().is_success() {
        return Err(file_err(
            repo,
            file,
            format!("the Hub answered {}", head.status()),
        ));
    }
    let header = |k: &str| {
        head.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_start_matches("W/").trim_matches('"').to_string())
    };
    let etag = header("x-linked-etag")
        .or_else(|| header("etag"))
        .ok_or_else(|| file_err(repo, file, "no ETag"))?;
    let size: u64 = header("x-linked-size")
        .or_else(|| header("content-length"))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| file_err(repo, file, "no size"))?;
    std::fs::create_dir_all(blobs).map_err(|e| file_err(repo, file, e))?;
    let blob = blobs.join(&etag);
    if blob.exists() {
        return Ok(blob);
    }
    let part = blobs.join(format!("{etag}.incomplete"));
    let mut last = String::new();
    for _attempt in 0..4 {
        match resume(client, url, &part, size, file, progress).await {
            Ok(()) => break,
            Err(e) => last = e,
        }
    }
    let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    if have != size {
        return Err(file_err(
            repo,
            file,
            format!("{have} of {size} bytes after 4 attempts: {last}"),
        ));
    }
    verify(&part, &etag).map_err(|e| file_err(repo, file, e))?;
    std::fs::rename(&part, &blob).map_err(|e| file_err(repo, file, e))?;
    Ok(blob)
}

/// Appends the rest of the file to `part` (a `Range` request from its current length).
async fn resume(
    client: &reqwest::Client,
    url: &str,
    part: &Path,
    size: u64,
    file: &str,
    progress: Option<&(dyn Fn(&str, u64, u64) + Send + Sync)>,
) -> Result<(), String> {
    let mut have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if have >= size {
        return Ok(());
    }
    let r = client
        .get(url)
        .header(reqwest::header::RANGE, format!("bytes={have}-"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let mut out = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(part)
        .await
        .map_err(|e| e.to_string())?;
    if r.status() == reqwest::StatusCode::OK && have > 0 {
        // The server ignored the range: start over.
        out.set_len(0).await.map_err(|e| e.to_string())?;
        have = 0;
    } else if !r.status().is_success() {
        return Err(format!("the Hub answered {}", r.status()));
    }
    let mut body = r.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        out.write_all(&chunk).await.map_err(|e| e.to_string())?;
        have += chunk.len() as u64;
        if let Some(p) = progress {
            p(file, have, size);
        }
    }
    out.sync_all().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// A 64-hex ETag is the file's SHA-256 (the Hub's large files): check it.
fn verify(part: &Path, etag: &str) -> Result<(), String> {
    if etag.len() != 64 || !etag.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(());
    }
    let bytes = std::fs::read(part).map_err(|e| e.to_string())?;
    let got = mlxtune_engine::fsutil::hex(&Sha256::digest(&bytes));
    if got != etag.to_lowercase() {
        return Err(format!(
            "checksum mismatch (sha256 {got}, the Hub says {etag}); the partial file is removed"
        ))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(part);
        });
    }
    Ok(())
}

/// `snapshots/<commit>/<file>` → `../../blobs/<etag>`.
fn link(snapshot: &Path, file: &str, blob: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(snapshot)?;
    let target = Path::new("../../blobs").join(blob.file_name().unwrap_or_default());
    let at = snapshot.join(file);
    let _ = std::fs::remove_file(&at);
    std::os::unix::fs::symlink(target, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_org_slash_name() {
        assert!(is_repo_id("LiquidAI/LFM2-1.2B"));
        assert!(is_repo_id("org/model_v1.5"));
        for bad in ["lfm2-tiny", "a/b/c", "../etc", "/abs/path", "a/..", "a b/c"] {
            assert!(!is_repo_id(bad), "{bad}");
        }
    }

    #[test]
    fn only_model_directory_files_are_fetched() {
        for f in [
            "config.json",
            "model-00001-of-00002.safetensors",
            "chat_template.jinja",
            "tokenizer.json",
        ] {
            assert!(wanted(f), "{f}");
        }
        for f in [
            "pytorch_model.bin",
            "onnx/model.onnx",
            "model.gguf",
            "README.md",
        ] {
            assert!(!wanted(f), "{f}");
        }
    }
}
