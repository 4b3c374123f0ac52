//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5 section 4.8.2): each message that
//! matches a group's filter goes to one member of the group, not to all of them.
//!
//! Groups are keyed by (share name, filter) and matched through their own subscription tree, so
//! a topic finds its groups as fast as it finds ordinary subscribers. The member is chosen
//! round-robin in session-id order, preferring members that are connected: a work queue should
//! not park messages with a consumer that is away while another one is there. The cursor is the
//! last member chosen, not an index, so members joining or leaving never make the rotation skip
//! or repeat anyone, and the choice is the same in every run (docs/design.md section 3).

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};

use super::subscription_tree::{Subscription, SubscriptionTree, TreeHasher};
use super::SessionId;
use crate::codec::ByteStr;

/// Identifies a (share name, filter) group for its whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(u64);

#[derive(Debug)]
struct Group {
    /// Each member's own subscription: QoS, options and subscription identifier differ per
    /// member (spec: [MQTT-4.8.2-3]).
    members: BTreeMap<SessionId, Subscription>,
    /// The member chosen last.
    last: Option<SessionId>,
}

#[derive(Debug, Default)]
pub struct SharedSubscriptions {
    tree: SubscriptionTree<GroupId, ()>,
    groups: BTreeMap<GroupId, Group>,
    by_key: BTreeMap<(ByteStr, ByteStr), GroupId>,
    next_id: u64,
}

impl SharedSubscriptions {
    /// No groups yet; the groups' filter tree hashes with `hasher`.
    pub fn with_hasher(hasher: TreeHasher) -> SharedSubscriptions {
        SharedSubscriptions {
            tree: SubscriptionTree::with_hasher(hasher),
            ..SharedSubscriptions::default()
        }
    }

    /// Adds `session` to the group `share`/`filter` (made if new), or replaces its subscription
    /// there. Returns whether it replaced one.
    pub fn join(
        &mut self,
        share: &ByteStr,
        filter: &ByteStr,
        session: SessionId,
        subscription: Subscription,
    ) -> bool {
        let key = (share.clone(), filter.clone());
        let id = match self.by_key.get(&key) {
            Some(id) => *id,
            None => {
                let id = GroupId(self.next_id);
                self.next_id += 1;
                self.tree.insert(filter, id, ());
                self.by_key.insert(key, id);
                self.groups.insert(
                    id,
                    Group {
                        members: BTreeMap::new(),
                        last: None,
                    },
                );
                id
            }
        };
        let group = self.groups.get_mut(&id).expect("indexed by by_key");
        group.members.insert(session, subscription).is_some()
    }

    /// Removes `session` from the group; a group left empty is removed. Returns whether the
    /// session was a member.
    pub fn leave(&mut self, share: &ByteStr, filter: &ByteStr, session: SessionId) -> bool {
        let key = (share.clone(), filter.clone());
        let Some(&id) = self.by_key.get(&key) else {
            return false;
        };
        let group = self.groups.get_mut(&id).expect("indexed by by_key");
        let was_member = group.members.remove(&session).is_some();
        if group.members.is_empty() {
            self.groups.remove(&id);
            self.by_key.remove(&key);
            let removed = self.tree.remove(filter, id);
            assert!(removed, "every group is in the tree");
        }
        was_member
    }

    /// The groups whose filter matches `topic`, in a fixed order.
    pub fn matching(&self, topic: &str) -> Vec<GroupId> {
        let mut groups = Vec::new();
        if self.groups.is_empty() {
            // Most brokers have no shared subscriptions; routing should not pay for them.
            return groups;
        }
        self.tree.for_each_match(topic, |id, ()| groups.push(id));
        groups.sort_unstable();
        groups
    }

    /// Whether the group has a member for which `eligible` holds.
    pub fn has_member(&self, group: GroupId, eligible: impl Fn(SessionId) -> bool) -> bool {
        self.groups
            .get(&group)
            .is_some_and(|g| g.members.keys().any(|&member| eligible(member)))
    }

    /// Chooses the member that gets the next message of `group`: the next connected member
    /// after the last one chosen, or, when none is connected, the next member at all.
    /// `exclude` is never chosen (a member handing its messages back).
    #[cfg(test)]
    pub fn pick(
        &mut self,
        group: GroupId,
        exclude: Option<SessionId>,
        connected: impl Fn(SessionId) -> bool,
    ) -> Option<(SessionId, Subscription)> {
        self.pick_among(group, exclude, |_| true, connected)
    }

    /// [`SharedSubscriptions::pick`] among the members `eligible` accepts only (those that
    /// may read the message's topic).
    pub fn pick_among(
        &mut self,
        group: GroupId,
        exclude: Option<SessionId>,
        eligible: impl Fn(SessionId) -> bool,
        connected: impl Fn(SessionId) -> bool,
    ) -> Option<(SessionId, Subscription)> {
        let group = self.groups.get_mut(&group)?;
        let after = group.last;
        // The members after the last one chosen, then from the start: a range walk, so a
        // pick costs as many steps as members it skips, not the size of the group.
        let rotation = || {
            let (later, earlier) = match after {
                Some(last) => (
                    group.members.range((Excluded(last), Unbounded)),
                    group.members.range(..=last),
                ),
                None => (group.members.range(..), group.members.range(..SessionId(0))),
            };
            later
                .chain(earlier)
                .filter(|(id, _)| Some(**id) != exclude && eligible(**id))
                .map(|(id, sub)| (*id, *sub))
        };
        let chosen = rotation()
            .find(|(id, _)| connected(*id))
            .or_else(|| rotation().next());
        if let Some((id, _)) = chosen {
            group.last = Some(id);
        }
        chosen
    }
}

#[cfg(test)]
impl SharedSubscriptions {
    /// Every member is a live session and every group is non-empty and indexed.
    pub fn assert_members_are(&self, live: impl Fn(SessionId) -> bool) {
        for (key, id) in &self.by_key {
            let group = &self.groups[id];
            assert!(!group.members.is_empty(), "empty group {key:?}");
            for member in group.members.keys() {
                assert!(
                    live(*member),
                    "group {key:?} keeps ended session {member:?}"
                );
            }
        }
        assert_eq!(self.by_key.len(), self.groups.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::SubscriptionOptions;
    use crate::types::QoS;

    fn s(text: &str) -> ByteStr {
        ByteStr::new(text).unwrap()
    }

    fn sub() -> Subscription {
        Subscription {
            options: SubscriptionOptions::new(QoS::AtLeastOnce),
            id: None,
        }
    }

    fn picks(
        shared: &mut SharedSubscriptions,
        group: GroupId,
        n: usize,
        connected: impl Fn(SessionId) -> bool + Copy,
    ) -> Vec<u64> {
        (0..n)
            .map(|_| shared.pick(group, None, connected).unwrap().0 .0)
            .collect()
    }

    #[test]
    fn round_robin_survives_joins_and_leaves() {
        let mut shared = SharedSubscriptions::default();
        for member in [3, 1, 2] {
            shared.join(&s("g"), &s("jobs/+"), SessionId(member), sub());
        }
        let group = shared.matching("jobs/a")[0];
        assert_eq!(picks(&mut shared, group, 4, |_| true), vec![1, 2, 3, 1]);
        // A newcomer takes its turn in id order; a leaver is skipped without a repeat.
        shared.join(&s("g"), &s("jobs/+"), SessionId(4), sub());
        assert!(shared.leave(&s("g"), &s("jobs/+"), SessionId(3)));
        assert_eq!(picks(&mut shared, group, 4, |_| true), vec![2, 4, 1, 2]);
    }

    #[test]
    fn connected_members_come_first() {
        let mut shared = SharedSubscriptions::default();
        for member in 1..=3 {
            shared.join(&s("g"), &s("t"), SessionId(member), sub());
        }
        let group = shared.matching("t")[0];
        let only_2 = |id: SessionId| id == SessionId(2);
        assert_eq!(picks(&mut shared, group, 3, only_2), vec![2, 2, 2]);
        // Nobody connected: still round-robin, so offline sessions share the queue.
        assert_eq!(picks(&mut shared, group, 3, |_| false), vec![3, 1, 2]);
        assert_eq!(
            shared.pick(group, Some(SessionId(2)), only_2).unwrap().0,
            SessionId(3),
            "an excluded member is never chosen"
        );
    }

    #[test]
    fn groups_are_separate_and_removed_when_empty() {
        let mut shared = SharedSubscriptions::default();
        shared.join(&s("a"), &s("t/#"), SessionId(1), sub());
        shared.join(&s("b"), &s("t/#"), SessionId(1), sub());
        shared.join(&s("a"), &s("t/x"), SessionId(2), sub());
        assert_eq!(shared.matching("t/x").len(), 3);
        assert_eq!(shared.matching("t/y").len(), 2);
        assert!(!shared.leave(&s("a"), &s("t/#"), SessionId(9)));
        assert!(shared.leave(&s("a"), &s("t/#"), SessionId(1)));
        assert!(shared.leave(&s("b"), &s("t/#"), SessionId(1)));
        assert_eq!(shared.matching("t/y").len(), 0);
        assert_eq!(shared.groups.len(), 1);
        let group = shared.matching("t/x")[0];
        assert!(!shared.has_member(group, |id| id != SessionId(2)));
        assert!(shared.has_member(group, |id| id == SessionId(2)));
    }
}
