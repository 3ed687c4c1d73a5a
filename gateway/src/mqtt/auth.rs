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

/// What unknown user names are checked against, so that the answer takes as long as for a
/// known one (same algorithm and cost as [`hash_password`]; the result is ignored). A constant,
/// made once by `ironbridge hash-password` from a discarded random password: computing one at
/// every start cost two argon2 runs (tens of ms each, hundreds on a small ARM box) and 19 MiB
/// of memory each.
pub(crate) const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$BmBIXI1GV3CBKOxu/Wu/kw$OnvhWRSB5TEy0O9nPvkwopTwVjTC8UpU2NMumnwMUR4";

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
    /// argon2 costs ~19 MiB and tens of ms per check: bound concurrent checks so a connect
    /// storm cannot exhaust memory or the blocking pool.
    slots: Arc<Semaphore>,
}

impl Authenticator {
    pub(crate) fn new(
        users: &std::collections::BTreeMap<String, String>,
        allow_anonymous: bool,
    ) -> Self {
        Authenticator {
            users: users.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            allow_anonymous,
            slots: Arc::new(Semaphore::new(2)),
        }
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
            // Checked all the same, so that response time does not reveal user names.
            None => (DUMMY_PHC.to_string(), false),
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

    /// The dummy must cost what a real check costs, or timing tells unknown names apart.
    #[test]
    fn dummy_hash_has_the_parameters_of_new_hashes() {
        check_phc(DUMMY_PHC).expect("valid");
        let fresh = hash_password("anything").expect("hash");
        let params = |phc: &str| {
            let h = PasswordHash::new(phc).expect("parse");
            (
                h.algorithm.to_string(),
                h.version,
                argon2::Params::try_from(&h).expect("params"),
            )
        };
        assert_eq!(params(DUMMY_PHC), params(&fresh));
        assert!(!verify_password(DUMMY_PHC, "ironbridge-dummy-password"));
    }

    #[tokio::test]
    async fn hash_verify_and_anonymous() {
        let h = hash_password("s3cret").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        check_phc(&h).expect("valid");
        assert!(check_phc("s3cret").is_err());
        let users = [("plc".to_string(), h)].into_iter().collect();
        let a = Authenticator::new(&users, false);
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
        let anon = Authenticator::new(&users, true);
        assert_eq!(anon.check(None).await, AuthOutcome::Accepted);
        assert_eq!(
            anon.check(login("plc", "wrong")).await,
            AuthOutcome::BadCredentials
        );
    }
}
