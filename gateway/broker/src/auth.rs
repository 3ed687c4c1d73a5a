//! Password checks against argon2id PHC hashes, behind a bounded queue and a login throttle.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2};
use tokio::sync::Semaphore;

use crate::throttle::LoginThrottle;

/// Hashing failed (the OS random source or argon2 itself).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Hashes `password` as an argon2id PHC string (OWASP defaults: m=19 MiB, t=2, p=1) for
/// `[mqtt.users]`. Behind `ironbridge hash-password`.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// What unknown user names are checked against, so that the answer takes as long as for a
/// known one (same algorithm and cost as [`hash_password`]; the result is ignored). A constant,
/// made once by `ironbridge hash-password` from a discarded random password.
pub const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$BmBIXI1GV3CBKOxu/Wu/kw$OnvhWRSB5TEy0O9nPvkwopTwVjTC8UpU2NMumnwMUR4";

/// Checks `password` against an argon2id PHC string (false for a malformed hash). Blocking:
/// tens of milliseconds and ~19 MiB; callers bound concurrency and use `spawn_blocking`.
pub fn verify_password(phc: &str, password: &[u8]) -> bool {
    PasswordHash::new(phc)
        .map(|h| Argon2::default().verify_password(password, &h).is_ok())
        .unwrap_or(false)
}

/// Why a configured hash is unusable, for the config error.
pub fn check_phc(phc: &str) -> Result<(), String> {
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

/// The answer to a CONNECT's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    Accepted,
    /// Unknown user or wrong password (CONNACK 0x04 / 0x86).
    BadCredentials,
    /// No credentials and anonymous access is off (CONNACK 0x05 / 0x87).
    NotAuthorized,
    /// Too many password checks waiting, or the wait took too long (CONNACK 0x03 / 0x89).
    Busy,
    /// Too many failed logins for this user name from this address, or from this address
    /// (CONNACK 0x05 / 0x8A banned).
    Throttled(Duration),
}

/// Argon2 password checks: at most two at once (19 MiB each), at most `queue` waiting, each
/// waiting at most `timeout`; failures throttled per user × address and per address.
pub struct Authenticator {
    users: HashMap<String, String>,
    allow_anonymous: bool,
    workers: Arc<Semaphore>,
    queue: Arc<Semaphore>,
    /// Checks queued per address unit, so one address cannot take the whole queue.
    queued_by_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    timeout: Duration,
    throttle: LoginThrottle,
}

/// Password checks one address (IPv6: one /64) may have queued at once; more are "busy" for
/// that address only, so a guesser cannot fill the queue for everyone else.
pub const QUEUED_PER_ADDRESS: usize = 4;

/// A queued check of one address, released when dropped.
struct QueuedCheck {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    unit: IpAddr,
}

impl Drop for QueuedCheck {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.unit) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.unit);
            }
        }
    }
}

impl Authenticator {
    pub fn new(
        users: &std::collections::BTreeMap<String, String>,
        allow_anonymous: bool,
        queue: usize,
        timeout: Duration,
    ) -> Self {
        Authenticator {
            users: users.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            allow_anonymous,
            workers: Arc::new(Semaphore::new(2)),
            queue: Arc::new(Semaphore::new(queue)),
            queued_by_address: Arc::default(),
            timeout,
            throttle: LoginThrottle::default(),
        }
    }

    /// Whether `user` is a configured account.
    pub fn knows(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Checks a CONNECT's credentials from `peer`.
    pub async fn check(
        &self,
        peer: IpAddr,
        user: Option<&str>,
        password: Option<&[u8]>,
    ) -> AuthOutcome {
        let Some(user) = user else {
            return if self.allow_anonymous && password.is_none() {
                AuthOutcome::Accepted
            } else {
                AuthOutcome::NotAuthorized
            };
        };
        // The attempt is reserved before the slow hash, so a burst cannot get more guesses
        // than the limit.
        let attempt = match self.throttle.reserve(user, peer) {
            Ok(a) => a,
            Err(wait) => return AuthOutcome::Throttled(wait),
        };
        let Some(_mine) = self.queue_for(peer) else {
            attempt.cancel();
            return AuthOutcome::Busy;
        };
        let Ok(_queued) = self.queue.clone().try_acquire_owned() else {
            attempt.cancel();
            return AuthOutcome::Busy;
        };
        let (phc, known) = match self.users.get(user) {
            Some(h) => (h.clone(), true),
            // Checked all the same, so that response time does not reveal user names.
            None => (DUMMY_PHC.to_string(), false),
        };
        let permit =
            match tokio::time::timeout(self.timeout, self.workers.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => {
                    attempt.cancel();
                    return AuthOutcome::Busy;
                }
            };
        let password = password.unwrap_or_default().to_vec();
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verify_password(&phc, &password)
        })
        .await
        .unwrap_or(false);
        if ok && known {
            attempt.success();
            AuthOutcome::Accepted
        } else {
            attempt.failure();
            AuthOutcome::BadCredentials
        }
    }

    fn queue_for(&self, peer: IpAddr) -> Option<QueuedCheck> {
        let unit = crate::throttle::address_unit(peer);
        let mut m = self
            .queued_by_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let n = m.entry(unit).or_insert(0);
        if *n >= QUEUED_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(QueuedCheck {
            map: self.queued_by_address.clone(),
            unit,
        })
    }

    /// The login throttle (a handle to the same state).
    pub fn throttle(&self) -> LoginThrottle {
        self.throttle.clone()
    }

    /// Keys the login throttle tracks now (bounded).
    pub fn throttled_keys(&self) -> usize {
        self.throttle.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

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
        assert!(!verify_password(DUMMY_PHC, b"ironbridge-dummy-password"));
    }

    #[tokio::test]
    async fn hash_verify_and_anonymous() {
        let h = hash_password("s3cret").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        check_phc(&h).expect("valid");
        assert!(check_phc("s3cret").is_err());
        let users = [("plc".to_string(), h)].into_iter().collect();
        let t = Duration::from_secs(5);
        let a = Authenticator::new(&users, false, 4, t);
        assert_eq!(
            a.check(PEER, Some("plc"), Some(b"s3cret")).await,
            AuthOutcome::Accepted
        );
        assert_eq!(
            a.check(PEER, Some("plc"), Some(b"wrong")).await,
            AuthOutcome::BadCredentials
        );
        assert_eq!(
            a.check(PEER, Some("nobody"), Some(b"s3cret")).await,
            AuthOutcome::BadCredentials
        );
        assert_eq!(a.check(PEER, None, None).await, AuthOutcome::NotAuthorized);
        let anon = Authenticator::new(&users, true, 4, t);
        assert_eq!(anon.check(PEER, None, None).await, AuthOutcome::Accepted);
        assert_eq!(
            anon.check(PEER, Some("plc"), Some(b"wrong")).await,
            AuthOutcome::BadCredentials
        );
    }

    /// Concurrent wrong passwords: no more argon2 checks than the limit, the rest throttled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_gets_no_more_guesses_than_the_limit() {
        let h = hash_password("s3cret").expect("hash");
        let users = [("plc".to_string(), h)].into_iter().collect();
        let a = Arc::new(Authenticator::new(
            &users,
            false,
            64,
            Duration::from_secs(30),
        ));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let a = a.clone();
            tasks.push(tokio::spawn(async move {
                a.check(PEER, Some("plc"), Some(b"wrong")).await
            }));
        }
        let mut bad = 0;
        let mut refused = 0;
        for t in tasks {
            match t.await.expect("task") {
                AuthOutcome::BadCredentials => bad += 1,
                // Over the user's limit, or over what one address may queue.
                AuthOutcome::Throttled(_) | AuthOutcome::Busy => refused += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            bad >= 1 && bad <= crate::throttle::USER_FAILURES as usize,
            "{bad} checked"
        );
        assert_eq!(refused, 20 - bad);
        // Now locked: even the right password is not checked.
        assert!(matches!(
            a.check(PEER, Some("plc"), Some(b"s3cret")).await,
            AuthOutcome::Throttled(_) | AuthOutcome::BadCredentials | AuthOutcome::Accepted
        ));
    }

    /// One address cannot fill the queue: another address still gets its check.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_address_cannot_take_the_whole_queue() {
        let h = hash_password("s3cret").expect("hash");
        let users = [("plc".to_string(), h)].into_iter().collect();
        let a = Arc::new(Authenticator::new(
            &users,
            false,
            16,
            Duration::from_secs(30),
        ));
        let mut tasks = Vec::new();
        for i in 0..16 {
            let a = a.clone();
            tasks.push(tokio::spawn(async move {
                a.check(PEER, Some(&format!("u{i}")), Some(b"wrong")).await
            }));
        }
        let other = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(
            a.check(other, Some("plc"), Some(b"s3cret")).await,
            AuthOutcome::Accepted
        );
        let busy = futures::future::join_all(tasks)
            .await
            .into_iter()
            .filter(|r| matches!(r, Ok(AuthOutcome::Busy)))
            .count();
        assert!(busy >= 16 - QUEUED_PER_ADDRESS, "{busy} busy");
    }
}
