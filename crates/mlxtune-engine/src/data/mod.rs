//! Training and evaluation records: JSONL read as a stream, each record turned into token
//! ids plus a mask of which positions the loss counts.
//!
//! Formats: `text` (`{"text"}`), `completion` (`{"prompt", "completion"}`) and `chat`
//! (`{"messages": [{"role", "content", "weight"?}], "tools"?}`), rendered with the
//! model's chat template, loss on every assistant turn.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EngineError, Result};
use crate::fsutil::hex;
use crate::tokenizer::Tokenizer;

pub mod batch;
pub mod chat;
pub mod custom;
pub mod prefetch;
pub mod segments;
pub mod widths;

pub use custom::CustomTemplate;

/// A record format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    Text,
    Completion,
    Chat,
}

impl std::str::FromStr for DataFormat {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "text" => Ok(Self::Text),
            "completion" | "completions" => Ok(Self::Completion),
            "chat" => Ok(Self::Chat),
            other => Err(EngineError::invalid(
                "format",
                format!("`{other}`: expected text, completion or chat"),
            )),
        }
    }
}

/// The format a record's keys indicate.
pub fn detect_format(record: &Value) -> Option<DataFormat> {
    if record.get("messages").is_some() {
        Some(DataFormat::Chat)
    } else if record.get("prompt").is_some() && record.get("completion").is_some() {
        Some(DataFormat::Completion)
    } else if record.get("text").is_some() {
        Some(DataFormat::Text)
    } else {
        None
    }
}

/// One tokenized record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `mask[i]` is true when `ids[i]` is a loss target (predicted from `ids[..i]`);
    /// `mask[0]` is always false.
    pub mask: Vec<bool>,
    /// Whether the record was cut to the length limit.
    pub truncated: bool,
}

impl Example {
    /// Positions that count in the loss.
    pub fn loss_tokens(&self) -> usize {
        self.mask.iter().filter(|m| **m).count()
    }
}

/// How records become examples.
#[derive(Debug, Clone)]
pub struct TokenizeOptions {
    /// Count every token in the loss, not only completions / assistant turns.
    pub train_on_inputs: bool,
    /// Cut examples longer than this many tokens (None: no limit).
    pub max_len: Option<usize>,
    /// Append the EOS token to `text` and `completion` records.
    pub append_eos: bool,
}

impl Default for TokenizeOptions {
    fn default() -> Self {
        TokenizeOptions {
            train_on_inputs: false,
            max_len: None,
            append_eos: true,
        }
    }
}

fn str_field<'a>(record: &'a Value, key: &str) -> std::result::Result<&'a str, String> {
    match record.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("`{key}` must be a string")),
        None => Err(format!("missing `{key}`")),
    }
}

fn push_eos(
    tok: &Tokenizer,
    ids: &mut Vec<u32>,
    mask: &mut Vec<bool>,
) -> std::result::Result<(), String> {
    let eos = *tok
        .eos_ids
        .first()
        .ok_or("the tokenizer has no EOS token")?;
    if ids.last() != Some(&eos) {
        ids.push(eos);
        mask.push(true);
    }
    Ok(())
}

/// Turns one record into an example. Errors are messages about the record itself; the
/// caller adds file and line.
pub fn tokenize_record(
    tok: &Tokenizer,
    format: DataFormat,
    record: &Value,
    opts: &TokenizeOptions,
) -> std::result::Result<Example, String> {
    if !record.is_object() {
        return Err("a record must be a JSON object".into());
    }
    let (mut ids, mut mask) = match format {
        DataFormat::Text => {
            let text = str_field(record, "text")?;
            let ids = tok.encode(text, true).map_err(|e| e.to_string())?;
            let mut mask = vec![true; ids.len()];
            let (mut ids, mut mask) = (ids, std::mem::take(&mut mask));
            if opts.append_eos {
                push_eos(tok, &mut ids, &mut mask)?;
            }
            (ids, mask)
        }
        DataFormat::Completion => {
            let prompt = str_field(record, "prompt")?;
            let completion = str_field(record, "completion")?;
            let mut ids = tok.encode(prompt, true).map_err(|e| e.to_string())?;
            let mut mask = vec![opts.train_on_inputs; ids.len()];
            let c = tok.encode(completion, false).map_err(|e| e.to_string())?;
            mask.extend(std::iter::repeat_n(true, c.len()));
            ids.extend(c);
            if opts.append_eos {
                push_eos(tok, &mut ids, &mut mask)?;
            }
            (ids, mask)
        }
        DataFormat::Chat => {
            let messages = record
                .get("messages")
                .and_then(Value::as_array)
                .ok_or("`messages` must be a list")?;
            let messages = &*chat::plain_messages(messages)?;
            if messages.is_empty() {
                return Err("`messages` is empty".into());
            }
            for (i, m) in messages.iter().enumerate() {
                let role = m
                    .get("role")
                    .and_then(Value::as_str)
                    .ok_or(format!("messages[{i}].role must be a string"))?;
                if !["system", "user", "assistant", "tool", "developer"].contains(&role) {
                    return Err(format!(
                        "messages[{i}].role `{role}` is not system, user, assistant or tool"
                    ));
                }
                if m.get("content").is_none() && m.get("tool_calls").is_none() {
                    return Err(format!("messages[{i}] has no content"));
                }
                if let Some(w) = m.get("weight") {
                    if w.as_f64() != Some(0.0) && w.as_f64() != Some(1.0) {
                        return Err(format!("messages[{i}].weight must be 0 or 1"));
                    }
                }
            }
            let tools = record.get("tools");
            let full = tok
                .apply_chat_template(messages, tools, false)
                .map_err(|e| e.to_string())?;
            let (ids, offsets) = tok
                .encode_with_offsets(&full, false)
                .map_err(|e| e.to_string())?;
            let mask: Vec<bool> = if opts.train_on_inputs {
                vec![true; ids.len()]
            } else {
                let spans = chat::assistant_spans(tok, messages, tools, &full)?;
                if spans.is_empty() {
                    return Err(
                        "no assistant message to learn from (all have weight 0 or none exist)"
                            .into(),
                    );
                }
                chat::span_mask(&offsets, &spans)
            };
            (ids, mask)
        }
    };
    if ids.len() < 2 {
        return Err("fewer than 2 tokens: nothing to predict".into());
    }
    mask[0] = false;
    let mut truncated = false;
    if let Some(max) = opts.max_len {
        if ids.len() > max {
            ids.truncate(max);
            mask.truncate(max);
            truncated = true;
        }
    }
    if !mask.iter().any(|m| *m) {
        return Err("no token counts in the loss (the prompt fills the length limit)".into());
    }
    Ok(Example {
        ids,
        mask,
        truncated,
    })
}

/// Streams the JSON records of a JSONL file with their 1-based line numbers; blank lines
/// are skipped; a line that is not JSON is an error naming file and line.
pub fn read_jsonl(path: &Path) -> Result<impl Iterator<Item = Result<(usize, Value)>>> {
    let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let path: PathBuf = path.to_path_buf();
    Ok(BufReader::new(file)
        .lines()
        .enumerate()
        .filter_map(move |(i, line)| {
            let line_no = i + 1;
            match line {
                Err(e) => Some(Err(EngineError::Data {
                    file: path.clone(),
                    line: line_no,
                    message: format!("unreadable: {e}"),
                })),
                Ok(l) if l.trim().is_empty() => None,
                Ok(l) => Some(
                    // A UTF-8 byte-order mark (as some editors write) opens the first line.
                    serde_json::from_str::<Value>(if i == 0 {
                        l.strip_prefix('\u{feff}').unwrap_or(&l)
                    } else {
                        &l
                    })
                    .map(|v| (line_no, v))
                    .map_err(|e| EngineError::Data {
                        file: path.clone(),
                        line: line_no,
                        message: format!("invalid JSON: {e}"),
                    }),
                ),
            }
        }))
}

/// Summary of a data file after tokenization.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct DataStats {
    pub records: usize,
    pub tokens: usize,
    pub loss_tokens: usize,
    pub truncated: usize,
    pub max_len: usize,
    /// Whether the examples came from the tokenized-data cache.
    pub from_cache: bool,
}

impl DataStats {
    /// Figures of a list of examples.
    pub fn of(examples: &[Example]) -> DataStats {
        DataStats {
            records: examples.len(),
            tokens: examples.iter().map(|e| e.ids.len()).sum(),
            loss_tokens: examples.iter().map(Example::loss_tokens).sum(),
            truncated: examples.iter().filter(|e| e.truncated).count(),
            max_len: examples.iter().map(|e| e.ids.len()).max().unwrap_or(0),
            from_cache: false,
        }
    }
}

/// The cache key of a data file: its content, the tokenizer (file, template, EOS) and how
/// records are turned into examples.
pub fn cache_key(path: &Path, tok: &Tokenizer, how: &str) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut h = Sha256::new();
    let mut f = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| EngineError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.update(tok.fingerprint.as_bytes());
    h.update(how.as_bytes());
    Ok(hex(&h.finalize()))
}

const CACHE_MAGIC: &[u8; 8] = b"MLXTTOK1";

/// Writes examples to a cache file (atomically).
pub fn write_cache(file: &Path, examples: &[Example]) -> Result<()> {
    let mut out =
        Vec::with_capacity(16 + examples.iter().map(|e| 5 + 5 * e.ids.len()).sum::<usize>());
    out.extend_from_slice(CACHE_MAGIC);
    out.extend_from_slice(&(examples.len() as u64).to_le_bytes());
    for e in examples {
        out.extend_from_slice(&(e.ids.len() as u32).to_le_bytes());
        out.push(u8::from(e.truncated));
        for id in &e.ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
        out.extend(e.mask.iter().map(|m| u8::from(*m)));
    }
    crate::fsutil::write_atomic(file, &out)
}

/// Reads a cache file; None when absent or not a valid cache (then it is rebuilt).
pub fn read_cache(file: &Path) -> Option<Vec<Example>> {
    let bytes = std::fs::read(file).ok()?;
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = bytes.get(at..at + n)?;
        at += n;
        Some(s)
    };
    if take(8)? != CACHE_MAGIC {
        return None;
    }
    let count = u64::from_le_bytes(take(8)?.try_into().ok()?) as usize;
    let mut out = Vec::with_capacity(count.min(1 << 24));
    for _ in 0..count {
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let truncated = take(1)?[0] != 0;
        let ids = take(4 * len)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mask = take(len)?.iter().map(|b| *b != 0).collect();
        out.push(Example {
            ids,
            mask,
            truncated,
        });
    }
    Some(out)
}

/// How a data file's records become examples: a built-in format (detected from the first
/// record when `None`), or the `custom` template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DataSpec {
    Builtin(Option<DataFormat>),
    Custom(CustomTemplate),
}

/// Reads and tokenizes a file per `data`; the first bad record fails with file:line.
pub fn load(
    path: &Path,
    tok: &Tokenizer,
    data: &DataSpec,
    opts: &TokenizeOptions,
) -> Result<(Vec<Example>, DataStats)> {
    match data {
        DataSpec::Builtin(format) => load_examples(path, tok, *format, opts),
        DataSpec::Custom(t) => load_records(path, |record| {
            let r = t.apply(record)?;
            tokenize_record(tok, DataFormat::Completion, &r, opts)
        }),
    }
}

/// [`load`] through a cache directory keyed by [`cache_key`]: a second reading of the same
/// file with the same tokenizer and options (the service's pre-flight, then its worker) is
/// one file read.
pub fn load_cached(
    path: &Path,
    tok: &Tokenizer,
    data: &DataSpec,
    opts: &TokenizeOptions,
    cache_dir: Option<&Path>,
) -> Result<(Vec<Example>, DataStats)> {
    let Some(dir) = cache_dir else {
        return load(path, tok, data, opts);
    };
    let how = format!(
        "{data:?}|{}|{:?}|{}",
        opts.train_on_inputs, opts.max_len, opts.append_eos
    );
    let file = dir.join(format!("{}.tok", cache_key(path, tok, &how)?));
    if let Some(examples) = read_cache(&file) {
        let mut stats = DataStats::of(&examples);
        stats.from_cache = true;
        return Ok((examples, stats));
    }
    let (examples, stats) = load(path, tok, data, opts)?;
    write_cache(&file, &examples)?;
    Ok((examples, stats))
}

/// The default cache directory: `MLXTUNE_CACHE_DIR`, else `$XDG_CACHE_HOME/mlxtune`, else
/// `$HOME/.cache/mlxtune` (tokenized data goes to its `tokenized/`).
pub fn default_cache_dir() -> Option<PathBuf> {
    let root = std::env::var_os("MLXTUNE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("mlxtune")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/mlxtune")))?;
    Some(root.join("tokenized"))
}

/// Reads and tokenizes a whole file; the first bad record fails with file:line.
/// `format: None` detects each file's format from its first record.
pub fn load_examples(
    path: &Path,
    tok: &Tokenizer,
    format: Option<DataFormat>,
    opts: &TokenizeOptions,
) -> Result<(Vec<Example>, DataStats)> {
    let mut format = format;
    load_records(path, |record| {
        let fmt = match format {
            Some(f) => f,
            None => {
                let f = detect_format(record).ok_or(
                    "cannot tell the format: expected `messages`, `prompt`+`completion` or `text`",
                )?;
                format = Some(f);
                f
            }
        };
        tokenize_record(tok, fmt, record, opts)
    })
}

/// Streams a JSONL file through `to_example`; an error names the file and line.
pub fn load_records(
    path: &Path,
    mut to_example: impl FnMut(&Value) -> std::result::Result<Example, String>,
) -> Result<(Vec<Example>, DataStats)> {
    let mut examples = Vec::new();
    for item in read_jsonl(path)? {
        let (line, record) = item?;
        let ex = to_example(&record).map_err(|message| EngineError::Data {
            file: path.to_path_buf(),
            line,
            message,
        })?;
        examples.push(ex);
    }
    if examples.is_empty() {
        return Err(EngineError::Data {
            file: path.to_path_buf(),
            line: 0,
            message: "no records".into(),
        });
    }
    let stats = DataStats::of(&examples);
    Ok((examples, stats))
}
