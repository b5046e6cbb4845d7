//! One typed settings tree, loaded in layers: `config/default.toml`, then
//! `config/<MLXTUNE_ENV>.toml` if present, then `MLXTUNE__SECTION__KEY` variables.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub workers: WorkerSettings,
    pub paths: PathSettings,
    pub auth: AuthSettings,
    #[serde(default)]
    pub s3: S3Settings,
    #[serde(default)]
    pub models: ModelSettings,
    #[serde(default)]
    pub inference: InferenceSettings,
}

/// The model registry: names for models, and where Hugging Face models come from.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelSettings {
    /// Short names for registered or Hugging Face models (`lfm2-1.2b = "LiquidAI/LFM2-1.2B"`).
    #[serde(default)]
    pub aliases: std::collections::BTreeMap<String, String>,
    /// Download base models named by a Hugging Face id on first use (`HF_ENDPOINT`,
    /// `HF_TOKEN`, `HF_HOME` / `HF_HUB_CACHE` as the Hub's own tools read them).
    #[serde(default = "yes")]
    pub download: bool,
}

fn yes() -> bool {
    true
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            aliases: Default::default(),
            download: true,
        }
    }
}

/// What may run inference, and how much memory loaded models may hold.
#[derive(Debug, Clone, Deserialize)]
pub struct InferenceSettings {
    /// Loaded models are evicted (least recently used first) to stay under this many bytes
    /// of weights.
    #[serde(default = "default_inference_budget")]
    pub memory_budget_bytes: u64,
    /// While a training job runs: `refuse` answers inference with 503 (the default: a
    /// request never takes the accelerator from training), `share` generates anyway.
    #[serde(default)]
    pub during_training: DuringTraining,
}

impl Default for InferenceSettings {
    fn default() -> Self {
        InferenceSettings {
            memory_budget_bytes: default_inference_budget(),
            during_training: DuringTraining::default(),
        }
    }
}

fn default_inference_budget() -> u64 {
    8 << 30
}

/// Inference while a job trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DuringTraining {
    #[default]
    Refuse,
    Share,
}

/// S3 access for `s3://` datasets; empty fields fall back to the AWS environment
/// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL).
#[derive(Clone, Deserialize, Default)]
pub struct S3Settings {
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub access_key_id: String,
    #[serde(default)]
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "S3Settings {{ endpoint: {:?}, region: {:?}, credentials: redacted }}",
            self.endpoint, self.region
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub max_body_bytes: usize,
    /// Browser origins allowed by CORS: `["*"]` any, `[]` none (no CORS headers).
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Step updates go out on WebSocket streams at most this often per job (every step
    /// is still stored and replayed with `?after=`); 0 sends every step.
    #[serde(default = "default_stream_interval")]
    pub stream_update_interval_ms: u64,
}

fn default_stream_interval() -> u64 {
    100
}

#[derive(Debug, Clone, Deserialize)]
pub struct StorageSettings {
    pub data_dir: PathBuf,
    /// Empty: `<data_dir>/mlxtune.sqlite3`.
    pub database_path: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    pub count: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PathSettings {
    pub model_roots: Vec<PathBuf>,
    pub dataset_roots: Vec<PathBuf>,
}

/// API keys. Debug never prints them.
#[derive(Clone, Deserialize, Default)]
pub struct AuthSettings {
    pub api_keys: Vec<String>,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AuthSettings {{ api_keys: [{} redacted] }}",
            self.api_keys.len()
        )
    }
}

impl Settings {
    /// Loads the layers from `config_dir`.
    pub fn load(config_dir: &Path) -> Result<Settings, config::ConfigError> {
        let env = std::env::var("MLXTUNE_ENV").unwrap_or_else(|_| "local".into());
        config::Config::builder()
            .add_source(config::File::from(config_dir.join("default.toml")))
            .add_source(config::File::from(config_dir.join(format!("{env}.toml"))).required(false))
            .add_source(
                config::Environment::with_prefix("MLXTUNE")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("auth.api_keys")
                    .with_list_parse_key("server.cors_origins")
                    .with_list_parse_key("paths.model_roots")
                    .with_list_parse_key("paths.dataset_roots")
                    .try_parsing(true),
            )
            .build()?
            .try_deserialize()
    }

    /// The SQLite database file.
    pub fn database_path(&self) -> PathBuf {
        if self.storage.database_path.is_empty() {
            self.storage.data_dir.join("mlxtune.sqlite3")
        } else {
            PathBuf::from(&self.storage.database_path)
        }
    }
}
