//! Users and their read and write permissions, answered as InfluxDB 1.x with
//! `auth-enabled = true` answers (observed on a real node): 401 for missing
//! or wrong credentials, 403 for a user without the right to write to the
//! database.
//!
//! Passwords are kept as argon2id PHC strings. Checking one costs tens of
//! milliseconds of CPU by design, so a password that once matched is
//! remembered — as a keyed BLAKE2b digest, never in clear — and later
//! requests with the same credentials cost a hash, not an argon2 run. The
//! check itself runs on the blocking pool, off the request threads.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, Params};
use blake2::digest::{FixedOutput, KeyInit, Update};
use trident_service::config::AuthConfig;

use super::request::Credentials;

/// Why a request may not write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials, or credentials that cannot be read.
    #[error("unable to parse authentication credentials")]
    Unparsable,
    /// Unknown user or wrong password.
    #[error("authorization failed")]
    Failed,
    /// The user may not write to the database.
    #[error("\"{user}\" user is not authorized to write to database \"{db}\"")]
    Forbidden {
        /// The user.
        user: String,
        /// The database.
        db: String,
    },
    /// The user may not run a query statement.
    #[error(
        "error authorizing query: {user} not authorized to execute statement '{statement}', requires {privilege}"
    )]
    QueryForbidden {
        /// The user.
        user: String,
        /// The statement.
        statement: String,
        /// `READ on db` or `admin privilege`.
        privilege: String,
    },
}

impl AuthError {
    /// The HTTP status InfluxDB answers with.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Forbidden { .. } | AuthError::QueryForbidden { .. } => 403,
            _ => 401,
        }
    }

    /// Whether the answer carries `WWW-Authenticate: Basic realm="InfluxDB"`
    /// (1.x sends it with every 401).
    pub fn challenge(&self) -> bool {
        self.status() == 401
    }
}

#[derive(Debug)]
struct User {
    hash: String,
    admin: bool,
    write: HashSet<String>,
    read: HashSet<String>,
}

type Blake = blake2::Blake2bMac512;

/// The users of `gateway.auth`.
#[derive(Debug, Clone)]
pub struct Auth {
    users: Arc<HashMap<String, User>>,
    /// Digests of (user, password) pairs that matched.
    verified: Arc<Mutex<HashSet<Vec<u8>>>>,
    /// A per-process key for those digests.
    key: Arc<[u8; 32]>,
}

impl Auth {
    /// The users of `config`, or `None` when auth is off. A password hash
    /// that is not a PHC string is an error naming the user.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Self>, String> {
        if !config.enabled {
            return Ok(None);
        }
        let mut users = HashMap::new();
        for user in &config.users {
            let refuse = |why: String| {
                format!(
                    "gateway.auth.users: user \"{}\": password_hash is not an argon2 PHC string ({why}); make one with `trident-gateway --hash-password`",
                    user.name
                )
            };
            let parsed =
                PasswordHash::new(&user.password_hash).map_err(|e| refuse(e.to_string()))?;
            if parsed.hash.is_none() || parsed.salt.is_none() {
                return Err(refuse("no salt or hash in it".into()));
            }
            users.insert(
                user.name.clone(),
                User {
                    hash: user.password_hash.clone(),
                    admin: user.admin,
                    write: user.write.iter().cloned().collect(),
                    read: user.read.iter().cloned().collect(),
                },
            );
        }
        Ok(Some(Self {
            users: Arc::new(users),
            verified: Arc::default(),
            key: Arc::new(rand::random()),
        }))
    }

    /// The user the credentials prove, or why not.
    pub async fn authenticate(
        &self,
        credentials: Option<Credentials>,
    ) -> Result<String, AuthError> {
        let Some(credentials) = credentials else {
            return Err(AuthError::Unparsable);
        };
        let failed = AuthError::Failed;
        let Some(user) = self.users.get(&credentials.user) else {
            return Err(failed);
        };
        let digest = self.digest(&credentials);
        if self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&digest)
        {
            return Ok(credentials.user);
        }
        let hash = user.hash.clone();
        let password = credentials.password.clone();
        let matches = tokio::task::spawn_blocking(move || verify(&hash, &password))
            .await
            .unwrap_or(false);
        if !matches {
            return Err(failed);
        }
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest);
        Ok(credentials.user)
    }

    /// Whether `user` may write to `db`.
    pub fn authorize_write(&self, user: &str, db: &str) -> Result<(), AuthError> {
        let allowed = self
            .users
            .get(user)
            .is_some_and(|u| u.admin || u.write.contains(db) || u.write.contains("*"));
        if allowed {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                user: user.to_owned(),
                db: db.to_owned(),
            })
        }
    }

    /// Whether `user` may run `statement`: reading needs a read grant on
    /// `db` (or admin), changing databases needs admin, as on a 1.x node.
    pub fn authorize_query(
        &self,
        user: &str,
        statement: &str,
        db: Option<&str>,
        admin_only: bool,
    ) -> Result<(), AuthError> {
        let found = self.users.get(user);
        let (allowed, privilege) = match (admin_only, db) {
            (false, Some(db)) => (
                found.is_some_and(|u| u.admin || u.read.contains(db) || u.read.contains("*")),
                format!("READ on {db}"),
            ),
            (false, None) => (found.is_some(), String::new()),
            (true, _) => (found.is_some_and(|u| u.admin), "admin privilege".to_owned()),
        };
        if allowed {
            Ok(())
        } else {
            Err(AuthError::QueryForbidden {
                user: user.to_owned(),
                statement: statement.to_owned(),
                privilege,
            })
        }
    }

    fn digest(&self, credentials: &Credentials) -> Vec<u8> {
        let mut mac = <Blake as KeyInit>::new_from_slice(self.key.as_slice())
            .unwrap_or_else(|_| <Blake as KeyInit>::new(&Default::default()));
        mac.update(credentials.user.as_bytes());
        mac.update(&[0]);
        mac.update(credentials.password.as_bytes());
        mac.finalize_fixed().to_vec()
    }
}

fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// An argon2id PHC string for `password` (OWASP's recommended parameters,
/// the crate's defaults), for `gateway.auth.users[].password_hash`.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
    let argon = Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        Params::default(),
    );
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use trident_service::config::UserConfig;

    fn auth() -> Auth {
        let user = |name: &str, password: &str, admin: bool, write: &[&str]| UserConfig {
            name: name.into(),
            password_hash: hash_password(password).unwrap(),
            admin,
            write: write.iter().map(|s| (*s).to_owned()).collect(),
            read: vec![],
        };
        Auth::from_config(&AuthConfig {
            enabled: true,
            users: vec![
                user("w", "wp", false, &["d"]),
                user("all", "ap", false, &["*"]),
                user("root", "rp", true, &[]),
            ],
        })
        .unwrap()
        .unwrap()
    }

    use crate::http::request::Source;

    fn creds(user: &str, password: &str, source: Source) -> Option<Credentials> {
        Some(Credentials {
            user: user.into(),
            password: password.into(),
            source,
        })
    }

    #[tokio::test]
    async fn passwords_are_checked_against_their_hashes_and_remembered() {
        let auth = auth();
        assert_eq!(
            auth.authenticate(creds("w", "wp", Source::Basic))
                .await
                .unwrap(),
            "w"
        );
        assert_eq!(auth.verified.lock().unwrap().len(), 1);
        // Remembered: the same pair again, without argon2.
        assert_eq!(
            auth.authenticate(creds("w", "wp", Source::Params))
                .await
                .unwrap(),
            "w"
        );
        let wrong = auth
            .authenticate(creds("w", "nope", Source::Basic))
            .await
            .unwrap_err();
        assert_eq!(wrong, AuthError::Failed);
        assert_eq!(wrong.to_string(), "authorization failed");
        assert!(wrong.challenge(), "1.x challenges every 401");
        let unknown = auth
            .authenticate(creds("x", "wp", Source::Token))
            .await
            .unwrap_err();
        assert_eq!(unknown.status(), 401);
        let none = auth.authenticate(None).await.unwrap_err();
        assert_eq!(none, AuthError::Unparsable);
        assert_eq!(
            auth.verified.lock().unwrap().len(),
            1,
            "failures are not remembered"
        );
    }

    #[test]
    fn write_rights_follow_grants_wildcards_and_admin() {
        let auth = auth();
        assert!(auth.authorize_write("w", "d").is_ok());
        let e = auth.authorize_write("w", "e").unwrap_err();
        assert_eq!(
            (e.status(), e.to_string()),
            (
                403,
                "\"w\" user is not authorized to write to database \"e\"".to_owned()
            )
        );
        assert!(auth.authorize_write("all", "anything").is_ok());
        assert!(auth.authorize_write("root", "anything").is_ok());
        assert!(auth.authorize_write("ghost", "d").is_err());
    }

    #[test]
    fn a_hash_that_is_not_phc_is_refused_with_the_users_name() {
        let e = Auth::from_config(&AuthConfig {
            enabled: true,
            users: vec![UserConfig {
                name: "ann".into(),
                password_hash: "$argon2id$nonsense".into(),
                admin: false,
                write: vec![],
                read: vec![],
            }],
        })
        .unwrap_err();
        assert!(
            e.contains("\"ann\"") && e.contains("--hash-password"),
            "{e}"
        );
        assert!(Auth::from_config(&AuthConfig::default()).unwrap().is_none());
    }
}
