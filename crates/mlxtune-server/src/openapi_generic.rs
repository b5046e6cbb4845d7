//! Responses every operation of a kind can give, whatever its handler: a query string that
//! does not parse (400), a cross-site request or WebSocket (403), a state-changing request
//! that is not JSON (415), a busy database (503), a full disk (507), a stream request that is not a WebSocket
//! upgrade (400, 426).
//! Added to the document here, where the layers that send them are described once.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder};
use utoipa::Modify;

pub struct GenericResponses;

fn error(description: &str) -> RefOr<Response> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build();
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content("application/json", content)
            .build(),
    )
}

fn add(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| error(description));
}

const CROSS_SITE: &str =
    "a browser request from an origin that is neither this server nor in server.cors_origins";

impl Modify for GenericResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            if let Some(op) = item.get.as_mut() {
                if op.responses.responses.contains_key("101") {
                    add(op, "400", "not a WebSocket upgrade request");
                    add(op, "403", CROSS_SITE);
                    add(op, "426", "the connection cannot be upgraded");
                }
            }
            let changing = [
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in changing.into_iter().flatten() {
                add(op, "403", CROSS_SITE);
                add(
                    op,
                    "415",
                    "a body that is not application/json (multipart/form-data for uploads)",
                );
                add(
                    op,
                    "503",
                    "the database is busy (code database_busy): nothing was changed",
                );
                add(
                    op,
                    "507",
                    "the server's disk is full (code disk_full): nothing was changed",
                );
            }
            for op in [&mut item.get, &mut item.post, &mut item.delete]
                .into_iter()
                .flatten()
            {
                // A parameter that is not in the path template is read from the query
                // (IntoParams types leave `in` as the default, path).
                let has_query = op.parameters.iter().flatten().any(|p| {
                    matches!(p.parameter_in, ParameterIn::Query)
                        || !path.contains(&format!("{{{}}}", p.name))
                });
                if has_query {
                    add(op, "400", "a query string that cannot be read");
                }
            }
        }
    }
}
