//! Who may connect: users and their passwords, as every front end checks them, and
//! the cluster's own identity ([`ClusterSecret`]), which every internal call carries.
//!
//! A password is kept as its SCRAM-SHA-256 salted password (RFC 5802's
//! `Hi(password, salt, 4096)`), written `scram-sha-256$4096$SALT$SALTED` with both in
//! base64 (`grove passwd` prints one). Postgres clients prove they know the password
//! with SCRAM, which needs exactly this; HTTP basic auth and the Flight handshake send
//! the password itself, which is salted and compared. The salted password lets a
//! SCRAM client log in without knowing the password, so the file holding it must be
//! readable by Grove only, as a Postgres server's `pg_authid` is.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use pgwire::api::auth::sasl::scram::gen_salted_password;
use pgwire::api::auth::{AuthSource, LoginInfo, Password};
use pgwire::error::PgWireResult;

/// The SCRAM iteration count of every stored password: one count for all users,
/// because a SCRAM server names it before it knows who logs in.
pub const ITERATIONS: usize = 4096;

const SCHEME: &str = "scram-sha-256";

/// Base64 with or without its `=` padding: Go's Flight clients send basic
/// credentials unpadded.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The users who may connect.
#[derive(Debug, Default)]
pub struct Users {
    users: HashMap<String, Secret>,
}

/// What is kept of one password.
#[derive(Clone)]
struct Secret {
    salt: Vec<u8>,
    salted: Vec<u8>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Users {
    /// Users from `(name, stored password)` pairs; an error names the user whose
    /// password is not in the stored form.
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, String> {
        let mut users = HashMap::new();
        for (name, stored) in entries {
            let secret = parse(stored).map_err(|why| format!("user {name:?}: {why}"))?;
            if users.insert(name.to_string(), secret).is_some() {
                return Err(format!("user {name:?} is configured twice"));
            }
        }
        Ok(Users { users })
    }

    /// Whether `password` is `user`'s.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        self.users.get(user).is_some_and(|secret| {
            let salted = gen_salted_password(password, &secret.salt, ITERATIONS);
            constant_time_eq(&salted, &secret.salted)
        })
    }

    /// The user an `Authorization` header (`Basic base64(user:password)`, as HTTP and
    /// Flight send it) names, when the password is that user's.
    pub fn verify_basic(&self, header: &str) -> Option<String> {
        let encoded = header
            .strip_prefix("Basic ")
            .or_else(|| header.strip_prefix("basic "))?;
        let decoded = LENIENT_BASE64.decode(encoded.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        self.verify(user, password).then(|| user.to_string())
    }

    /// The passwords as pgwire's SCRAM exchange asks for them.
    pub fn scram_source(self: &Arc<Self>) -> Arc<dyn AuthSource> {
        Arc::new(ScramSource(Arc::clone(self)))
    }
}

/// The name internal calls go by: HTTP basic auth and Flight as this user, with the
/// cluster's secret as the password.
pub const INTERNAL_USER: &str = "grove_internal";

/// The shortest cluster secret accepted.
pub const MIN_SECRET: usize = 16;

/// The secret every node of a cluster shares: internal calls (broker to historical
/// and realtime task over Flight, workers to the overlord, the coordinator's,
/// overlord's, workers' and historicals' HTTP APIs) carry it as HTTP basic auth of
/// [`INTERNAL_USER`], and are refused without it.
#[derive(Clone)]
pub struct ClusterSecret {
    /// The whole `Authorization` header value it makes.
    authorization: String,
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// A secret from configuration; at least [`MIN_SECRET`] characters.
    pub fn new(secret: &str) -> Result<Self, String> {
        if secret.chars().count() < MIN_SECRET {
            return Err(format!(
                "the cluster secret must be at least {MIN_SECRET} characters long"
            ));
        }
        let credential = STANDARD.encode(format!("{INTERNAL_USER}:{secret}"));
        Ok(ClusterSecret {
            authorization: format!("Basic {credential}"),
        })
    }

    /// A fresh random secret, for a cluster in one process (`grove start`).
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Self::new(&text).unwrap_or_else(|_| unreachable!("43 characters are enough"))
    }

    /// The secret itself, to hand to a process this one starts.
    pub fn reveal(&self) -> String {
        let encoded = self.authorization.trim_start_matches("Basic ");
        let decoded = STANDARD.decode(encoded).unwrap_or_default();
        let text = String::from_utf8(decoded).unwrap_or_default();
        text.split_once(':')
            .map(|(_, secret)| secret.to_string())
            .unwrap_or_default()
    }

    /// The `Authorization` header value internal calls send.
    pub fn authorization(&self) -> &str {
        &self.authorization
    }

    /// Whether an `Authorization` header value is this cluster's, compared in
    /// constant time.
    pub fn admits(&self, header: Option<&str>) -> bool {
        header.is_some_and(|h| constant_time_eq(h.trim().as_bytes(), self.authorization.as_bytes()))
    }
}

/// The stored form of `password`, with a fresh random salt.
pub fn hash(password: &str) -> String {
    let salt: [u8; 16] = rand::random();
    let salted = gen_salted_password(password, &salt, ITERATIONS);
    format!(
        "{SCHEME}${ITERATIONS}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(salted)
    )
}

fn parse(stored: &str) -> Result<Secret, String> {
    let shape = || {
        format!(
            "the password must be stored as {SCHEME}${ITERATIONS}$SALT$SALTED (see `grove passwd`)"
        )
    };
    let mut parts = stored.split('$');
    let (Some(SCHEME), Some(iterations), Some(salt), Some(salted), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(shape());
    };
    if iterations != ITERATIONS.to_string() {
        return Err(format!(
            "{iterations} iterations; every password must use {ITERATIONS}"
        ));
    }
    let decode = |text: &str| STANDARD.decode(text).map_err(|_| shape());
    let (salt, salted) = (decode(salt)?, decode(salted)?);
    if salt.is_empty() || salted.len() != 32 {
        return Err(shape());
    }
    Ok(Secret { salt, salted })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug)]
struct ScramSource(Arc<Users>);

#[async_trait]
impl AuthSource for ScramSource {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().and_then(|name| self.0.users.get(name));
        let secret = match user {
            Some(secret) => secret.clone(),
            // An unknown user goes through the same exchange and fails as a wrong
            // password does, so a client cannot tell which names exist.
            None => Secret {
                salt: rand::random::<[u8; 16]>().to_vec(),
                salted: rand::random::<[u8; 32]>().to_vec(),
            },
        };
        Ok(Password::new(Some(secret.salt), secret.salted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_secret_admits_its_own_header_only() {
        assert!(ClusterSecret::new("too short").is_err());
        let secret = ClusterSecret::new("sixteen chars ok").unwrap();
        assert_eq!(secret.reveal(), "sixteen chars ok");
        assert!(secret.admits(Some(secret.authorization())));
        let other = ClusterSecret::new("sixteen chars OK").unwrap();
        assert!(!secret.admits(Some(other.authorization())));
        assert!(!secret.admits(None));
        assert!(!secret.admits(Some("Basic")));
        let generated = ClusterSecret::generate();
        assert_eq!(
            ClusterSecret::new(&generated.reveal())
                .unwrap()
                .authorization(),
            generated.authorization()
        );
        assert!(!format!("{generated:?}").contains(&generated.reveal()));
    }

    #[test]
    fn a_hashed_password_verifies_and_no_other_does() {
        let stored = hash("s3cret");
        let users = Users::new([("alice", stored.as_str())]).unwrap();
        assert!(users.verify("alice", "s3cret"));
        assert!(!users.verify("alice", "s3cret "));
        assert!(!users.verify("bob", "s3cret"));
        // The salt is fresh each time.
        assert_ne!(hash("s3cret"), stored);
    }

    #[test]
    fn basic_credentials_are_decoded_and_checked() {
        let stored = hash("pa:ss");
        let users = Users::new([("alice", stored.as_str())]).unwrap();
        let basic = |credentials: &str| format!("Basic {}", STANDARD.encode(credentials));
        assert_eq!(
            users.verify_basic(&basic("alice:pa:ss")).as_deref(),
            Some("alice")
        );
        let unpadded = format!(
            "Basic {}",
            STANDARD.encode("alice:pa:ss").trim_end_matches('=')
        );
        assert_eq!(users.verify_basic(&unpadded).as_deref(), Some("alice"));
        assert_eq!(users.verify_basic(&basic("alice:pa")), None);
        assert_eq!(users.verify_basic(&basic("alice")), None);
        assert_eq!(users.verify_basic("Basic !!!"), None);
        assert_eq!(users.verify_basic("Bearer abc"), None);
    }

    #[test]
    fn a_malformed_stored_password_names_its_user() {
        for stored in [
            "s3cret",
            "scram-sha-256$4096$c2FsdA==",
            "scram-sha-256$1000$c2FsdA==$c2FsdA==",
            "scram-sha-256$4096$!!$c2FsdA==",
            "scram-sha-256$4096$c2FsdA==$c2FsdA==",
        ] {
            let err = Users::new([("carol", stored)]).unwrap_err();
            assert!(err.contains("\"carol\""), "{err}");
        }
        let stored = hash("x");
        let err = Users::new([("dave", stored.as_str()), ("dave", stored.as_str())]).unwrap_err();
        assert!(err.contains("twice"), "{err}");
    }
}
