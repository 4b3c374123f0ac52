//! What one subscriber received, per publisher, and the verdict at the end: lost (the broker
//! acknowledged it and it never came), duplicated, out of the publisher's order.

use tern::types::QoS;

/// Seen/acknowledged sequence numbers of one publisher, as a bit set (sequences are dense from 0).
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    words: Vec<u64>,
    count: u64,
}

impl SeqSet {
    /// Adds `seq`; false if it was there already.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        let had = self.words[word] & (1 << bit) != 0;
        self.words[word] |= 1 << bit;
        self.count += u64::from(!had);
        !had
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.words
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Members of `self` not in `other`.
    pub fn missing_from(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, word)| {
                let theirs = other.words.get(i).copied().unwrap_or(0);
                u64::from((word & !theirs).count_ones())
            })
            .sum()
    }
}

#[derive(Debug, Default, Clone)]
struct Track {
    seen: SeqSet,
    highest: Option<u64>,
    duplicates: u64,
    out_of_order: u64,
    /// A publisher this subscriber must not hear from.
    misrouted: bool,
}

impl Track {
    fn misroute() -> Track {
        Track {
            misrouted: true,
            ..Track::default()
        }
    }
}

/// One subscriber's record.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    tracks: Vec<Track>,
    wrong_qos: u64,
    misrouted: u64,
}

/// A sequence number no run reaches (a million messages a second for over an hour): a stamp
/// beyond it is corrupt, and is not allowed to size the seen-set.
const SEQ_MAX: u64 = 1 << 32;

/// The judgement of one subscriber's record against what the publishers sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Distinct messages received.
    pub received: u64,
    /// Acknowledged by the broker (QoS 1/2) or sent (QoS 0), and never received.
    pub lost: u64,
    pub duplicates: u64,
    /// Messages that came after a later one of the same publisher.
    pub out_of_order: u64,
    /// Deliveries at another QoS than the run's (a broker that downgrades).
    pub wrong_qos: u64,
    /// Messages from a publisher this subscriber does not hear, or with a stamp no publisher
    /// of the run wrote.
    pub misrouted: u64,
    /// Messages still unacknowledged by the broker when the publishers gave up waiting.
    pub unacknowledged: u64,
}

impl Verdict {
    /// What fails a run at `qos`: any loss or reordering at QoS 1/2, any duplicate at QoS 2.
    pub fn failed(&self, qos: QoS) -> bool {
        if self.wrong_qos > 0 || self.misrouted > 0 || self.unacknowledged > 0 {
            return true;
        }
        match qos {
            QoS::AtMostOnce => false,
            QoS::AtLeastOnce => self.lost > 0 || self.out_of_order > 0,
            QoS::ExactlyOnce => self.lost > 0 || self.out_of_order > 0 || self.duplicates > 0,
        }
    }

    pub fn add(&mut self, other: Verdict) {
        self.received += other.received;
        self.lost += other.lost;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.wrong_qos += other.wrong_qos;
        self.misrouted += other.misrouted;
        self.unacknowledged += other.unacknowledged;
    }
}

impl Ledger {
    /// For a subscriber that hears `publishers` (by index; others are misrouted).
    pub fn new(publishers: usize, heard: &[u32]) -> Ledger {
        let mut tracks = vec![None; publishers];
        for p in heard {
            tracks[*p as usize] = Some(Track::default());
        }
        Ledger {
            tracks: tracks
                .into_iter()
                .map(|t| t.unwrap_or(Track::misroute()))
                .collect(),
            wrong_qos: 0,
            misrouted: 0,
        }
    }

    /// A delivery came at another QoS than the run's.
    pub fn wrong_qos(&mut self) {
        self.wrong_qos += 1;
    }

    /// Records message `seq` of `publisher`; true if it is new (and owed to this subscriber).
    pub fn record(&mut self, publisher: u32, seq: u64) -> bool {
        let track = self.tracks.get_mut(publisher as usize);
        let Some(track) = track.filter(|t| !t.misrouted && seq < SEQ_MAX) else {
            self.misrouted += 1;
            return false;
        };
        if !track.seen.insert(seq) {
            track.duplicates += 1;
            return false;
        }
        if track.highest.is_some_and(|highest| seq < highest) {
            track.out_of_order += 1;
        }
        track.highest = Some(track.highest.map_or(seq, |h| h.max(seq)));
        true
    }

    /// Distinct messages received from every publisher.
    pub fn received(&self) -> u64 {
        self.tracks.iter().map(|t| t.seen.len()).sum()
    }

    /// Judges the record against `expected[p]`, the messages publisher `p` must have
    /// delivered to this subscriber.
    pub fn verdict(&self, expected: &[(u32, &SeqSet)]) -> Verdict {
        let empty = Track::default();
        let mut verdict = Verdict {
            wrong_qos: self.wrong_qos,
            misrouted: self.misrouted,
            ..Verdict::default()
        };
        for (publisher, must) in expected {
            let track = self.tracks.get(*publisher as usize).unwrap_or(&empty);
            verdict.received += track.seen.len();
            verdict.lost += must.missing_from(&track.seen);
            verdict.duplicates += track.duplicates;
            verdict.out_of_order += track.out_of_order;
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(seqs: impl IntoIterator<Item = u64>) -> SeqSet {
        let mut s = SeqSet::default();
        for seq in seqs {
            s.insert(seq);
        }
        s
    }

    #[test]
    fn a_missing_message_is_lost_and_fails_qos1() {
        let mut ledger = Ledger::new(1, &[0]);
        for seq in (0..100).filter(|s| *s != 42) {
            assert!(ledger.record(0, seq));
        }
        let acked = set(0..100);
        let verdict = ledger.verdict(&[(0, &acked)]);
        assert_eq!(verdict.lost, 1);
        assert_eq!(verdict.received, 99);
        assert!(verdict.failed(QoS::AtLeastOnce));
        assert!(!verdict.failed(QoS::AtMostOnce));
        // Not acknowledged, not owed.
        let acked = set((0..100).filter(|s| *s != 42));
        assert!(!ledger.verdict(&[(0, &acked)]).failed(QoS::ExactlyOnce));
    }

    #[test]
    fn duplicates_fail_qos2_only_and_reordering_fails_both() {
        let mut ledger = Ledger::new(4, &[3]);
        for seq in [0, 1, 1, 2] {
            ledger.record(3, seq);
        }
        let acked = set(0..3);
        let verdict = ledger.verdict(&[(3, &acked)]);
        assert_eq!((verdict.duplicates, verdict.lost), (1, 0));
        assert!(!verdict.failed(QoS::AtLeastOnce));
        assert!(verdict.failed(QoS::ExactlyOnce));
        let mut reordered = Ledger::new(1, &[0]);
        for seq in [0, 2, 1] {
            reordered.record(0, seq);
        }
        let verdict = reordered.verdict(&[(0, &acked)]);
        assert_eq!(verdict.out_of_order, 1);
        assert!(verdict.failed(QoS::AtLeastOnce));
    }

    #[test]
    fn misrouted_corrupt_and_downgraded_deliveries_fail_any_qos() {
        let mut ledger = Ledger::new(3, &[1]);
        assert!(!ledger.record(0, 0), "publisher 0 is not heard here");
        assert!(!ledger.record(9, 0), "no publisher 9");
        assert!(!ledger.record(1, u64::MAX), "a corrupt sequence number");
        assert!(ledger.record(1, 0));
        ledger.wrong_qos();
        let acked = set(0..1);
        let verdict = ledger.verdict(&[(1, &acked)]);
        assert_eq!(
            (verdict.misrouted, verdict.wrong_qos, verdict.lost),
            (3, 1, 0)
        );
        assert!(verdict.failed(QoS::AtMostOnce));
        let unacknowledged = Verdict {
            unacknowledged: 1,
            ..Verdict::default()
        };
        assert!(unacknowledged.failed(QoS::AtLeastOnce));
    }

    #[test]
    fn seq_sets_count_what_the_other_lacks() {
        let a = set([0, 1, 63, 64, 200]);
        let b = set([1, 64]);
        assert_eq!(a.missing_from(&b), 3);
        assert_eq!(b.missing_from(&a), 0);
        assert!(a.contains(200) && !a.contains(199));
    }
}
