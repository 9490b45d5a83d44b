//! A task's inputs as local files: local files are read where they are, inline data
//! and remote inputs (HTTP(S) URIs, S3 objects) are first written into the task's
//! staging directory. Each keeps the name it is reported under (the URI), which also
//! says whether it is compressed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use grove_segment::ingest::{InputFile, local_inputs};
use grove_segment::spec::{IngestionSpec, InputSource};

use crate::error::{Error, Result};

/// The longest one HTTP input may take to arrive.
const HTTP_TIMEOUT: Duration = Duration::from_secs(3600);

/// The spec's inputs, fetched into `staging/inputs` where they are not local.
pub async fn fetch(spec: &IngestionSpec, staging: &Path) -> Result<Vec<InputFile>> {
    let dir = staging.join("inputs");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    if let Some(local) = local_inputs(spec, &dir)? {
        return Ok(local);
    }
    match &spec.input {
        InputSource::Http {
            uris,
            username,
            password,
        } => {
            let mut files = Vec::new();
            for (i, uri) in uris.iter().enumerate() {
                let path = dir.join(format!("input-{i}"));
                let (uri, user, password) = (uri.clone(), username.clone(), password.clone());
                let target = path.clone();
                tokio::task::spawn_blocking(move || {
                    fetch_http(&uri, user.as_deref(), password.as_deref(), &target)
                })
                .await
                .map_err(|e| Error::Invalid(format!("fetching input: {e}")))??;
                files.push(InputFile {
                    path,
                    name: uris[i].clone(),
                });
            }
            Ok(files)
        }
        InputSource::S3 {
            uris,
            prefixes,
            access_key_id,
            secret_access_key,
        } => {
            let credentials = (access_key_id.as_deref(), secret_access_key.as_deref());
            fetch_s3(uris, prefixes, credentials, &dir).await
        }
        InputSource::Local { .. } | InputSource::Inline { .. } => Ok(Vec::new()),
    }
}

fn fetch_http(uri: &str, user: Option<&str>, password: Option<&str>, path: &Path) -> Result<()> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            .build(),
    );
    let mut request = agent.get(uri);
    if let Some(user) = user {
        use base64::Engine as _;
        let pair = format!("{user}:{}", password.unwrap_or(""));
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        request = request.header("Authorization", format!("Basic {encoded}"));
    }
    let response = request
        .call()
        .map_err(|e| Error::Invalid(format!("fetching input {uri}: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        return Err(Error::Invalid(format!(
            "fetching input {uri}: HTTP {}",
            status.as_u16()
        )));
    }
    let mut body = response.into_body().into_reader();
    let mut file = std::fs::File::create(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    std::io::copy(&mut body, &mut file)
        .map_err(|e| Error::io(format!("fetching input {uri}"), e))?;
    file.flush()
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// `(bucket, key)` of `s3://bucket/key`.
fn split_s3(uri: &str) -> Result<(&str, &str)> {
    uri.strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/').or(Some((rest, ""))))
        .filter(|(bucket, _)| !bucket.is_empty())
        .ok_or_else(|| Error::Invalid(format!("{uri:?} is not an s3://bucket/... URI")))
}

/// Every object named, then every object under each prefix, in key order, each read
/// into a file of its own.
async fn fetch_s3(
    uris: &[String],
    prefixes: &[String],
    (access_key_id, secret_access_key): (Option<&str>, Option<&str>),
    dir: &Path,
) -> Result<Vec<InputFile>> {
    let store_for = |bucket: &str| -> Result<Box<dyn ObjectStore>> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(key) = access_key_id {
            builder = builder.with_config(AmazonS3ConfigKey::AccessKeyId, key);
        }
        if let Some(secret) = secret_access_key {
            builder = builder.with_config(AmazonS3ConfigKey::SecretAccessKey, secret);
        }
        let store = builder
            .build()
            .map_err(|e| Error::Invalid(format!("S3 bucket {bucket}: {e}")))?;
        Ok(Box::new(store))
    };
    let mut objects: Vec<(String, String)> = Vec::new();
    for uri in uris {
        let (bucket, key) = split_s3(uri)?;
        objects.push((bucket.to_string(), key.to_string()));
    }
    for prefix in prefixes {
        let (bucket, key) = split_s3(prefix)?;
        let store = store_for(bucket)?;
        let prefix_path = ObjectPath::from(key.trim_end_matches('/'));
        let mut listed: Vec<String> = Vec::new();
        let mut stream = store.list(Some(&prefix_path));
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| Error::Invalid(format!("listing {prefix}: {e}")))?;
            listed.push(meta.location.to_string());
        }
        if listed.is_empty() {
            return Err(Error::Invalid(format!("{prefix} holds no objects")));
        }
        listed.sort();
        objects.extend(listed.into_iter().map(|k| (bucket.to_string(), k)));
    }
    let mut files = Vec::new();
    for (i, (bucket, key)) in objects.iter().enumerate() {
        let uri = format!("s3://{bucket}/{key}");
        let path: PathBuf = dir.join(format!("input-{i}"));
        let store = store_for(bucket)?;
        let got = store
            .get(&ObjectPath::from(key.as_str()))
            .await
            .map_err(|e| Error::Invalid(format!("fetching input {uri}: {e}")))?;
        let mut file = std::fs::File::create(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::Invalid(format!("fetching input {uri}: {e}")))?;
            file.write_all(&chunk)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        files.push(InputFile { path, name: uri });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_uris_split_into_bucket_and_key() {
        assert_eq!(split_s3("s3://b/a/c.json").unwrap(), ("b", "a/c.json"));
        assert_eq!(split_s3("s3://b").unwrap(), ("b", ""));
        assert!(split_s3("s3:///key").is_err());
        assert!(split_s3("http://b/key").is_err());
    }
}
