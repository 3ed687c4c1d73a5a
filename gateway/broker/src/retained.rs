//! Retained messages: the last retained PUBLISH per topic, bounded in count and bytes.
//!
//! Stored in a trie by topic level so that a new subscription's filter finds its retained
//! messages by walking only the branches it can match (`#` walks its whole subtree, which is
//! exactly its result set). No operation recurses.

use std::sync::Arc;
use std::time::Instant;

use thiserror::Error;

use crate::message::Message;
use crate::topic::{TopicError, valid_topic_name};
use crate::tree::{LevelTrie, NodeId};

/// Why a retained message was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RetainError {
    /// Storing it would exceed a limit; the store is unchanged.
    #[error(
        "retained store full: storing {weight} bytes would exceed {max_messages} messages or \
         {max_bytes} bytes (held: {messages} messages, {bytes} bytes)"
    )]
    Full {
        /// The refused message's [`Message::weight`].
        weight: usize,
        messages: usize,
        bytes: usize,
        max_messages: usize,
        max_bytes: usize,
    },
    #[error("invalid retained topic: {0}")]
    InvalidTopic(#[from] TopicError),
}

/// The retained messages of the broker.
#[derive(Debug)]
pub struct RetainedStore {
    trie: LevelTrie<Option<Arc<Message>>>,
    max_messages: usize,
    max_bytes: usize,
    len: usize,
    bytes: usize,
}

impl RetainedStore {
    /// An empty store holding at most `max_messages` messages of at most `max_bytes` in total
    /// (as measured by [`Message::weight`]).
    pub fn new(max_messages: usize, max_bytes: usize) -> RetainedStore {
        RetainedStore {
            trie: LevelTrie::new(),
            max_messages,
            max_bytes,
            len: 0,
            bytes: 0,
        }
    }

    /// Stores `msg` as the retained message of its topic, replacing the previous one; an empty
    /// payload deletes it instead [MQTT-3.3.1-6], [MQTT-3.3.1-7] (deleting nothing is fine).
    /// A replacement counts only the difference against the limits; over a limit the store is
    /// left unchanged and the previous message stays.
    pub fn set(&mut self, msg: Arc<Message>) -> Result<(), RetainError> {
        valid_topic_name(&msg.topic)?;
        if msg.payload.is_empty() {
            self.remove(&msg.topic);
            return Ok(());
        }
        let old = self.get(&msg.topic).map(|m| m.weight());
        let weight = msg.weight();
        let messages = self.len + usize::from(old.is_none());
        let bytes = self
            .bytes
            .saturating_sub(old.unwrap_or(0))
            .saturating_add(weight);
        if messages > self.max_messages || bytes > self.max_bytes {
            return Err(RetainError::Full {
                weight,
                messages: self.len,
                bytes: self.bytes,
                max_messages: self.max_messages,
                max_bytes: self.max_bytes,
            });
        }
        let node = self.trie.get_or_insert(&msg.topic);
        if let Some(slot) = self.trie.value_mut(node) {
            *slot = Some(msg);
            self.len = messages;
            self.bytes = bytes;
        }
        Ok(())
    }

    /// Deletes the retained message of `topic`, returning it.
    pub fn remove(&mut self, topic: &str) -> Option<Arc<Message>> {
        let node = self.trie.find(topic)?;
        let old = self.trie.value_mut(node)?.take()?;
        self.len -= 1;
        self.bytes = self.bytes.saturating_sub(old.weight());
        self.trie.prune(topic, Option::is_none);
        Some(old)
    }

    /// The retained message of `topic`, expired or not.
    pub fn get(&self, topic: &str) -> Option<&Arc<Message>> {
        let node = self.trie.find(topic)?;
        self.trie.value(node)?.as_ref()
    }

    /// Appends to `out` the unexpired retained messages whose topic matches the plain filter
    /// `filter` (a `$share/...` filter gets none: MQTT 5 sends no retained messages to shared
    /// subscriptions, the caller skips them). Wildcards at the first level skip `$` topics
    /// [MQTT-4.7.2-1]. Order is unspecified.
    pub fn matching(&self, filter: &str, now: Instant, out: &mut Vec<Arc<Message>>) {
        let root = LevelTrie::<Option<Arc<Message>>>::ROOT;
        // (node, byte offset of the next filter level; `None` when the filter is exhausted)
        let mut stack: Vec<(NodeId, Option<usize>)> = vec![(root, Some(0))];
        while let Some((node, pos)) = stack.pop() {
            let Some(start) = pos else {
                self.push_live(node, now, out);
                continue;
            };
            let rest = filter.get(start..).unwrap_or("");
            let (level, next) = match rest.find('/') {
                Some(i) => (&rest[..i], Some(start + i + 1)),
                None => (rest, None),
            };
            let skip_dollar = node == root;
            match level {
                // `#` as the last level: this node (`sport/#` matches `sport`) and all below it.
                "#" if next.is_none() => self.push_subtree(node, skip_dollar, now, out),
                "+" => stack.extend(
                    self.trie
                        .children(node)
                        .filter(|(k, _)| !(skip_dollar && k.starts_with('$')))
                        .map(|(_, c)| (c, next)),
                ),
                _ => stack.extend(self.trie.child(node, level).map(|c| (c, next))),
            }
        }
    }

    fn push_live(&self, node: NodeId, now: Instant, out: &mut Vec<Arc<Message>>) {
        if let Some(Some(m)) = self.trie.value(node)
            && !m.expired(now)
        {
            out.push(Arc::clone(m));
        }
    }

    fn push_subtree(
        &self,
        top: NodeId,
        skip_dollar: bool,
        now: Instant,
        out: &mut Vec<Arc<Message>>,
    ) {
        self.push_live(top, now, out);
        // The first level below `top` may have to skip `$` topics; deeper levels never do.
        let mut stack: Vec<NodeId> = self
            .trie
            .children(top)
            .filter(|(k, _)| !(skip_dollar && k.starts_with('$')))
            .map(|(_, c)| c)
            .collect();
        while let Some(node) = stack.pop() {
            self.push_live(node, now, out);
            stack.extend(self.trie.children(node).map(|(_, c)| c));
        }
    }

    /// Deletes every message expired at `now`; returns how many. Scans the whole store: call it
    /// from a periodic housekeeping task, not per message.
    pub fn remove_expired(&mut self, now: Instant) -> usize {
        let expired: Vec<Arc<Message>> = self
            .trie
            .values()
            .filter_map(|v| v.as_ref().filter(|m| m.expired(now)).cloned())
            .collect();
        for m in &expired {
            self.remove(&m.topic);
        }
        expired.len()
    }

    /// Messages held (expired ones included until removed).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sum of the held messages' [`Message::weight`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Trie nodes held besides the root (0 when empty).
    pub fn node_count(&self) -> usize {
        self.trie.node_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;
    use crate::topic::matches;
    use proptest::prelude::*;
    use std::time::Duration;

    fn msg(topic: &str, payload: &str) -> Arc<Message> {
        Arc::new(Message::new(
            topic,
            payload.to_string(),
            QoS::AtLeastOnce,
            true,
        ))
    }

    fn topics(s: &RetainedStore, filter: &str, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        s.matching(filter, now, &mut out);
        let mut v: Vec<String> = out.iter().map(|m| m.topic.clone()).collect();
        v.sort();
        v
    }

    #[test]
    fn set_replace_and_match() {
        let mut s = RetainedStore::new(100, 1 << 20);
        for t in [
            "sport",
            "sport/tennis",
            "sport/tennis/p1",
            "$SYS/x",
            "a//b",
            "/",
        ] {
            s.set(msg(t, "v")).unwrap();
        }
        assert_eq!(s.len(), 6);
        let now = Instant::now();
        assert_eq!(
            topics(&s, "sport/#", now),
            ["sport", "sport/tennis", "sport/tennis/p1"]
        );
        assert_eq!(topics(&s, "sport/+", now), ["sport/tennis"]);
        assert_eq!(topics(&s, "+/+", now), ["/", "sport/tennis"]);
        assert_eq!(topics(&s, "a/+/b", now), ["a//b"]);
        assert_eq!(topics(&s, "sport/tennis/p1", now), ["sport/tennis/p1"]);
        assert_eq!(
            topics(&s, "#", now),
            ["/", "a//b", "sport", "sport/tennis", "sport/tennis/p1"]
        );
        // Replacing keeps one message per topic.
        s.set(msg("sport", "new")).unwrap();
        assert_eq!(s.len(), 6);
        assert_eq!(
            s.get("sport").map(|m| m.payload.clone()),
            Some("new".into())
        );
    }

    #[test]
    fn mqtt_4_7_2_1_dollar_topics_need_literal_first_level() {
        let mut s = RetainedStore::new(100, 1 << 20);
        s.set(msg("$SYS/broker/uptime", "1")).unwrap();
        s.set(msg("$SYS", "1")).unwrap();
        let now = Instant::now();
        assert!(topics(&s, "#", now).is_empty());
        assert!(topics(&s, "+/broker/+", now).is_empty());
        assert!(topics(&s, "+", now).is_empty());
        assert_eq!(topics(&s, "$SYS/#", now), ["$SYS", "$SYS/broker/uptime"]);
        assert_eq!(topics(&s, "$SYS/+/uptime", now), ["$SYS/broker/uptime"]);
    }

    #[test]
    fn mqtt_3_3_1_6_and_7_empty_payload_deletes() {
        let mut s = RetainedStore::new(100, 1 << 20);
        s.set(msg("a/b/c", "v")).unwrap();
        s.set(msg("a", "v")).unwrap();
        assert_eq!(s.node_count(), 3);
        s.set(msg("a/b/c", "")).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s.node_count(), 1, "a/b and a/b/c pruned");
        assert!(topics(&s, "a/#", Instant::now()) == ["a"]);
        // Deleting a topic that holds nothing is not an error.
        s.set(msg("x/y", "")).unwrap();
        s.set(msg("a", "")).unwrap();
        assert_eq!((s.len(), s.bytes(), s.node_count()), (0, 0, 0));
    }

    #[test]
    fn limits() {
        let w = msg("t/0", "x").weight();
        let mut s = RetainedStore::new(3, 10 * w);
        for i in 0..3 {
            s.set(msg(&format!("t/{i}"), "x")).unwrap();
        }
        assert_eq!((s.len(), s.bytes()), (3, 3 * w));
        // A fourth message is over max_messages; nothing changes.
        let e = s.set(msg("t/3", "x"));
        assert!(
            matches!(e, Err(RetainError::Full { messages: 3, .. })),
            "{e:?}"
        );
        assert_eq!((s.len(), s.bytes()), (3, 3 * w));
        assert!(s.get("t/3").is_none());
        assert_eq!(s.node_count(), 4, "no node left behind by the refused set");
        // Replacing needs no new slot: allowed at max_messages, counted by difference.
        s.set(msg("t/0", "xx")).unwrap();
        assert_eq!((s.len(), s.bytes()), (3, 3 * w + 1));
        // Growing beyond max_bytes is refused and keeps the old message.
        let big = "y".repeat(7 * w + 1);
        assert!(matches!(
            s.set(msg("t/1", &big)),
            Err(RetainError::Full { .. })
        ));
        assert_eq!(s.get("t/1").map(|m| m.payload.len()), Some(1));
        let fits = "y".repeat(7 * w);
        s.set(msg("t/1", &fits)).unwrap();
        assert_eq!(s.bytes(), 10 * w);
        // Deleting frees room.
        s.set(msg("t/1", "")).unwrap();
        s.set(msg("t/3", "x")).unwrap();
        assert_eq!((s.len(), s.bytes()), (3, 3 * w + 1));
    }

    #[test]
    fn invalid_topics_refused() {
        let mut s = RetainedStore::new(3, 1 << 20);
        assert!(matches!(
            s.set(msg("a/+", "x")),
            Err(RetainError::InvalidTopic(_))
        ));
        assert!(matches!(
            s.set(msg("", "x")),
            Err(RetainError::InvalidTopic(_))
        ));
        assert!(s.is_empty());
    }

    #[test]
    fn expiry() {
        let now = Instant::now();
        let mut s = RetainedStore::new(10, 1 << 20);
        let mut m = Message::new("a/old", "x", QoS::AtMostOnce, true);
        m.expires_at = Some(now + Duration::from_secs(10));
        s.set(Arc::new(m)).unwrap();
        s.set(msg("a/new", "x")).unwrap();
        assert_eq!(topics(&s, "a/#", now), ["a/new", "a/old"]);
        let later = now + Duration::from_secs(10);
        assert_eq!(topics(&s, "a/#", later), ["a/new"]);
        assert_eq!(topics(&s, "a/old", later), Vec::<String>::new());
        assert_eq!(s.len(), 2);
        assert_eq!(s.remove_expired(later), 1);
        assert_eq!(s.len(), 1);
        assert_eq!(s.bytes(), msg("a/new", "x").weight());
        assert_eq!(s.remove_expired(later), 0);
    }

    #[test]
    fn deep_topics() {
        let mut s = RetainedStore::new(10, 1 << 20);
        let deep = "a/".repeat(32_000) + "a";
        s.set(msg(&deep, "x")).unwrap();
        assert_eq!(topics(&s, "#", Instant::now()).len(), 1);
        assert_eq!(
            topics(&s, &("+/".repeat(32_000) + "+"), Instant::now()).len(),
            1
        );
        s.set(msg(&deep, "")).unwrap();
        assert_eq!(s.node_count(), 0);
    }

    proptest! {
        #[test]
        fn matching_agrees_with_topic_matches(
            stored in proptest::collection::vec(crate::topic::tests::topic_strategy(), 0..20),
            filters in proptest::collection::vec(crate::topic::tests::filter_strategy(), 1..10),
        ) {
            let mut s = RetainedStore::new(usize::MAX, usize::MAX);
            for t in &stored {
                s.set(msg(t, "v")).unwrap();
            }
            let mut uniq = stored.clone();
            uniq.sort();
            uniq.dedup();
            prop_assert_eq!(s.len(), uniq.len());
            for f in &filters {
                let want: Vec<String> = uniq.iter().filter(|t| matches(f, t)).cloned().collect();
                prop_assert_eq!(topics(&s, f, Instant::now()), want, "filter {}", f);
            }
            for t in &uniq {
                s.set(msg(t, "")).unwrap();
            }
            prop_assert_eq!((s.len(), s.bytes(), s.node_count()), (0, 0, 0));
        }

        #[test]
        fn no_panic_on_odd_filters(f in "[a+#/$]{0,10}") {
            let mut s = RetainedStore::new(10, 1 << 20);
            s.set(msg("a/b", "v")).unwrap();
            s.set(msg("$a", "v")).unwrap();
            let mut out = Vec::new();
            s.matching(&f, Instant::now(), &mut out);
        }
    }
}
