//! Topic authorization: who may publish to which topics and subscribe to which filters.
//!
//! Modelled on mosquitto's `acl_file`, configured as `[[mqtt.acl]]` tables of
//! `ironbridge.toml`:
//!
//! ```toml
//! [[mqtt.acl]]                 # rules, first match wins
//! users = ["plc7", "*"]        # "*" = any client with a user name; "$anonymous" = clients without
//! action = "publish"           # "publish" | "subscribe" | "all"
//! permission = "allow"         # "allow" | "deny"
//! topics = ["plant/%u/#", "cmd/%c/+"]   # filters; %u = user name, %c = client id
//! ```
//!
//! Semantics of [`Acl::check`]:
//! - A rule applies to a request when its action covers the request's, its `users` names the
//!   client, and one of its `topics` filters matches: for a publish, the topic name matches the
//!   filter ([`crate::topic::matches`]); for a subscription, an *allow* filter must cover the
//!   requested filter ([`covers`]: every topic the requested filter can match is matched by the
//!   rule's) while a *deny* filter applies as soon as the two overlap ([`overlaps`]: some topic
//!   matches both), so `deny secret/#` placed before `allow #` refuses a subscription to `#`
//!   instead of letting it receive `secret/...`. A shared subscription `$share/g/f` is judged on
//!   `f`.
//! - `%u` and `%c` are replaced by the user name and the client id. A filter containing `%u`
//!   never matches a client without a user name, and a filter whose substituted value is empty
//!   or contains `/`, `+`, `#` or U+0000 never matches (no injection of levels or wildcards).
//!   Other filters of the same rule still apply.
//! - The first applicable rule decides. With no rules at all, everything is allowed except the
//!   protected topics below; with rules, a request no rule applies to is denied.
//! - Protected topics: publishing to Sparkplug commands (`spBv1.0/<group>/NCMD/...`,
//!   `spBv1.0/<group>/DCMD/...`) and host state (`spBv1.0/STATE/...`), and publishing or
//!   subscribing to any topic or filter whose first level starts with `$` (`$SYS/#`...), are
//!   denied unless the deciding rule is an allow rule with a matching filter that names the
//!   protected part literally (no wildcard, no `%u`/`%c`): a first level starting with `$`; first
//!   level `spBv1.0` and third level `NCMD`/`DCMD` (the one of the topic); first two levels
//!   `spBv1.0/STATE`. So `topics = ["#"]` does not grant DCMD, `topics = ["spBv1.0/+/DCMD/#"]`
//!   does. Subscribing to Sparkplug command or state topics is not restricted by the protection.

use serde::{Deserialize, Serialize};

use crate::topic::{self, SHARE_PREFIX};

/// One `[[mqtt.acl]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// User names; `"*"` = any client that gave a user name; `"$anonymous"` = clients that gave
    /// none. Other names starting with `$` are refused (likely typos).
    pub users: Vec<String>,
    pub action: Action,
    pub permission: Permission,
    /// Topic filters, with `%u` (user name) and `%c` (client id) substituted at check time.
    pub topics: Vec<String>,
}

/// What a rule is about, and what [`Acl::check`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Publish to a topic name (a will included).
    Publish,
    /// Subscribe to a filter (`$share/...` included).
    Subscribe,
    /// In a rule: both. In a check: allowed only if both are (the topic is then checked as a
    /// name and as a filter).
    All,
}

/// What a rule decides when it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Allow,
    Deny,
}

/// The outcome of [`Acl::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the publish or subscription may go ahead.
    pub allowed: bool,
    /// Index of the deciding rule in the configured list; `None` when no rule applied (or the
    /// topic or filter itself was invalid).
    pub rule: Option<usize>,
    /// The topic is protected (see the module documentation): an allow needed an explicit grant.
    pub protected: bool,
}

/// One invalid field of the ACL configuration: (rule index, 0-based as in [`Decision::rule`];
/// field within the rule, e.g. `topics[1]`; reason).
pub type AclConfigError = (usize, String, String);

/// The protected part a topic touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protection {
    Dollar,
    Ncmd,
    Dcmd,
    State,
}

const SPARKPLUG: &str = "spBv1.0";

/// One request as checked: a publish or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Publish,
    Subscribe,
}

/// A rule filter, prepared once.
#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    has_user: bool,
    has_client: bool,
    /// Protected parts this filter names literally.
    grants_dollar: bool,
    grants_ncmd: bool,
    grants_dcmd: bool,
    grants_state: bool,
}

impl Pattern {
    fn new(text: &str) -> Pattern {
        let mut levels = text.split('/');
        let l0 = levels.next().unwrap_or("");
        let l1 = levels.next();
        let l2 = levels.next();
        let literal = |l: &str| !l.contains(['%', '+', '#']);
        let spb = l0 == SPARKPLUG;
        Pattern {
            text: text.to_owned(),
            has_user: text.contains("%u"),
            has_client: text.contains("%c"),
            grants_dollar: l0.starts_with('$') && literal(l0),
            grants_ncmd: spb && l2 == Some("NCMD"),
            grants_dcmd: spb && l2 == Some("DCMD"),
            grants_state: spb && l1 == Some("STATE"),
        }
    }

    fn grants(&self, p: Protection) -> bool {
        match p {
            Protection::Dollar => self.grants_dollar,
            Protection::Ncmd => self.grants_ncmd,
            Protection::Dcmd => self.grants_dcmd,
            Protection::State => self.grants_state,
        }
    }

    /// The filter for this client: the text itself when there is nothing to substitute (no
    /// allocation), else substituted into `buf`. `None` when it cannot match this client.
    fn resolve<'a>(
        &'a self,
        user: Option<&str>,
        client_id: &str,
        buf: &'a mut String,
    ) -> Option<&'a str> {
        if !self.has_user && !self.has_client {
            return Some(&self.text);
        }
        let user = if self.has_user {
            Some(user.filter(|u| safe_value(u))?)
        } else {
            None
        };
        if self.has_client && !safe_value(client_id) {
            return None;
        }
        buf.clear();
        let mut rest = self.text.as_str();
        while let Some(i) = rest.find('%') {
            buf.push_str(rest.get(..i)?);
            let value = match rest.as_bytes().get(i + 1) {
                Some(b'u') => user?,
                Some(b'c') => client_id,
                _ => return None,
            };
            buf.push_str(value);
            // `%` and `u`/`c` are ASCII: i + 2 is a character boundary.
            rest = rest.get(i + 2..)?;
        }
        buf.push_str(rest);
        Some(buf)
    }
}

/// A value that may be substituted into a filter: it stays exactly one literal level.
fn safe_value(v: &str) -> bool {
    !v.is_empty() && !v.contains(['/', '+', '#', '\0'])
}

#[derive(Debug, Clone)]
struct Rule {
    publish: bool,
    subscribe: bool,
    allow: bool,
    any_user: bool,
    anonymous: bool,
    names: Vec<String>,
    patterns: Vec<Pattern>,
}

impl Rule {
    fn names_client(&self, user: Option<&str>) -> bool {
        match user {
            None => self.anonymous,
            Some(u) => self.any_user || self.names.iter().any(|n| n == u),
        }
    }
}

/// The compiled ACL. Cheap to check: no allocation unless a rule filter uses `%u`/`%c`.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    rules: Vec<Rule>,
}

impl Acl {
    /// Compiles `rules`, or lists every invalid field: an empty `users` or `topics`, an empty or
    /// unknown `$` user name, an invalid filter, a `%` not followed by `u` or `c`, a `$share`
    /// filter (rules apply to the filter inside a shared subscription).
    pub fn new(rules: &[AclRule]) -> Result<Acl, Vec<AclConfigError>> {
        let mut errors = Vec::new();
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let mut err = |field: String, reason: String| errors.push((i, field, reason));
            if r.users.is_empty() {
                err(
                    "users".into(),
                    "must name at least one user, \"*\" or \"$anonymous\"".into(),
                );
            }
            let mut rule = Rule {
                publish: matches!(r.action, Action::Publish | Action::All),
                subscribe: matches!(r.action, Action::Subscribe | Action::All),
                allow: r.permission == Permission::Allow,
                any_user: false,
                anonymous: false,
                names: Vec::new(),
                patterns: Vec::with_capacity(r.topics.len()),
            };
            for (j, u) in r.users.iter().enumerate() {
                match u.as_str() {
                    "*" => rule.any_user = true,
                    "$anonymous" => rule.anonymous = true,
                    "" => err(format!("users[{j}]"), "empty user name".into()),
                    s if s.starts_with('$') => err(
                        format!("users[{j}]"),
                        format!("unknown special name {s:?} (only \"$anonymous\")"),
                    ),
                    s => rule.names.push(s.to_owned()),
                }
            }
            if r.topics.is_empty() {
                err("topics".into(), "must list at least one filter".into());
            }
            for (j, t) in r.topics.iter().enumerate() {
                match check_rule_filter(t) {
                    Ok(()) => rule.patterns.push(Pattern::new(t)),
                    Err(reason) => err(format!("topics[{j}]"), reason),
                }
            }
            compiled.push(rule);
        }
        if errors.is_empty() {
            Ok(Acl { rules: compiled })
        } else {
            Err(errors)
        }
    }

    /// Whether the client (`user` = its user name, `None` if it gave none) may publish to the
    /// topic or subscribe to the filter `topic_or_filter`; see the module documentation. An
    /// invalid topic or filter is denied with `rule: None`. [`Action::All`] asks for both: the
    /// publish decision if it denies, else the subscribe decision.
    pub fn check(
        &self,
        user: Option<&str>,
        client_id: &str,
        action: Action,
        topic_or_filter: &str,
    ) -> Decision {
        match action {
            Action::Publish => self.check_one(user, client_id, Access::Publish, topic_or_filter),
            Action::Subscribe => {
                self.check_one(user, client_id, Access::Subscribe, topic_or_filter)
            }
            Action::All => {
                let p = self.check_one(user, client_id, Access::Publish, topic_or_filter);
                if !p.allowed {
                    return p;
                }
                self.check_one(user, client_id, Access::Subscribe, topic_or_filter)
            }
        }
    }

    fn check_one(
        &self,
        user: Option<&str>,
        client_id: &str,
        access: Access,
        topic_or_filter: &str,
    ) -> Decision {
        let target = match access {
            Access::Publish => topic::valid_topic_name(topic_or_filter).map(|()| topic_or_filter),
            Access::Subscribe => topic::parse_filter(topic_or_filter).map(|f| f.filter()),
        };
        let Ok(target) = target else {
            return Decision {
                allowed: false,
                rule: None,
                protected: false,
            };
        };
        let protection = protection(access, target);
        let protected = protection.is_some();
        if self.rules.is_empty() {
            return Decision {
                allowed: !protected,
                rule: None,
                protected,
            };
        }
        let mut buf = String::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let applies = match access {
                Access::Publish => rule.publish,
                Access::Subscribe => rule.subscribe,
            };
            if !applies || !rule.names_client(user) {
                continue;
            }
            let mut matched = false;
            for p in &rule.patterns {
                let Some(filter) = p.resolve(user, client_id, &mut buf) else {
                    continue;
                };
                let hit = match access {
                    Access::Publish => topic::matches(filter, target),
                    Access::Subscribe if rule.allow => covers(filter, target),
                    Access::Subscribe => overlaps(filter, target),
                };
                if !hit {
                    continue;
                }
                matched = true;
                if !rule.allow || protection.is_none_or(|pr| p.grants(pr)) {
                    return Decision {
                        allowed: rule.allow,
                        rule: Some(i),
                        protected,
                    };
                }
            }
            if matched {
                // An allow rule matched, but none of its matching filters grants the protected part.
                return Decision {
                    allowed: false,
                    rule: Some(i),
                    protected,
                };
            }
        }
        Decision {
            allowed: false,
            rule: None,
            protected,
        }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// No rules: everything but the protected topics is allowed.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Checks a rule filter: `%` only as `%u`/`%c`, valid once substituted, not `$share` syntax.
fn check_rule_filter(t: &str) -> Result<(), String> {
    let mut rest = t;
    while let Some(i) = rest.find('%') {
        match rest.as_bytes().get(i + 1) {
            Some(b'u' | b'c') => rest = rest.get(i + 2..).unwrap_or(""),
            _ => return Err(format!("{t:?}: '%' must be followed by 'u' or 'c'")),
        }
    }
    // Any substituted value is one literal level: check the shape with a stand-in.
    let shape = t.replace("%u", "u").replace("%c", "c");
    topic::valid_filter(&shape).map_err(|e| format!("{t:?}: {e}"))?;
    if shape.split('/').next() == Some(SHARE_PREFIX) {
        return Err(format!(
            "{t:?}: a rule filter cannot be a shared subscription; write the filter inside it"
        ));
    }
    Ok(())
}

/// The protected part of `target` for `access`, if any.
fn protection(access: Access, target: &str) -> Option<Protection> {
    let mut levels = target.split('/');
    let l0 = levels.next()?;
    if l0.starts_with('$') {
        return Some(Protection::Dollar);
    }
    if access == Access::Subscribe || l0 != SPARKPLUG {
        return None;
    }
    let l1 = levels.next();
    if l1 == Some("STATE") {
        return Some(Protection::State);
    }
    // Any length: a malformed command topic is still treated as a command.
    match levels.next() {
        Some("NCMD") => Some(Protection::Ncmd),
        Some("DCMD") => Some(Protection::Dcmd),
        _ => None,
    }
}

/// Whether the filter `rule` matches every topic the filter `requested` can match (both plain
/// valid filters), including [MQTT-4.7.2-1]: `#` does not cover `$SYS/#`.
pub fn covers(rule: &str, requested: &str) -> bool {
    let mut r = rule.split('/');
    let mut q = requested.split('/');
    let mut first = true;
    loop {
        match (r.next(), q.next()) {
            // Everything from here on, but a wildcard first level never matches `$` topics.
            (Some("#"), Some(ql)) => return !(first && ql.starts_with('$')),
            // `a/#` matches `a`, which is all `requested` still needs.
            (Some("#"), None) => return true,
            // `requested` reaches arbitrarily deep (and its parent level); only `#` covers that,
            // except that `+/#` covers `#`: both match every topic of one level or more.
            (Some(rl), Some("#")) => {
                return first && rl == "+" && r.next() == Some("#") && r.next().is_none();
            }
            (Some("+"), Some(ql)) => {
                if first && ql.starts_with('$') {
                    return false;
                }
            }
            // A literal covers only the same literal (never `+`).
            (Some(rl), Some(ql)) => {
                if rl != ql {
                    return false;
                }
            }
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
        }
        first = false;
    }
}

/// Whether some topic is matched by both filters (plain valid filters).
pub fn overlaps(a: &str, b: &str) -> bool {
    let mut a = a.split('/');
    let mut b = b.split('/');
    let mut first = true;
    loop {
        match (a.next(), b.next()) {
            (Some("#"), Some(other)) | (Some(other), Some("#")) => {
                // A wildcard first level never meets a literal `$` first level.
                return !(first && other.starts_with('$'));
            }
            // `x/#` matches `x`, where the other filter ended.
            (Some("#"), None) | (None, Some("#")) => return true,
            (Some("+"), Some(other)) | (Some(other), Some("+")) => {
                if first && other.starts_with('$') {
                    return false;
                }
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return false;
                }
            }
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::matches;
    use proptest::prelude::*;
    use serde::de::IntoDeserializer;
    use serde::de::value::{Error as DeError, MapDeserializer};
    use std::sync::OnceLock;

    fn rule(users: &[&str], action: Action, permission: Permission, topics: &[&str]) -> AclRule {
        AclRule {
            users: users.iter().map(|s| s.to_string()).collect(),
            action,
            permission,
            topics: topics.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn acl(rules: &[AclRule]) -> Acl {
        match Acl::new(rules) {
            Ok(a) => a,
            Err(e) => panic!("{e:?}"),
        }
    }

    use Action::{All, Publish, Publish as P, Subscribe, Subscribe as S};
    use Permission::{Allow, Deny};

    fn allowed(a: &Acl, user: Option<&str>, cid: &str, access: Action, t: &str) -> bool {
        a.check(user, cid, access, t).allowed
    }

    #[test]
    fn first_match_wins_and_rule_reported() {
        let a = acl(&[
            rule(&["plc7"], Publish, Deny, &["plant/secret/#"]),
            rule(&["*"], All, Allow, &["plant/#"]),
        ]);
        assert_eq!(
            a.check(Some("plc7"), "c", P, "plant/secret/x"),
            Decision {
                allowed: false,
                rule: Some(0),
                protected: false
            }
        );
        assert_eq!(
            a.check(Some("other"), "c", P, "plant/secret/x"),
            Decision {
                allowed: true,
                rule: Some(1),
                protected: false
            }
        );
        // Rules exist, none applies: deny.
        assert_eq!(
            a.check(Some("plc7"), "c", P, "office/x"),
            Decision {
                allowed: false,
                rule: None,
                protected: false
            }
        );
        // "*" is any client with a user name, not anonymous ones.
        assert!(!allowed(&a, None, "c", P, "plant/x"));
    }

    #[test]
    fn actions() {
        let a = acl(&[
            rule(&["*"], Publish, Allow, &["pub/#"]),
            rule(&["*"], Subscribe, Allow, &["sub/#"]),
            rule(&["*"], All, Allow, &["both/#"]),
        ]);
        let u = Some("u");
        assert!(allowed(&a, u, "c", P, "pub/x"));
        assert!(!allowed(&a, u, "c", S, "pub/x"));
        assert!(allowed(&a, u, "c", S, "sub/x"));
        assert!(!allowed(&a, u, "c", P, "sub/x"));
        assert!(allowed(&a, u, "c", P, "both/x"));
        assert!(allowed(&a, u, "c", S, "both/+"));
        // Checking `All` needs both.
        assert!(allowed(&a, u, "c", All, "both/x"));
        assert_eq!(a.check(u, "c", All, "pub/x").rule, None);
        assert!(!allowed(&a, u, "c", All, "pub/x"));
        assert!(!allowed(&a, u, "c", All, "sub/x"));
    }

    #[test]
    fn users_and_anonymous() {
        let a = acl(&[
            rule(&["$anonymous"], All, Allow, &["public/#"]),
            rule(&["alice", "bob"], All, Allow, &["team/#"]),
        ]);
        assert!(allowed(&a, None, "c", P, "public/x"));
        assert!(!allowed(&a, Some("alice"), "c", P, "public/x"));
        // A client whose user name is literally "$anonymous" is not anonymous.
        assert!(!allowed(&a, Some("$anonymous"), "c", P, "public/x"));
        assert!(allowed(&a, Some("bob"), "c", P, "team/x"));
        assert!(!allowed(&a, Some("carol"), "c", P, "team/x"));
        assert!(!allowed(&a, None, "c", P, "team/x"));
    }

    #[test]
    fn no_rules_allows_all_but_protected() {
        let a = acl(&[]);
        assert!(a.is_empty());
        assert!(allowed(&a, None, "c", P, "plant/x"));
        assert!(allowed(&a, None, "c", S, "#"));
        assert!(
            allowed(&a, None, "c", S, "spBv1.0/+/DCMD/#"),
            "subscribing is not protected"
        );
        for t in [
            "spBv1.0/g/NCMD/n",
            "spBv1.0/g/DCMD/n/d",
            "spBv1.0/STATE/host",
            "$SYS/x",
        ] {
            assert_eq!(
                a.check(None, "c", P, t),
                Decision {
                    allowed: false,
                    rule: None,
                    protected: true
                },
                "{t}"
            );
        }
        assert!(!allowed(&a, None, "c", S, "$SYS/#"));
        assert!(!allowed(&a, None, "c", S, "$share/g/$SYS/#"));
        assert!(allowed(&a, None, "c", P, "spBv1.0/g/NDATA/n"));
        assert!(allowed(&a, None, "c", P, "spBv1.0/g/DDATA/n/d"));
    }

    #[test]
    fn protected_needs_literal_grant() {
        let a = acl(&[
            rule(&["scada"], Publish, Allow, &["spBv1.0/+/DCMD/#"]),
            rule(&["host"], Publish, Allow, &["spBv1.0/STATE/+"]),
            rule(&["ops"], All, Allow, &["$SYS/#"]),
            rule(&["nodecmd"], Publish, Allow, &["#", "spBv1.0/g1/NCMD/+"]),
            rule(&["*"], All, Allow, &["#"]),
        ]);
        // `#` alone grants none of the protected parts: decided (denied) by rule 4.
        assert_eq!(
            a.check(Some("x"), "c", P, "spBv1.0/g/DCMD/n/d"),
            Decision {
                allowed: false,
                rule: Some(4),
                protected: true
            }
        );
        assert!(!allowed(&a, Some("x"), "c", P, "spBv1.0/g/NCMD/n"));
        assert!(!allowed(&a, Some("x"), "c", P, "spBv1.0/STATE/h"));
        assert!(!allowed(&a, Some("x"), "c", S, "$SYS/#"));
        assert!(allowed(&a, Some("x"), "c", P, "spBv1.0/g/DDATA/n/d"));
        assert!(allowed(&a, Some("x"), "c", S, "spBv1.0/+/DCMD/#"));
        // Literal grants.
        assert!(allowed(&a, Some("scada"), "c", P, "spBv1.0/g/DCMD/n/d"));
        assert!(!allowed(&a, Some("scada"), "c", P, "spBv1.0/g/NCMD/n"));
        assert!(allowed(&a, Some("host"), "c", P, "spBv1.0/STATE/h"));
        assert!(allowed(&a, Some("ops"), "c", S, "$SYS/broker/#"));
        assert!(allowed(&a, Some("ops"), "c", P, "$SYS/x"));
        assert!(allowed(&a, Some("ops"), "c", S, "$share/g/$SYS/#"));
        // Among a rule's filters, one that matches and grants suffices.
        assert!(allowed(&a, Some("nodecmd"), "c", P, "spBv1.0/g1/NCMD/n"));
        assert_eq!(
            a.check(Some("nodecmd"), "c", P, "spBv1.0/g2/NCMD/n").rule,
            Some(3)
        );
        assert!(!allowed(&a, Some("nodecmd"), "c", P, "spBv1.0/g2/NCMD/n"));
    }

    #[test]
    fn protection_grant_must_be_literal_not_substituted() {
        let a = acl(&[
            rule(&["*"], All, Allow, &["%u/#"]),
            rule(&["*"], Publish, Allow, &["spBv1.0/%u/DCMD/#"]),
        ]);
        // The user "$SYS" reaches `$SYS/#` only through %u: no grant.
        assert!(!allowed(&a, Some("$SYS"), "c", P, "$SYS/x"));
        assert!(!allowed(&a, Some("$SYS"), "c", S, "$SYS/#"));
        assert!(allowed(&a, Some("u1"), "c", P, "u1/x"));
        // A substituted group level does not stop the grant: levels 1 and 3 are literal.
        assert!(allowed(&a, Some("g"), "c", P, "spBv1.0/g/DCMD/n/d"));
        assert!(!allowed(&a, Some("g"), "c", P, "spBv1.0/h/DCMD/n/d"));
    }

    #[test]
    fn substitution() {
        let a = acl(&[rule(
            &["*", "$anonymous"],
            All,
            Allow,
            &["plant/%u/#", "cmd/%c/+", "x/%u-%c"],
        )]);
        assert!(allowed(&a, Some("plc7"), "c1", P, "plant/plc7/t"));
        assert!(!allowed(&a, Some("plc7"), "c1", P, "plant/plc8/t"));
        assert!(allowed(&a, Some("plc7"), "c1", P, "cmd/c1/go"));
        assert!(!allowed(&a, Some("plc7"), "c1", P, "cmd/c2/go"));
        assert!(allowed(&a, Some("plc7"), "c1", P, "x/plc7-c1"));
        assert!(allowed(&a, Some("plc7"), "c1", S, "plant/plc7/+/t"));
        // Anonymous: %u filters never match; the %c one still applies.
        assert!(!allowed(&a, None, "c1", P, "plant/%u/t"));
        assert!(!allowed(&a, None, "c1", P, "x/-c1"));
        assert!(allowed(&a, None, "c1", P, "cmd/c1/go"));
    }

    #[test]
    fn substitution_injection_refused() {
        let a = acl(&[rule(&["*"], All, Allow, &["plant/%u/#", "cmd/%c/+"])]);
        // A user name with `/` would reach another user's subtree, `+`/`#` would widen the filter.
        assert!(!allowed(&a, Some("a/b"), "c", P, "plant/a/b/x"));
        assert!(!allowed(&a, Some("+"), "c", P, "plant/other/x"));
        assert!(!allowed(&a, Some("#"), "c", S, "plant/#"));
        assert!(!allowed(&a, Some("a\0"), "c", P, "plant/a\0/x"));
        assert!(!allowed(&a, Some("u"), "x/y", P, "cmd/x/y"));
        assert!(!allowed(&a, Some("u"), "#", S, "cmd/#"));
        // An empty value would give a shared `plant//...` namespace.
        assert!(!allowed(&a, Some(""), "c", P, "plant//x"));
        assert!(!allowed(&a, Some("u"), "", P, "cmd//x"));
    }

    #[test]
    fn subscribe_requires_cover() {
        let a = acl(&[rule(&["*"], Subscribe, Allow, &["plant/#", "line/+/t"])]);
        let u = Some("u");
        assert!(allowed(&a, u, "c", S, "plant/+/t"));
        assert!(allowed(&a, u, "c", S, "plant/#"));
        assert!(allowed(&a, u, "c", S, "plant"));
        assert!(allowed(&a, u, "c", S, "$share/g/plant/x"));
        assert!(allowed(&a, u, "c", S, "line/+/t"));
        assert!(allowed(&a, u, "c", S, "line/4/t"));
        assert!(!allowed(&a, u, "c", S, "line/#"));
        assert!(!allowed(&a, u, "c", S, "line/+/+"));
        assert!(!allowed(&a, u, "c", S, "#"));
        assert!(!allowed(&a, u, "c", S, "+/t"));
    }

    #[test]
    fn subscribe_deny_applies_on_overlap() {
        let a = acl(&[
            rule(&["*"], Subscribe, Deny, &["plant/secret/#"]),
            rule(&["*"], Subscribe, Allow, &["#"]),
        ]);
        let u = Some("u");
        // `#` would receive plant/secret/...: the deny rule decides.
        assert_eq!(a.check(u, "c", S, "#").rule, Some(0));
        assert!(!allowed(&a, u, "c", S, "#"));
        assert!(!allowed(&a, u, "c", S, "plant/+/x"));
        assert!(allowed(&a, u, "c", S, "plant/public/#"));
        assert!(allowed(&a, u, "c", S, "office/#"));
    }

    #[test]
    fn invalid_requests_denied() {
        let a = acl(&[rule(&["*"], All, Allow, &["#"])]);
        let u = Some("u");
        assert_eq!(
            a.check(u, "c", P, "a/+"),
            Decision {
                allowed: false,
                rule: None,
                protected: false
            }
        );
        assert!(!allowed(&a, u, "c", P, ""));
        assert!(!allowed(&a, u, "c", S, "a/#/b"));
        assert!(!allowed(&a, u, "c", S, "$share/+/a"));
        assert!(allowed(&a, u, "c", S, "$share/g/a/#"));
    }

    #[test]
    fn config_validation_names_rule_and_field() {
        let errs = match Acl::new(&[
            rule(&["*"], All, Allow, &["ok/#"]),
            rule(&[], All, Allow, &[]),
            rule(
                &["$anon", ""],
                All,
                Allow,
                &["a/#/b", "a/%x", "a/%", "$share/g/a", "a/%u+"],
            ),
        ]) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        };
        let got: Vec<(usize, &str)> = errs.iter().map(|e| (e.0, e.1.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (1, "users"),
                (1, "topics"),
                (2, "users[0]"),
                (2, "users[1]"),
                (2, "topics[0]"),
                (2, "topics[1]"),
                (2, "topics[2]"),
                (2, "topics[3]"),
                (2, "topics[4]"),
            ]
        );
        assert!(errs[4].2.contains("'#'"), "{:?}", errs[4]);
    }

    #[test]
    fn serde_shape() {
        let de = |v: &str| Action::deserialize(v.into_deserializer());
        let r: Result<Action, DeError> = de("publish");
        assert_eq!(r, Ok(Action::Publish));
        assert_eq!(de("all"), Ok(Action::All));
        assert!(de("Publish").is_err());
        let p: Result<Permission, DeError> = Permission::deserialize("deny".into_deserializer());
        assert_eq!(p, Ok(Permission::Deny));
        // deny_unknown_fields: a misspelt key is an error, not an ignored line.
        let map = MapDeserializer::<_, DeError>::new([("user", "x")].into_iter());
        let e = AclRule::deserialize(map)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("unknown field `user`"), "{e}");
    }

    /// All topics of 1 to 6 levels over the levels the filter strategy uses: enough to find a
    /// witness for any covers/overlaps question about those filters.
    fn universe() -> &'static [String] {
        static U: OnceLock<Vec<String>> = OnceLock::new();
        U.get_or_init(|| {
            let alphabet = ["", "a", "b", "$s"];
            let mut all: Vec<String> = alphabet.iter().map(|s| s.to_string()).collect();
            let mut layer = all.clone();
            for _ in 1..6 {
                layer = layer
                    .iter()
                    .flat_map(|t| alphabet.iter().map(move |l| format!("{t}/{l}")))
                    .collect();
                all.extend(layer.iter().cloned());
            }
            all
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn covers_is_exact(
            r in crate::topic::tests::filter_strategy(),
            q in crate::topic::tests::filter_strategy(),
        ) {
            let witness = universe().iter().find(|t| matches(&q, t) && !matches(&r, t));
            prop_assert_eq!(covers(&r, &q), witness.is_none(), "{} {} {:?}", r, q, witness);
        }

        #[test]
        fn overlaps_is_exact(
            a in crate::topic::tests::filter_strategy(),
            b in crate::topic::tests::filter_strategy(),
        ) {
            let witness = universe().iter().find(|t| matches(&a, t) && matches(&b, t));
            prop_assert_eq!(overlaps(&a, &b), witness.is_some(), "{} {} {:?}", a, b, witness);
            prop_assert_eq!(overlaps(&a, &b), overlaps(&b, &a));
        }

        #[test]
        fn check_never_panics(
            user in proptest::option::of("[a/+#$%\0]{0,4}"),
            cid in "[a/+#%]{0,4}",
            t in "[a/+#$%]{0,8}",
        ) {
            let a = acl(&[
                rule(&["*", "$anonymous"], All, Deny, &["%u/%c/#"]),
                rule(&["*", "$anonymous"], All, Allow, &["%c/#", "$x/%u", "spBv1.0/+/DCMD/#"]),
            ]);
            for access in [P, S] {
                let d = a.check(user.as_deref(), &cid, access, &t);
                prop_assert!(!d.allowed || d.rule.is_some());
            }
        }
    }
}
