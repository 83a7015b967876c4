//! Shared fixtures: service addresses from the environment, unique names per test.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;

/// Reads a service address the stack exports; a missing one fails the test, loudly.
pub fn service_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "{name} is not set: this test needs the real services. Start them with \
             `eval \"$(dev/stack up)\"` (or run `.ci/run`)."
        ),
    }
}

/// The stack's Kafka bootstrap brokers.
pub fn kafka_brokers() -> String {
    service_env("STRATA_KAFKA_BROKERS")
}

/// The stack's PostgreSQL URL.
pub fn pg_url() -> String {
    service_env("STRATA_PG_URL")
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The stack's S3 settings, as `(endpoint, bucket, key id, secret, region)`.
pub fn s3_settings() -> (String, String, String, String, String) {
    (
        service_env("STRATA_S3_ENDPOINT"),
        service_env("STRATA_S3_BUCKET"),
        service_env("STRATA_S3_ACCESS_KEY_ID"),
        service_env("STRATA_S3_SECRET_ACCESS_KEY"),
        service_env("STRATA_S3_REGION"),
    )
}

/// The stack's S3 bucket through object_store, and a fresh prefix in it for this test.
pub fn s3_store() -> (Arc<dyn ObjectStore>, Path) {
    let (endpoint, bucket, key, secret, region) = s3_settings();
    let store = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_access_key_id(key)
        .with_secret_access_key(secret)
        .with_region(region)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .expect("S3 settings from the stack build a client");
    (Arc::new(store), Path::from(unique("e2e")))
}
