//! `/v1/models`: the registry (OpenAI's list shape plus lineage), registering and deleting
//! base models, and the product document's `POST /v1/models/{id}/generate`.

use axum::extract::{Path, State};
use axum::Json;

use super::body::Body;
use super::generation::{prepare, Prompt};
use super::inference::usage;
use super::names;
use crate::api::inference::{ChatMessage, GenerateRequest, GenerateResponse, Role, Sampling};
use crate::api::{ErrorBody, ModelDeleted, ModelKind, ModelList, ModelObject, RegisterModel};
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::inference::complete;
use crate::state::AppState;

/// GET /v1/models
#[utoipa::path(get, path = "/v1/models", operation_id = "listModels", responses((status = 200, body = ModelList)))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<ModelList>> {
    let mut data = db::list_models(&state.db).await?;
    let loaded = state.inference.loaded();
    for m in &mut data {
        m.loaded = loaded.contains(&m.id);
    }
    Ok(Json(ModelList {
        object: "list".into(),
        data,
    }))
}

async fn model_or_404(state: &AppState, id: &str) -> ApiResult<ModelObject> {
    let id = names::canonical(state, id);
    db::get_model(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found_param("model", &format!("model `{id}`")))
}

/// GET /v1/models/{id}
#[utoipa::path(get, path = "/v1/models/{id}", operation_id = "retrieveModel", params(("id" = String, Path, description = "model id")),
    responses((status = 200, body = ModelObject), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ModelObject>> {
    Ok(Json(model_or_404(&state, &id).await?))
}

/// POST /v1/models: registers a base model by directory, `.gguf` file or Hugging Face id
/// (downloaded now).
#[utoipa::path(post, path = "/v1/models", operation_id = "registerModel", request_body = RegisterModel,
    responses((status = 200, body = ModelObject), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    Body(req): Body<RegisterModel>,
) -> ApiResult<Json<ModelObject>> {
    let id = req.id.clone().unwrap_or_else(|| req.source.clone());
    if id.trim().is_empty() || id.starts_with("ft:") {
        return Err(ApiError::invalid(
            "id",
            "must not be empty or start with `ft:` (fine-tuned models are made by jobs)",
        ));
    }
    if db::get_model(&state.db, &id).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "a model `{id}` is already registered"
        )));
    }
    let resolved = names::resolve(&state, &req.source, "source").await?;
    let m = ModelObject {
        id: id.clone(),
        object: "model".into(),
        created: db::now(),
        owned_by: "user".into(),
        kind: ModelKind::Base,
        source: req.source,
        path: Some(resolved.dir.display().to_string()),
        lineage: None,
        loaded: false,
    };
    // A Hugging Face id registers itself (under its own id) when downloaded.
    let registered_by_download = id == m.source && db::get_model(&state.db, &id).await?.is_some();
    if !registered_by_download && !db::insert_model(&state.db, &m).await? {
        return Err(ApiError::conflict(format!(
            "a model `{id}` is already registered"
        )));
    }
    Ok(Json(model_or_404(&state, &id).await?))
}

/// DELETE /v1/models/{id}: not while a fine-tuned model or a queued or running job uses it.
/// Files stay where they are.
#[utoipa::path(delete, path = "/v1/models/{id}", operation_id = "deleteModel", params(("id" = String, Path, description = "model id")),
    responses((status = 200, body = ModelDeleted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ModelDeleted>> {
    let m = model_or_404(&state, &id).await?;
    let users = db::derived_from(&state.db, &m.id).await?;
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "`{}` is the base of {}",
            m.id,
            users.join(", ")
        )));
    }
    if db::model_in_use(&state.db, &m.id).await? {
        return Err(ApiError::conflict(format!(
            "a queued, running or paused job trains `{}`",
            m.id
        )));
    }
    db::delete_model(&state.db, &m.id).await?;
    Ok(Json(ModelDeleted {
        id: m.id,
        object: "model".into(),
        deleted: true,
    }))
}

/// POST /v1/models/{id}/generate: `{prompt, maxTokens, temperature}` → `{text, ...}`.
#[utoipa::path(post, path = "/v1/models/{id}/generate", operation_id = "generateWithModel", params(("id" = String, Path, description = "model id")),
    request_body = GenerateRequest,
    responses((status = 200, body = GenerateResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn generate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(req): Body<GenerateRequest>,
) -> ApiResult<Json<GenerateResponse>> {
    let s = Sampling {
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        ..Sampling::default()
    };
    let message = [ChatMessage {
        role: Role::User,
        content: req.prompt.clone(),
        name: None,
    }];
    let prompt = if req.chat {
        Prompt::Chat(&message)
    } else {
        Prompt::Text(&req.prompt)
    };
    let ready = prepare(&state, &id, prompt, &s).await?;
    let model = ready.model.clone();
    let g = complete(ready).await?;
    Ok(Json(GenerateResponse {
        model,
        text: g.text.clone(),
        finish_reason: g.finish_reason.clone(),
        usage: usage(&g),
    }))
}
