//! Uploaded files (`file`, OpenAI's Files API shape).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An uploaded file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FileObject {
    /// `file-…`.
    pub id: String,
    /// Always `file`.
    pub object: String,
    pub bytes: i64,
    pub created_at: i64,
    pub filename: String,
    /// Always `fine-tune`.
    pub purpose: String,
    /// Always `processed`: the pre-flight ran when it was uploaded.
    pub status: String,
    /// JSONL records it holds.
    pub records: i64,
}

/// A page of files, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<FileObject>,
    pub has_more: bool,
}

/// The answer to a deletion.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileDeleted {
    pub id: String,
    /// Always `file`.
    pub object: String,
    pub deleted: bool,
}

/// The multipart form of an upload (for the document: the handler reads it as a stream).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FileUpload {
    /// The JSONL file.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// Must be `fine-tune`.
    pub purpose: String,
}
