//! The subscription tree: which sessions want a topic, fast with hundreds of thousands of filters.
//!
//! A trie over topic levels. Each node has literal children, a `+` child and a `#` child, and
//! the sessions whose filter ends there. Matching a topic walks only the branches that can
//! match, so the cost grows with the topic's depth and the number of wildcards on its path,
//! not with the number of filters. Subscribers are kept in `BTreeMap`s and children in a map
//! with a fixed hasher so the order of matches, and so the order of deliveries, is the same in
//! every run (DESIGN.md section 4).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;

use super::SessionId;
use crate::codec::SubscriptionOptions;

/// A fixed-seed hasher: same iteration order in every run.
pub type FixedState = BuildHasherDefault<DefaultHasher>;

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
    children: HashMap<Box<str>, Node<K, V>, FixedState>,
    single: Option<Box<Node<K, V>>>,
    multi: Option<Box<Node<K, V>>>,
    subscribers: BTreeMap<K, V>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Node {
            children: HashMap::default(),
            single: None,
            multi: None,
            subscribers: BTreeMap::new(),
        }
    }
}

impl<K, V> Node<K, V> {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.single.is_none()
            && self.multi.is_none()
            && self.subscribers.is_empty()
    }
}

#[derive(Debug)]
pub struct SubscriptionTree<K = SessionId, V = Subscription> {
    root: Node<K, V>,
    count: usize,
}

impl<K, V> Default for SubscriptionTree<K, V> {
    fn default() -> Self {
        SubscriptionTree {
            root: Node::default(),
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
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = match level {
                "+" => node.single.get_or_insert_with(Box::default),
                "#" => node.multi.get_or_insert_with(Box::default),
                _ => node.children.entry(level.into()).or_default(),
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
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = remove_at(&mut self.root, &levels, session);
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Calls `visit` for every subscription whose filter matches `topic`. A session with
    /// several matching filters is visited once per filter.
    pub fn for_each_match(&self, topic: &str, mut visit: impl FnMut(K, &V)) {
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        walk(&self.root, &levels, 0, dollar, &mut visit);
    }
}

fn remove_at<K: Ord, V>(node: &mut Node<K, V>, levels: &[&str], session: K) -> bool {
    let Some((&level, rest)) = levels.split_first() else {
        return node.subscribers.remove(&session).is_some();
    };
    let (removed, now_empty) = match level {
        "+" | "#" => {
            let slot = if level == "+" {
                &mut node.single
            } else {
                &mut node.multi
            };
            let Some(child) = slot.as_deref_mut() else {
                return false;
            };
            let removed = remove_at(child, rest, session);
            (removed, child.is_empty())
        }
        _ => {
            let Some(child) = node.children.get_mut(level) else {
                return false;
            };
            let removed = remove_at(child, rest, session);
            (removed, child.is_empty())
        }
    };
    if now_empty {
        match level {
            "+" => node.single = None,
            "#" => node.multi = None,
            _ => {
                node.children.remove(level);
            }
        }
    }
    removed
}

/// `dollar`: the topic starts with '$', so wildcards at the first level do not match it
/// (spec: [MQTT-4.7.2-1]).
fn walk<K: Copy, V>(
    node: &Node<K, V>,
    levels: &[&str],
    depth: usize,
    dollar: bool,
    visit: &mut impl FnMut(K, &V),
) {
    let wildcards_allowed = !(dollar && depth == 0);
    if wildcards_allowed {
        // '#' also matches the parent level: "a/#" matches "a".
        if let Some(multi) = &node.multi {
            for (session, subscription) in &multi.subscribers {
                visit(*session, subscription);
            }
        }
    }
    let Some(level) = levels.get(depth) else {
        for (session, subscription) in &node.subscribers {
            visit(*session, subscription);
        }
        return;
    };
    if let Some(child) = node.children.get(*level) {
        walk(child, levels, depth + 1, dollar, visit);
    }
    if wildcards_allowed {
        if let Some(single) = &node.single {
            walk(single, levels, depth + 1, dollar, visit);
        }
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
