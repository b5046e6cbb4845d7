//! The inference thread: MLX arrays never leave it. Requests arrive in order through a
//! channel (so generations run one at a time, first come first served); each answers
//! through its own channel, and stops at the next token once nobody listens any more (the
//! client disconnected).

use std::sync::mpsc::Receiver;
use std::sync::Arc;

use mlxtune_engine::generate::{generate, GenerateOptions, Generation};
use tokio::sync::mpsc::Sender;

use super::cache::{Loaded, ModelCache};
use super::{PromptInput, Request};
use crate::error::ApiError;
use crate::telemetry::Telemetry;

/// What the inference thread sends back.
pub enum Piece {
    /// The request is accepted: the model is loaded and the prompt fits.
    Started {
        model: String,
    },
    Text(String),
    Done(Generation),
    /// A 4xx: the model does not load, the prompt does not fit...
    Rejected(ApiError),
    Failed(String),
}

/// Serves requests until every sender is gone, counting how each ended.
pub fn serve(rx: Receiver<Request>, mut cache: ModelCache, telemetry: Arc<Telemetry>) {
    while let Ok(req) = rx.recv() {
        let reply = req.reply.clone();
        let (last, outcome) = match accept(&mut cache, req) {
            Ok(None) => continue,
            Ok(Some((loaded, ids, opts))) => {
                let (piece, cancelled) = run(&loaded, &ids, &opts, &reply);
                let outcome = match (&piece, cancelled) {
                    (_, true) => "cancelled".to_string(),
                    (Piece::Done(g), _) => {
                        telemetry.inference_tokens.inc_by(g.token_ids.len() as u64);
                        g.finish_reason.clone()
                    }
                    _ => "failed".to_string(),
                };
                (piece, outcome)
            }
            Err(e) => (Piece::Rejected(e), "rejected".to_string()),
        };
        let labels = crate::telemetry::label("outcome", &outcome);
        telemetry.inference_requests.get_or_create(&labels).inc();
        let _ = reply.blocking_send(last);
    }
}

type Accepted = (std::rc::Rc<Loaded>, Vec<u32>, GenerateOptions);

/// Loads the model and checks the prompt; None when the client has gone meanwhile.
fn accept(cache: &mut ModelCache, req: Request) -> Result<Option<Accepted>, ApiError> {
    if req.reply.is_closed() {
        return Ok(None);
    }
    mlxtune_engine::runtime::init().map_err(|e| ApiError::internal("MLX", e))?;
    let loaded = cache
        .get(&req.resolved)
        .map_err(|e| ApiError::invalid("model", e.to_string()))?;
    let ids = tokenize(&loaded, &req.prompt)?;
    let context = loaded.model.spec.max_position_embeddings as usize;
    let room = context.saturating_sub(ids.len());
    let max_tokens = match req.max_tokens {
        Some(n) if n as usize > room => {
            let why = format!(
                "{n} new tokens after a {}-token prompt exceed the model's context of {context}",
                ids.len()
            );
            return Err(ApiError::invalid("max_tokens", why));
        }
        Some(n) => n as usize,
        None => room.min(256),
    };
    if max_tokens == 0 {
        let why = format!("the prompt fills the model's context of {context} tokens");
        return Err(ApiError::invalid(req.prompt.param(), why));
    }
    let opts = GenerateOptions {
        max_tokens,
        sampling: req.sampling,
        stop: req.stop,
        stop_at_eos: true,
    };
    let started = Piece::Started {
        model: loaded.id.clone(),
    };
    Ok(req
        .reply
        .blocking_send(started)
        .ok()
        .map(|_| (loaded, ids, opts)))
}

/// Generates, sending each piece of text; stops at the first piece nobody receives. The
/// flag says whether it stopped so (the client is gone).
fn run(
    loaded: &Loaded,
    ids: &[u32],
    opts: &GenerateOptions,
    reply: &Sender<Piece>,
) -> (Piece, bool) {
    let mut cancelled = false;
    let mut on_text = |t: &str| {
        let sent = reply.blocking_send(Piece::Text(t.to_string())).is_ok();
        cancelled |= !sent;
        sent
    };
    let piece = match generate(&loaded.model, &loaded.tokenizer, ids, opts, &mut on_text) {
        Ok(g) => Piece::Done(g),
        Err(e) => Piece::Failed(e.to_string()),
    };
    (piece, cancelled)
}

/// Prompt ids: text as is (with the tokenizer's BOS), chats through the model's template,
/// as `mlxtune generate` (and `--chat`) does.
fn tokenize(loaded: &Loaded, prompt: &PromptInput) -> Result<Vec<u32>, ApiError> {
    let tok = &loaded.tokenizer;
    let bad = |e: mlxtune_engine::EngineError| ApiError::invalid(prompt.param(), e.to_string());
    match prompt {
        PromptInput::Text(t) => tok.encode(t, true).map_err(bad),
        PromptInput::Chat(messages) => {
            let text = tok.apply_chat_template(messages, None, true).map_err(bad)?;
            tok.encode(&text, false).map_err(bad)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Resolved;

    #[test]
    fn generation_stops_at_the_first_piece_nobody_receives() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/models/lfm2");
        let published = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut cache = ModelCache::new(u64::MAX, published.clone());
        let resolved = Resolved {
            id: "lfm2".into(),
            dir,
            adapter: None,
        };
        let loaded = cache.get(&resolved).unwrap();
        assert_eq!(*published.lock().unwrap(), vec!["lfm2".to_string()]);
        let ids = loaded.tokenizer.encode("Once upon a time", true).unwrap();
        let opts = GenerateOptions {
            max_tokens: 100,
            ..GenerateOptions::default()
        };
        // Someone listening: the whole generation.
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let (whole, cancelled) = run(&loaded, &ids, &opts, &tx);
        let Piece::Done(whole) = whole else {
            panic!("no generation")
        };
        assert!(!cancelled);
        let mut pieces = 0;
        while rx.try_recv().is_ok() {
            pieces += 1;
        }
        assert!(pieces > 1 && whole.token_ids.len() > 1, "{pieces} pieces");
        // Nobody listening (the client disconnected): it stops at once.
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        drop(rx);
        let (cut, cancelled) = run(&loaded, &ids, &opts, &tx);
        let Piece::Done(cut) = cut else {
            panic!("no generation")
        };
        assert!(cancelled);
        assert!(
            cut.token_ids.len() < whole.token_ids.len(),
            "{} vs {}",
            cut.token_ids.len(),
            whole.token_ids.len()
        );
    }
}
