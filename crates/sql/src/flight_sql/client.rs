//! The client side, for `grove sql --connect grpc://HOST:PORT`: statements run on a
//! remote broker (or `grove start`) over Flight SQL, in one session kept by its
//! cookie, so `SET`s and views carry from one statement to the next as they do in
//! the local shell.

use std::path::Path;
use std::sync::Mutex;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightDescriptor, HandshakeRequest, Ticket};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::{StreamExt, TryStreamExt, stream};
use prost::Message;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use super::{MAX_MESSAGE, MAX_REQUEST, SESSION_COOKIE};
use crate::repl::Statements;

/// A Flight SQL server, and this client's login and session on it.
pub struct Remote {
    client: FlightServiceClient<Channel>,
    /// The user and password, to log in again when the server forgot the token.
    credentials: Option<(String, String)>,
    /// `Bearer ...`, after a login.
    authorization: Mutex<Option<String>>,
    /// `arrow_flight_session_id=...`, once the server kept a session.
    cookie: Mutex<Option<String>>,
}

impl Remote {
    /// Connects to `url`: `grpc://HOST:PORT`, or `grpc+tls://HOST:PORT` (the
    /// system's roots, plus the PEM certificate `tls_ca` when given). A user in the
    /// URL (`grpc://alice@HOST:PORT`) logs in with the URL's password, else with
    /// `password`.
    pub async fn connect(
        url: &str,
        tls_ca: Option<&Path>,
        password: Option<&str>,
    ) -> Result<Remote, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        let tls = match parsed.scheme() {
            "grpc" | "grpc+tcp" => false,
            "grpc+tls" => true,
            other => {
                return Err(format!(
                    "{url}: the scheme is {other}; use grpc:// or grpc+tls://"
                ));
            }
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("{url} names no host"))?;
        let port = parsed
            .port()
            .ok_or_else(|| format!("{url} names no port"))?;
        let scheme = if tls { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{host}:{port}"))
            .map_err(|e| format!("{url}: {e}"))?;
        if tls {
            let mut config = ClientTlsConfig::new().with_native_roots();
            if let Some(ca) = tls_ca {
                let pem = std::fs::read(ca)
                    .map_err(|e| format!("TLS: cannot read {}: {e}", ca.display()))?;
                config = config.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| format!("TLS: {e}"))?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            format!("cannot connect to {url}: {e}{cause}")
        })?;
        let client = FlightServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_REQUEST);
        let credentials = (!parsed.username().is_empty()).then(|| {
            let user = url_decode(parsed.username());
            let password = match parsed.password() {
                Some(p) => url_decode(p),
                None => password.unwrap_or_default().to_string(),
            };
            (user, password)
        });
        let remote = Remote {
            client,
            credentials,
            authorization: Mutex::new(None),
            cookie: Mutex::new(None),
        };
        remote.log_in().await?;
        Ok(remote)
    }

    /// A handshake with basic credentials, for the bearer token later calls carry
    /// (nothing without credentials).
    async fn log_in(&self) -> Result<(), String> {
        let Some((user, password)) = &self.credentials else {
            return Ok(());
        };
        let basic = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        let mut request = Request::new(stream::iter([HandshakeRequest::default()]));
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(basic).map_err(|e| e.to_string())?,
        );
        let response = self
            .client
            .clone()
            .handshake(request)
            .await
            .map_err(|s| format!("logging in as {user}: {}", s.message()))?;
        let header = response
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let replies: Vec<_> = response
            .into_inner()
            .try_collect()
            .await
            .map_err(|s| format!("logging in as {user}: {}", s.message()))?;
        let bearer = match header {
            Some(header) => Some(header),
            None => replies
                .first()
                .map(|r| format!("Bearer {}", String::from_utf8_lossy(&r.payload))),
        };
        if let Ok(mut authorization) = self.authorization.lock() {
            *authorization = bearer;
        }
        Ok(())
    }

    /// A request carrying the login and the session cookie.
    fn request<T>(&self, message: T) -> Result<Request<T>, String> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        if let Some(authorization) = self.authorization.lock().ok().and_then(|a| a.clone()) {
            metadata.insert(
                "authorization",
                MetadataValue::try_from(authorization).map_err(|e| e.to_string())?,
            );
        }
        if let Some(cookie) = self.cookie.lock().ok().and_then(|c| c.clone()) {
            metadata.insert(
                "cookie",
                MetadataValue::try_from(cookie).map_err(|e| e.to_string())?,
            );
        }
        Ok(request)
    }

    /// Drops the session cookie; whether there was one.
    fn forget_session(&self) -> bool {
        self.cookie
            .lock()
            .map(|mut cookie| cookie.take().is_some())
            .unwrap_or(false)
    }

    /// Keeps the session cookie an answer sets.
    fn remember(&self, metadata: &MetadataMap) {
        let cookie = metadata
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|header| header.split(';').next())
            .find(|pair| pair.trim().starts_with(&format!("{SESSION_COOKIE}=")));
        if let (Some(cookie), Ok(mut kept)) = (cookie, self.cookie.lock()) {
            *kept = Some(cookie.trim().to_string());
        }
    }

    async fn fetch(&self, ticket: Ticket) -> Result<(Option<SchemaRef>, Vec<RecordBatch>), String> {
        let response = self
            .client
            .clone()
            .do_get(self.request(ticket)?)
            .await
            .map_err(message)?;
        let data = response.into_inner().map_err(FlightError::from);
        let mut batches = FlightRecordBatchStream::new_from_flight_data(data);
        let mut rows = Vec::new();
        while let Some(batch) = batches.next().await {
            rows.push(batch.map_err(|e| match e {
                FlightError::Tonic(status) => message(*status),
                other => other.to_string(),
            })?);
        }
        Ok((batches.schema().cloned(), rows))
    }
}

#[async_trait]
impl Statements for Remote {
    async fn query(&self, text: &str) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
        let command = CommandStatementQuery {
            query: text.to_string(),
            transaction_id: None,
        };
        let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
        let mut answer = self
            .client
            .clone()
            .get_flight_info(self.request(descriptor.clone())?)
            .await;
        if let Err(status) = &answer
            && status.code() == Code::Unauthenticated
            && self.credentials.is_some()
        {
            // The server forgot the token (it restarted, or it was idle an hour).
            self.log_in().await?;
            answer = self
                .client
                .clone()
                .get_flight_info(self.request(descriptor)?)
                .await;
        }
        let response = match answer {
            Ok(response) => response,
            Err(status) if status.code() == Code::NotFound && self.forget_session() => {
                return Err(format!(
                    "{}; the next statement starts a new session, without this one's \
                     views and settings",
                    status.message()
                ));
            }
            Err(status) => return Err(message(status)),
        };
        self.remember(response.metadata());
        let info = response.into_inner();
        let mut schema = info
            .clone()
            .try_decode_schema()
            .map(std::sync::Arc::new)
            .map_err(|e| e.to_string())?;
        let mut batches = Vec::new();
        for endpoint in &info.endpoint {
            let Some(ticket) = endpoint.ticket.clone() else {
                continue;
            };
            let (sent, rows) = self.fetch(ticket).await?;
            schema = sent.unwrap_or(schema);
            batches.extend(rows);
        }
        Ok((schema, batches))
    }
}

/// A server's error, as the shell prints it.
fn message(status: Status) -> String {
    status.message().to_string()
}

fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_url_are_percent_decoded() {
        assert_eq!(url_decode("s3cret%20pass%40x"), "s3cret pass@x");
        assert_eq!(url_decode("plain"), "plain");
        assert_eq!(url_decode("bad%zz%"), "bad%zz%");
    }

    #[tokio::test]
    async fn urls_that_are_not_flight_sql_are_refused_with_the_reason() {
        for (url, reason) in [
            ("http://127.0.0.1:8815", "use grpc://"),
            ("grpc://127.0.0.1", "no port"),
            ("not a url", "not a url"),
        ] {
            let e = Remote::connect(url, None, None).await.err().unwrap();
            assert!(e.contains(reason), "{url}: {e}");
        }
    }
}
