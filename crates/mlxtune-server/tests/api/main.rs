//! The service as a client sees it: a real server on port 0, a fresh SQLite database per
//! test (or a scratch PostgreSQL server: `postgres`), real training on the tiny fixtures. Every response a test receives is checked
//! against the server's own OpenAPI document (`openapi_check`).
#![allow(clippy::unwrap_used)]

mod artifacts;
mod control;
mod dashboard;
mod datasets;
mod files;
mod first_hour;
mod hardening;
mod helpers;
mod hub;
mod jobs;
mod models;
mod openai_flow;
mod openai_sdk;
mod openapi_check;
mod postgres;
#[allow(dead_code)]
#[path = "../../../../tests/support/postgres.rs"]
mod postgres_server;
mod requests;
mod stream;
mod telemetry;
mod validating;
