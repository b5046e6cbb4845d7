//! Tokenizers (`tokenizer.json` through the `tokenizers` crate, its post-processor
//! honoured) and chat templates (Jinja through minijinja, as Hugging Face renders them:
//! trim_blocks, lstrip_blocks, Python string methods).

use std::path::{Path, PathBuf};

use minijinja::{Environment, ErrorKind, Value as JValue};
use serde_json::Value;

use crate::error::{EngineError, Result};

/// Files a model directory's tokenizer may consist of.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "tokenizer.model",
];

/// A tokenizer with its special tokens and chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    file: PathBuf,
    template_file: PathBuf,
    chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub bos_id: Option<u32>,
    /// Every id that ends generation (config, generation config and tokenizer).
    pub eos_ids: Vec<u32>,
    pub pad_id: Option<u32>,
    /// Hash of the tokenizer file, chat template and EOS ids (keys tokenized-data caches).
    pub fingerprint: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("file", &self.file)
            .field("eos_ids", &self.eos_ids)
            .field("has_chat_template", &self.chat_template.is_some())
            .finish()
    }
}

fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| EngineError::Tokenizer {
            file: path.to_path_buf(),
            message: format!("not valid JSON: {e}"),
        })
}

/// Special token ids a model's own config declares (`config.json`), which the tokenizer
/// files may lack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelTokens {
    pub eos_token_ids: Vec<u32>,
    pub bos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
}

impl Tokenizer {
    /// Loads the tokenizer of a model directory; `model` adds the model config's EOS ids
    /// (and BOS / pad ids the tokenizer files do not name).
    pub fn from_dir(dir: &Path, model: Option<&ModelTokens>) -> Result<Self> {
        let file = dir.join("tokenizer.json");
        if !file.exists() {
            return Err(EngineError::MissingFile {
                dir: dir.to_path_buf(),
                file: "tokenizer.json".into(),
                why: "the fast-tokenizer file is needed; convert a sentencepiece tokenizer with transformers first".into(),
            });
        }
        let inner =
            tokenizers::Tokenizer::from_file(&file).map_err(|e| EngineError::Tokenizer {
                file: file.clone(),
                message: format!("does not load: {e}"),
            })?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg = read_json(&cfg_path)?.unwrap_or(Value::Null);
        let special = read_json(&dir.join("special_tokens_map.json"))?.unwrap_or(Value::Null);
        let pick =
            |key: &str| token_string(cfg.get(key)).or_else(|| token_string(special.get(key)));
        let bos_token = pick("bos_token");
        let eos_token = pick("eos_token");
        let pad_token = pick("pad_token");

        let jinja = dir.join("chat_template.jinja");
        let (chat_template, template_file) = if jinja.exists() {
            let t = std::fs::read_to_string(&jinja).map_err(|e| EngineError::io(&jinja, e))?;
            (Some(t), jinja)
        } else {
            let t = match cfg.get("chat_template") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                    .or_else(|| list.first())
                    .and_then(|t| t.get("template"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                _ => None,
            };
            let t = match t {
                Some(t) => Some(t),
                None => read_json(&dir.join("chat_template.json"))?.and_then(|v| {
                    v.get("chat_template")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                }),
            };
            (t, cfg_path.clone())
        };

        let id_of = |t: &Option<String>| t.as_deref().and_then(|t| inner.token_to_id(t));
        let mut eos_ids: Vec<u32> = Vec::new();
        let mut add = |id: u32| {
            if !eos_ids.contains(&id) {
                eos_ids.push(id)
            }
        };
        if let Some(m) = model {
            m.eos_token_ids.iter().copied().for_each(&mut add);
        }
        if let Some(gen) = read_json(&dir.join("generation_config.json"))? {
            match gen.get("eos_token_id") {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_u64)
                    .for_each(|i| add(i as u32)),
                Some(v) => v.as_u64().into_iter().for_each(|i| add(i as u32)),
                None => {}
            }
        }
        if let Some(id) = id_of(&eos_token) {
            add(id);
        }
        let fingerprint = {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            h.update(std::fs::read(&file).map_err(|e| EngineError::io(&file, e))?);
            h.update(chat_template.as_deref().unwrap_or("").as_bytes());
            h.update(format!("{eos_ids:?}").as_bytes());
            crate::fsutil::hex(&h.finalize())
        };
        let bos_id = id_of(&bos_token).or(model.and_then(|m| m.bos_token_id));
        let pad_id = id_of(&pad_token).or(model.and_then(|m| m.pad_token_id));
        let tok = Tokenizer {
            inner,
            file,
            template_file,
            chat_template,
            bos_token,
            eos_token,
            pad_token,
            bos_id,
            eos_ids,
            pad_id,
            fingerprint,
        };
        if let Some(t) = &tok.chat_template {
            tok.env(t)?;
        }
        Ok(tok)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`; `add_special` applies the post-processor (e.g. a BOS).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        Ok(self.encode_with_offsets(text, add_special)?.0)
    }

    /// Token ids with the byte range of `text` each came from.
    pub fn encode_with_offsets(
        &self,
        text: &str,
        add_special: bool,
    ) -> Result<(Vec<u32>, Vec<(usize, usize)>)> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| EngineError::Tokenizer {
                file: self.file.clone(),
                message: format!("encoding failed: {e}"),
            })?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| EngineError::Tokenizer {
                file: self.file.clone(),
                message: format!("decoding failed: {e}"),
            })
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    fn env(&self, template: &str) -> Result<Environment<'static>> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<JValue, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", |fmt: String| -> String {
            strftime_now(&fmt)
        });
        env.add_template_owned("chat", template.to_string())
            .map_err(|e| EngineError::Tokenizer {
                file: self.template_file.clone(),
                message: format!("chat template does not parse: {e}"),
            })?;
        Ok(env)
    }

    /// Renders `messages` (and optional `tools`) with the model's chat template.
    pub fn apply_chat_template(
        &self,
        messages: &[Value],
        tools: Option<&Value>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| EngineError::Tokenizer {
            file: self.template_file.clone(),
            message: "the model has no chat template (tokenizer_config.json `chat_template` or chat_template.jinja)".into(),
        })?;
        let env = self.env(template)?;
        let tmpl = env
            .get_template("chat")
            .map_err(|e| EngineError::Tokenizer {
                file: self.template_file.clone(),
                message: e.to_string(),
            })?;
        let ctx = minijinja::context! {
            messages => JValue::from_serialize(messages),
            tools => tools.map(JValue::from_serialize),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
            pad_token => self.pad_token.clone().unwrap_or_default(),
        };
        tmpl.render(ctx).map_err(|e| EngineError::Tokenizer {
            file: self.template_file.clone(),
            message: format!("chat template failed: {e}"),
        })
    }
}

/// Today's date for templates that print it (`strftime_now("%d %b %Y")`), in UTC, with
/// chrono's strftime directives; a format chrono cannot read is returned as it is.
fn strftime_now(fmt: &str) -> String {
    use chrono::format::{Item, StrftimeItems};
    use std::fmt::Write;
    let items: Vec<Item> = StrftimeItems::new(fmt).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return fmt.to_string();
    }
    let mut out = String::new();
    match write!(
        out,
        "{}",
        chrono::Utc::now().format_with_items(items.into_iter())
    ) {
        Ok(()) => out,
        Err(_) => fmt.to_string(),
    }
}

/// Copies the tokenizer files of `src` into `dst` (those that exist).
pub fn copy_tokenizer_files(src: &Path, dst: &Path) -> Result<()> {
    if src == dst {
        return Ok(());
    }
    for name in TOKENIZER_FILES {
        let from = src.join(name);
        if from.exists() {
            std::fs::copy(&from, dst.join(name)).map_err(|e| EngineError::io(&from, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod strftime_tests {
    #[test]
    fn strftime_now_formats_todays_date_and_leaves_unreadable_formats_alone() {
        let year = super::strftime_now("%Y");
        assert_eq!(year.len(), 4, "{year}");
        assert!(year.starts_with("20"), "{year}");
        let d = super::strftime_now("%d %B %Y");
        assert_eq!(d.split(' ').count(), 3, "{d}");
        assert_eq!(super::strftime_now("%Q"), "%Q");
    }
}
