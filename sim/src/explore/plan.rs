//! A generated scenario, in a form the explorer can build and cut down: clients and steps
//! with no more choice than the generator makes, written out as an ordinary scenario file
//! (the same language people write by hand, so a found bug becomes a regression scenario
//! as it is).

use std::fmt::Write as _;

/// A client of a generated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub name: String,
    /// "3.1", "3.1.1" or "5".
    pub version: &'static str,
    /// Client id when it is not the name: two clients with one id take over each other.
    pub id: Option<String>,
    pub clean: bool,
    /// MQTT 5 session expiry interval, seconds.
    pub session_expiry: Option<u32>,
    pub auto_ack: bool,
    pub will: Option<Will>,
    /// Connects with the 3.x bridge bit (another broker's bridge).
    pub bridge: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Will {
    pub topic: String,
    pub payload: String,
    pub qos: u8,
    pub retain: bool,
}

/// One step. Faults name a client; their other end is always the broker.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Connect(String),
    Subscribe {
        client: String,
        filter: String,
        qos: u8,
    },
    Unsubscribe {
        client: String,
        filter: String,
    },
    Publish {
        client: String,
        topic: String,
        payload: String,
        qos: u8,
        retain: bool,
        /// MQTT 5 message expiry interval, seconds.
        expiry: Option<u32>,
    },
    Disconnect(String),
    Close(String),
    WaitMs(u64),
    Partition(String),
    Repair(String),
    Hold(String),
    Release(String),
    CrashClient(String),
    CrashBroker,
    RestartBroker,
    /// A disk fault that stops the broker at its next commit (`fail_fsync`, `tear_write`);
    /// only in plans with persistence.
    DiskStop(&'static str),
}

impl Step {
    /// The client the step is about, if any.
    pub fn client(&self) -> Option<&str> {
        match self {
            Step::Connect(c)
            | Step::Disconnect(c)
            | Step::Close(c)
            | Step::Partition(c)
            | Step::Repair(c)
            | Step::Hold(c)
            | Step::Release(c)
            | Step::CrashClient(c) => Some(c),
            Step::Subscribe { client, .. }
            | Step::Unsubscribe { client, .. }
            | Step::Publish { client, .. } => Some(client),
            Step::WaitMs(_) | Step::CrashBroker | Step::RestartBroker | Step::DiskStop(_) => None,
        }
    }
}

/// A whole generated scenario. Its file also ends with the calm tail (`calm_tail`), which is
/// not among `steps`, so shrinking can never cut it.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub seed: u64,
    pub clients: Vec<Client>,
    pub steps: Vec<Step>,
    /// The broker keeps its state in a store on its simulated disk.
    pub persistence: bool,
    /// The broker publishes its `$SYS` tree every second (retained messages of its own,
    /// inputs of their own between the clients').
    pub sys_tree: bool,
}

/// Simulated time a run ends calm for: longer than the checkers' bounds (5 s).
const CALM_END_MS: u64 = 6000;

/// A YAML double-quoted string (control characters escaped, so any text survives).
fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Plan {
    /// The plan as a scenario file; `goal` is its one-sentence goal.
    pub fn to_yaml(&self, name: &str, goal: &str) -> String {
        let mut y = String::new();
        let _ = writeln!(y, "name: {name}");
        let _ = writeln!(y, "goal: {}", quoted(goal));
        let _ = writeln!(y, "seed: {}", self.seed);
        let mut broker = Vec::new();
        if self.persistence {
            broker.push("persistence: true");
        }
        if self.sys_tree {
            broker.push("sys_interval: 1s");
        }
        if !broker.is_empty() {
            let _ = writeln!(y, "broker: {{ {} }}", broker.join(", "));
        }
        let _ = writeln!(y, "clients:");
        for c in &self.clients {
            let _ = writeln!(y, "  {}: {}", c.name, client_yaml(c));
        }
        let _ = writeln!(y, "steps:");
        for step in self.steps.iter().chain(&self.calm_tail()) {
            let _ = writeln!(y, "  - {}", step_yaml(step));
        }
        y
    }

    /// What ends every run: the partitions and holds still in force undone, the broker
    /// restarted if it is down, then a wait longer than the checkers' bounds.
    pub fn calm_tail(&self) -> Vec<Step> {
        let mut cut: Vec<Step> = Vec::new();
        let mut broker_up = true;
        for step in &self.steps {
            let undo = match step {
                Step::Partition(c) => Some(Step::Repair(c.clone())),
                Step::Hold(c) => Some(Step::Release(c.clone())),
                _ => None,
            };
            if let Some(undo) = undo.filter(|u| !cut.contains(u)) {
                cut.push(undo);
            }
            match step {
                Step::Repair(_) | Step::Release(_) => cut.retain(|undo| undo != step),
                Step::CrashBroker | Step::DiskStop(_) => broker_up = false,
                Step::RestartBroker => broker_up = true,
                _ => {}
            }
        }
        if !broker_up {
            cut.push(Step::RestartBroker);
        }
        cut.push(Step::WaitMs(CALM_END_MS));
        cut
    }
}

fn client_yaml(c: &Client) -> String {
    let mut fields = vec![format!("version: {}", quoted(c.version))];
    if let Some(id) = &c.id {
        fields.push(format!("id: {}", quoted(id)));
    }
    if !c.clean {
        fields.push("clean: false".into());
    }
    if let Some(e) = c.session_expiry {
        fields.push(format!("session_expiry: {e}"));
    }
    if !c.auto_ack {
        fields.push("auto_ack: false".into());
    }
    if c.bridge {
        fields.push("bridge: true".into());
    }
    if let Some(w) = &c.will {
        let mut will = format!(
            "topic: {}, payload: {}, qos: {}",
            quoted(&w.topic),
            quoted(&w.payload),
            w.qos
        );
        if w.retain {
            will.push_str(", retain: true");
        }
        fields.push(format!("will: {{ {will} }}"));
    }
    format!("{{ {} }}", fields.join(", "))
}

fn step_yaml(step: &Step) -> String {
    match step {
        Step::Connect(c) => format!("connect: [{c}]"),
        Step::Subscribe {
            client,
            filter,
            qos,
        } => {
            format!(
                "{client}: {{ subscribe: {{ filter: {}, qos: {qos} }} }}",
                quoted(filter)
            )
        }
        Step::Unsubscribe { client, filter } => {
            format!("{client}: {{ unsubscribe: {} }}", quoted(filter))
        }
        Step::Publish {
            client,
            topic,
            payload,
            qos,
            retain,
            expiry,
        } => {
            let mut fields = vec![
                format!("topic: {}", quoted(topic)),
                format!("payload: {}", quoted(payload)),
                format!("qos: {qos}"),
            ];
            if *retain {
                fields.push("retain: true".into());
            }
            if let Some(e) = expiry {
                fields.push(format!("message_expiry: {e}"));
            }
            format!("{client}: {{ publish: {{ {} }} }}", fields.join(", "))
        }
        Step::Disconnect(c) => format!("{c}: disconnect"),
        Step::Close(c) => format!("{c}: close"),
        Step::WaitMs(ms) => format!("wait: {ms}ms"),
        Step::Partition(c) => format!("partition: [{c}, broker]"),
        Step::Repair(c) => format!("repair: [{c}, broker]"),
        Step::Hold(c) => format!("hold: [{c}, broker]"),
        Step::Release(c) => format!("release: [{c}, broker]"),
        Step::CrashClient(c) => format!("crash: {c}"),
        Step::CrashBroker => "crash: broker".into(),
        Step::RestartBroker => "restart: broker".into(),
        Step::DiskStop(fault) => format!("disk: {fault}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{self, Scenario};

    #[test]
    fn any_text_survives_the_round_trip_through_yaml() {
        let awkward = "a \"quoted\" \\ line\nwith\ttabs # and $ and +/#: {x}";
        let plan = Plan {
            sys_tree: true,
            seed: 3,
            clients: vec![Client {
                name: "c1".into(),
                version: "5",
                id: Some(awkward.into()),
                clean: false,
                session_expiry: Some(30),
                auto_ack: false,
                will: None,
                bridge: false,
            }],
            steps: vec![
                Step::Connect("c1".into()),
                Step::Partition("c1".into()),
                Step::Publish {
                    client: "c1".into(),
                    topic: "$sys/x".into(),
                    payload: awkward.into(),
                    qos: 1,
                    retain: true,
                    expiry: Some(2),
                },
                Step::CrashBroker,
            ],
            persistence: true,
        };
        let yaml = plan.to_yaml("x", awkward);
        let parsed = Scenario::parse(&yaml, std::path::Path::new("x.yaml")).unwrap();
        assert_eq!(parsed.goal, awkward);
        assert_eq!(parsed.clients["c1"].id.as_deref(), Some(awkward));
        let scenario::Step::Client {
            action: scenario::ClientAction::Publish(p),
            ..
        } = &parsed.steps[2]
        else {
            panic!("{yaml}");
        };
        assert_eq!((p.topic.as_str(), p.payload.as_str()), ("$sys/x", awkward));
        // The calm tail undoes the partition, restarts the broker, then waits.
        assert_eq!(
            plan.calm_tail(),
            [
                Step::Repair("c1".into()),
                Step::RestartBroker,
                Step::WaitMs(CALM_END_MS)
            ]
        );
    }
}
