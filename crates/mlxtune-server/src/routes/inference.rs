//! `POST /v1/chat/completions` and `POST /v1/completions`, OpenAI-compatible: a JSON answer,
//! or with `stream: true` server-sent events (`data: {chunk}` … `data: [DONE]`). A client
//! that disconnects mid-stream stops the generation.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream, StreamExt};
use mlxtune_engine::generate::Generation;

use super::body::Body;
use super::generation::{prepare, Prompt};
use crate::api::inference::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatRequest, ChunkChoice,
    Completion, CompletionChoice, CompletionRequest, Delta, Role, Usage,
};
use crate::api::ErrorBody;
use crate::db::now;
use crate::error::ApiResult;
use crate::inference::complete;
use crate::inference::run::Piece;
use crate::state::AppState;

pub(crate) fn usage(g: &Generation) -> Usage {
    let (p, c) = (g.prompt_tokens as u32, g.token_ids.len() as u32);
    Usage {
        prompt_tokens: p,
        completion_tokens: c,
        total_tokens: p + c,
    }
}

/// POST /v1/chat/completions
#[utoipa::path(post, path = "/v1/chat/completions", operation_id = "createChatCompletion", request_body = ChatRequest,
    responses((status = 200, body = ChatCompletion, description = "with `stream: true`: text/event-stream of ChatCompletionChunk, then [DONE]"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn chat(
    State(state): State<AppState>,
    Body(req): Body<ChatRequest>,
) -> ApiResult<Response> {
    let s = req.sampling();
    let ready = prepare(&state, &req.model, Prompt::Chat(&req.messages), &s).await?;
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let model = ready.model.clone();
    if s.stream {
        return Ok(sse(chat_chunks(ready.pieces, id, model, s.include_usage)));
    }
    let g = complete(ready).await?;
    Ok(Json(ChatCompletion {
        id,
        object: "chat.completion".into(),
        created: now(),
        model,
        choices: vec![ChatChoice {
            index: 0,
            message: AssistantMessage {
                role: Role::Assistant,
                content: g.text.clone(),
            },
            finish_reason: g.finish_reason.clone(),
        }],
        usage: usage(&g),
    })
    .into_response())
}

/// POST /v1/completions
#[utoipa::path(post, path = "/v1/completions", operation_id = "createCompletion", request_body = CompletionRequest,
    responses((status = 200, body = Completion, description = "with `stream: true`: text/event-stream of Completion chunks, then [DONE]"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn completions(
    State(state): State<AppState>,
    Body(req): Body<CompletionRequest>,
) -> ApiResult<Response> {
    let s = req.sampling();
    let ready = prepare(&state, &req.model, Prompt::Text(&req.prompt), &s).await?;
    let id = format!("cmpl-{}", uuid::Uuid::new_v4().simple());
    let model = ready.model.clone();
    if s.stream {
        return Ok(sse(completion_chunks(
            ready.pieces,
            id,
            model,
            s.include_usage,
        )));
    }
    let g = complete(ready).await?;
    let choice = CompletionChoice {
        index: 0,
        text: g.text.clone(),
        finish_reason: Some(g.finish_reason.clone()),
    };
    Ok(Json(completion(&id, &model, choice, Some(usage(&g)))).into_response())
}

fn completion(id: &str, model: &str, choice: CompletionChoice, usage: Option<Usage>) -> Completion {
    Completion {
        id: id.into(),
        object: "text_completion".into(),
        created: now(),
        model: model.into(),
        choices: vec![choice],
        usage,
    }
}

fn sse(events: impl Stream<Item = String> + Send + 'static) -> Response {
    let events = events
        .chain(stream::once(async { "[DONE]".to_string() }))
        .map(|data| Ok::<_, Infallible>(Event::default().data(data)));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn error_event(e: &str) -> String {
    json(
        &serde_json::json!({ "error": { "code": "generation_failed", "message": e, "param": null } }),
    )
}

/// The generation's pieces as chat chunks: the role first, then text, then the finish.
fn chat_chunks(
    rx: tokio::sync::mpsc::Receiver<Piece>,
    id: String,
    model: String,
    include_usage: bool,
) -> impl Stream<Item = String> + Send + 'static {
    let chunk = move |choices: Vec<ChunkChoice>, usage: Option<Usage>| {
        json(&ChatCompletionChunk {
            id: id.clone(),
            object: "chat.completion.chunk".into(),
            created: now(),
            model: model.clone(),
            choices,
            usage,
        })
    };
    let one = |delta: Delta, finish_reason: Option<String>| {
        vec![ChunkChoice {
            index: 0,
            delta,
            finish_reason,
        }]
    };
    let role = Delta {
        role: Some(Role::Assistant),
        content: Some(String::new()),
    };
    let first = chunk(one(role, None), None);
    let rest = tokio_stream(rx).flat_map(move |p| {
        let out: Vec<String> = match p {
            Piece::Text(t) => {
                let text = Delta {
                    role: None,
                    content: Some(t),
                };
                vec![chunk(one(text, None), None)]
            }
            Piece::Done(g) => {
                let mut v = vec![chunk(
                    one(Delta::default(), Some(g.finish_reason.clone())),
                    None,
                )];
                if include_usage {
                    // OpenAI's usage chunk: no choices, the counts.
                    v.push(chunk(vec![], Some(usage(&g))));
                }
                v
            }
            Piece::Failed(e) => vec![error_event(&e)],
            Piece::Rejected(e) => vec![error_event(&e.message)],
            Piece::Started { .. } => vec![],
        };
        stream::iter(out)
    });
    stream::once(async move { first }).chain(rest)
}

fn completion_chunks(
    rx: tokio::sync::mpsc::Receiver<Piece>,
    id: String,
    model: String,
    include_usage: bool,
) -> impl Stream<Item = String> + Send + 'static {
    tokio_stream(rx).filter_map(move |p| {
        std::future::ready(match p {
            Piece::Text(text) => Some(json(&completion(
                &id,
                &model,
                CompletionChoice {
                    index: 0,
                    text,
                    finish_reason: None,
                },
                None,
            ))),
            Piece::Done(g) => {
                let choice = CompletionChoice {
                    index: 0,
                    text: String::new(),
                    finish_reason: Some(g.finish_reason.clone()),
                };
                Some(json(&completion(
                    &id,
                    &model,
                    choice,
                    include_usage.then(|| usage(&g)),
                )))
            }
            Piece::Failed(e) => Some(error_event(&e)),
            Piece::Rejected(e) => Some(error_event(&e.message)),
            Piece::Started { .. } => None,
        })
    })
}

/// The receiver as a stream; dropping the stream (client gone) drops the receiver, which
/// stops the generation.
fn tokio_stream(
    rx: tokio::sync::mpsc::Receiver<Piece>,
) -> impl Stream<Item = Piece> + Send + 'static {
    stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) })
}
