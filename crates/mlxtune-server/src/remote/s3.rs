//! The S3 client of `s3://` datasets and of the artifacts store: endpoint, region and
//! credentials from `[s3]` (else the AWS environment), the endpoint's host checked and every
//! connection made through the checked resolver (`guard.rs`).

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};

use super::guard;
use crate::settings::Settings;

/// Why no client was built.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The endpoint is an address downloads may not reach.
    #[error(transparent)]
    Refused(#[from] guard::Refused),
    #[error(transparent)]
    Build(#[from] object_store::Error),
}

/// A client of `bucket`.
pub fn store(bucket: &str, settings: &Settings) -> Result<AmazonS3, S3Error> {
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let s3 = &settings.s3;
    if !s3.endpoint.is_empty() {
        b = b
            .with_endpoint(&s3.endpoint)
            .with_allow_http(s3.endpoint.starts_with("http://"));
    }
    if !s3.region.is_empty() {
        b = b.with_region(&s3.region);
    }
    if !s3.access_key_id.is_empty() {
        b = b
            .with_access_key_id(&s3.access_key_id)
            .with_secret_access_key(&s3.secret_access_key);
    }
    let remote = &settings.remote;
    if let Some(endpoint) = b.get_config_value(&AmazonS3ConfigKey::Endpoint) {
        let host = reqwest::Url::parse(&endpoint)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        guard::check_literal(&host, remote.allow_private_addresses)?;
    }
    Ok(
        b.with_http_connector(guard::CheckedConnector(remote.clone()))
            .build()?,
    )
}
