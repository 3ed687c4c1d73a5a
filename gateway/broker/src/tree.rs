//! Tries by topic level: the subscription tree that finds a PUBLISH's subscribers, and the
//! level trie under it (also used by the retained store).
//!
//! Nodes live in an arena (`Vec` + free list) and are addressed by index, so no operation
//! recurses and dropping a trie with 30,000-level filters cannot overflow the stack. A node is
//! removed as soon as it holds no value and no children, and the arena is released when the
//! trie empties.
//!
//! Matching walks only the branches a topic can reach (its literal level, `+` and `#` at each
//! step), so its cost depends on the topic and the matching subscriptions, not on how many
//! subscriptions the tree holds.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::ops::Bound;

use crate::codec::SubscriptionOptions;

/// Index of a node in a [`LevelTrie`].
pub(crate) type NodeId = usize;

/// A trie keyed by `/`-separated levels, with a value per node (`V::default()` = nothing).
#[derive(Debug)]
pub(crate) struct LevelTrie<V> {
    /// `nodes[ROOT]` always exists; freed slots are reset to `Node::default()` and listed in `free`.
    nodes: Vec<Node<V>>,
    free: Vec<NodeId>,
}

#[derive(Debug, Default)]
struct Node<V> {
    children: HashMap<Box<str>, NodeId>,
    value: V,
}

impl<V: Default> LevelTrie<V> {
    pub(crate) const ROOT: NodeId = 0;

    pub(crate) fn new() -> Self {
        LevelTrie {
            nodes: vec![Node::default()],
            free: Vec::new(),
        }
    }

    /// Nodes other than the root.
    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len() - 1 - self.free.len()
    }

    pub(crate) fn child(&self, node: NodeId, level: &str) -> Option<NodeId> {
        self.nodes.get(node)?.children.get(level).copied()
    }

    pub(crate) fn children(&self, node: NodeId) -> impl Iterator<Item = (&str, NodeId)> {
        self.nodes
            .get(node)
            .into_iter()
            .flat_map(|n| n.children.iter().map(|(k, v)| (&**k, *v)))
    }

    /// The value of `node`; `None` only for an id that was never handed out.
    pub(crate) fn value(&self, node: NodeId) -> Option<&V> {
        self.nodes.get(node).map(|n| &n.value)
    }

    pub(crate) fn value_mut(&mut self, node: NodeId) -> Option<&mut V> {
        self.nodes.get_mut(node).map(|n| &mut n.value)
    }

    /// The node for `key`'s levels, created as needed.
    pub(crate) fn get_or_insert(&mut self, key: &str) -> NodeId {
        let mut node = Self::ROOT;
        for level in key.split('/') {
            node = match self.child(node, level) {
                Some(c) => c,
                None => {
                    let c = self.alloc();
                    if let Some(n) = self.nodes.get_mut(node) {
                        n.children.insert(level.into(), c);
                    }
                    c
                }
            };
        }
        node
    }

    /// The node for `key`'s levels, if it exists.
    pub(crate) fn find(&self, key: &str) -> Option<NodeId> {
        key.split('/')
            .try_fold(Self::ROOT, |node, level| self.child(node, level))
    }

    /// Removes the nodes on `key`'s path that hold nothing any more, from the bottom up to the
    /// first node that still holds a value or another child.
    pub(crate) fn prune(&mut self, key: &str, is_empty: impl Fn(&V) -> bool) {
        let mut path: Vec<(NodeId, &str)> = Vec::new();
        let mut node = Self::ROOT;
        for level in key.split('/') {
            match self.child(node, level) {
                Some(c) => {
                    path.push((node, level));
                    node = c;
                }
                None => return,
            }
        }
        // `node` is the leaf; walk back up, detaching each empty node from its parent.
        while let Some((parent, level)) = path.pop() {
            let empty = self
                .nodes
                .get(node)
                .is_some_and(|n| n.children.is_empty() && is_empty(&n.value));
            if !empty {
                break;
            }
            if let Some(p) = self.nodes.get_mut(parent) {
                p.children.remove(level);
            }
            self.release(node);
            node = parent;
        }
        if self.node_count() == 0 {
            // Give the arena's memory back once the trie is empty.
            self.nodes.truncate(1);
            self.nodes.shrink_to_fit();
            self.free = Vec::new();
            if let Some(root) = self.nodes.first_mut() {
                root.children.shrink_to_fit();
            }
        }
    }

    fn alloc(&mut self) -> NodeId {
        match self.free.pop() {
            Some(id) => id,
            None => {
                self.nodes.push(Node::default());
                self.nodes.len() - 1
            }
        }
    }

    fn release(&mut self, node: NodeId) {
        if let Some(n) = self.nodes.get_mut(node) {
            // Drops the node's map and value now; the slot itself is reused.
            *n = Node::default();
            self.free.push(node);
        }
    }

    /// Every node with its value (arena order), for housekeeping scans.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.nodes.iter().map(|n| &n.value)
    }
}

/// One subscriber to deliver a message to, as found by [`SubscriptionTree::matches`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery<K> {
    pub who: K,
    pub opts: SubscriptionOptions,
    /// The MQTT 5 subscription identifier given with the SUBSCRIBE, if any.
    pub subscription_id: Option<u32>,
    /// Chosen as the one member of a shared subscription group.
    pub shared: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sub {
    opts: SubscriptionOptions,
    id: Option<u32>,
}

/// Members of one shared subscription (one share name on one filter).
#[derive(Debug)]
struct Group<K> {
    members: BTreeMap<K, Sub>,
    /// The member served last: the next delivery goes to the first member after it, so joins and
    /// leaves never reset or skip the rotation.
    last: Option<K>,
}

/// The subscriptions whose filter ends at one node.
#[derive(Debug)]
struct Subs<K> {
    plain: BTreeMap<K, Sub>,
    shared: BTreeMap<Box<str>, Group<K>>,
}

impl<K> Default for Subs<K> {
    fn default() -> Self {
        Subs {
            plain: BTreeMap::new(),
            shared: BTreeMap::new(),
        }
    }
}

impl<K> Subs<K> {
    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.shared.is_empty()
    }
}

/// All subscriptions of the broker, by filter level.
///
/// A subscription is identified by (who, filter, share group). Filters must be valid plain
/// filters ([`crate::topic::parse_filter`] splits `$share/{group}/{filter}` into the `filter`
/// and `share_group` arguments); an invalid one is stored as given and never panics.
#[derive(Debug)]
pub struct SubscriptionTree<K> {
    trie: LevelTrie<Subs<K>>,
    len: usize,
    /// Reused by `matches`: (node, byte offset of the next topic level, or `None` when the topic
    /// is exhausted at that node).
    stack: Vec<(NodeId, Option<usize>)>,
}

impl<K: Copy + Eq + Hash + Ord> Default for SubscriptionTree<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + Eq + Hash + Ord> SubscriptionTree<K> {
    pub fn new() -> Self {
        SubscriptionTree {
            trie: LevelTrie::new(),
            len: 0,
            stack: Vec::new(),
        }
    }

    /// Adds or replaces the subscription (`who`, `filter`, `share_group`). Returns true if it
    /// existed and was replaced (new options and identifier).
    pub fn subscribe(
        &mut self,
        filter: &str,
        share_group: Option<&str>,
        who: K,
        opts: SubscriptionOptions,
        subscription_id: Option<u32>,
    ) -> bool {
        let node = self.trie.get_or_insert(filter);
        let Some(subs) = self.trie.value_mut(node) else {
            return false;
        };
        let sub = Sub {
            opts,
            id: subscription_id,
        };
        let replaced = match share_group {
            None => subs.plain.insert(who, sub).is_some(),
            Some(g) => subs
                .shared
                .entry(g.into())
                .or_insert_with(|| Group {
                    members: BTreeMap::new(),
                    last: None,
                })
                .members
                .insert(who, sub)
                .is_some(),
        };
        if !replaced {
            self.len += 1;
        }
        replaced
    }

    /// Removes the subscription (`who`, `filter`, `share_group`); false if there was none.
    /// Nodes left empty are removed.
    pub fn unsubscribe(&mut self, filter: &str, share_group: Option<&str>, who: K) -> bool {
        let Some(node) = self.trie.find(filter) else {
            return false;
        };
        let Some(subs) = self.trie.value_mut(node) else {
            return false;
        };
        let removed = match share_group {
            None => subs.plain.remove(&who).is_some(),
            Some(g) => match subs.shared.get_mut(g) {
                Some(group) => {
                    let removed = group.members.remove(&who).is_some();
                    if group.members.is_empty() {
                        subs.shared.remove(g);
                    }
                    removed
                }
                None => false,
            },
        };
        if removed {
            self.len -= 1;
            if subs.is_empty() {
                self.trie.prune(filter, Subs::is_empty);
            }
        }
        removed
    }

    /// Removes `who`'s subscriptions listed as (filter, share group), e.g. when its session ends.
    /// Returns how many existed.
    pub fn unsubscribe_all<'a>(
        &mut self,
        who: K,
        subscriptions: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> usize {
        subscriptions
            .into_iter()
            .filter(|(filter, group)| self.unsubscribe(filter, *group, who))
            .count()
    }

    /// Appends to `out` one [`Delivery`] per non-shared subscription matching `topic` (several for
    /// one subscriber whose filters overlap: the caller merges them), plus one member per matching
    /// shared group, chosen round-robin (MQTT 5 section 4.8.2). `topic` should be a valid name.
    pub fn matches(&mut self, topic: &str, out: &mut Vec<Delivery<K>>) {
        // [MQTT-4.7.2-1]: no `+` or `#` at the first level for `$` topics.
        let dollar = topic.starts_with('$');
        let mut stack = std::mem::take(&mut self.stack);
        stack.clear();
        stack.push((LevelTrie::<Subs<K>>::ROOT, Some(0)));
        while let Some((node, pos)) = stack.pop() {
            let wildcards = !(dollar && node == LevelTrie::<Subs<K>>::ROOT);
            // `prefix/#` matches here whether or not levels remain (`sport/#` matches `sport`).
            if wildcards && let Some(hash) = self.trie.child(node, "#") {
                self.collect(hash, out);
            }
            let Some(start) = pos else {
                self.collect(node, out);
                continue;
            };
            let rest = topic.get(start..).unwrap_or("");
            let (level, next) = match rest.find('/') {
                Some(i) => (&rest[..i], Some(start + i + 1)),
                None => (rest, None),
            };
            // A topic level `+` or `#` (an invalid name) must not reach the wildcard nodes twice.
            let wild_level = level == "+" || level == "#";
            if !wild_level && let Some(c) = self.trie.child(node, level) {
                stack.push((c, next));
            }
            if wildcards && let Some(c) = self.trie.child(node, "+") {
                stack.push((c, next));
            }
        }
        // Keep the scratch space unless one very deep topic blew it up.
        if stack.capacity() <= 1024 {
            self.stack = stack;
        }
    }

    fn collect(&mut self, node: NodeId, out: &mut Vec<Delivery<K>>) {
        let Some(subs) = self.trie.value_mut(node) else {
            return;
        };
        out.extend(subs.plain.iter().map(|(who, s)| Delivery {
            who: *who,
            opts: s.opts,
            subscription_id: s.id,
            shared: false,
        }));
        for group in subs.shared.values_mut() {
            let next = match group.last {
                Some(last) => group
                    .members
                    .range((Bound::Excluded(last), Bound::Unbounded))
                    .next()
                    .or_else(|| group.members.iter().next()),
                None => group.members.iter().next(),
            };
            if let Some((who, s)) = next {
                group.last = Some(*who);
                out.push(Delivery {
                    who: *who,
                    opts: s.opts,
                    subscription_id: s.id,
                    shared: true,
                });
            }
        }
    }

    /// Subscriptions held (each shared group member counts once).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Trie nodes held besides the root (0 when empty): for tests and memory accounting.
    pub fn node_count(&self) -> usize {
        self.trie.node_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;
    use crate::message::SessionKey;
    use crate::topic::{matches as topic_matches, parse_filter};
    use proptest::prelude::*;

    fn opts(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            ..Default::default()
        }
    }

    fn who_matches(t: &mut SubscriptionTree<SessionKey>, topic: &str) -> Vec<u64> {
        let mut out = Vec::new();
        t.matches(topic, &mut out);
        let mut v: Vec<u64> = out.iter().map(|d| d.who.0).collect();
        v.sort();
        v
    }

    #[test]
    fn wildcards_and_levels() {
        let mut t = SubscriptionTree::new();
        let filters = [
            "sport/tennis/player1",
            "sport/tennis/+",
            "sport/#",
            "#",
            "+/+",
            "/+",
            "+",
            "sport/+/player1/#",
            "a//b",
        ];
        for (i, f) in filters.iter().enumerate() {
            assert!(!t.subscribe(f, None, SessionKey(i as u64), opts(QoS::AtMostOnce), None));
        }
        assert_eq!(t.len(), filters.len());
        assert_eq!(
            who_matches(&mut t, "sport/tennis/player1"),
            vec![0, 1, 2, 3, 7]
        );
        // `sport/#` matches its parent level.
        assert_eq!(who_matches(&mut t, "sport"), vec![2, 3, 6]);
        assert_eq!(who_matches(&mut t, "/finance"), vec![3, 4, 5]);
        assert_eq!(who_matches(&mut t, "a//b"), vec![3, 8]);
        assert_eq!(who_matches(&mut t, "a/b"), vec![3, 4]);
    }

    #[test]
    fn mqtt_4_7_2_1_dollar_topics() {
        let mut t = SubscriptionTree::new();
        t.subscribe("#", None, SessionKey(1), opts(QoS::AtMostOnce), None);
        t.subscribe("+/broker", None, SessionKey(2), opts(QoS::AtMostOnce), None);
        t.subscribe("$SYS/#", None, SessionKey(3), opts(QoS::AtMostOnce), None);
        t.subscribe("$SYS/+", None, SessionKey(4), opts(QoS::AtMostOnce), None);
        t.subscribe("+", None, SessionKey(5), opts(QoS::AtMostOnce), None);
        assert_eq!(who_matches(&mut t, "$SYS/broker"), vec![3, 4]);
        assert_eq!(who_matches(&mut t, "$SYS"), vec![3]);
        assert_eq!(who_matches(&mut t, "x/broker"), vec![1, 2]);
    }

    #[test]
    fn replace_and_overlap() {
        let mut t = SubscriptionTree::new();
        let me = SessionKey(7);
        assert!(!t.subscribe("a/+", None, me, opts(QoS::AtMostOnce), Some(1)));
        assert!(t.subscribe("a/+", None, me, opts(QoS::ExactlyOnce), Some(2)));
        assert!(!t.subscribe("a/#", None, me, opts(QoS::AtLeastOnce), Some(3)));
        assert!(!t.subscribe("a/+", Some("g"), me, opts(QoS::AtLeastOnce), None));
        assert_eq!(t.len(), 3);
        let mut out = Vec::new();
        t.matches("a/b", &mut out);
        out.sort_by_key(|d| (d.shared, d.subscription_id));
        assert_eq!(
            out,
            vec![
                Delivery {
                    who: me,
                    opts: opts(QoS::ExactlyOnce),
                    subscription_id: Some(2),
                    shared: false
                },
                Delivery {
                    who: me,
                    opts: opts(QoS::AtLeastOnce),
                    subscription_id: Some(3),
                    shared: false
                },
                Delivery {
                    who: me,
                    opts: opts(QoS::AtLeastOnce),
                    subscription_id: None,
                    shared: true
                },
            ]
        );
    }

    #[test]
    fn unsubscribe_exact_identity() {
        let mut t = SubscriptionTree::new();
        t.subscribe("a/b", None, SessionKey(1), opts(QoS::AtMostOnce), None);
        t.subscribe("a/b", Some("g"), SessionKey(1), opts(QoS::AtMostOnce), None);
        assert!(!t.unsubscribe("a/b", None, SessionKey(2)));
        assert!(!t.unsubscribe("a/b", Some("h"), SessionKey(1)));
        assert!(!t.unsubscribe("a/+", None, SessionKey(1)));
        assert!(!t.unsubscribe("a", None, SessionKey(1)));
        assert_eq!(t.node_count(), 2);
        assert!(t.unsubscribe("a/b", None, SessionKey(1)));
        assert_eq!(
            t.node_count(),
            2,
            "the shared subscription still needs the nodes"
        );
        assert!(t.unsubscribe("a/b", Some("g"), SessionKey(1)));
        assert!(!t.unsubscribe("a/b", Some("g"), SessionKey(1)));
        assert!(t.is_empty());
        assert_eq!(t.node_count(), 0);
    }

    #[test]
    fn pruning_keeps_shared_prefixes() {
        let mut t = SubscriptionTree::new();
        t.subscribe("a/b/c", None, SessionKey(1), opts(QoS::AtMostOnce), None);
        t.subscribe(
            "a/b/c/d/e",
            None,
            SessionKey(1),
            opts(QoS::AtMostOnce),
            None,
        );
        t.subscribe("a/#", None, SessionKey(1), opts(QoS::AtMostOnce), None);
        assert_eq!(t.node_count(), 6);
        t.unsubscribe("a/b/c/d/e", None, SessionKey(1));
        assert_eq!(t.node_count(), 4);
        t.unsubscribe("a/b/c", None, SessionKey(1));
        assert_eq!(t.node_count(), 2);
        assert_eq!(who_matches(&mut t, "a/b/c"), vec![1]);
        t.unsubscribe("a/#", None, SessionKey(1));
        assert_eq!(t.node_count(), 0);
    }

    #[test]
    fn memory_freed_after_10000_filters() {
        let mut t = SubscriptionTree::new();
        let filter = |i: u32| match i % 4 {
            0 => format!("plant/line{}/cell{}/temp", i % 37, i),
            1 => format!("plant/+/cell{i}/#"),
            2 => format!("site{}/+/{i}", i % 11),
            _ => format!("{i}/x//y"),
        };
        for i in 0..10_000u32 {
            let group = (i % 3 == 0).then_some("g");
            t.subscribe(
                &filter(i),
                group,
                SessionKey(u64::from(i)),
                opts(QoS::AtLeastOnce),
                None,
            );
        }
        assert_eq!(t.len(), 10_000);
        assert!(t.node_count() > 10_000);
        let subs: Vec<(String, Option<&str>)> = (0..10_000u32)
            .map(|i| (filter(i), (i % 3 == 0).then_some("g")))
            .collect();
        for (i, (f, g)) in subs.iter().enumerate() {
            assert_eq!(
                t.unsubscribe_all(SessionKey(i as u64), [(f.as_str(), *g)]),
                1
            );
        }
        assert_eq!(t.len(), 0);
        assert_eq!(t.node_count(), 0);
        assert_eq!(t.trie.nodes.len(), 1);
        assert!(t.trie.nodes.capacity() <= 4);
    }

    #[test]
    fn shared_groups_round_robin() {
        let mut t = SubscriptionTree::new();
        for w in 1..=3 {
            t.subscribe(
                "a/+",
                Some("g"),
                SessionKey(w),
                opts(QoS::AtLeastOnce),
                None,
            );
        }
        t.subscribe(
            "a/+",
            Some("h"),
            SessionKey(9),
            opts(QoS::AtLeastOnce),
            None,
        );
        t.subscribe(
            "a/#",
            Some("g"),
            SessionKey(5),
            opts(QoS::AtLeastOnce),
            None,
        );
        t.subscribe("a/+", None, SessionKey(4), opts(QoS::AtLeastOnce), None);
        let mut got = Vec::new();
        for _ in 0..6 {
            let mut out = Vec::new();
            t.matches("a/x", &mut out);
            // One for ($share/g, a/+), one for ($share/h, a/+), one for ($share/g, a/#), plain 4.
            assert_eq!(out.len(), 4);
            assert_eq!(out.iter().filter(|d| !d.shared).count(), 1);
            let g: Vec<u64> = out
                .iter()
                .filter(|d| d.shared && [1, 2, 3].contains(&d.who.0))
                .map(|d| d.who.0)
                .collect();
            assert_eq!(g.len(), 1);
            got.push(g[0]);
            assert!(out.iter().any(|d| d.shared && d.who.0 == 9));
            assert!(out.iter().any(|d| d.shared && d.who.0 == 5));
        }
        assert_eq!(got, vec![1, 2, 3, 1, 2, 3]);
        // A member leaving mid-rotation: the next one after the last served is chosen.
        t.unsubscribe("a/+", Some("g"), SessionKey(2));
        let mut out = Vec::new();
        t.matches("a/y", &mut out);
        assert!(out.iter().any(|d| d.who.0 == 1));
        out.clear();
        t.matches("a/y", &mut out);
        assert!(out.iter().any(|d| d.who.0 == 3));
        // Joining: served in key order.
        t.subscribe(
            "a/+",
            Some("g"),
            SessionKey(2),
            opts(QoS::AtLeastOnce),
            None,
        );
        let mut seq = Vec::new();
        for _ in 0..3 {
            out.clear();
            t.matches("a/y", &mut out);
            seq.extend(
                out.iter()
                    .filter(|d| [1, 2, 3].contains(&d.who.0))
                    .map(|d| d.who.0),
            );
        }
        assert_eq!(seq, vec![1, 2, 3]);
    }

    #[test]
    fn deep_topics_and_filters_do_not_overflow() {
        let mut t = SubscriptionTree::new();
        let deep = "a/".repeat(32_000) + "a";
        let deep_plus = "+/".repeat(32_000) + "#";
        t.subscribe(&deep, None, SessionKey(1), opts(QoS::AtMostOnce), None);
        t.subscribe(&deep_plus, None, SessionKey(2), opts(QoS::AtMostOnce), None);
        assert_eq!(who_matches(&mut t, &deep), vec![1, 2]);
        assert_eq!(who_matches(&mut t, &"/".repeat(40_000)), vec![2]);
        // Dropping a deep tree must not recurse either.
        let mut t2 = SubscriptionTree::new();
        t2.subscribe(&deep, None, SessionKey(1), opts(QoS::AtMostOnce), None);
        drop(t2);
        assert!(t.unsubscribe(&deep, None, SessionKey(1)));
        assert!(t.unsubscribe(&deep_plus, None, SessionKey(2)));
        assert_eq!(t.node_count(), 0);
    }

    #[test]
    fn matching_visits_few_nodes() {
        // 10,000 subscriptions; an 8-level topic touches only its own branches.
        let mut t = SubscriptionTree::new();
        for i in 0..10_000u64 {
            let f = format!("p/l{}/c{}/m/a/b/c/d{}", i % 10, i % 100, i);
            t.subscribe(&f, None, SessionKey(i), opts(QoS::AtMostOnce), None);
        }
        t.subscribe(
            "p/+/c42/#",
            None,
            SessionKey(99_999),
            opts(QoS::AtMostOnce),
            None,
        );
        let visited = |t: &SubscriptionTree<SessionKey>, topic: &str| {
            // Count the nodes a walk like `matches` reaches.
            let mut n = 0;
            let mut stack = vec![(LevelTrie::<Subs<SessionKey>>::ROOT, 0usize)];
            let levels: Vec<&str> = topic.split('/').collect();
            while let Some((node, i)) = stack.pop() {
                n += 1;
                if i == levels.len() {
                    continue;
                }
                for l in [levels[i], "+"] {
                    if let Some(c) = t.trie.child(node, l) {
                        stack.push((c, i + 1));
                    }
                }
            }
            n
        };
        assert!(visited(&t, "p/l2/c42/m/a/b/c/d4242") < 20);
        assert_eq!(
            who_matches(&mut t, "p/l2/c42/m/a/b/c/d4242"),
            vec![4242, 99_999]
        );
    }

    fn key(i: u8) -> SessionKey {
        SessionKey(u64::from(i))
    }

    proptest! {
        #[test]
        fn tree_agrees_with_topic_matches(
            subs in proptest::collection::vec(
                (crate::topic::tests::filter_strategy(), 0u8..4, proptest::option::of(0u8..2)),
                0..30,
            ),
            unsubs in proptest::collection::vec(0usize..30, 0..10),
            topics in proptest::collection::vec(crate::topic::tests::topic_strategy(), 1..10),
        ) {
            let mut t = SubscriptionTree::new();
            let mut model: Vec<(String, u8, Option<String>)> = Vec::new();
            for (f, w, g) in &subs {
                let g = g.map(|g| format!("g{g}"));
                let existed = model.iter().any(|m| m.0 == *f && m.1 == *w && m.2 == g);
                let replaced = t.subscribe(f, g.as_deref(), key(*w), opts(QoS::AtMostOnce), None);
                prop_assert_eq!(replaced, existed);
                if !existed {
                    model.push((f.clone(), *w, g));
                }
            }
            for u in unsubs {
                if u < model.len() {
                    let (f, w, g) = model.swap_remove(u);
                    prop_assert!(t.unsubscribe(&f, g.as_deref(), key(w)));
                }
            }
            prop_assert_eq!(t.len(), model.len());
            for topic in &topics {
                let mut out = Vec::new();
                t.matches(topic, &mut out);
                let mut plain: Vec<u64> = out.iter().filter(|d| !d.shared).map(|d| d.who.0).collect();
                plain.sort();
                let mut want: Vec<u64> = model
                    .iter()
                    .filter(|m| m.2.is_none() && topic_matches(&m.0, topic))
                    .map(|m| u64::from(m.1))
                    .collect();
                want.sort();
                prop_assert_eq!(plain, want);
                // Exactly one delivery per matching (group, filter), from that group.
                let mut groups: Vec<(&str, &str)> = model
                    .iter()
                    .filter_map(|m| m.2.as_deref().map(|g| (g, m.0.as_str())))
                    .filter(|(_, f)| topic_matches(f, topic))
                    .collect();
                groups.sort();
                groups.dedup();
                prop_assert_eq!(out.iter().filter(|d| d.shared).count(), groups.len());
                for d in out.iter().filter(|d| d.shared) {
                    prop_assert!(model.iter().any(|m| u64::from(m.1) == d.who.0
                        && m.2.is_some()
                        && topic_matches(&m.0, topic)));
                }
            }
            for (f, w, g) in model.drain(..) {
                prop_assert!(t.unsubscribe(&f, g.as_deref(), key(w)));
            }
            prop_assert_eq!(t.node_count(), 0);
            prop_assert_eq!(t.len(), 0);
        }

        #[test]
        fn parse_then_subscribe_never_panics(s in "[a+#/$]{0,10}", topic in "[a/$]{1,6}") {
            let mut t = SubscriptionTree::new();
            t.subscribe(&s, None, key(1), opts(QoS::AtMostOnce), None);
            if let Ok(f) = parse_filter(&s) {
                t.subscribe(f.filter(), f.group(), key(2), opts(QoS::AtMostOnce), None);
            }
            let mut out = Vec::new();
            t.matches(&topic, &mut out);
            t.unsubscribe(&s, None, key(1));
            if let Ok(f) = parse_filter(&s) {
                t.unsubscribe(f.filter(), f.group(), key(2));
            }
            prop_assert_eq!(t.node_count(), 0);
        }
    }
}
