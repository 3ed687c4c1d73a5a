//! Web users, sessions and API tokens, kept in sled (`web.users`, `web.sessions`,
//! `web.tokens`), plus the first-boot setup code, the password policy and login rate limiting.
//!
//! * Passwords: argon2id (the same hashing as `[mqtt.users]`), at most two checks at once.
//! * Sessions: a random 256-bit id in the cookie; sled keeps only its SHA-256 (a copy of the
//!   state directory does not hand out live sessions), with idle and absolute expiry and a
//!   per-session CSRF token. At most [`MAX_SESSIONS_PER_USER`] per user; a new one ends that
//!   user's least recently used. Every session that ends other than by logout (expired, pushed
//!   out by the cap, ended by a password change or user deletion) is an audit record
//!   `session_end` with the reason (a logout is the request's own record).
//! * API tokens: `ibt_<id>_<secret>`, shown once, stored as SHA-256, with a role.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use ring::rand::SecureRandom as _;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use ironbridge_broker::throttle::LoginThrottle;

use crate::audit::{self, AuditTrail};
use crate::clock::{lock, now_ms};
use crate::config_store::ConfigStore;
use crate::state::{StateError, StateStore, Tree};

/// Live sessions one user may have; signing in once more ends their least recently used.
pub const MAX_SESSIONS_PER_USER: usize = 8;
pub const MAX_USERS: usize = 64;
pub const MAX_TOKENS: usize = 64;
pub const MIN_PASSWORD_LEN: usize = 10;
pub const MAX_PASSWORD_LEN: usize = 256;

/// Common passwords refused whatever their length (lower case; the check ignores case and
/// trailing digits/punctuation).
const COMMON: &[&str] = &[
    "password",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "123456",
    "1234567890",
    "12345678910",
    "qwerty",
    "qwertyuiop",
    "qwertz",
    "azerty",
    "letmein",
    "welcome",
    "iloveyou",
    "admin",
    "administrator",
    "changeme",
    "default",
    "secret",
    "monkey",
    "dragon",
    "football",
    "baseball",
    "sunshine",
    "princess",
    "starwars",
    "trustno1",
    "superman",
    "master",
    "shadow",
    "whatever",
    "abc123",
    "abcdefghij",
    "1q2w3e4r5t",
    "1qaz2wsx",
    "zaq12wsx",
    "asdfghjkl",
    "ironbridge",
    "gateway",
    "siemens",
    "schneider",
    "modbus",
    "scada",
    "operator",
    "engineer",
    "factory",
    "plant",
    "manager",
    "root",
    "toor",
    "raspberry",
    "user",
    "guest",
    "test",
    "testtest",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    /// Reads everything, writes tags and sends device commands; changes no configuration,
    /// users, tokens or certificates.
    Operator,
    Viewer,
}

impl Role {
    /// Whether this role includes everything `other` may do (admin ⊃ operator ⊃ viewer).
    pub fn includes(self, other: Role) -> bool {
        let rank = |r: Role| match r {
            Role::Viewer => 0,
            Role::Operator => 1,
            Role::Admin => 2,
        };
        rank(self) >= rank(other)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    hash: String,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionRec {
    user: String,
    csrf: String,
    created_ms: i64,
    last_seen_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_by: String,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
    #[serde(skip_serializing, default)]
    hash: String,
}

/// Who is making a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub role: Role,
    pub kind: PrincipalKind,
}

#[derive(Debug, Clone)]
pub enum PrincipalKind {
    Session {
        user: String,
        key: String,
        csrf: String,
        idle_expires_in_s: u64,
    },
    Token {
        id: String,
        name: String,
    },
}

impl Principal {
    /// The user name (sessions) or `token:<name>`.
    pub fn who(&self) -> String {
        match &self.kind {
            PrincipalKind::Session { user, .. } => user.clone(),
            PrincipalKind::Token { name, .. } => format!("token:{name}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("too many failed attempts; try again in {} s", .0.as_secs().max(1))]
    RateLimited(Duration),
    #[error("setup is already done")]
    SetupDone,
    #[error("wrong setup code")]
    BadSetupCode,
    #[error("{field}: {message}")]
    Policy {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("state store: {0}")]
    State(#[from] StateError),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<sled::Error> for AuthError {
    fn from(e: sled::Error) -> Self {
        AuthError::State(StateError::Sled(e))
    }
}

fn random_b64(bytes: usize) -> Result<String, AuthError> {
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| AuthError::Internal("no randomness".into()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&buf))
}

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Equality that takes the same time wherever the inputs differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a new password; the problem in words.
pub fn password_problem(username: &str, password: &str) -> Option<String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Some(format!(
            "must be at least {MIN_PASSWORD_LEN} characters long (is {n})"
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Some(format!("must be at most {MAX_PASSWORD_LEN} bytes long"));
    }
    let lower = password.to_lowercase();
    let uname = username.to_lowercase();
    if lower == uname || (uname.len() >= 4 && lower.contains(&uname)) {
        return Some("must not contain the user name".into());
    }
    let mut chars = lower.chars();
    if let Some(first) = chars.next()
        && chars.all(|c| c == first)
    {
        return Some("must not be one character repeated".into());
    }
    let core = lower.trim_end_matches(|c: char| c.is_ascii_digit() || c.is_ascii_punctuation());
    let core = core.trim_start_matches(|c: char| c.is_ascii_digit() || c.is_ascii_punctuation());
    if COMMON.iter().any(|c| *c == lower || *c == core) {
        return Some("is too common (it is on the list of passwords attackers try first)".into());
    }
    None
}

/// The throttle's user key of a web account: its own namespace beside MQTT user names (the
/// per-address count is shared, so one guessing host is one budget across both).
fn throttle_key(username: &str) -> String {
    format!("web:{}", username.to_lowercase())
}

/// The throttle's key for guesses of the first-boot setup code.
const SETUP_KEY: &str = "web-setup";

fn username_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 64 {
        return Some("must be 1 to 64 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Some("may contain letters, digits and . _ - @ only".into());
    }
    None
}

/// The web's users, sessions, tokens and setup state.
pub struct Auth {
    users: Tree,
    sessions: Tree,
    tokens: Tree,
    setup_code: Mutex<Option<String>>,
    /// Failed-login throttling: the same object (and policy) as the MQTT endpoint's logins.
    throttle: LoginThrottle,
    hash_slots: Arc<Semaphore>,
    config: Arc<ConfigStore>,
    audit: Arc<AuditTrail>,
}

/// Why a session ended (the `reason` of its `session_end` audit record).
#[derive(Debug, Clone, Copy)]
enum SessionEnd {
    /// Idle or absolute timeout.
    Expired,
    /// The user's oldest beyond [`MAX_SESSIONS_PER_USER`].
    Evicted,
    /// The password changed or the user was deleted.
    Revoked,
}

impl Auth {
    /// Opens the trees; while no user exists, makes a one-time setup code and logs it.
    /// `throttle` is shared with the MQTT endpoint's logins (one policy for both); ended
    /// sessions are recorded in `audit`.
    pub fn open(
        store: &StateStore,
        config: Arc<ConfigStore>,
        throttle: LoginThrottle,
        audit: Arc<AuditTrail>,
    ) -> Result<Auth, AuthError> {
        let auth = Auth {
            users: store.tree("web.users")?,
            sessions: store.tree("web.sessions")?,
            tokens: store.tree("web.tokens")?,
            setup_code: Mutex::new(None),
            throttle,
            hash_slots: Arc::new(Semaphore::new(2)),
            config,
            audit,
        };
        if auth.setup_required() {
            // Unambiguous characters, grouped for reading off a console.
            const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
            let mut raw = [0u8; 12];
            ring::rand::SystemRandom::new()
                .fill(&mut raw)
                .map_err(|_| AuthError::Internal("no randomness".into()))?;
            let chars: Vec<char> = raw
                .iter()
                .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
                .collect();
            let code = chars
                .chunks(4)
                .map(|c| c.iter().collect::<String>())
                .collect::<Vec<_>>()
                .join("-");
            tracing::warn!(
                setup_code = %code,
                "first-boot setup pending: no web user exists yet; open the web UI and create the admin account with this setup code"
            );
            *lock(&auth.setup_code) = Some(code);
        }
        Ok(auth)
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn setup_code(&self) -> Option<String> {
        lock(&self.setup_code).clone()
    }

    pub fn setup_required(&self) -> bool {
        self.users.is_empty()
    }

    fn idle(&self) -> Duration {
        Duration::from_secs(self.config.current().web.session_idle_timeout_s)
    }

    fn absolute(&self) -> Duration {
        Duration::from_secs(self.config.current().web.session_absolute_timeout_s)
    }

    async fn verify(&self, hash: String, password: String) -> bool {
        let Ok(_permit) = self.hash_slots.acquire().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || {
            crate::mqtt::verify_password(&hash, password.as_bytes())
        })
        .await
        .unwrap_or(false)
    }

    async fn hash(&self, password: &str) -> Result<String, AuthError> {
        let _permit = self
            .hash_slots
            .acquire()
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let pw = password.to_string();
        tokio::task::spawn_blocking(move || crate::mqtt::hash_password(&pw))
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?
            .map_err(|e| AuthError::Internal(e.to_string()))
    }

    pub fn user(&self, name: &str) -> Result<Option<User>, AuthError> {
        Ok(StateStore::get_json(&self.users, name)?)
    }

    pub fn users(&self) -> Result<Vec<User>, AuthError> {
        let mut out = Vec::new();
        for kv in self.users.iter() {
            let (_, v) = kv?;
            if let Ok(mut u) = serde_json::from_slice::<User>(&v) {
                u.hash.clear();
                out.push(u);
            }
        }
        Ok(out)
    }

    fn admins(&self) -> Result<usize, AuthError> {
        Ok(self
            .users()?
            .iter()
            .filter(|u| u.role == Role::Admin)
            .count())
    }

    /// First-boot setup: creates the first admin. Returns a new session (id, csrf).
    pub async fn setup(
        &self,
        username: &str,
        password: &str,
        code: &str,
        peer: IpAddr,
    ) -> Result<(User, String, String), AuthError> {
        if !self.setup_required() {
            return Err(AuthError::SetupDone);
        }
        let attempt = self
            .throttle
            .reserve(SETUP_KEY, peer)
            .map_err(AuthError::RateLimited)?;
        let expected = lock(&self.setup_code).clone();
        if let Some(expected) = expected {
            let given = code.trim().to_ascii_uppercase();
            if !ct_eq(given.as_bytes(), expected.as_bytes()) {
                attempt.failure();
                return Err(AuthError::BadSetupCode);
            }
        }
        // A refused user name or password is not a guess of the code.
        let user = match self.create_user(username, password, Role::Admin).await {
            Ok(u) => u,
            Err(e) => {
                attempt.cancel();
                return Err(e);
            }
        };
        *lock(&self.setup_code) = None;
        attempt.success();
        tracing::info!(user = %user.name, "first-boot setup done: admin account created");
        let (sid, csrf) = self.new_session(&user.name)?;
        Ok((user, sid, csrf))
    }

    /// Checks user name and password. The attempt is reserved in the throttle before the hash
    /// is checked, so a burst of concurrent guesses gets no more than the limit; the lock is per
    /// user name × address (and per address), so a guesser cannot lock the real user out from
    /// another address.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        peer: IpAddr,
    ) -> Result<(User, String, String), AuthError> {
        let attempt = match self.throttle.reserve(&throttle_key(username), peer) {
            Ok(a) => a,
            Err(wait) => {
                tracing::warn!(user = %username, %peer, retry_after_s = wait.as_secs(), "web login refused: too many failures");
                return Err(AuthError::RateLimited(wait));
            }
        };
        let found = self.user(username).ok().flatten();
        let hash = found
            .as_ref()
            .map(|u| u.hash.clone())
            .unwrap_or_else(|| crate::mqtt::DUMMY_PHC.to_string());
        let ok = self.verify(hash, password.to_string()).await && found.is_some();
        match (ok, found) {
            (true, Some(user)) => {
                attempt.success();
                let (sid, csrf) = self.new_session(&user.name)?;
                tracing::info!(user = %user.name, %peer, "web login");
                Ok((user, sid, csrf))
            }
            _ => {
                attempt.failure();
                tracing::warn!(user = %username, %peer, "web login failed");
                Err(AuthError::BadCredentials)
            }
        }
    }

    /// A new session for `user` (no password check: callers have done it).
    pub(crate) fn new_session(&self, user: &str) -> Result<(String, String), AuthError> {
        // The cap is per user: a user who signs in again and again only ends their own oldest
        // sessions, never another user's (the total stays under MAX_USERS × the cap).
        let mut own: Vec<(i64, sled::IVec)> = self
            .sessions
            .iter()
            .filter_map(|kv| kv.ok())
            .filter_map(|(k, v)| {
                serde_json::from_slice::<SessionRec>(&v)
                    .ok()
                    .filter(|s| s.user == user)
                    .map(|s| (s.last_seen_ms, k))
            })
            .collect();
        own.sort_by_key(|(t, _)| *t);
        let excess = (own.len() + 1).saturating_sub(MAX_SESSIONS_PER_USER);
        for (_, k) in own.into_iter().take(excess) {
            self.sessions.remove(k)?;
            self.session_ended(user, SessionEnd::Evicted);
        }
        let sid = random_b64(32)?;
        let csrf = random_b64(32)?;
        let now = now_ms();
        StateStore::put_json(
            &self.sessions,
            &sha256_hex(&sid),
            &SessionRec {
                user: user.to_string(),
                csrf: csrf.clone(),
                created_ms: now,
                last_seen_ms: now,
            },
        )?;
        Ok((sid, csrf))
    }

    /// The session behind a cookie value, if it is live (and its user still exists); refreshes
    /// its idle timer.
    pub fn session(&self, sid: &str) -> Option<Principal> {
        let key = sha256_hex(sid);
        let mut rec: SessionRec = StateStore::get_json(&self.sessions, &key).ok()??;
        let now = now_ms();
        let idle = self.idle().as_millis() as i64;
        let absolute = self.absolute().as_millis() as i64;
        if now - rec.last_seen_ms > idle || now - rec.created_ms > absolute {
            if let Ok(Some(_)) = self.sessions.remove(&key) {
                self.session_ended(&rec.user, SessionEnd::Expired);
            }
            return None;
        }
        let user = self.user(&rec.user).ok()??;
        // Refresh at most every few seconds: the idle timer does not need millisecond writes.
        if now - rec.last_seen_ms > (idle / 8).min(30_000) {
            rec.last_seen_ms = now;
            let _ = StateStore::put_json(&self.sessions, &key, &rec);
        }
        let idle_left = (rec.last_seen_ms + idle - now)
            .min(rec.created_ms + absolute - now)
            .max(0);
        Some(Principal {
            role: user.role,
            kind: PrincipalKind::Session {
                user: user.name,
                key,
                csrf: rec.csrf,
                idle_expires_in_s: (idle_left / 1000) as u64,
            },
        })
    }

    pub fn logout(&self, p: &Principal) {
        if let PrincipalKind::Session { key, user, .. } = &p.kind {
            let _ = self.sessions.remove(key);
            tracing::info!(%user, "web logout");
        }
    }

    fn drop_sessions_of(&self, user: &str, except: Option<&str>) {
        for (k, v) in self.sessions.iter().filter_map(|kv| kv.ok()) {
            if let Ok(s) = serde_json::from_slice::<SessionRec>(&v)
                && s.user == user
                && except != Some(String::from_utf8_lossy(&k).as_ref())
                && let Ok(Some(_)) = self.sessions.remove(k)
            {
                self.session_ended(user, SessionEnd::Revoked);
            }
        }
    }

    /// Removes expired sessions.
    pub fn cleanup(&self) {
        let now = now_ms();
        let idle = self.idle().as_millis() as i64;
        let absolute = self.absolute().as_millis() as i64;
        for (k, v) in self.sessions.iter().filter_map(|kv| kv.ok()) {
            let rec = serde_json::from_slice::<SessionRec>(&v).ok();
            let dead = rec
                .as_ref()
                .is_none_or(|s| now - s.last_seen_ms > idle || now - s.created_ms > absolute);
            if dead && let Ok(Some(_)) = self.sessions.remove(k) {
                let user = rec.map_or_else(|| "-".to_string(), |s| s.user);
                self.session_ended(&user, SessionEnd::Expired);
            }
        }
    }

    /// Records a session end without waiting for the disk (callers hold no async context of
    /// their own; the record follows within milliseconds).
    fn session_ended(&self, user: &str, why: SessionEnd) {
        let reason = match why {
            SessionEnd::Expired => "expired",
            SessionEnd::Evicted => "evicted",
            SessionEnd::Revoked => "revoked",
        };
        tracing::info!(%user, reason, "web session ended");
        let e = audit::Event::new(audit::Source::Web, user, "session_end")
            .detail(serde_json::json!({ "reason": reason }));
        let trail = self.audit.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move { trail.record(e).await });
            }
            Err(_) => {
                if let Err(err) = trail.record_blocking(e) {
                    trail
                        .errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::error!(error = %err, "audit record not written");
                }
            }
        }
    }

    pub async fn create_user(
        &self,
        username: &str,
        password: &str,
        role: Role,
    ) -> Result<User, AuthError> {
        if let Some(p) = username_problem(username) {
            return Err(AuthError::Policy {
                field: "username",
                message: p,
            });
        }
        if let Some(p) = password_problem(username, password) {
            return Err(AuthError::Policy {
                field: "password",
                message: p,
            });
        }
        if self.user(username)?.is_some() {
            return Err(AuthError::Conflict(format!("user {username:?} exists")));
        }
        if self.users.len() >= MAX_USERS {
            return Err(AuthError::Conflict(format!("at most {MAX_USERS} users")));
        }
        let user = User {
            name: username.to_string(),
            role,
            hash: self.hash(password).await?,
            created_ms: now_ms(),
        };
        StateStore::put_json_durable(&self.users, username, &user)?;
        Ok(user)
    }

    /// Changes role and/or password; refuses to leave no admin.
    pub async fn update_user(
        &self,
        name: &str,
        role: Option<Role>,
        password: Option<&str>,
    ) -> Result<User, AuthError> {
        let mut user = self
            .user(name)?
            .ok_or_else(|| AuthError::NotFound(format!("no user {name:?}")))?;
        if let Some(r) = role {
            if user.role == Role::Admin && r != Role::Admin && self.admins()? <= 1 {
                return Err(AuthError::Conflict(
                    "this is the last admin; make another user admin first".into(),
                ));
            }
            user.role = r;
        }
        if let Some(pw) = password {
            if let Some(p) = password_problem(name, pw) {
                return Err(AuthError::Policy {
                    field: "password",
                    message: p,
                });
            }
            user.hash = self.hash(pw).await?;
            self.drop_sessions_of(name, None);
        }
        StateStore::put_json_durable(&self.users, name, &user)?;
        user.hash.clear();
        Ok(user)
    }

    pub fn delete_user(&self, name: &str) -> Result<(), AuthError> {
        let user = self
            .user(name)?
            .ok_or_else(|| AuthError::NotFound(format!("no user {name:?}")))?;
        if user.role == Role::Admin && self.admins()? <= 1 {
            return Err(AuthError::Conflict(
                "this is the last admin; it cannot be deleted".into(),
            ));
        }
        self.users.remove(name)?;
        self.users.flush()?;
        self.drop_sessions_of(name, None);
        Ok(())
    }

    /// Changes one's own password; other sessions of the user end.
    pub async fn change_password(
        &self,
        p: &Principal,
        current: &str,
        new: &str,
        peer: IpAddr,
    ) -> Result<(), AuthError> {
        let PrincipalKind::Session { user, key, .. } = &p.kind else {
            return Err(AuthError::Invalid(
                "API tokens have no password; use a session".into(),
            ));
        };
        let mut u = self
            .user(user)?
            .ok_or_else(|| AuthError::NotFound(format!("no user {user:?}")))?;
        let attempt = self
            .throttle
            .reserve(&throttle_key(user), peer)
            .map_err(AuthError::RateLimited)?;
        if !self.verify(u.hash.clone(), current.to_string()).await {
            attempt.failure();
            return Err(AuthError::Policy {
                field: "current",
                message: "is not your current password".into(),
            });
        }
        attempt.success();
        if let Some(problem) = password_problem(user, new) {
            return Err(AuthError::Policy {
                field: "new",
                message: problem,
            });
        }
        u.hash = self.hash(new).await?;
        StateStore::put_json_durable(&self.users, user, &u)?;
        self.drop_sessions_of(user, Some(key));
        tracing::info!(%user, "web password changed");
        Ok(())
    }

    pub fn tokens(&self) -> Result<Vec<TokenInfo>, AuthError> {
        let mut out: Vec<TokenInfo> = self
            .tokens
            .iter()
            .filter_map(|kv| kv.ok())
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        out.sort_by_key(|t: &TokenInfo| t.created_ms);
        Ok(out)
    }

    /// Creates a token; returns it (the only time it is shown) and its record.
    pub fn create_token(
        &self,
        name: &str,
        role: Role,
        created_by: &str,
    ) -> Result<(String, TokenInfo), AuthError> {
        if name.trim().is_empty() || name.len() > 64 {
            return Err(AuthError::Policy {
                field: "name",
                message: "must be 1 to 64 characters".into(),
            });
        }
        if self.tokens.len() >= MAX_TOKENS {
            return Err(AuthError::Conflict(format!("at most {MAX_TOKENS} tokens")));
        }
        let id = random_b64(9)?.replace(['-', '_'], "x");
        let token = format!("ibt_{id}_{}", random_b64(32)?);
        let info = TokenInfo {
            id: id.clone(),
            name: name.to_string(),
            role,
            created_by: created_by.to_string(),
            created_ms: now_ms(),
            last_used_ms: None,
            hash: sha256_hex(&token),
        };
        // `hash` is not serialized for API output; store it explicitly.
        let mut stored = serde_json::to_value(&info).map_err(StateError::Encode)?;
        stored["hash"] = info.hash.clone().into();
        StateStore::put_json_durable(&self.tokens, &id, &stored)?;
        Ok((token, info))
    }

    pub fn delete_token(&self, id: &str) -> Result<(), AuthError> {
        if self.tokens.remove(id)?.is_none() {
            return Err(AuthError::NotFound(format!("no token {id:?}")));
        }
        self.tokens.flush()?;
        Ok(())
    }

    /// The principal behind a bearer token.
    pub fn bearer(&self, token: &str) -> Option<Principal> {
        let rest = token.strip_prefix("ibt_")?;
        let (id, _) = rest.split_once('_')?;
        let mut stored: serde_json::Value = StateStore::get_json(&self.tokens, id).ok()??;
        let hash = stored.get("hash")?.as_str()?.to_string();
        if !ct_eq(hash.as_bytes(), sha256_hex(token).as_bytes()) {
            return None;
        }
        let info: TokenInfo = serde_json::from_value(stored.clone()).ok()?;
        let now = now_ms();
        // Record use at most once a minute.
        if info.last_used_ms.is_none_or(|t| now - t > 60_000) {
            stored["last_used_ms"] = now.into();
            let _ = StateStore::put_json(&self.tokens, id, &stored);
        }
        Some(Principal {
            role: info.role,
            kind: PrincipalKind::Token {
                id: info.id,
                name: info.name,
            },
        })
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(1, 2, 3, 4));

    fn auth() -> (Auth, Arc<AuditTrail>, tempfile::TempDir) {
        let store = StateStore::temporary().expect("sled");
        let mut c = Config::default();
        c.web.session_idle_timeout_s = 1;
        c.web.session_absolute_timeout_s = 2;
        let cfg = ConfigStore::new(c, None);
        let dir = tempfile::tempdir().expect("tmp");
        let trail = Arc::new(AuditTrail::open(dir.path(), 1 << 20, 4).expect("audit"));
        let auth = Auth::open(&store, cfg, LoginThrottle::default(), trail.clone()).expect("auth");
        (auth, trail, dir)
    }

    /// The `session_end` reasons recorded so far (they are written off the caller's task:
    /// waits up to 5 s for `want` of them).
    async fn session_ends(trail: &AuditTrail, want: usize) -> Vec<String> {
        let q = audit::Query {
            action: Some("session_end".into()),
            ..audit::Query::default()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let reasons: Vec<String> = trail
                .query(&q)
                .iter()
                .map(|r| r.detail["reason"].as_str().unwrap_or_default().to_string())
                .collect();
            if reasons.len() >= want || tokio::time::Instant::now() > deadline {
                return reasons;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn password_policy() {
        assert!(password_problem("admin", "short").is_some());
        assert!(
            password_problem("admin", "Password123!").is_some(),
            "common + digits"
        );
        assert!(password_problem("operator7", "operator7operator7").is_some());
        assert!(password_problem("admin", "aaaaaaaaaaaa").is_some());
        assert!(password_problem("admin", "ironbridge").is_some());
        assert!(password_problem("admin", "correct horse battery").is_none());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn setup_login_sessions_tokens() {
        let (a, trail, _dir) = auth();
        assert!(a.setup_required());
        let code = lock(&a.setup_code).clone().expect("code");
        assert!(matches!(
            a.setup("admin", "correct horse battery", "WRONG", PEER)
                .await,
            Err(AuthError::BadSetupCode)
        ));
        let (_, sid, csrf) = a
            .setup("admin", "correct horse battery", &code, PEER)
            .await
            .expect("setup");
        assert!(matches!(
            a.setup("admin2", "correct horse battery", &code, PEER)
                .await,
            Err(AuthError::SetupDone)
        ));
        let p = a.session(&sid).expect("session");
        assert_eq!(p.role, Role::Admin);
        assert!(matches!(&p.kind, PrincipalKind::Session { csrf: c, .. } if *c == csrf));
        assert!(a.session("forged").is_none());
        assert!(matches!(
            a.login("admin", "wrong password!", PEER).await,
            Err(AuthError::BadCredentials)
        ));
        a.login("admin", "correct horse battery", PEER)
            .await
            .expect("login");
        assert!(matches!(
            a.delete_user("admin"),
            Err(AuthError::Conflict(_))
        ));

        let (token, info) = a
            .create_token("prometheus", Role::Viewer, "admin")
            .expect("token");
        let tp = a.bearer(&token).expect("bearer");
        assert_eq!(tp.role, Role::Viewer);
        assert!(a.bearer(&format!("{token}x")).is_none());
        a.delete_token(&info.id).expect("delete");
        assert!(a.bearer(&token).is_none());

        // Idle expiry (1 s in this config), recorded in the audit trail.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert!(a.session(&sid).is_none());
        assert_eq!(session_ends(&trail, 1).await, ["expired"]);
        // The per-user cap ends the oldest session (the login's), and says so.
        for _ in 0..MAX_SESSIONS_PER_USER {
            a.new_session("admin").expect("session");
        }
        assert_eq!(session_ends(&trail, 2).await, ["expired", "evicted"]);
    }
}
