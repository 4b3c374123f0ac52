//! Access control lists in Mosquitto's `acl_file` syntax: who may publish to and read which
//! topics.
//!
//! ```text
//! # Rules before the first `user` line are for clients without a user name.
//! topic read public/#
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret/#
//! # Patterns apply to every client; %c is its client id, %u its user name (whole levels).
//! pattern write devices/%c/status
//! ```
//!
//! The access word is `read`, `write`, `readwrite` (the default when omitted) or `deny`.
//! With an ACL, whatever no rule grants is refused. A matching `deny` wins over any grant, so
//! a broad grant with a narrow exception reads as it is written. Filters follow MQTT's rule
//! for `$` topics: a wildcard in the first level does not match `$SYS/...`, so `$SYS` needs a
//! rule of its own.
//!
//! A SUBSCRIBE filter is allowed when a read rule matches the filter taken literally (its
//! `+` and `#` are only matched by wildcards in the rule), as Mosquitto does; every message is
//! then checked again against the subscriber's read rights before it is delivered, so a
//! filter wider than the rules (`a/#` under a rule `a/+`) only ever receives what they allow.
//!
//! Rules are compiled into a tree of topic levels per user (plus one for anonymous clients and
//! one for patterns), so a check walks the topic's levels once: its cost does not grow with
//! the number of rules. A tree node sits at one depth, so a walk visits each node at most once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::topic::validate_filter;

/// Longest line accepted.
const LINE_BYTES_MAX: usize = 65_536;
/// Deepest rule accepted (the rule tree is dropped recursively; a topic deeper than the
/// broker's topic_levels_max never matches anyway).
const RULE_LEVELS_MAX: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("cannot read ACL file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ACL file line {line}: {why}")]
    Line { line: usize, why: String },
}

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive messages published to it (and subscribe).
    Read,
    /// Publish to it (including as a will).
    Write,
}

const READ: u8 = 1;
const WRITE: u8 = 2;

impl Access {
    fn bit(self) -> u8 {
        match self {
            Access::Read => READ,
            Access::Write => WRITE,
        }
    }
}

/// Who asks: the client id and, if it logged in with one, the user name.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    pub client_id: &'a str,
    pub user: Option<&'a str>,
}

/// What the rules matching one topic say, all together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Verdict {
    granted: u8,
    denied: u8,
}

impl Verdict {
    fn add(&mut self, other: Verdict) {
        self.granted |= other.granted;
        self.denied |= other.denied;
    }
}

/// One level of the rule tree.
#[derive(Debug, Default, Clone)]
struct Node {
    /// Rules that end at this level.
    here: Verdict,
    /// Rules whose next level is `#`: they match this level and everything below.
    rest: Verdict,
    literal: HashMap<Box<str>, Node>,
    plus: Option<Box<Node>>,
    /// Pattern levels `%c` and `%u`.
    client_id: Option<Box<Node>>,
    user: Option<Box<Node>>,
}

/// A pattern level.
enum Level<'a> {
    Literal(&'a str),
    Plus,
    Hash,
    ClientId,
    User,
}

impl Node {
    fn insert(&mut self, levels: &[Level<'_>], verdict: Verdict) {
        let mut node = self;
        for (index, level) in levels.iter().enumerate() {
            node = match level {
                Level::Hash => {
                    debug_assert_eq!(index, levels.len() - 1, "validated: # is last");
                    node.rest.add(verdict);
                    return;
                }
                Level::Literal(text) => node.literal.entry((*text).into()).or_default(),
                Level::Plus => node.plus.get_or_insert_with(Box::default),
                Level::ClientId => node.client_id.get_or_insert_with(Box::default),
                Level::User => node.user.get_or_insert_with(Box::default),
            };
        }
        node.here.add(verdict);
    }

    /// Everything the rules matching `levels` say.
    fn check(&self, levels: &[&str], who: Principal<'_>) -> Verdict {
        let mut verdict = Verdict::default();
        let dollar = levels.first().is_some_and(|l| l.starts_with('$'));
        let mut stack: Vec<(&Node, usize)> = vec![(self, 0)];
        while let Some((node, depth)) = stack.pop() {
            // spec: [MQTT-4.7.2-1]: wildcards in the first level do not match `$` topics.
            let wild = !(dollar && depth == 0);
            if wild {
                verdict.add(node.rest);
            }
            let Some(level) = levels.get(depth) else {
                verdict.add(node.here);
                continue;
            };
            if let Some(next) = node.literal.get(*level) {
                stack.push((next, depth + 1));
            }
            if let (true, Some(next)) = (wild, &node.plus) {
                stack.push((next, depth + 1));
            }
            // A client id or user name never stands for a `$` topic's first level: a client
            // named "$SYS" must not read the broker's tree through `pattern read %c/#`.
            if let Some(next) = node.client_id.as_ref().filter(|_| wild) {
                if substitutable(who.client_id) == Some(*level) {
                    stack.push((next, depth + 1));
                }
            }
            if let (Some(next), Some(user), true) = (&node.user, who.user, wild) {
                if substitutable(user) == Some(*level) {
                    stack.push((next, depth + 1));
                }
            }
        }
        verdict
    }
}

/// A client id or user name usable as a pattern level: one that cannot itself be read as a
/// wildcard or span levels.
fn substitutable(value: &str) -> Option<&str> {
    (!value.is_empty() && !value.contains(['+', '#', '/'])).then_some(value)
}

/// A parsed ACL file.
#[derive(Debug, Default, Clone)]
pub struct Acl {
    anonymous: Node,
    users: HashMap<String, Node>,
    patterns: Node,
    rules: usize,
}

impl Acl {
    pub fn load(path: &Path) -> Result<Acl, AclError> {
        let text = std::fs::read_to_string(path).map_err(|source| AclError::Read {
            path: path.into(),
            source,
        })?;
        Acl::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Acl, AclError> {
        let mut acl = Acl::default();
        let mut user: Option<String> = None;
        for (index, line) in text.lines().enumerate() {
            let bad = |why: String| AclError::Line {
                line: index + 1,
                why,
            };
            if line.len() > LINE_BYTES_MAX {
                return Err(bad(format!("longer than {LINE_BYTES_MAX} bytes")));
            }
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
            let rest = rest.trim();
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(bad("`user` needs a user name".into()));
                    }
                    acl.users.entry(rest.to_owned()).or_default();
                    user = Some(rest.to_owned());
                }
                "topic" | "pattern" => {
                    let pattern = keyword == "pattern";
                    let (verdict, filter) = parse_rule(rest).map_err(bad)?;
                    let levels = parse_levels(filter, pattern).map_err(bad)?;
                    let tree = match (pattern, &user) {
                        (true, _) => &mut acl.patterns,
                        (false, None) => &mut acl.anonymous,
                        (false, Some(user)) => acl.users.get_mut(user).expect("added at `user`"),
                    };
                    tree.insert(&levels, verdict);
                    acl.rules += 1;
                }
                other => {
                    return Err(bad(format!(
                        "unknown keyword {other:?} (expected user, topic or pattern)"
                    )))
                }
            }
        }
        Ok(acl)
    }

    /// Rules read (topic and pattern lines).
    pub fn rule_count(&self) -> usize {
        self.rules
    }

    /// Whether `who` may publish to `topic`, or receive a message published to it.
    pub fn allows(&self, who: Principal<'_>, topic: &str, access: Access) -> bool {
        let levels: smallvec::SmallVec<[&str; 16]> = topic.split('/').collect();
        let mut verdict = match who.user {
            Some(user) => self
                .users
                .get(user)
                .map(|tree| tree.check(&levels, who))
                .unwrap_or_default(),
            None => self.anonymous.check(&levels, who),
        };
        verdict.add(self.patterns.check(&levels, who));
        let bit = access.bit();
        verdict.denied & bit == 0 && verdict.granted & bit != 0
    }

    /// Whether `who` may subscribe to `filter` (the part after `$share/{group}/` for a shared
    /// subscription): a read rule must match the filter taken literally (module comment).
    pub fn allows_subscribe(&self, who: Principal<'_>, filter: &str) -> bool {
        self.allows(who, filter, Access::Read)
    }
}

/// `[read|write|readwrite|deny] FILTER`: the access word is optional (readwrite).
fn parse_rule(rest: &str) -> Result<(Verdict, &str), String> {
    let (first, after) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
    let after = after.trim();
    let access = match first {
        "read" => Some(Verdict {
            granted: READ,
            denied: 0,
        }),
        "write" => Some(Verdict {
            granted: WRITE,
            denied: 0,
        }),
        "readwrite" => Some(Verdict {
            granted: READ | WRITE,
            denied: 0,
        }),
        "deny" => Some(Verdict {
            granted: 0,
            denied: READ | WRITE,
        }),
        _ => None,
    };
    match access {
        Some(verdict) if !after.is_empty() => Ok((verdict, after)),
        _ if rest.is_empty() => Err("a rule needs a topic filter".into()),
        Some(_) => Err(format!("{first:?} needs a topic filter after it")),
        None => Ok((
            Verdict {
                granted: READ | WRITE,
                denied: 0,
            },
            rest,
        )),
    }
}

fn parse_levels(filter: &str, pattern: bool) -> Result<Vec<Level<'_>>, String> {
    validate_filter(filter)
        .map_err(|e| format!("{filter:?} is not a valid topic filter: {e:?}"))?;
    if filter.split('/').count() > RULE_LEVELS_MAX {
        return Err(format!("a rule deeper than {RULE_LEVELS_MAX} levels"));
    }
    filter
        .split('/')
        .map(|level| match level {
            "+" => Ok(Level::Plus),
            "#" => Ok(Level::Hash),
            "%c" if pattern => Ok(Level::ClientId),
            "%u" if pattern => Ok(Level::User),
            _ if pattern && (level.contains("%c") || level.contains("%u")) => Err(format!(
                "in {filter:?}, %c and %u must be a whole level (e.g. devices/%c/status)"
            )),
            literal => Ok(Level::Literal(literal)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Principal<'static> {
        Principal {
            client_id: "alice-phone",
            user: Some("alice"),
        }
    }

    fn anonymous(client_id: &str) -> Principal<'_> {
        Principal {
            client_id,
            user: None,
        }
    }

    #[test]
    fn anonymous_rules_come_before_the_first_user() {
        let acl = Acl::parse("topic read public/#\nuser alice\ntopic alice/#\n").unwrap();
        let anon = anonymous("x");
        assert!(acl.allows(anon, "public/news", Access::Read));
        assert!(
            acl.allows(anon, "public", Access::Read),
            "# matches its parent"
        );
        assert!(!acl.allows(anon, "public/news", Access::Write));
        assert!(!acl.allows(anon, "alice/x", Access::Read));
        assert!(acl.allows(alice(), "alice/x", Access::Write));
        assert!(acl.allows(alice(), "alice/x", Access::Read));
        assert!(
            !acl.allows(alice(), "public/news", Access::Read),
            "not alice's rule"
        );
        let bob = Principal {
            client_id: "b",
            user: Some("bob"),
        };
        assert!(
            !acl.allows(bob, "public/news", Access::Read),
            "no rules for bob"
        );
    }

    #[test]
    fn deny_wins_over_any_grant() {
        let acl = Acl::parse("user alice\ntopic readwrite a/#\ntopic deny a/secret/#\n").unwrap();
        assert!(acl.allows(alice(), "a/b", Access::Read));
        assert!(!acl.allows(alice(), "a/secret/x", Access::Read));
        assert!(!acl.allows(alice(), "a/secret", Access::Write));
        // A pattern deny also beats a user grant.
        let acl = Acl::parse("user alice\ntopic a/#\npattern deny a/%u/#\n").unwrap();
        assert!(!acl.allows(alice(), "a/alice/x", Access::Read));
        assert!(acl.allows(alice(), "a/bob/x", Access::Read));
    }

    #[test]
    fn patterns_substitute_whole_levels() {
        let acl = Acl::parse("pattern write devices/%c/status\npattern read users/%u/+\n").unwrap();
        assert!(acl.allows(alice(), "devices/alice-phone/status", Access::Write));
        assert!(!acl.allows(alice(), "devices/other/status", Access::Write));
        assert!(!acl.allows(alice(), "devices/alice-phone/status", Access::Read));
        assert!(acl.allows(alice(), "users/alice/inbox", Access::Read));
        assert!(!acl.allows(alice(), "users/bob/inbox", Access::Read));
        assert!(
            !acl.allows(anonymous("c"), "users//inbox", Access::Read),
            "%u never matches a client without a user name"
        );
        // A client id that looks like a wildcard is not substituted.
        let plus = anonymous("+");
        assert!(!acl.allows_subscribe(plus, "devices/+/status"));
        let err = Acl::parse("pattern read devices/x%c/status")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("whole level") && err.contains("line 1"),
            "{err}"
        );
    }

    #[test]
    fn dollar_topics_need_their_own_rule() {
        let acl = Acl::parse("topic read #\ntopic read +/broker/#\n").unwrap();
        let anon = anonymous("x");
        assert!(acl.allows(anon, "a/b", Access::Read));
        assert!(!acl.allows(anon, "$SYS/broker/uptime", Access::Read));
        let acl = Acl::parse("topic read $SYS/#\n").unwrap();
        assert!(acl.allows(anon, "$SYS/broker/uptime", Access::Read));
        assert!(acl.allows_subscribe(anon, "$SYS/#"));
    }

    #[test]
    fn subscribe_takes_the_filter_literally() {
        let acl = Acl::parse("topic read sensors/+/temp\ntopic read open/#\n").unwrap();
        let anon = anonymous("x");
        assert!(acl.allows_subscribe(anon, "sensors/+/temp"));
        assert!(acl.allows_subscribe(anon, "sensors/kitchen/temp"));
        assert!(acl.allows_subscribe(anon, "open/#"));
        assert!(acl.allows_subscribe(anon, "open/a/+"));
        assert!(!acl.allows_subscribe(anon, "#"));
        assert!(!acl.allows_subscribe(anon, "sensors/#"));
        assert!(!acl.allows_subscribe(anon, "+/kitchen/temp"));
    }

    #[test]
    fn syntax_errors_are_named() {
        let err = |text: &str| Acl::parse(text).unwrap_err().to_string();
        assert!(
            err("topic read").contains("needs a topic filter"),
            "{}",
            err("topic read")
        );
        assert!(err("topik read a").contains("unknown keyword"));
        assert!(err("\nuser").contains("line 2"));
        assert!(err("topic read a/#/b").contains("not a valid topic filter"));
        // A topic named like an access word is a readwrite rule on that topic.
        let acl = Acl::parse("topic read\u{20}").unwrap_err().to_string();
        assert!(acl.contains("line 1"));
        let acl = Acl::parse("  # indented comment\n\ttopic\tread\ta/b\n").unwrap();
        assert!(acl.allows(anonymous("x"), "a/b", Access::Read));
        assert_eq!(acl.rule_count(), 1);
    }

    #[test]
    fn a_client_id_never_stands_for_a_dollar_level() {
        let acl = Acl::parse("pattern read %c/#\npattern read %u/#\n").unwrap();
        let sys = Principal {
            client_id: "$SYS",
            user: Some("$SYS"),
        };
        assert!(!acl.allows(sys, "$SYS/broker/uptime", Access::Read));
        assert!(!acl.allows_subscribe(sys, "$SYS/#"));
        let plain = anonymous("dev");
        assert!(acl.allows(plain, "dev/x", Access::Read));
        let deep = format!("topic read {}", vec!["a"; 2000].join("/"));
        assert!(Acl::parse(&deep)
            .unwrap_err()
            .to_string()
            .contains("deeper"));
    }

    #[test]
    fn no_rule_no_access() {
        let acl = Acl::parse("").unwrap();
        assert!(!acl.allows(anonymous("x"), "a", Access::Read));
        assert!(!acl.allows(alice(), "a", Access::Write));
    }
}
