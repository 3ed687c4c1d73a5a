//! Failed-login throttling, per user name × client address and per client address (IPv6 by
//! /64), with the web login's policy: 5 failures for a user from one address, 20 from one
//! address, then a lockout of 30 s doubling up to 15 min, forgotten an hour after the last
//! failure. An attempt is reserved before its password is checked, so concurrent guesses
//! count as failures until they succeed. Keying the user lock by address means a guesser on
//! one address cannot lock the real device out from its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Failures for one user name from one address before it is locked out.
pub const USER_FAILURES: u32 = 5;
/// Failures from one address (any user names) before it is locked out.
pub const ADDRESS_FAILURES: u32 = 20;
const LOCK_BASE: Duration = Duration::from_secs(30);
const LOCK_MAX: Duration = Duration::from_secs(15 * 60);
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Keys tracked at most (bounded memory under a spraying attack); the stalest go first.
const MAX_KEYS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String, IpAddr),
    Address(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Attempts {
    failures: u32,
    /// Attempts reserved and not yet answered.
    pending: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

/// See the module documentation.
#[derive(Debug, Default, Clone)]
pub struct LoginThrottle {
    map: Arc<Mutex<HashMap<Key, Attempts>>>,
}

/// The address an attacker controls as one unit: IPv4 as is, IPv6 by its /64.
pub fn address_unit(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// One reserved login attempt; dropping it without an answer counts as a failure.
#[must_use]
pub struct Attempt {
    throttle: LoginThrottle,
    keys: [(Key, u32); 2],
    answered: bool,
}

impl LoginThrottle {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Attempts>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves an attempt for `user` from `peer`; `Err(retry_after)` while locked out or
    /// while the attempts already under way would reach the limit.
    pub fn reserve(&self, user: &str, peer: IpAddr) -> Result<Attempt, Duration> {
        let unit = address_unit(peer);
        let keys = [
            (Key::User(user.to_string(), unit), USER_FAILURES),
            (Key::Address(unit), ADDRESS_FAILURES),
        ];
        let now = Instant::now();
        let mut map = self.lock();
        for (key, limit) in &keys {
            if let Some(a) = map.get_mut(key) {
                if now.duration_since(a.last) >= FORGET_AFTER && a.pending == 0 {
                    a.failures = 0;
                    a.locked_until = None;
                }
                if let Some(until) = a.locked_until
                    && until > now
                {
                    return Err(until - now);
                }
                if a.failures + a.pending >= *limit {
                    return Err(LOCK_BASE);
                }
            }
        }
        for (key, _) in &keys {
            if !map.contains_key(key) && map.len() >= MAX_KEYS {
                evict(&mut map, now);
            }
            let a = map.entry(key.clone()).or_insert(Attempts {
                failures: 0,
                pending: 0,
                locked_until: None,
                last: now,
            });
            a.pending += 1;
            a.last = now;
        }
        Ok(Attempt {
            throttle: self.clone(),
            keys,
            answered: false,
        })
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn evict(map: &mut HashMap<Key, Attempts>, now: Instant) {
    map.retain(|_, a| a.pending > 0 || now.duration_since(a.last) < FORGET_AFTER);
    if map.len() >= MAX_KEYS
        && let Some(oldest) = map
            .iter()
            .filter(|(_, a)| a.pending == 0)
            .min_by_key(|(_, a)| a.last)
            .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

impl Attempt {
    /// The password was right: the user's failures from this address are forgotten.
    pub fn success(mut self) {
        self.answered = true;
        let mut map = self.throttle.lock();
        if let Some(a) = map.get_mut(&self.keys[0].0) {
            a.pending = a.pending.saturating_sub(1);
            if a.pending == 0 {
                map.remove(&self.keys[0].0);
            }
        }
        if let Some(a) = map.get_mut(&self.keys[1].0) {
            a.pending = a.pending.saturating_sub(1);
        }
    }

    /// The attempt was not answered (server busy): it does not count.
    pub fn cancel(mut self) {
        self.answered = true;
        let mut map = self.throttle.lock();
        for (key, _) in &self.keys {
            if let Some(a) = map.get_mut(key) {
                a.pending = a.pending.saturating_sub(1);
            }
        }
    }

    /// The password was wrong.
    pub fn failure(mut self) {
        self.answered = true;
        self.record_failure();
    }

    fn record_failure(&self) {
        let now = Instant::now();
        let mut map = self.throttle.lock();
        for (key, limit) in &self.keys {
            if let Some(a) = map.get_mut(key) {
                a.pending = a.pending.saturating_sub(1);
                a.failures = a.failures.saturating_add(1);
                a.last = now;
                if a.failures >= *limit {
                    let exp = (a.failures - limit).min(16);
                    a.locked_until = Some(now + LOCK_BASE.saturating_mul(1 << exp).min(LOCK_MAX));
                }
            }
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.answered {
            self.record_failure();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn locks_user_per_address_and_address_overall() {
        let t = LoginThrottle::default();
        for _ in 0..USER_FAILURES {
            t.reserve("plc", ip("10.0.0.9")).expect("allowed").failure();
        }
        assert!(t.reserve("plc", ip("10.0.0.9")).is_err(), "locked");
        // The real device on its own address still logs in.
        t.reserve("plc", ip("10.0.0.7"))
            .expect("other address")
            .success();
        // Spraying user names from one address locks the address.
        for i in 0..ADDRESS_FAILURES - USER_FAILURES {
            t.reserve(&format!("u{i}"), ip("10.0.0.9"))
                .expect("allowed")
                .failure();
        }
        assert!(t.reserve("other", ip("10.0.0.9")).is_err());
    }

    #[test]
    fn pending_attempts_count_and_ipv6_groups_by_64() {
        let t = LoginThrottle::default();
        let held: Vec<Attempt> = (0..USER_FAILURES)
            .map(|i| {
                t.reserve("plc", ip(&format!("2001:db8::{i}")))
                    .expect("allowed")
            })
            .collect();
        assert!(t.reserve("plc", ip("2001:db8::ff")).is_err(), "same /64");
        assert!(t.reserve("plc", ip("2001:db9::1")).is_ok(), "other /64");
        for a in held {
            a.cancel();
        }
        assert!(t.reserve("plc", ip("2001:db8::1")).is_ok());
    }

    #[test]
    fn keys_are_bounded() {
        let t = LoginThrottle::default();
        for i in 0..(MAX_KEYS as u32 + 100) {
            let peer = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            t.reserve("x", peer).expect("allowed").failure();
        }
        assert!(t.len() <= MAX_KEYS + 1, "{}", t.len());
    }
}
