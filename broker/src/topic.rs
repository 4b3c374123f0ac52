//! Topic names and topic filters (spec section 4.7): validation and single-filter matching.
//!
//! The subscription tree (`core::subscription_tree`) does the fast many-filter match; the functions
//! here define what a valid filter is and what "matches" means, and the tree is tested against
//! [`filter_matches`].

use thiserror::Error;

/// Why a topic filter is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FilterError {
    #[error("topic filter is empty")]
    Empty,
    #[error("'#' must be the last level of a topic filter and stand alone in it")]
    MisplacedMultiLevelWildcard,
    #[error("'+' must stand alone in its topic filter level")]
    MisplacedSingleLevelWildcard,
    #[error("shared subscription filter must be $share/<group>/<filter> with a non-empty group without wildcards")]
    InvalidSharedSubscription,
}

/// Checks a topic filter (spec: [MQTT-4.7.1-2] [MQTT-4.7.1-3] [MQTT-4.7.3-1] in 3.1.1;
/// [MQTT-4.7.1-1] [MQTT-4.7.1-2] [MQTT-4.7.3-1] in 5.0).
pub fn validate_filter(filter: &str) -> Result<(), FilterError> {
    if filter.is_empty() {
        return Err(FilterError::Empty);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(FilterError::MisplacedMultiLevelWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(FilterError::MisplacedSingleLevelWildcard);
        }
    }
    Ok(())
}

/// A shared subscription `$share/{group}/{filter}` split into its group and filter.
/// `Ok(None)` for an ordinary filter.
pub fn parse_shared(filter: &str) -> Result<Option<(&str, &str)>, FilterError> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        return Ok(None);
    };
    let (group, inner) = rest
        .split_once('/')
        .ok_or(FilterError::InvalidSharedSubscription)?;
    if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
        return Err(FilterError::InvalidSharedSubscription);
    }
    Ok(Some((group, inner)))
}

/// Whether `filter` (valid) matches the topic name `topic`. A leading wildcard never matches a
/// topic that starts with '$' (spec: [MQTT-4.7.2-1]).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for filter_level in filter.split('/') {
        if filter_level == "#" {
            return true;
        }
        match topic_levels.next() {
            Some(level) if filter_level == "+" || filter_level == level => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// The number of levels in a topic name or filter ("a/b" has 2, "" and "a" have 1).
pub fn topic_levels(topic: &str) -> usize {
    topic.bytes().filter(|b| *b == b'/').count() + 1
}

/// The part of a filter before its first wildcard level: every topic it matches starts with
/// this prefix, which lets the retained store scan only a range.
pub fn literal_prefix(filter: &str) -> &str {
    let end = filter.find(['+', '#']).unwrap_or(filter.len());
    &filter[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    // spec: [MQTT-4.7.1-2] [MQTT-4.7.1-3] [MQTT-4.7.3-1] (v3.1.1); [MQTT-4.7.1-1] [MQTT-4.7.1-2] (v5)
    #[test]
    fn filter_validation() {
        for ok in [
            "#",
            "+",
            "a/#",
            "a/+/b",
            "+/+",
            "/",
            "a//b",
            "$SYS/#",
            "sport/tennis/+",
        ] {
            assert_eq!(validate_filter(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_filter(""), Err(FilterError::Empty));
        for bad in ["a#", "a/#/b", "#/a", "a/b#"] {
            assert_eq!(
                validate_filter(bad),
                Err(FilterError::MisplacedMultiLevelWildcard),
                "{bad}"
            );
        }
        for bad in ["a+", "+a/b", "a/b+/c"] {
            assert_eq!(
                validate_filter(bad),
                Err(FilterError::MisplacedSingleLevelWildcard),
                "{bad}"
            );
        }
    }

    // spec: [MQTT-4.7.2-1] (both versions), [MQTT-4.7.3-4] (no normalisation)
    #[test]
    fn matching_follows_the_spec_examples() {
        let cases = [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
                true,
            ),
            ("sport/#", "sport", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/tracking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("#", "$SYS/uptime", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/monitor/Clients", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("ACCOUNTS", "Accounts", false),
            ("a/b", "a/b/", false),
        ];
        for (filter, topic, expected) in cases {
            assert_eq!(
                filter_matches(filter, topic),
                expected,
                "{filter} vs {topic}"
            );
        }
    }

    #[test]
    fn shared_subscriptions_parse() {
        assert_eq!(parse_shared("$share/g/a/+"), Ok(Some(("g", "a/+"))));
        assert_eq!(parse_shared("a/b"), Ok(None));
        assert_eq!(
            parse_shared("$share/g"),
            Err(FilterError::InvalidSharedSubscription)
        );
        assert_eq!(
            parse_shared("$share//a"),
            Err(FilterError::InvalidSharedSubscription)
        );
        assert_eq!(
            parse_shared("$share/g+/a"),
            Err(FilterError::InvalidSharedSubscription)
        );
    }

    #[test]
    fn literal_prefix_stops_at_the_first_wildcard() {
        assert_eq!(literal_prefix("a/b/+/c"), "a/b/");
        assert_eq!(literal_prefix("a/b"), "a/b");
        assert_eq!(literal_prefix("#"), "");
    }
}
