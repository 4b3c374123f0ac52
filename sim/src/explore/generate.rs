//! Random scenarios from a seed: two to four clients of every protocol version, persistent
//! and clean sessions, wills, shared ids (takeovers), wildcard, `$` and shared subscriptions,
//! QoS 0/1/2 publishes with and without retain and expiry, reconnects, and faults (partitions,
//! holds, client crashes, broker crash and restart), with or without persistence (and then
//! disk faults that stop the broker). Every step is one the director can
//! carry out against a correct broker: the generator tracks which clients are connected and
//! which links are cut, so a failure is the broker's, not the script's. Every run ends calm
//! (`Plan::calm_tail`) so the convergence checkers have something to judge.

use super::plan::{Client, Plan, Step, Will};

/// A small deterministic generator (SplitMix64): the same seed, the same scenario.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5EED_7E24_0000_0000)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next() as usize % items.len()]
    }
}

const TOPICS: &[&str] = &["a", "a/b", "a/c", "b/x", "$sys/x"];
const FILTERS: &[&str] = &["a/#", "a/+", "#", "+/x", "a/b", "$sys/#", "+", "b/x"];
const SHARED_FILTERS: &[&str] = &["$share/g/a/#", "$share/g/#"];
const WAITS_MS: &[u64] = &[50, 200, 500, 1500, 3000];

#[derive(Clone, Copy, PartialEq)]
enum Link {
    Normal,
    Partitioned,
    Held,
}

/// What the generator knows of the world after the steps so far.
struct Model {
    broker_up: bool,
    connected: Vec<bool>,
    links: Vec<Link>,
    /// Client id of each client.
    ids: Vec<String>,
}

/// The scenario for `seed`.
pub fn generate(seed: u64) -> Plan {
    let mut rng = Rng::new(seed);
    let clients = clients(&mut rng);
    let mut model = Model {
        broker_up: true,
        connected: vec![false; clients.len()],
        links: vec![Link::Normal; clients.len()],
        ids: clients
            .iter()
            .map(|c| c.id.clone().unwrap_or(c.name.clone()))
            .collect(),
    };
    let mut steps = Vec::new();
    for i in 0..clients.len() {
        // A client sharing an id with one already connected joins later, as a takeover.
        if !(0..i).any(|j| model.ids[j] == model.ids[i]) {
            steps.push(model.connect(&clients, i));
        }
    }
    let mut payloads = 0u32;
    for _ in 0..rng.range(8, 40) {
        let step = random_step(&mut rng, &clients, &mut model, &mut payloads);
        steps.push(step);
    }
    let persistence = with_persistence(seed, &mut steps);
    let mut clients = clients;
    with_bridges(seed, &mut clients);
    Plan {
        seed,
        clients,
        steps,
        persistence,
        // From a generator of its own, so the rest of each seed's plan is unchanged.
        sys_tree: Rng::new(seed ^ 0x5E5_0000_0000_0000).chance(50),
    }
}

/// Makes some MQTT 3.x clients other brokers' bridges (the bridge bit). Not clients that share
/// an id: a bridge's session keeps its No Local subscriptions, which a plain client taking it
/// over would inherit. From a generator of its own, so the rest of each plan is unchanged.
fn with_bridges(seed: u64, clients: &mut [Client]) {
    let mut rng = Rng::new(seed ^ 0xB21D_6E00_0000_0000);
    let id = |c: &Client| c.id.clone().unwrap_or(c.name.clone());
    let ids: Vec<String> = clients.iter().map(id).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        let shared = ids.iter().filter(|other| **other == ids[i]).count() > 1;
        client.bridge = !shared && client.version != "5" && rng.chance(20);
    }
}

/// Whether the broker of `seed`'s plan keeps a store (half of the plans), and with it some of
/// its crashes become disk faults that stop it the same way (a failed fsync, a torn write).
/// Drawn from a generator of its own, so the rest of each seed's plan is what it was before
/// persistence existed.
fn with_persistence(seed: u64, steps: &mut [Step]) -> bool {
    let mut rng = Rng::new(seed ^ 0xD15C_0000_0000_0000);
    if !rng.chance(50) {
        return false;
    }
    for step in steps.iter_mut() {
        if *step == Step::CrashBroker && rng.chance(30) {
            const STOPS: [&str; 2] = ["fail_fsync", "tear_write"];
            let fault: &'static str = STOPS[rng.range(0, 1) as usize];
            *step = Step::DiskStop(fault);
        }
    }
    true
}

fn clients(rng: &mut Rng) -> Vec<Client> {
    let n = rng.range(2, 4) as usize;
    let mut clients: Vec<Client> = (1..=n)
        .map(|i| {
            let version = *rng.pick(&["3.1.1", "5", "5", "3.1"]);
            let clean = rng.chance(50);
            let session_expiry = match version {
                "5" if !clean || rng.chance(30) => Some(*rng.pick(&[0, 2, 30])),
                _ => None,
            };
            let will = rng.chance(25).then(|| Will {
                topic: if rng.chance(20) {
                    "$sys/w".into()
                } else {
                    format!("w/c{i}")
                },
                payload: format!("will-c{i}"),
                qos: rng.range(0, 1) as u8,
                retain: rng.chance(30),
            });
            Client {
                name: format!("c{i}"),
                version,
                id: None,
                clean,
                session_expiry,
                auto_ack: rng.chance(85),
                will,
                bridge: false,
            }
        })
        .collect();
    // Two clients with one id: connecting the second takes the session over. A takeover is
    // worth testing with a session to take over and messages in flight to the first.
    if n >= 3 && rng.chance(30) {
        clients[n - 1].id = Some("c1".into());
        for i in [0, n - 1] {
            clients[i].clean = rng.chance(20);
            if clients[i].version == "5" && !clients[i].clean {
                clients[i].session_expiry = Some(30);
            }
        }
        clients[0].auto_ack = rng.chance(50);
    }
    clients
}

impl Model {
    fn usable(&self, i: usize) -> bool {
        self.broker_up && self.connected[i] && self.links[i] == Link::Normal
    }

    fn connect(&mut self, clients: &[Client], i: usize) -> Step {
        for j in 0..self.ids.len() {
            if j != i && self.ids[j] == self.ids[i] {
                // Taken over: the broker closes the other connection.
                self.connected[j] = false;
            }
        }
        self.connected[i] = true;
        Step::Connect(clients[i].name.clone())
    }
}

/// One step the director can carry out in the current state (a wait if the draw finds none).
fn random_step(rng: &mut Rng, clients: &[Client], model: &mut Model, payloads: &mut u32) -> Step {
    for _ in 0..20 {
        let i = rng.range(0, clients.len() as u64 - 1) as usize;
        let name = clients[i].name.clone();
        let v5 = clients[i].version == "5";
        match rng.range(0, 99) {
            0..=29 if model.broker_up && model.connected[i] => {
                *payloads += 1;
                return Step::Publish {
                    client: name,
                    topic: rng.pick(TOPICS).to_string(),
                    payload: format!("m{payloads}"),
                    qos: rng.range(0, 2) as u8,
                    retain: rng.chance(25),
                    expiry: (v5 && rng.chance(25)).then(|| rng.range(1, 3) as u32),
                };
            }
            30..=44 if model.usable(i) => {
                let filter = if v5 && rng.chance(20) {
                    rng.pick(SHARED_FILTERS)
                } else {
                    rng.pick(FILTERS)
                };
                return Step::Subscribe {
                    client: name,
                    filter: filter.to_string(),
                    qos: rng.range(0, 2) as u8,
                };
            }
            45..=49 if model.usable(i) => {
                return Step::Unsubscribe {
                    client: name,
                    filter: rng.pick(FILTERS).to_string(),
                };
            }
            50..=59 => return Step::WaitMs(*rng.pick(WAITS_MS)),
            60..=67 if model.broker_up && !model.connected[i] && model.links[i] == Link::Normal => {
                return model.connect(clients, i);
            }
            68..=72 if model.connected[i] => {
                model.connected[i] = false;
                return Step::Disconnect(name);
            }
            73..=76 if model.connected[i] => {
                model.connected[i] = false;
                return Step::Close(name);
            }
            77..=81 => return link_fault(rng, model, i, name),
            82..=85 if model.links[i] == Link::Normal => {
                model.connected[i] = false;
                return Step::CrashClient(name);
            }
            86..=89 if model.broker_up => {
                model.broker_up = false;
                model.connected.iter_mut().for_each(|c| *c = false);
                return Step::CrashBroker;
            }
            _ if !model.broker_up => {
                model.broker_up = true;
                return Step::RestartBroker;
            }
            _ => {}
        }
    }
    Step::WaitMs(*rng.pick(WAITS_MS))
}

/// Cuts or holds a client's link, or undoes what is in force on it. A partitioned connection
/// is dead for the generator (turmoil TCP does not retransmit what a partition dropped).
fn link_fault(rng: &mut Rng, model: &mut Model, i: usize, name: String) -> Step {
    match model.links[i] {
        Link::Normal if model.connected[i] && rng.chance(50) => {
            model.links[i] = Link::Held;
            Step::Hold(name)
        }
        Link::Normal => {
            model.links[i] = Link::Partitioned;
            model.connected[i] = false;
            Step::Partition(name)
        }
        Link::Partitioned => {
            model.links[i] = Link::Normal;
            Step::Repair(name)
        }
        Link::Held => {
            model.links[i] = Link::Normal;
            Step::Release(name)
        }
    }
}
