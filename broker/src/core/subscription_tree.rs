//! The subscription tree: which sessions want a topic, fast with hundreds of thousands of filters.
//!
//! A trie over topic levels. Each node has literal children, a `+` child and a `#` child, and
//! the sessions whose filter ends there. Matching a topic walks only the branches that can
//! match, so the cost grows with the topic's depth and the number of wildcards on its path,
//! not with the number of filters. Subscribers are kept in sorted maps (`CompactMap`) so the
//! order of matches, and so the order of deliveries, is the same in every run (docs/design.md
//! section 3).
//!
//! Every walk (insert, match, remove, drop) is a loop with an explicit stack, never recursion:
//! a client chooses the depth of its topics, and no depth it chooses may reach the thread's
//! stack. (`Limits::topic_levels_max` bounds depth too, but the tree does not rely on it.)
//!
//! Children are found through a hash map keyed by SipHash with a secret key drawn from the
//! broker's entropy ([`TreeHasher`]): with a known key, clients could pick level names that all
//! collide and turn every lookup into a list scan.

use crate::planted::{self, PlantedBug};
use std::collections::HashMap;
use std::hash::BuildHasher;

use smallvec::SmallVec;

use super::compact_map::CompactMap;
use super::SessionId;
use crate::codec::SubscriptionOptions;

/// Keyed SipHash-1-3 for the tree's child maps. The key comes from the broker's entropy (the OS
/// in production, the scenario's seed in the simulation, so runs still replay exactly).
#[derive(Debug, Clone, Copy, Default)]
pub struct TreeHasher {
    key: (u64, u64),
}

impl TreeHasher {
    pub fn with_key(key: (u64, u64)) -> TreeHasher {
        TreeHasher { key }
    }
}

impl BuildHasher for TreeHasher {
    type Hasher = siphasher::sip::SipHasher13;

    fn build_hasher(&self) -> Self::Hasher {
        siphasher::sip::SipHasher13::new_with_keys(self.key.0, self.key.1)
    }
}

/// Topic levels (and walk-stack entries) kept on the thread's stack during a match.
const INLINE_LEVELS: usize = 16;

/// What one session asked for with one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub options: SubscriptionOptions,
    /// MQTT 5 subscription identifier, returned with every message this subscription delivers.
    pub id: Option<u32>,
}

/// One topic level. `K` names a subscriber (a session, or a shared-subscription group) and
/// `V` is what it subscribed with.
#[derive(Debug)]
struct Node<K, V> {
    children: Children<K, V>,
    single: Option<Box<Node<K, V>>>,
    multi: Option<Box<Node<K, V>>>,
    subscribers: CompactMap<K, V>,
}

/// A node's literal children, in a map that exists only while there are some: most nodes are
/// leaves (one per distinct filter), and an empty map with its hasher's key inline would cost
/// 48 bytes in each, in the parent's map (56-byte nodes against 96; issue 15).
#[derive(Debug)]
struct Children<K, V>(Option<Box<ChildMap<K, V>>>);

type ChildMap<K, V> = HashMap<Box<str>, Node<K, V>, TreeHasher>;

impl<K, V> Children<K, V> {
    fn get(&self, level: &str) -> Option<&Node<K, V>> {
        self.0.as_ref()?.get(level)
    }

    fn get_mut(&mut self, level: &str) -> Option<&mut Node<K, V>> {
        self.0.as_mut()?.get_mut(level)
    }

    fn get_or_insert(&mut self, level: &str, hasher: TreeHasher) -> &mut Node<K, V> {
        self.0
            .get_or_insert_with(|| Box::new(HashMap::with_hasher(hasher)))
            .entry(level.into())
            .or_insert_with(Node::new)
    }

    /// Removes `level`'s child; the map goes with the last one.
    fn remove(&mut self, level: &str) {
        if let Some(map) = &mut self.0 {
            map.remove(level);
            if map.is_empty() {
                self.0 = None;
            }
        }
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |map| map.len())
    }

    fn is_empty(&self) -> bool {
        debug_assert!(
            self.0.as_ref().is_none_or(|map| !map.is_empty()),
            "an empty child map is dropped"
        );
        self.0.is_none()
    }

    /// Moves every child onto `stack`.
    fn take_into(&mut self, stack: &mut Vec<Node<K, V>>) {
        if let Some(map) = self.0.take() {
            stack.extend(map.into_values());
        }
    }
}

impl<K, V> Node<K, V> {
    fn new() -> Self {
        Node {
            children: Children(None),
            single: None,
            multi: None,
            subscribers: CompactMap::default(),
        }
    }

    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.single.is_none()
            && self.multi.is_none()
            && self.subscribers.is_empty()
    }

    /// How many child nodes hang below this one.
    fn child_count(&self) -> usize {
        self.children.len() + usize::from(self.single.is_some()) + usize::from(self.multi.is_some())
    }

    fn child(&self, level: &str) -> Option<&Node<K, V>> {
        match level {
            "+" => self.single.as_deref(),
            "#" => self.multi.as_deref(),
            _ => self.children.get(level),
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node<K, V>> {
        match level {
            "+" => self.single.as_deref_mut(),
            "#" => self.multi.as_deref_mut(),
            _ => self.children.get_mut(level),
        }
    }

    fn remove_child(&mut self, level: &str) {
        match level {
            "+" => self.single = None,
            "#" => self.multi = None,
            _ => {
                self.children.remove(level);
            }
        }
    }

    /// Moves every child out of this node onto `stack`.
    fn take_children(&mut self, stack: &mut Vec<Node<K, V>>) {
        self.children.take_into(stack);
        stack.extend(self.single.take().map(|child| *child));
        stack.extend(self.multi.take().map(|child| *child));
    }
}

/// Dropping a deep chain of nodes the default way recurses once per level; this takes the
/// children out first, so every node dies childless and the depth never reaches the stack.
impl<K, V> Drop for Node<K, V> {
    fn drop(&mut self) {
        let mut stack = Vec::new();
        self.take_children(&mut stack);
        while let Some(mut node) = stack.pop() {
            node.take_children(&mut stack);
        }
    }
}

#[derive(Debug)]
pub struct SubscriptionTree<K = SessionId, V = Subscription> {
    root: Node<K, V>,
    hasher: TreeHasher,
    count: usize,
}

impl<K, V> Default for SubscriptionTree<K, V> {
    fn default() -> Self {
        SubscriptionTree::with_hasher(TreeHasher::default())
    }
}

impl<K, V> SubscriptionTree<K, V> {
    /// An empty tree whose child maps hash with `hasher` (see [`TreeHasher`]).
    pub fn with_hasher(hasher: TreeHasher) -> Self {
        SubscriptionTree {
            root: Node::new(),
            hasher,
            count: 0,
        }
    }
}

impl<K: Ord + Copy, V> SubscriptionTree<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of (filter, session) pairs.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds or replaces `session`'s subscription to `filter` (a valid filter). Returns whether
    /// it replaced an existing one.
    pub fn insert(&mut self, filter: &str, session: K, subscription: V) -> bool {
        let hasher = self.hasher;
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = match level {
                "+" => node.single.get_or_insert_with(|| Box::new(Node::new())),
                "#" => node.multi.get_or_insert_with(|| Box::new(Node::new())),
                _ => node.children.get_or_insert(level, hasher),
            };
        }
        let replaced = node.subscribers.insert(session, subscription).is_some();
        if !replaced {
            self.count += 1;
        }
        replaced
    }

    /// Removes `session`'s subscription to exactly `filter`; returns whether there was one.
    /// Nodes left empty are pruned, so subscribe/unsubscribe churn cannot grow memory.
    pub fn remove(&mut self, filter: &str, session: K) -> bool {
        let mut node = Some(&mut self.root);
        for level in filter.split('/') {
            node = node.and_then(|n| n.child_mut(level));
        }
        let removed = node.is_some_and(|n| n.subscribers.remove(&session).is_some());
        if removed {
            self.count -= 1;
            self.prune(filter);
        }
        removed
    }

    /// After a removal at the end of `filter`'s path: cuts off the longest tail of the path
    /// that now holds nothing (every node on it has no subscribers and no other child).
    fn prune(&mut self, filter: &str) {
        let levels: Vec<&str> = filter.split('/').collect();
        // `cut`: the depth of the parent whose child on the path starts the empty tail.
        let mut cut = None;
        let mut node = &self.root;
        for (depth, level) in levels.iter().enumerate() {
            let child = node.child(level).expect("the path was just walked");
            let last = depth + 1 == levels.len();
            let only_the_path = if last {
                child.is_empty()
            } else {
                child.subscribers.is_empty() && child.child_count() == 1
            };
            match (only_the_path, cut) {
                (true, None) => cut = Some(depth),
                (false, _) => cut = None,
                (true, Some(_)) => {}
            }
            node = child;
        }
        let Some(cut) = cut else { return };
        let mut parent = &mut self.root;
        for level in &levels[..cut] {
            parent = parent.child_mut(level).expect("the path was just walked");
        }
        parent.remove_child(levels[cut]);
    }

    /// Calls `visit` for every subscription whose filter matches `topic`. A session with
    /// several matching filters is visited once per filter, in a fixed order (depth first,
    /// literal level before `+`).
    pub fn for_each_match(&self, topic: &str, mut visit: impl FnMut(K, &V)) {
        // Inline up to a depth most topics stay within; deeper ones spill to the heap.
        let levels: SmallVec<[&str; INLINE_LEVELS]> = topic.split('/').collect();
        // spec: [MQTT-4.7.2-1]: wildcards at the first level do not match a '$' topic.
        let dollar = topic.starts_with('$') && !planted::active(PlantedBug::DollarWildcard);
        #[cfg(feature = "planted-bugs")]
        if planted::active(PlantedBug::RecursiveMatch) {
            return planted_recursive_match(&self.root, &levels, 0, dollar, &mut visit);
        }
        let mut stack: SmallVec<[(&Node<K, V>, usize); INLINE_LEVELS]> = SmallVec::new();
        stack.push((&self.root, 0usize));
        while let Some((node, depth)) = stack.pop() {
            let wildcards_allowed = !(dollar && depth == 0);
            if wildcards_allowed {
                // '#' also matches the parent level: "a/#" matches "a".
                if let Some(multi) = &node.multi {
                    for (session, subscription) in multi.subscribers.iter() {
                        visit(*session, subscription);
                    }
                }
            }
            let Some(level) = levels.get(depth) else {
                for (session, subscription) in node.subscribers.iter() {
                    visit(*session, subscription);
                }
                continue;
            };
            // Pushed in reverse: the literal child is walked (whole) before the `+` child.
            if wildcards_allowed {
                if let Some(single) = &node.single {
                    stack.push((single, depth + 1));
                }
            }
            if let Some(child) = node.children.get(level) {
                stack.push((child, depth + 1));
            }
        }
    }
}
/// Planted bug `RecursiveMatch` (planted.rs): the walk of `for_each_match` as a recursion, one
/// frame per topic level. Only in builds with the `planted-bugs` feature.
#[cfg(feature = "planted-bugs")]
fn planted_recursive_match<K: Copy + Ord, V>(
    node: &Node<K, V>,
    levels: &[&str],
    depth: usize,
    dollar: bool,
    visit: &mut impl FnMut(K, &V),
) {
    let wildcards_allowed = !(dollar && depth == 0);
    if let Some(multi) = node.multi.as_ref().filter(|_| wildcards_allowed) {
        for (session, subscription) in multi.subscribers.iter() {
            visit(*session, subscription);
        }
    }
    let Some(level) = levels.get(depth) else {
        for (session, subscription) in node.subscribers.iter() {
            visit(*session, subscription);
        }
        return;
    };
    if let Some(child) = node.children.get(level) {
        planted_recursive_match(child, levels, depth + 1, dollar, visit);
    }
    if let Some(single) = node.single.as_ref().filter(|_| wildcards_allowed) {
        planted_recursive_match(single, levels, depth + 1, dollar, visit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::filter_matches;
    use crate::types::QoS;
    use proptest::prelude::*;

    fn sub(qos: QoS) -> Subscription {
        Subscription {
            options: SubscriptionOptions::new(qos),
            id: None,
        }
    }

    fn matches(tree: &SubscriptionTree, topic: &str) -> Vec<u64> {
        let mut out = Vec::new();
        tree.for_each_match(topic, |s, _| out.push(s.0));
        out.sort();
        out
    }

    #[test]
    fn wildcards_and_dollar_topics() {
        let mut tree = SubscriptionTree::new();
        tree.insert("sensor/+/temperature", SessionId(1), sub(QoS::AtMostOnce));
        tree.insert("#", SessionId(2), sub(QoS::AtMostOnce));
        tree.insert("sensor/#", SessionId(3), sub(QoS::AtMostOnce));
        tree.insert("$SYS/#", SessionId(4), sub(QoS::AtMostOnce));
        tree.insert("+/+/temperature", SessionId(5), sub(QoS::AtMostOnce));
        assert_eq!(matches(&tree, "sensor/1/temperature"), vec![1, 2, 3, 5]);
        assert_eq!(matches(&tree, "sensor"), vec![2, 3]);
        assert_eq!(matches(&tree, "$SYS/x/temperature"), vec![4]);
        assert_eq!(tree.len(), 5);
    }

    #[test]
    fn remove_prunes_and_reports() {
        let mut tree = SubscriptionTree::new();
        assert!(!tree.insert("a/+/c", SessionId(1), sub(QoS::AtMostOnce)));
        assert!(tree.insert("a/+/c", SessionId(1), sub(QoS::AtLeastOnce)));
        assert!(
            !tree.remove("a/b/c", SessionId(1)),
            "unsubscribe compares literally"
        );
        assert!(tree.remove("a/+/c", SessionId(1)));
        assert!(!tree.remove("a/+/c", SessionId(1)));
        assert!(tree.root.is_empty());
        assert!(tree.is_empty());
    }

    /// The wildcard levels live outside the literal children: pruning must cut them too.
    #[test]
    fn remove_prunes_wildcard_levels() {
        for filter in ["+", "#", "+/x", "a/#", "+/+/#"] {
            let mut tree = SubscriptionTree::new();
            tree.insert(filter, SessionId(1), sub(QoS::AtMostOnce));
            assert!(!tree.is_empty());
            assert!(tree.remove(filter, SessionId(1)));
            assert!(tree.root.is_empty(), "{filter} left nodes behind");
        }
    }

    /// Depth is the client's choice: no walk may recurse per level (20,000 levels crashed the
    /// broker's 2 MiB worker stack before the walks were loops). Run on a small thread stack so
    /// a recursive walk fails here, not only in production.
    #[test]
    fn deep_filters_do_not_reach_the_stack() {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let deep = "/".repeat(100_000);
                let mut tree = SubscriptionTree::new();
                tree.insert(&deep, SessionId(1), sub(QoS::AtMostOnce));
                tree.insert(&format!("{deep}#"), SessionId(2), sub(QoS::AtMostOnce));
                assert_eq!(matches(&tree, &deep), vec![1, 2]);
                assert!(tree.remove(&deep, SessionId(1)));
                assert_eq!(matches(&tree, &deep), vec![2]);
                assert!(tree.remove(&format!("{deep}#"), SessionId(2)));
                assert!(tree.root.is_empty());
                // And a deep tree dropped whole.
                tree.insert(&format!("{deep}+/x"), SessionId(3), sub(QoS::AtMostOnce));
                drop(tree);
            })
            .expect("spawn")
            .join()
            .expect("no stack overflow");
    }

    /// A leaf (one per distinct filter) sits inline in its parent's map: with 10,000 clients
    /// subscribed to a filter each, every 10 bytes here are 160 KB once the map's spare room
    /// is counted. 96 bytes while every node carried an empty child map (issue 15).
    #[test]
    fn a_node_is_small() {
        let bytes = std::mem::size_of::<Node<SessionId, Subscription>>();
        assert!(bytes <= 56, "a node holds {bytes} bytes");
    }

    #[test]
    fn prune_keeps_what_others_still_use() {
        let mut tree = SubscriptionTree::new();
        tree.insert("a/b/c/d", SessionId(1), sub(QoS::AtMostOnce));
        tree.insert("a/b", SessionId(2), sub(QoS::AtMostOnce));
        tree.insert("a/+/x", SessionId(3), sub(QoS::AtMostOnce));
        assert!(tree.remove("a/b/c/d", SessionId(1)));
        // "a/b" keeps its node (a subscriber) but loses the empty "c/d" tail.
        let b = tree
            .root
            .child("a")
            .and_then(|a| a.child("b"))
            .expect("a/b");
        assert!(b.children.is_empty());
        assert_eq!(matches(&tree, "a/b"), vec![2]);
        assert_eq!(matches(&tree, "a/q/x"), vec![3]);
        assert!(tree.remove("a/b", SessionId(2)));
        assert!(tree.root.child("a").and_then(|a| a.child("b")).is_none());
        assert!(tree.remove("a/+/x", SessionId(3)));
        assert!(tree.root.is_empty());
    }

    #[test]
    fn match_order_is_depth_first_literal_before_wildcard() {
        let mut tree = SubscriptionTree::new();
        tree.insert("+/b", SessionId(4), sub(QoS::AtMostOnce));
        tree.insert("a/+", SessionId(3), sub(QoS::AtMostOnce));
        tree.insert("a/b", SessionId(2), sub(QoS::AtMostOnce));
        tree.insert("#", SessionId(1), sub(QoS::AtMostOnce));
        let mut order = Vec::new();
        tree.for_each_match("a/b", |s, _| order.push(s.0));
        assert_eq!(order, vec![1, 2, 3, 4]);
    }

    #[test]
    fn the_hash_key_does_not_change_what_matches() {
        let mut tree = SubscriptionTree::with_hasher(TreeHasher::with_key((7, 9)));
        tree.insert("x/+/z", SessionId(1), sub(QoS::AtMostOnce));
        tree.insert("x/y/z", SessionId(2), sub(QoS::AtMostOnce));
        assert_eq!(matches(&tree, "x/y/z"), vec![1, 2]);
    }

    proptest! {
        /// The tree agrees with the reference matcher for any filters and topics.
        #[test]
        fn tree_agrees_with_filter_matches(
            filters in proptest::collection::vec("(\\$?[ab+]|#)(/([ab+]|#)){0,3}", 1..20),
            topics in proptest::collection::vec("\\$?[abc]?(/[abc]?){0,3}", 1..20),
        ) {
            let filters: Vec<String> = filters
                .into_iter()
                .filter(|f| crate::topic::validate_filter(f).is_ok())
                .collect();
            let mut tree = SubscriptionTree::new();
            for (i, f) in filters.iter().enumerate() {
                tree.insert(f, SessionId(i as u64), sub(QoS::AtMostOnce));
            }
            for topic in &topics {
                let expected: Vec<u64> = filters
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| filter_matches(f, topic))
                    .map(|(i, _)| i as u64)
                    .collect();
                prop_assert_eq!(matches(&tree, topic), expected, "topic {}", topic);
            }
        }
    }
}
