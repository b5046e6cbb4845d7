//! One typed settings tree, loaded in layers: the defaults compiled into the binary
//! (`config/default.toml` of the source tree), then `<config dir>/default.toml` (or the
//! `--config FILE`), then `<config dir>/<MLXTUNE_ENV>.toml` if present, then
//! `MLXTUNE__SECTION__KEY` variables. Unknown keys are errors naming the key and the closest
//! known one. Outside a checkout (no `<config dir>/default.toml`), the default relative
//! directories (`data`, `models`, `datasets`) live under a per-user directory.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
    #[serde(default)]
    pub files: FileSettings,
    #[serde(default)]
    pub remote: RemoteSettings,
}

/// Downloads of `http(s)://` and `s3://` datasets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSettings {
    /// Allow hosts that resolve to loopback, private, link-local or other non-public
    /// addresses (off by default: a dataset URI must not make the server read itself or
    /// its network). The S3 endpoint is checked too.
    #[serde(default)]
    pub allow_private_addresses: bool,
    /// A larger download is refused and deleted (default 512 MiB).
    #[serde(default = "default_max_upload")]
    pub max_download_bytes: u64,
    /// Connecting, and each read of a download, time out after this many seconds.
    #[serde(default = "default_remote_timeout")]
    pub timeout_secs: u64,
}

impl Default for RemoteSettings {
    fn default() -> Self {
        RemoteSettings {
            allow_private_addresses: false,
            max_download_bytes: default_max_upload(),
            timeout_secs: default_remote_timeout(),
        }
    }
}

fn default_remote_timeout() -> u64 {
    30
}

/// Uploads through `POST /v1/files`, and when a job's datasets are checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// An upload larger than this is refused with 413 (default 512 MiB).
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// A job whose local or uploaded datasets total more bytes than this is stored at once
    /// as `validating_files` and pre-flighted in the background (then `queued`, or `failed`
    /// with the `file:line` error); smaller ones are checked inside the request (a 422).
    /// Default 64 MiB.
    #[serde(default = "default_async_validation")]
    pub async_validation_bytes: u64,
}

impl Default for FileSettings {
    fn default() -> Self {
        FileSettings {
            max_upload_bytes: default_max_upload(),
            async_validation_bytes: default_async_validation(),
        }
    }
}

fn default_async_validation() -> u64 {
    64 << 20
}

fn default_max_upload() -> u64 {
    512 << 20
}

/// The model registry: names for models, and where Hugging Face models come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
    /// A connection that has not sent a request's headers within this many seconds is
    /// closed.
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_secs: u64,
    /// A request body with no data for this many seconds fails (400) and the connection
    /// closes.
    #[serde(default = "default_body_timeout")]
    pub body_read_timeout_secs: u64,
    /// At most this many connections are open at once; more wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// What this process runs: the API and workers (`all`), the API only (`api`: jobs are
    /// queued for worker processes) or workers only (`worker`: no API, its port serves
    /// `/healthz` and `/metrics`). Processes of every role may share one database.
    pub role: Role,
    /// This process's name among those sharing the database; empty: `<hostname>-<pid>`.
    /// Its workers claim jobs as `<node>/worker-<i>`; at start it takes back at once the
    /// jobs its own workers held (others wait for their lease to expire).
    pub node_name: String,
}

/// What a process runs (`server.role`, `mlxtune serve --role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The HTTP API and `workers.count` workers.
    All,
    /// The HTTP API, no workers.
    Api,
    /// Workers (and the lease sweep), no API: the port serves `/healthz` and `/metrics`.
    Worker,
}

impl Role {
    pub fn serves_api(self) -> bool {
        self != Role::Worker
    }

    pub fn runs_workers(self) -> bool {
        self != Role::Api
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Api => "api",
            Role::Worker => "worker",
        }
    }
}

fn default_header_timeout() -> u64 {
    10
}

fn default_body_timeout() -> u64 {
    30
}

fn default_max_connections() -> usize {
    1024
}

fn default_stream_interval() -> u64 {
    100
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    pub data_dir: PathBuf,
    /// Empty: `<data_dir>/mlxtune.sqlite3`.
    pub database_path: String,
    /// Empty: SQLite at `database_path`; `sqlite://<path>`; or `postgres://…`, so workers
    /// on several machines share one queue (`docs/deploy.md`).
    #[serde(default)]
    pub database_url: DatabaseUrl,
    /// `s3://bucket/prefix` where jobs' checkpoints and outputs are shared between nodes
    /// (`crate::artifacts`); absent or empty: only `data_dir`.
    #[serde(default, deserialize_with = "artifacts_url")]
    pub artifacts_url: Option<ArtifactsUrl>,
}

/// `storage.database_url`, checked when the settings load; Debug hides a password.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct DatabaseUrl(Option<crate::db::Location>);

impl TryFrom<String> for DatabaseUrl {
    type Error = String;

    fn try_from(url: String) -> Result<DatabaseUrl, String> {
        crate::db::Location::parse(&url).map(DatabaseUrl)
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(location) => write!(f, "{location:?}"),
            None => write!(f, "default"),
        }
    }
}

/// `storage.artifacts_url`: a bucket and a key prefix (no leading or trailing `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactsUrl {
    pub bucket: String,
    pub prefix: String,
}

impl std::str::FromStr for ArtifactsUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("s3://").ok_or("must start with s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err("names no bucket (s3://bucket/prefix)".into());
        }
        Ok(ArtifactsUrl {
            bucket: bucket.into(),
            prefix: prefix.trim_matches('/').into(),
        })
    }
}

impl std::fmt::Display for ArtifactsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.prefix.as_str() {
            "" => write!(f, "s3://{}", self.bucket),
            prefix => write!(f, "s3://{}/{prefix}", self.bucket),
        }
    }
}

fn artifacts_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ArtifactsUrl>, D::Error> {
    let text = String::deserialize(d)?;
    match text.trim() {
        "" => Ok(None),
        url => url.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub count: usize,
    /// A running job stops (checkpointed) and fails after this many seconds; 0: no limit.
    pub max_job_seconds: u64,
    /// A trainer that has not stopped this many seconds after a cancel, pause or shutdown
    /// (a step that never ends) fails its job, and its thread is abandoned.
    pub stop_timeout_seconds: u64,
    /// A claimed job is leased for this many seconds, renewed by its worker every third
    /// of it while the job runs (whatever its step is doing); a job whose lease expired
    /// (its process died) is re-queued by the sweep of any worker process and resumes
    /// from its last checkpoint.
    pub lease_seconds: u64,
    /// How MLX schedules this process's work on CUDA (`memory`: 2 operations per CUDA
    /// graph, for concurrent jobs and checkpointed ones; `speed`: 20, faster for a single
    /// job at a higher peak). Read once, before MLX starts (docs/deploy.md).
    pub scheduling: mlxtune_engine::runtime::Scheduling,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSettings {
    pub model_roots: Vec<PathBuf>,
    pub dataset_roots: Vec<PathBuf>,
}

/// API keys. Debug never prints them.
#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
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
    /// A warning when the server listens beyond loopback with no API keys: anyone who can
    /// reach the port can then run and delete jobs.
    pub fn exposure_warning(&self) -> Option<String> {
        let host = self
            .server
            .host
            .trim_start_matches('[')
            .trim_end_matches(']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        (!loopback && self.auth.api_keys.is_empty()).then(|| {
            format!(
                "listening on {host} without API keys: anyone who can reach this port can submit, cancel and delete jobs; set auth.api_keys (MLXTUNE__AUTH__API_KEYS) or listen on 127.0.0.1"
            )
        })
    }
}

/// The defaults: `config/default.toml` as it was when this binary was built.
pub const BUILT_IN: &str = include_str!("../../../config/default.toml");

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A file that cannot be read or parsed, or an environment value of the wrong kind.
    #[error(transparent)]
    Load(#[from] config::ConfigError),
    /// A key that is unknown or whose value does not fit.
    #[error("{param} {message}")]
    Field { param: String, message: String },
}

/// Where settings come from, besides the built-in defaults and the environment.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Holds `default.toml` (optional) and `<MLXTUNE_ENV>.toml` (optional).
    pub config_dir: PathBuf,
    /// Read instead of `<config_dir>/default.toml` (it must exist).
    pub file: Option<PathBuf>,
}

impl Settings {
    /// Loads the layers from `config_dir` (see the module's documentation).
    pub fn load(config_dir: &Path) -> Result<Settings, SettingsError> {
        Self::load_from(&Sources {
            config_dir: config_dir.to_path_buf(),
            file: None,
        })
    }

    /// Loads the layers: built-in, the file, the environment's file, the variables.
    pub fn load_from(sources: &Sources) -> Result<Settings, SettingsError> {
        let env = std::env::var("MLXTUNE_ENV").unwrap_or_else(|_| "local".into());
        let dir_default = sources.config_dir.join("default.toml");
        let in_checkout = sources.file.is_some() || dir_default.is_file();
        let main = match &sources.file {
            Some(f) => config::File::from(f.as_path()),
            None => config::File::from(dir_default).required(false),
        };
        let value: serde_json::Value = config::Config::builder()
            .add_source(config::File::from_str(BUILT_IN, config::FileFormat::Toml))
            .add_source(main)
            .add_source(
                config::File::from(sources.config_dir.join(format!("{env}.toml"))).required(false),
            )
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
            .try_deserialize()?;
        let mut settings = strict(value)?;
        if !in_checkout {
            settings.use_per_user_dirs(&per_user_dir());
        }
        Ok(settings)
    }

    /// The built-in relative directories (`data`, `models`, `datasets`), still as built in,
    /// moved under `base`.
    fn use_per_user_dirs(&mut self, base: &Path) {
        let Ok(built_in) = built_in() else { return };
        let rebase = |p: &mut PathBuf, was: &Path| {
            if p.as_path() == was && p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rebase(&mut self.storage.data_dir, &built_in.storage.data_dir);
        for (r, was) in self
            .paths
            .model_roots
            .iter_mut()
            .zip(&built_in.paths.model_roots)
        {
            rebase(r, was);
        }
        for (r, was) in self
            .paths
            .dataset_roots
            .iter_mut()
            .zip(&built_in.paths.dataset_roots)
        {
            rebase(r, was);
        }
    }

    /// This process's node name: `server.node_name`; else, for the single-process default
    /// (`role = "all"`), the host's name, so a restarted server takes back its own jobs at
    /// once; else `<hostname>-<pid>` (one host may run several worker processes).
    pub fn node(&self) -> String {
        if !self.server.node_name.is_empty() {
            return self.server.node_name.clone();
        }
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        match self.server.role {
            Role::All => host,
            _ => format!("{host}-{}", std::process::id()),
        }
    }

    /// The database: `storage.database_url`, else SQLite at [`Settings::database_path`].
    pub fn database(&self) -> crate::db::Location {
        match &self.storage.database_url.0 {
            Some(location) => location.clone(),
            None => crate::db::Location::Sqlite(self.database_path()),
        }
    }

    /// The SQLite database file, unless `storage.database_url` names another.
    pub fn database_path(&self) -> PathBuf {
        if self.storage.database_path.is_empty() {
            self.storage.data_dir.join("mlxtune.sqlite3")
        } else {
            PathBuf::from(&self.storage.database_path)
        }
    }
}

/// The built-in defaults alone.
pub fn built_in() -> Result<Settings, SettingsError> {
    let value = config::Config::builder()
        .add_source(config::File::from_str(BUILT_IN, config::FileFormat::Toml))
        .build()?
        .try_deserialize()?;
    strict(value)
}

/// Deserializes settings, naming the key of the first problem (and the closest known key).
fn strict(value: serde_json::Value) -> Result<Settings, SettingsError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let (param, message) =
            mlxtune_engine::train::strict::unknown_field(&path, &inner).unwrap_or((path, inner));
        SettingsError::Field { param, message }
    })
}

/// Where mlxtune keeps its data outside a checkout: `$MLXTUNE_HOME`, else
/// `$XDG_DATA_HOME/mlxtune`, else `~/Library/Application Support/mlxtune` on macOS and
/// `~/.local/share/mlxtune` elsewhere.
pub fn per_user_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(h) = var("MLXTUNE_HOME") {
        return h;
    }
    if let Some(x) = var("XDG_DATA_HOME") {
        return x.join("mlxtune");
    }
    let home = var("HOME").unwrap_or_else(|| PathBuf::from("."));
    if cfg!(target_os = "macos") {
        home.join("Library/Application Support/mlxtune")
    } else {
        home.join(".local/share/mlxtune")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_beyond_loopback_without_keys_is_warned_about() {
        let mut s = built_in().unwrap();
        assert_eq!(s.exposure_warning(), None, "127.0.0.1 without keys");
        s.server.host = "0.0.0.0".into();
        assert!(s.exposure_warning().unwrap().contains("without API keys"));
        s.server.host = "[::1]".into();
        assert_eq!(s.exposure_warning(), None);
        s.server.host = "0.0.0.0".into();
        s.auth.api_keys = vec!["k".into()];
        assert_eq!(s.exposure_warning(), None, "keys set");
    }

    #[test]
    fn the_built_in_defaults_load_and_unknown_keys_are_named() {
        assert_eq!(built_in().unwrap().server.port, 8080);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("default.toml"), "[server]\nprot = 9000\n").unwrap();
        let e = Settings::load(dir.path()).unwrap_err().to_string();
        assert_eq!(
            e,
            "server.prot is an unknown field; did you mean server.port?"
        );
    }

    #[test]
    fn the_database_url_chooses_the_backend_and_a_bad_one_is_named_without_its_password() {
        let load = |url: &str| {
            let dir = tempfile::tempdir().unwrap();
            let text = format!("[storage]\ndatabase_url = \"{url}\"\n");
            std::fs::write(dir.path().join("default.toml"), text).unwrap();
            Settings::load(dir.path())
        };
        let sqlite = load("").unwrap();
        let default_file = sqlite.storage.data_dir.join("mlxtune.sqlite3");
        assert_eq!(sqlite.database(), crate::db::Location::Sqlite(default_file));
        let url = "postgres://mlxtune:s3cret@db:5432/jobs";
        let pg = load(url).unwrap();
        assert_eq!(pg.database(), crate::db::Location::Postgres(url.into()));
        assert!(!format!("{pg:?}").contains("s3cret"), "{pg:?}");
        let file = load("sqlite:///var/lib/x.sqlite3").unwrap();
        let path = std::path::PathBuf::from("/var/lib/x.sqlite3");
        assert_eq!(file.database(), crate::db::Location::Sqlite(path));
        let e = load("mysql://root:s3cret@db/jobs").unwrap_err().to_string();
        let named = "storage.database_url unsupported database \"mysql\"";
        assert!(e.starts_with(named), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn the_role_defaults_to_all_and_names_a_node() {
        let mut s = built_in().unwrap();
        assert_eq!(s.server.role, Role::All);
        assert!(s.workers.lease_seconds >= 3);
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        assert_eq!(s.node(), host, "one process: stable across restarts");
        s.server.role = Role::Worker;
        assert_eq!(s.node(), format!("{host}-{}", std::process::id()));
        s.server.node_name = "gpu-1".into();
        assert_eq!(s.node(), "gpu-1");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("default.toml"),
            "[server]\nrole = \"wrker\"\n",
        )
        .unwrap();
        let e = Settings::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("server.role") && e.contains("worker"), "{e}");
    }

    #[test]
    fn the_artifacts_url_is_an_s3_bucket_and_prefix_or_nothing() {
        assert_eq!(built_in().unwrap().storage.artifacts_url, None);
        let url: ArtifactsUrl = "s3://b/runs/a/".parse().unwrap();
        assert_eq!((url.bucket.as_str(), url.prefix.as_str()), ("b", "runs/a"));
        assert_eq!("s3://b".parse::<ArtifactsUrl>().unwrap().prefix, "");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("default.toml");
        std::fs::write(&file, "[storage]\nartifacts_url = \"gs://x\"\n").unwrap();
        let e = Settings::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("storage.artifacts_url") && e.contains("s3://"),
            "{e}"
        );
    }

    #[test]
    fn outside_a_checkout_the_default_directories_are_per_user() {
        let mut s = built_in().unwrap();
        s.paths.dataset_roots = vec![PathBuf::from("/srv/data")];
        s.use_per_user_dirs(Path::new("/home/u/.local/share/mlxtune"));
        assert_eq!(
            s.storage.data_dir,
            Path::new("/home/u/.local/share/mlxtune/data")
        );
        assert_eq!(
            s.paths.model_roots,
            vec![PathBuf::from("/home/u/.local/share/mlxtune/models")]
        );
        assert_eq!(s.paths.dataset_roots, vec![PathBuf::from("/srv/data")]);
    }
}
