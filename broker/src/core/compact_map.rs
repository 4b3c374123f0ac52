//! An ordered map that holds a few entries in a sorted vector and many in a B-tree.
//!
//! A B-tree allocates a whole node (eleven entries) for its first entry. Most of the maps the
//! core keeps per client hold one or two entries: a session's subscriptions, the subscribers
//! of one topic filter. With ten thousand idle clients, those half-empty nodes were a fifth of
//! what each cost. So a few entries live in a sorted vector holding exactly what it needs, and
//! a map that grows past `FEW_MAX` (a session may hold 10,000 subscriptions, a filter may have
//! as many subscribers) moves to a B-tree, where an insertion or removal does not move every
//! entry after it. Either way iteration is in key order, which routing, the journal and the
//! tests rely on (determinism).

use std::collections::BTreeMap;

/// Above this many entries a map moves into a B-tree.
const FEW_MAX: usize = 16;

#[derive(Debug)]
pub struct CompactMap<K, V> {
    inner: Inner<K, V>,
}

#[derive(Debug)]
enum Inner<K, V> {
    /// Sorted by key, at most `FEW_MAX` entries.
    Few(Vec<(K, V)>),
    /// More than `FEW_MAX / 2` entries (back to `Few` below that: no flapping at the edge).
    Many(BTreeMap<K, V>),
}

impl<K, V> Default for CompactMap<K, V> {
    fn default() -> Self {
        CompactMap {
            inner: Inner::Few(Vec::new()),
        }
    }
}

impl<K, V> CompactMap<K, V> {
    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Few(few) => few.len(),
            Inner::Many(many) => many.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let (few, many) = match &self.inner {
            Inner::Few(few) => (Some(few.iter().map(|(k, v)| (k, v))), None),
            Inner::Many(many) => (None, Some(many.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    /// Every entry, in key order, to change the values.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        let (few, many) = match &mut self.inner {
            Inner::Few(few) => (Some(few.iter_mut().map(|(k, v)| (&*k, v))), None),
            Inner::Many(many) => (None, Some(many.iter_mut())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(key, _)| key)
    }
}

impl<K: Ord, V> CompactMap<K, V> {
    pub fn contains_key(&self, key: &K) -> bool {
        match &self.inner {
            Inner::Few(few) => few.binary_search_by(|(k, _)| k.cmp(key)).is_ok(),
            Inner::Many(many) => many.contains_key(key),
        }
    }

    /// Adds or replaces the entry of `key`; returns the value replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let replaced = match &mut self.inner {
            Inner::Many(many) => many.insert(key, value),
            Inner::Few(few) => match few.binary_search_by(|(k, _)| k.cmp(&key)) {
                Ok(at) => Some(std::mem::replace(&mut few[at].1, value)),
                Err(at) if few.len() < FEW_MAX => {
                    // Exactly what is needed: most of these maps stop at one or two.
                    few.reserve_exact(1);
                    few.insert(at, (key, value));
                    None
                }
                Err(_) => {
                    let mut many: BTreeMap<_, _> = std::mem::take(few).into_iter().collect();
                    many.insert(key, value);
                    self.inner = Inner::Many(many);
                    None
                }
            },
        };
        self.check();
        replaced
    }

    /// Removes the entry of `key`, if there is one.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let removed = match &mut self.inner {
            Inner::Few(few) => {
                let at = few.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
                let (_, removed) = few.remove(at);
                few.shrink_to_fit();
                removed
            }
            Inner::Many(many) => {
                let removed = many.remove(key)?;
                if many.len() <= FEW_MAX / 2 {
                    self.inner = Inner::Few(std::mem::take(many).into_iter().collect());
                }
                removed
            }
        };
        self.check();
        Some(removed)
    }

    fn check(&self) {
        match &self.inner {
            Inner::Few(few) => {
                debug_assert!(few.len() <= FEW_MAX);
                debug_assert!(few.windows(2).all(|pair| pair[0].0 < pair[1].0));
            }
            Inner::Many(many) => debug_assert!(many.len() > FEW_MAX / 2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{ByteStr, SubscriptionOptions};
    use crate::core::subscription_tree::Subscription;

    fn subscription(id: u32) -> Subscription {
        Subscription {
            options: SubscriptionOptions::new(crate::types::QoS::AtMostOnce),
            id: Some(id),
        }
    }

    fn filter(i: usize) -> ByteStr {
        ByteStr::new(&format!("f/{i:03}")).expect("valid")
    }

    /// Against a B-tree through growth past `FEW_MAX`, shrinking back, and replacements, in an
    /// order that is not the sorted one.
    #[test]
    fn behaves_as_an_ordered_map_across_both_forms() {
        let mut ours = CompactMap::default();
        let mut model = BTreeMap::new();
        let order: Vec<usize> = (0..40).map(|i| (i * 17) % 40).collect();
        for (n, &i) in order.iter().enumerate() {
            let id = n as u32;
            assert_eq!(
                ours.insert(filter(i), subscription(id)).map(|s| s.id),
                model.insert(filter(i), subscription(id)).map(|s| s.id)
            );
        }
        assert!(matches!(ours.inner, Inner::Many(_)));
        for &i in &order[..5] {
            ours.insert(filter(i), subscription(99));
            model.insert(filter(i), subscription(99));
        }
        for &i in order.iter().rev().take(35) {
            assert_eq!(
                ours.remove(&filter(i)).map(|s| s.id),
                model.remove(&filter(i)).map(|s| s.id)
            );
            assert!(ours.remove(&filter(i)).is_none());
            assert_eq!(ours.len(), model.len());
            let got: Vec<_> = ours.iter().map(|(f, s)| (f.clone(), s.id)).collect();
            let want: Vec<_> = model.iter().map(|(f, s)| (f.clone(), s.id)).collect();
            assert_eq!(got, want);
        }
        assert!(matches!(ours.inner, Inner::Few(_)));
        for i in 0..40 {
            assert_eq!(
                ours.contains_key(&filter(i)),
                model.contains_key(&filter(i))
            );
        }
        for (_, s) in ours.iter_mut() {
            s.id = None;
        }
        assert!(ours.iter().all(|(_, s)| s.id.is_none()));
    }

    #[test]
    fn a_single_subscription_holds_one_entry() {
        let mut ours = CompactMap::default();
        ours.insert(filter(1), subscription(1));
        let Inner::Few(few) = &ours.inner else {
            panic!("one subscription in a B-tree")
        };
        assert_eq!(few.capacity(), 1);
    }
}
