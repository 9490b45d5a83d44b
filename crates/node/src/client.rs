//! A small blocking HTTP client for Grove's own JSON APIs (the overlord's task API,
//! a worker's logs): follows an overlord standby's redirect to its leader, request
//! body included, and turns error answers into messages that name the server's
//! reason.

use std::time::Duration;

use serde_json::Value;

/// Redirects followed before giving up (a standby points at the leader: one).
const MAX_REDIRECTS: usize = 3;

/// An answer: the status and the body.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_str(&self.body)
            .map_err(|e| format!("the server's answer is not JSON ({e}): {}", self.body))
    }

    /// The server's own reason, from Druid's error JSON when the body is one.
    pub fn reason(&self) -> String {
        let json: Option<Value> = serde_json::from_str(&self.body).ok();
        let message = json.as_ref().and_then(|j| {
            j.get("errorMessage")
                .or_else(|| j.get("error"))
                .and_then(Value::as_str)
                .map(String::from)
        });
        message.unwrap_or_else(|| self.body.trim().to_string())
    }
}

/// Why a request got no answer at all.
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

/// The environment variable that holds the cluster secret, for the roles and the
/// command-line tools alike.
pub const SECRET_ENV: &str = "GROVE_CLUSTER_SECRET";

pub struct Client {
    agent: ureq::Agent,
    /// The `Authorization` header every request carries, if any.
    authorization: Option<String>,
}

impl Client {
    pub fn new(timeout: Duration) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .build();
        Client {
            agent: ureq::Agent::new_with_config(config),
            authorization: None,
        }
    }

    /// Requests carry `authorization` (the cluster secret's header, or a user's).
    pub fn with_authorization(mut self, authorization: Option<&str>) -> Client {
        self.authorization = authorization.map(str::to_string);
        self
    }

    /// A client for a cluster's HTTP APIs, carrying the secret in
    /// `GROVE_CLUSTER_SECRET` when it is set (the command-line tools').
    pub fn for_cluster(timeout: Duration) -> Result<Client, String> {
        let secret = match std::env::var(SECRET_ENV) {
            Ok(text) => Some(
                grove_sql::auth::ClusterSecret::new(&text)
                    .map_err(|e| format!("{SECRET_ENV}: {e}"))?,
            ),
            Err(_) => None,
        };
        Ok(Client::new(timeout).with_authorization(secret.as_ref().map(|s| s.authorization())))
    }

    pub fn get(&self, url: &str) -> Result<Answer, Unreachable> {
        self.send(url, None)
    }

    pub fn post(&self, url: &str, body: &Value) -> Result<Answer, Unreachable> {
        self.send(url, Some(body))
    }

    fn send(&self, url: &str, body: Option<&Value>) -> Result<Answer, Unreachable> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let authorization = self.authorization.as_deref();
            let sent = match body {
                Some(body) => match authorization {
                    Some(a) => self
                        .agent
                        .post(&url)
                        .header("Authorization", a)
                        .send_json(body),
                    None => self.agent.post(&url).send_json(body),
                },
                None => match authorization {
                    Some(a) => self.agent.get(&url).header("Authorization", a).call(),
                    None => self.agent.get(&url).call(),
                },
            };
            let mut response = sent.map_err(|e| Unreachable(format!("{url}: {e}")))?;
            let status = response.status().as_u16();
            if matches!(status, 307 | 308) {
                let location = response
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| Unreachable(format!("{url}: a redirect without a location")))?;
                url = location.to_string();
                continue;
            }
            let body = response
                .body_mut()
                .read_to_string()
                .map_err(|e| Unreachable(format!("{url}: reading the answer: {e}")))?;
            return Ok(Answer { status, body });
        }
        Err(Unreachable(format!("{url}: too many redirects")))
    }
}

/// `http://` prepended to an address given without a scheme.
pub fn base_url(address: &str) -> String {
    let address = address.trim_end_matches('/');
    if address.starts_with("http://") || address.starts_with("https://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}
