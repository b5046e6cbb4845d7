//! Model names in requests, resolved through the registry with the server's database and
//! settings.

use crate::error::ApiResult;
use crate::registry::{aliased, resolve_in, Registry, Resolved};
use crate::state::AppState;

/// The server's registry.
pub fn registry(state: &AppState) -> Registry<'_> {
    Registry {
        db: &state.db,
        settings: &state.settings,
    }
}

/// What `name` stands for; errors name `param`.
pub async fn resolve(state: &AppState, name: &str, param: &str) -> ApiResult<Resolved> {
    resolve_in(registry(state), name, param).await
}

/// The name after the settings' aliases.
pub fn canonical<'a>(state: &'a AppState, name: &'a str) -> &'a str {
    aliased(&state.settings, name)
}
