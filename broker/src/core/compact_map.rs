//! An ordered map that holds a few entries in a sorted vector and many in a B-tree.
//!
//! A B-tree allocates a whole node (eleven entries) for its first entry. Most of the maps the
//! core keeps per client hold one or two entries: a session's subscriptions, the subscribers
//! of one topic filter. With ten thousand idle clients, those half-empty nodes were a fifth of
//! what each cost. So one entry lives inline (no allocation at all: a device's one
//! subscription, a filter's one subscriber), a few in a sorted vector holding exactly what it
//! needs, and a map that grows past `FEW_MAX` (a session may hold 10,000 subscriptions, a filter may have
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
    /// Exactly one entry.
    One(K, V),
    /// Sorted by key: none, or two to `FEW_MAX` entries (one is `One`).
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
            Inner::One(..) => 1,
            Inner::Few(few) => few.len(),
            Inner::Many(many) => many.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let (one, few, many) = match &self.inner {
            Inner::One(k, v) => (Some((k, v)), None, None),
            Inner::Few(few) => (None, Some(few.iter().map(|(k, v)| (k, v))), None),
            Inner::Many(many) => (None, None, Some(many.iter())),
        };
        let rest = few.into_iter().flatten().chain(many.into_iter().flatten());
        one.into_iter().chain(rest)
    }

    /// Every entry, in key order, to change the values.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        let (one, few, many) = match &mut self.inner {
            Inner::One(k, v) => (Some((&*k, v)), None, None),
            Inner::Few(few) => (None, Some(few.iter_mut().map(|(k, v)| (&*k, v))), None),
            Inner::Many(many) => (None, None, Some(many.iter_mut())),
        };
        let rest = few.into_iter().flatten().chain(many.into_iter().flatten());
        one.into_iter().chain(rest)
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(key, _)| key)
    }
}

impl<K: Ord, V> CompactMap<K, V> {
    pub fn contains_key(&self, key: &K) -> bool {
        match &self.inner {
            Inner::One(k, _) => k == key,
            Inner::Few(few) => few.binary_search_by(|(k, _)| k.cmp(key)).is_ok(),
            Inner::Many(many) => many.contains_key(key),
        }
    }

    /// Adds or replaces the entry of `key`; returns the value replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let replaced = match &mut self.inner {
            Inner::One(k, v) if *k == key => Some(std::mem::replace(v, value)),
            Inner::One(..) => {
                let Inner::One(k, v) = std::mem::replace(&mut self.inner, Inner::Few(Vec::new()))
                else {
                    unreachable!("matched above")
                };
                let mut few = Vec::with_capacity(2);
                if k < key {
                    few.extend([(k, v), (key, value)]);
                } else {
                    few.extend([(key, value), (k, v)]);
                }
                self.inner = Inner::Few(few);
                None
            }
            Inner::Few(few) if few.is_empty() => {
                self.inner = Inner::One(key, value);
                None
            }
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
            Inner::One(k, _) if k != key => return None,
            Inner::One(..) => {
                let Inner::One(_, v) = std::mem::replace(&mut self.inner, Inner::Few(Vec::new()))
                else {
                    unreachable!("matched above")
                };
                v
            }
            Inner::Few(few) => {
                let at = few.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
                let (_, removed) = few.remove(at);
                if few.len() == 1 {
                    let (k, v) = few.pop().expect("one entry");
                    self.inner = Inner::One(k, v);
                } else {
                    few.shrink_to_fit();
                }
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
            Inner::One(..) => {}
            Inner::Few(few) => {
                debug_assert!(few.len() <= FEW_MAX && few.len() != 1);
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

    /// One entry is inline (no allocation), two or more are a vector with no spare room.
    #[test]
    fn a_single_subscription_is_held_inline() {
        let mut ours = CompactMap::default();
        ours.insert(filter(2), subscription(7));
        assert!(matches!(ours.inner, Inner::One(..)));
        assert_eq!(
            ours.insert(filter(2), subscription(2)).map(|s| s.id),
            Some(Some(7))
        );
        assert!(matches!(ours.inner, Inner::One(..)));
        assert!(ours.contains_key(&filter(2)) && !ours.contains_key(&filter(1)));
        for (_, s) in ours.iter_mut() {
            s.id = Some(3);
        }
        assert_eq!(
            ours.insert(filter(2), subscription(2)).map(|s| s.id),
            Some(Some(3))
        );
        ours.insert(filter(1), subscription(1));
        let Inner::Few(few) = &ours.inner else {
            panic!("two subscriptions not in a vector")
        };
        assert_eq!(few.capacity(), 2);
        let keys: Vec<_> = ours.keys().cloned().collect();
        assert_eq!(keys, [filter(1), filter(2)]);
        assert_eq!(ours.remove(&filter(2)).map(|s| s.id), Some(Some(2)));
        assert!(matches!(ours.inner, Inner::One(..)));
        assert_eq!(ours.remove(&filter(3)).map(|s| s.id), None);
        assert_eq!(ours.remove(&filter(1)).map(|s| s.id), Some(Some(1)));
        assert!(ours.is_empty());
        assert!(ours.remove(&filter(1)).is_none());
    }
}
