//! Topic names and filters: validation, matching, shared subscriptions.
//!
//! Levels are the `/`-separated parts of a topic; an empty level is a level (`a//b` has three,
//! `/` has two). Matching follows MQTT 5 section 4.7: `+` matches exactly one level, `#` (only
//! as the whole last level) matches its parent level and any number of levels below it, and a
//! filter starting with a wildcard never matches a topic starting with `$` [MQTT-4.7.2-1].
//! Nothing here allocates or recurses, so topics with thousands of levels are harmless.

use thiserror::Error;

use crate::codec::reason;

/// Longest topic name or filter: an MQTT UTF-8 string carries at most 65,535 bytes.
pub const MAX_TOPIC_LEN: usize = 65_535;

/// The first level of a shared subscription filter (`$share/{ShareName}/{filter}`).
pub const SHARE_PREFIX: &str = "$share";

/// Whether an error concerns a topic name (PUBLISH) or a topic filter (SUBSCRIBE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    Name,
    Filter,
}

impl std::fmt::Display for TopicKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TopicKind::Name => "topic name",
            TopicKind::Filter => "topic filter",
        })
    }
}

/// Why a topic name or filter is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TopicError {
    #[error("{0} is empty")]
    Empty(TopicKind),
    #[error("{0} is longer than 65535 bytes")]
    TooLong(TopicKind),
    #[error("{0} contains U+0000")]
    NullCharacter(TopicKind),
    /// [MQTT-3.3.2-2]
    #[error("topic name contains a wildcard ('+' or '#')")]
    WildcardInName,
    /// [MQTT-4.7.1-1]
    #[error("'#' is allowed only as the whole last level of a topic filter")]
    MisplacedMultiLevelWildcard,
    /// [MQTT-4.7.1-2]
    #[error("'+' is allowed only as a whole level of a topic filter")]
    MisplacedSingleLevelWildcard,
    /// [MQTT-4.8.2-1], [MQTT-4.8.2-2]
    #[error(
        "shared subscription needs '$share/<name>/<filter>' with a non-empty name without '/', '+' or '#'"
    )]
    InvalidShareName,
}

impl TopicError {
    /// The MQTT 5 reason code to answer with: 0x8F (topic filter invalid) for filters, 0x90
    /// (topic name invalid) for names.
    pub fn reason_code(&self) -> u8 {
        match self.kind() {
            TopicKind::Name => reason::TOPIC_NAME_INVALID,
            TopicKind::Filter => reason::TOPIC_FILTER_INVALID,
        }
    }

    /// Whether a name or a filter was refused.
    pub fn kind(&self) -> TopicKind {
        match self {
            TopicError::Empty(k) | TopicError::TooLong(k) | TopicError::NullCharacter(k) => *k,
            TopicError::WildcardInName => TopicKind::Name,
            TopicError::MisplacedMultiLevelWildcard
            | TopicError::MisplacedSingleLevelWildcard
            | TopicError::InvalidShareName => TopicKind::Filter,
        }
    }
}

/// Checks a PUBLISH topic name: non-empty, at most 65,535 bytes, no U+0000, no wildcard
/// [MQTT-3.3.2-2]. A leading `$` is allowed here (the ACL decides who may use it).
pub fn valid_topic_name(topic: &str) -> Result<(), TopicError> {
    check_string(topic, TopicKind::Name)?;
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a plain (not `$share`) topic filter: non-empty, at most 65,535 bytes, no U+0000,
/// `#` only as the whole last level [MQTT-4.7.1-1], `+` only as a whole level [MQTT-4.7.1-2].
pub fn valid_filter(filter: &str) -> Result<(), TopicError> {
    check_string(filter, TopicKind::Filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MisplacedMultiLevelWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedSingleLevelWildcard);
        }
    }
    Ok(())
}

fn check_string(s: &str, kind: TopicKind) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty(kind));
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong(kind));
    }
    if s.contains('\0') {
        return Err(TopicError::NullCharacter(kind));
    }
    Ok(())
}

/// Whether the plain filter `filter` matches the topic name `topic`.
///
/// Both are expected valid ([`valid_filter`], [`valid_topic_name`]); anything else gives some
/// answer without panicking (a misplaced wildcard is then compared as literal text). A
/// `$share/...` filter must be split by [`parse_filter`] first.
pub fn matches(filter: &str, topic: &str) -> bool {
    // [MQTT-4.7.2-1]: `#`, `+/...` and `#` never match `$SYS/...` and the like.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            // `#` matches the remaining levels, however many (zero included).
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (Some(_), Some(_)) => return false,
            (None, None) => return true,
            // `sport/#` matches `sport`: the topic ran out exactly where `#` stands.
            (Some(fl), None) => return fl == "#" && f.next().is_none(),
            (None, Some(_)) => return false,
        }
    }
}

/// A subscription filter split into its plain filter and, for a shared subscription, its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterRef<'a> {
    Plain(&'a str),
    /// `$share/{group}/{filter}` (MQTT 5 section 4.8.2).
    Shared {
        group: &'a str,
        filter: &'a str,
    },
}

impl<'a> FilterRef<'a> {
    /// The filter topics are matched against (the part after the share name when shared).
    pub fn filter(&self) -> &'a str {
        match self {
            FilterRef::Plain(f) | FilterRef::Shared { filter: f, .. } => f,
        }
    }

    /// The share name of a shared subscription.
    pub fn group(&self) -> Option<&'a str> {
        match self {
            FilterRef::Plain(_) => None,
            FilterRef::Shared { group, .. } => Some(group),
        }
    }
}

/// Validates a SUBSCRIBE/UNSUBSCRIBE filter and splits a shared subscription.
///
/// A filter whose first level is `$share` is a shared subscription: `$share/{ShareName}/{filter}`
/// with a non-empty ShareName without `/`, `+` or `#` [MQTT-4.8.2-1], [MQTT-4.8.2-2], and a
/// valid inner filter. Every other filter must pass [`valid_filter`].
pub fn parse_filter(full: &str) -> Result<FilterRef<'_>, TopicError> {
    check_string(full, TopicKind::Filter)?;
    let Some(rest) = full.strip_prefix(SHARE_PREFIX) else {
        valid_filter(full)?;
        return Ok(FilterRef::Plain(full));
    };
    let rest = match rest.strip_prefix('/') {
        Some(rest) => rest,
        // `$shared/x` is an ordinary filter; `$share` alone is a shared one without a name.
        None if !rest.is_empty() => {
            valid_filter(full)?;
            return Ok(FilterRef::Plain(full));
        }
        None => return Err(TopicError::InvalidShareName),
    };
    let Some((group, filter)) = rest.split_once('/') else {
        return Err(TopicError::InvalidShareName);
    };
    if group.is_empty() || group.contains(['+', '#']) {
        return Err(TopicError::InvalidShareName);
    }
    valid_filter(filter)?;
    Ok(FilterRef::Shared { group, filter })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn topic_names() {
        assert_eq!(valid_topic_name("a/b"), Ok(()));
        assert_eq!(valid_topic_name("/"), Ok(()));
        assert_eq!(valid_topic_name("$SYS/x"), Ok(()));
        assert_eq!(
            valid_topic_name(""),
            Err(TopicError::Empty(TopicKind::Name))
        );
        assert_eq!(
            valid_topic_name("a\0b"),
            Err(TopicError::NullCharacter(TopicKind::Name))
        );
        assert_eq!(
            valid_topic_name(&"a".repeat(MAX_TOPIC_LEN + 1)),
            Err(TopicError::TooLong(TopicKind::Name))
        );
        assert_eq!(valid_topic_name(&"a".repeat(MAX_TOPIC_LEN)), Ok(()));
    }

    #[test]
    fn mqtt_3_3_2_2_no_wildcards_in_names() {
        for t in ["a/+", "a/#", "+", "#", "a+b", "a#"] {
            assert_eq!(valid_topic_name(t), Err(TopicError::WildcardInName), "{t}");
        }
    }

    #[test]
    fn mqtt_4_7_1_1_multi_level_wildcard_last_and_whole() {
        for f in ["#", "a/#", "/#", "a//#"] {
            assert_eq!(valid_filter(f), Ok(()), "{f}");
        }
        for f in ["a/#/b", "a#", "#a", "a/b#", "##", "#/"] {
            assert_eq!(
                valid_filter(f),
                Err(TopicError::MisplacedMultiLevelWildcard),
                "{f}"
            );
        }
    }

    #[test]
    fn mqtt_4_7_1_2_single_level_wildcard_whole_level() {
        for f in ["+", "+/+", "a/+/b", "/+", "+/", "+/#"] {
            assert_eq!(valid_filter(f), Ok(()), "{f}");
        }
        for f in ["a+", "+a", "a/b+/c", "++"] {
            assert_eq!(
                valid_filter(f),
                Err(TopicError::MisplacedSingleLevelWildcard),
                "{f}"
            );
        }
        assert_eq!(valid_filter(""), Err(TopicError::Empty(TopicKind::Filter)));
        assert_eq!(
            valid_filter("a/\0"),
            Err(TopicError::NullCharacter(TopicKind::Filter))
        );
    }

    #[test]
    fn reason_codes() {
        assert_eq!(TopicError::WildcardInName.reason_code(), 0x90);
        assert_eq!(TopicError::Empty(TopicKind::Name).reason_code(), 0x90);
        assert_eq!(TopicError::Empty(TopicKind::Filter).reason_code(), 0x8F);
        assert_eq!(TopicError::MisplacedMultiLevelWildcard.reason_code(), 0x8F);
        assert_eq!(TopicError::InvalidShareName.reason_code(), 0x8F);
    }

    #[test]
    fn matching_examples_of_section_4_7() {
        // 4.7.1.2
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "sport"));
        assert!(matches("#", "/"));
        // 4.7.1.3
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+/#", "a"));
        // Empty levels are levels.
        assert!(matches("a//b", "a//b"));
        assert!(!matches("a/b", "a//b"));
        assert!(matches("a/+/b", "a//b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(!matches("a/b/#", "a"));
    }

    #[test]
    fn mqtt_4_7_2_1_wildcards_do_not_match_dollar_topics() {
        assert!(!matches("#", "$SYS/broker"));
        assert!(!matches("+/broker", "$SYS/broker"));
        assert!(!matches("+", "$SYS"));
        assert!(!matches("+/#", "$SYS/a"));
        assert!(matches("$SYS/#", "$SYS/broker"));
        assert!(matches("$SYS/+", "$SYS/broker"));
        // Only the first level counts.
        assert!(matches("a/+", "a/$x"));
        assert!(matches("a/#", "a/$x"));
    }

    #[test]
    fn thousands_of_levels() {
        let topic = "a/".repeat(30_000) + "a";
        assert!(matches("#", &topic));
        assert!(matches(&topic, &topic));
        let filter = "+/".repeat(30_000) + "+";
        assert!(matches(&filter, &topic));
        assert_eq!(valid_filter(&filter), Ok(()));
    }

    #[test]
    fn shared_subscriptions() {
        assert_eq!(parse_filter("a/+"), Ok(FilterRef::Plain("a/+")));
        assert_eq!(
            parse_filter("$share/g1/a/#"),
            Ok(FilterRef::Shared {
                group: "g1",
                filter: "a/#"
            })
        );
        let s = parse_filter("$share/g/#");
        assert_eq!(s.map(|f| (f.group(), f.filter())), Ok((Some("g"), "#")));
        // Not shared syntax: an ordinary filter starting with `$`.
        assert_eq!(parse_filter("$shared/x"), Ok(FilterRef::Plain("$shared/x")));
        assert_eq!(parse_filter("$SYS/#"), Ok(FilterRef::Plain("$SYS/#")));
        assert_eq!(
            parse_filter("a/#/b"),
            Err(TopicError::MisplacedMultiLevelWildcard)
        );
    }

    #[test]
    fn mqtt_4_8_2_1_and_2_share_name() {
        for f in [
            "$share",
            "$share/",
            "$share//a",
            "$share/g",
            "$share/+/a",
            "$share/#/a",
            "$share/g+/a",
            "$share/g#/a",
        ] {
            assert_eq!(parse_filter(f), Err(TopicError::InvalidShareName), "{f}");
        }
        // Inner filter validated.
        assert_eq!(
            parse_filter("$share/g/"),
            Err(TopicError::Empty(TopicKind::Filter))
        );
        assert_eq!(
            parse_filter("$share/g/a#"),
            Err(TopicError::MisplacedMultiLevelWildcard)
        );
        assert_eq!(
            parse_filter("$share/g/\0"),
            Err(TopicError::NullCharacter(TopicKind::Filter))
        );
    }

    /// Reference matcher written differently: recursive over level vectors (small inputs only).
    fn naive(filter: &[&str], topic: &[&str]) -> bool {
        match (filter.split_first(), topic.split_first()) {
            (Some((&"#", _)), _) => true,
            (Some((&"+", fr)), Some((_, tr))) => naive(fr, tr),
            (Some((f, fr)), Some((t, tr))) => f == t && naive(fr, tr),
            (None, None) => true,
            _ => false,
        }
    }

    fn reference(filter: &str, topic: &str) -> bool {
        let f: Vec<&str> = filter.split('/').collect();
        let t: Vec<&str> = topic.split('/').collect();
        if t[0].starts_with('$') && (f[0] == "+" || f[0] == "#") {
            return false;
        }
        naive(&f, &t)
    }

    pub(crate) fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("a".to_string()),
            Just("b".to_string()),
            Just("$s".to_string()),
        ]
    }

    pub(crate) fn topic_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(level(), 1..5)
            .prop_map(|v| v.join("/"))
            .prop_filter("non-empty", |t| !t.is_empty())
    }

    pub(crate) fn filter_strategy() -> impl Strategy<Value = String> {
        let lvl = prop_oneof![3 => level(), 2 => Just("+".to_string())];
        (proptest::collection::vec(lvl, 0..5), any::<bool>()).prop_filter_map(
            "non-empty",
            |(mut v, hash)| {
                if hash {
                    v.push("#".into());
                }
                Some(v.join("/")).filter(|f| !f.is_empty())
            },
        )
    }

    proptest! {
        #[test]
        fn matches_like_reference(f in filter_strategy(), t in topic_strategy()) {
            prop_assert_eq!(valid_filter(&f), Ok(()));
            prop_assert_eq!(valid_topic_name(&t), Ok(()));
            prop_assert_eq!(matches(&f, &t), reference(&f, &t), "{} vs {}", f, t);
        }

        #[test]
        fn no_panics_on_any_input(s in "\\PC{0,40}", t in "[a+#/$\0]{0,12}") {
            let _ = valid_topic_name(&s);
            let _ = valid_filter(&s);
            let _ = parse_filter(&s);
            let _ = matches(&s, &t);
            let _ = matches(&t, &s);
            let _ = parse_filter(&t);
        }

        #[test]
        fn valid_filters_are_exactly_the_generated_shape(t in "[a+#/]{1,8}") {
            let levels: Vec<&str> = t.split('/').collect();
            let ok = levels.iter().enumerate().all(|(i, l)| {
                (!l.contains('#') || (*l == "#" && i + 1 == levels.len()))
                    && (!l.contains('+') || *l == "+")
            });
            prop_assert_eq!(valid_filter(&t).is_ok(), ok);
        }
    }
}
