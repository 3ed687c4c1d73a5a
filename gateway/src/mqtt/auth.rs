//! Username/password checks against argon2id PHC hashes.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2};
use tokio::sync::Semaphore;

use super::MqttError;

/// Hashes `password` as an argon2id PHC string (OWASP defaults: m=19 MiB, t=2, p=1) for
/// `[mqtt.users]`. Behind `ironbridge hash-password`.
pub fn hash_password(password: &str) -> Result<String, MqttError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| MqttError::Hash(e.to_string()))
}

/// Checks `password` against an argon2id PHC string (false for a malformed hash). Blocking:
/// tens of milliseconds and ~19 MiB; callers bound concurrency and use `spawn_blocking`.
pub fn verify_password(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Why a configured hash is unusable, for the config error.
pub(crate) fn check_phc(phc: &str) -> Result<(), String> {
    let h = PasswordHash::new(phc).map_err(|e| {
        format!("not a PHC hash string ({e}); generate one with `ironbridge hash-password`")
    })?;
    if h.algorithm != Algorithm::Argon2id.ident() {
        return Err(format!(
            "hash algorithm is {}, expected argon2id",
            h.algorithm
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthOutcome {
    Accepted,
    /// Unknown user or wrong password (CONNACK 0x04 / 0x86).
    BadCredentials,
    /// No credentials and anonymous access is off (CONNACK 0x05 / 0x87).
    NotAuthorized,
}

pub(crate) struct Authenticator {
    users: HashMap<String, String>,
    allow_anonymous: bool,
    /// Verified against for unknown users so that response time does not reveal usernames.
    dummy: String,
    /// argon2 costs ~19 MiB and tens of ms per check: bound concurrent checks so a connect
    /// storm cannot exhaust memory or the blocking pool.
    slots: Arc<Semaphore>,
}

impl Authenticator {
    pub(crate) fn new(
        users: &std::collections::BTreeMap<String, String>,
        allow_anonymous: bool,
    ) -> Result<Self, MqttError> {
        Ok(Authenticator {
            users: users.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            allow_anonymous,
            dummy: hash_password("ironbridge-dummy-password")?,
            slots: Arc::new(Semaphore::new(2)),
        })
    }

    pub(crate) async fn check(&self, login: Option<(String, String)>) -> AuthOutcome {
        let Some((user, password)) = login else {
            return if self.allow_anonymous {
                AuthOutcome::Accepted
            } else {
                AuthOutcome::NotAuthorized
            };
        };
        let (phc, known) = match self.users.get(&user) {
            Some(h) => (h.clone(), true),
            None => (self.dummy.clone(), false),
        };
        let Ok(_permit) = self.slots.acquire().await else {
            return AuthOutcome::BadCredentials;
        };
        let ok = tokio::task::spawn_blocking(move || verify_password(&phc, &password))
            .await
            .unwrap_or(false);
        if ok && known {
            AuthOutcome::Accepted
        } else {
            AuthOutcome::BadCredentials
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_verify_and_anonymous() {
        let h = hash_password("s3cret").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        check_phc(&h).expect("valid");
        assert!(check_phc("s3cret").is_err());
        let users = [("plc".to_string(), h)].into_iter().collect();
        let a = Authenticator::new(&users, false).expect("auth");
        let login = |u: &str, p: &str| Some((u.to_string(), p.to_string()));
        assert_eq!(a.check(login("plc", "s3cret")).await, AuthOutcome::Accepted);
        assert_eq!(
            a.check(login("plc", "wrong")).await,
            AuthOutcome::BadCredentials
        );
        assert_eq!(
            a.check(login("nobody", "s3cret")).await,
            AuthOutcome::BadCredentials
        );
        assert_eq!(a.check(None).await, AuthOutcome::NotAuthorized);
        let anon = Authenticator::new(&users, true).expect("auth");
        assert_eq!(anon.check(None).await, AuthOutcome::Accepted);
        assert_eq!(
            anon.check(login("plc", "wrong")).await,
            AuthOutcome::BadCredentials
        );
    }
}
