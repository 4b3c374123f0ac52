//! Runs a scenario: builds the turmoil world, drives the steps, then hands the trace to the
//! checkers.
//!
//! The director lives outside the simulation. It sends commands to client actors, steps the
//! simulation until what a step waits for shows up in the trace (or its simulated time bound
//! passes), and applies faults between steps. Everything that varies between runs comes from
//! the seed.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tern::auth::SeededEntropy;
use tern::codec::*;
use tern::net::{Endpoint, Persistence, Probe, Server};
use tern::store::RedbStore;
use tern::types::{PacketId, QoS};
use tokio::sync::{mpsc, oneshot};

use crate::actor::{Actor, Command, BROKER_PORT};
use crate::checkers::{self, Failure};
use crate::contain;
use crate::disk::SimDisk;
use crate::listener::TurmoilListener;
use crate::scenario::*;
use crate::trace::{BrokerCounters, Event, Trace};

/// Simulated time a run may take at most; a scenario that needs more is a bug in the file.
const SIMULATION_MAX: Duration = Duration::from_secs(3600);
/// How long a step waits for an answer it needs (CONNACK, SUBACK, ...).
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// Simulated time per step. Turmoil polls every host on every step, idle or not, so the tick
/// sets the cost of simulated time; 5 ms keeps packet timing finer than the link latency.
const TICK: Duration = Duration::from_millis(5);
/// Link latency of a run without random latency.
const FIXED_LATENCY: Duration = Duration::from_millis(5);
/// How long a publish step lets its QoS flow run before going on (it never fails on it).
const PUBLISH_SETTLE: Duration = Duration::from_secs(1);
/// Ticks the director waits for the broker's counters after the last step (the broker task
/// answers within one tick unless it is blocked, which is a failure of its own).
const COUNTERS_WAIT_TICKS: usize = 200;

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub seed: u64,
    /// Give every link a random latency up to this bound (extra seeds explore orderings).
    pub max_latency: Option<Duration>,
    /// Run the broker with this planted bug (only in builds with the `planted-bugs` feature;
    /// `tern::planted`).
    pub planted_bug: Option<tern::planted::PlantedBug>,
}

#[derive(Debug)]
pub struct Outcome {
    pub trace: Trace,
    pub simulated: Duration,
    pub failure: Option<Failure>,
}

type Registry = Rc<RefCell<BTreeMap<String, mpsc::UnboundedSender<Command>>>>;

/// Runs a scenario on a thread with the production stack; a panic anywhere in it is a
/// `crash` failure with the trace so far.
pub fn run(scenario: &Scenario, options: &Options) -> Outcome {
    contain::on_production_stack(|| run_here(scenario, options)).unwrap_or_else(|panic| Outcome {
        trace: Trace::default(),
        simulated: Duration::ZERO,
        failure: Some(Failure {
            checker: "crash".into(),
            message: format!("the simulation panicked: {panic}"),
            at_entry: None,
        }),
    })
}

fn run_here(scenario: &Scenario, options: &Options) -> Outcome {
    tern::planted::plant(options.planted_bug);
    let trace = Rc::new(RefCell::new(Trace::default()));
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(options.seed)
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
        .simulation_duration(SIMULATION_MAX)
        .tick_duration(TICK)
        .tcp_capacity(1024);
    match options.max_latency {
        Some(max) => builder
            .min_message_latency(Duration::from_millis(1))
            .max_message_latency(max),
        None => builder
            .min_message_latency(FIXED_LATENCY)
            .max_message_latency(FIXED_LATENCY),
    };
    let mut sim = builder.build();

    let config = broker_config(&scenario.broker);
    let seed = options.seed;
    // The broker's disk outlives its process: crashes and restarts keep what was synced.
    let disk = scenario.broker.persistence.then(SimDisk::new);
    let broker_disk = disk.clone();
    let websocket = scenario.broker.websocket;
    // The running broker's probe: the director reads its counters after the last step.
    let probe: Rc<RefCell<Option<Probe>>> = Rc::default();
    let broker_probe = probe.clone();
    sim.host("broker", move || {
        let config = config.clone();
        let disk = broker_disk.clone();
        let probe = broker_probe.clone();
        async move {
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", BROKER_PORT)).await?;
            // Nonces from the run's seed, so an authentication exchange replays too.
            let entropy = Box::new(SeededEntropy::new(seed));
            let mut endpoint = Endpoint::plain(TurmoilListener(listener));
            if websocket {
                endpoint.transport.websocket_path = Some("/mqtt".into());
            }
            let listeners = vec![endpoint];
            let persistence = match &disk {
                Some(disk) => Some(sim_persistence(disk)?),
                None => None,
            };
            let mut server = Server::start_with_store(listeners, config, entropy, persistence)?;
            probe.borrow_mut().replace(server.probe());
            // A failed commit stops the broker, as it stops the real process: its clients
            // are told and closed, and the host runs nothing until `restart: broker`.
            let error = server.store_failed().await;
            tracing::error!(%error, "the broker stopped");
            server.shutdown().await;
            Ok(())
        }
    });

    let registry: Registry = Rc::default();
    let own_host = own_hosts(scenario);
    let actor = {
        let trace = trace.clone();
        move |name: &str| -> Actor {
            let spec = &scenario.clients[name];
            Actor {
                name: name.to_string(),
                version: protocol(spec.version),
                keep_alive: spec.keep_alive.map_or(Duration::ZERO, |d| d.0),
                auto_ack: spec.auto_ack,
                websocket: scenario.broker.websocket,
                scram: spec
                    .scram
                    .as_ref()
                    .map(|s| (s.user.clone(), s.password.clone())),
                trace: trace.clone(),
            }
        }
    };
    for host in &own_host {
        let (registry, actor, name) = (registry.clone(), actor.clone(), host.clone());
        sim.host(host.as_str(), move || {
            // Runs at every (re)start of the host: a fresh actor and command channel.
            let (sender, receiver) = mpsc::unbounded_channel();
            registry.borrow_mut().insert(name.clone(), sender);
            actor(&name).run(receiver)
        });
    }
    let shared: Vec<String> = scenario
        .clients
        .keys()
        .filter(|c| !own_host.contains(*c))
        .cloned()
        .collect();
    if !shared.is_empty() {
        let (registry, actor) = (registry.clone(), actor.clone());
        sim.host(SHARED_HOST, move || {
            for name in &shared {
                let (sender, receiver) = mpsc::unbounded_channel();
                registry.borrow_mut().insert(name.clone(), sender);
                tokio::task::spawn_local(actor(name).run(receiver));
            }
            std::future::pending()
        });
    }

    let mut director = Director {
        sim,
        disk,
        scenario,
        registry,
        own_host,
        trace: trace.clone(),
        next_packet_id: BTreeMap::new(),
        consumed: BTreeSet::new(),
        anchor: BTreeMap::new(),
        probe,
        disk_stopped: false,
    };
    let mut simulated = Duration::ZERO;
    let stopped = contain::capturing_panics(|| {
        let stopped = director.run_steps();
        simulated = director.sim.elapsed();
        if stopped.is_ok() {
            let counters = director.broker_counters();
            director.trace.borrow_mut().broker_counters = counters;
        }
        drop(director);
        stopped
    });
    let trace = Rc::try_unwrap(trace)
        .map(RefCell::into_inner)
        .unwrap_or_else(|rc| rc.borrow().clone());
    let last_entry = Some(trace.entries.len().saturating_sub(1));
    let mut failure = match (contain::panicked(), stopped) {
        (Some(panic), _) => Some(Failure {
            checker: "crash".into(),
            message: format!("the simulation panicked (the broker would have aborted): {panic}"),
            at_entry: last_entry,
        }),
        (None, Some(Err((step, message)))) => Some(Failure {
            checker: format!("step {step}"),
            message,
            at_entry: last_entry,
        }),
        (None, _) => None,
    };
    if failure.is_none() {
        failure = checkers::check(scenario, &trace);
    }
    Outcome {
        trace,
        simulated,
        failure,
    }
}

/// Clients that need a host of their own: those a fault step names.
fn own_hosts(scenario: &Scenario) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    let broker_goes_down = scenario.steps.iter().any(|step| {
        matches!(step, Step::Crash(h) | Step::Restart(h) if h == "broker")
            || matches!(
                step,
                Step::Disk(DiskFault::FailFsync | DiskFault::TearWrite)
            )
    });
    if broker_goes_down {
        // A crashed broker's sockets close in the order tokio drops its tasks, which varies
        // between runs in one process: clients sharing a host would see that order, clients
        // on hosts of their own (fixed latency on every link, see `Step::Crash`) do not.
        return scenario.clients.keys().cloned().collect();
    }
    for step in &scenario.steps {
        let hosts: Vec<&String> = match step {
            Step::Partition(Link::Both([a, b])) | Step::Repair(Link::Both([a, b])) => vec![a, b],
            Step::Partition(Link::OneWay { from, to })
            | Step::Repair(Link::OneWay { from, to }) => {
                vec![from, to]
            }
            Step::Hold([a, b]) | Step::Release([a, b]) => vec![a, b],
            Step::Latency {
                between: [a, b], ..
            }
            | Step::Loss {
                between: [a, b], ..
            } => {
                vec![a, b]
            }
            Step::Crash(h) | Step::Restart(h) => vec![h],
            _ => Vec::new(),
        };
        named.extend(
            hosts
                .into_iter()
                .filter(|h| scenario.clients.contains_key(*h))
                .cloned(),
        );
    }
    named
}

fn protocol(version: Version) -> ProtocolVersion {
    match version {
        Version::V3_1 => ProtocolVersion::V3_1,
        Version::V3_1_1 => ProtocolVersion::V3_1_1,
        Version::V5 => ProtocolVersion::V5,
    }
}

/// The wall clock at the simulation's epoch (turmoil's epoch is set to the same instant).
const EPOCH_MS: u64 = 1_700_000_000_000;

/// The broker's store on its simulated disk, with the simulated wall clock.
fn sim_persistence(disk: &SimDisk) -> Result<Persistence, Box<dyn std::error::Error>> {
    let for_store = disk.clone();
    let store = RedbStore::with_backend(
        move || for_store.open(),
        "broker:tern-data/tern.redb".into(),
    )?;
    let elapsed = turmoil::sim_elapsed().unwrap_or_default();
    Ok(Persistence {
        store: Box::new(store),
        wall_clock_ms: EPOCH_MS + u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        // The disk is memory, and the host's tasks must stay on the simulation's thread.
        blocking_commits: false,
    })
}

fn broker_config(o: &BrokerOverrides) -> tern::core::Config {
    let mut config = tern::core::Config::default();
    let l = &mut config.limits;
    if let Some(d) = o.connect_timeout {
        l.connect_timeout = d.0;
    }
    macro_rules! set {
        ($($f:ident),*) => { $(if let Some(v) = o.$f { l.$f = v; })* };
    }
    set!(
        inflight_count_max,
        receive_maximum_count,
        queued_messages_max,
        queue_qos0,
        keep_alive_max_secs,
        topic_alias_max,
        topic_levels_max,
        memory_bytes_max
    );
    if let Some(v) = o.session_expiry_max_secs {
        l.session_expiry_max_secs = v;
    }
    config.scram.users = o.scram_users.clone();
    // Fewer PBKDF2 rounds than production: the simulation runs thousands of exchanges.
    config.scram.iterations = 64;
    config.sys_interval = o.sys_interval.map_or(Duration::ZERO, |d| d.0);
    config
}

struct Director<'a, 's> {
    sim: turmoil::Sim<'a>,
    /// The broker's disk (with persistence): it outlives the broker's crashes.
    disk: Option<SimDisk>,
    scenario: &'s Scenario,
    registry: Registry,
    /// Clients with a host of their own (the others share `SHARED_HOST`).
    own_host: BTreeSet<String>,
    trace: Rc<RefCell<Trace>>,
    /// Reads the running broker's counters (replaced at each broker start).
    probe: Rc<RefCell<Option<Probe>>>,
    /// A disk fault that stops the broker (failed fsync, torn write) happened since its last
    /// start: it may have stopped serving. (One that did stop has no host running any more;
    /// this covers the moment before it notices.)
    disk_stopped: bool,
    next_packet_id: BTreeMap<String, u16>,
    /// Trace entries (received PUBLISHes) already matched by an `expect`: each message
    /// matches one expectation.
    consumed: BTreeSet<usize>,
    /// Per client, the entry after the last one an `expect publish` matched: the next
    /// expectation looks from there, so "expect A, then B" fails when B came first (unless
    /// it says `any_order`).
    anchor: BTreeMap<String, usize>,
}

fn s(text: &str) -> Result<ByteStr, String> {
    ByteStr::new(text).map_err(|e| {
        let shown: String = text.chars().take(40).collect();
        let more = if shown.len() < text.len() { "..." } else { "" };
        format!(
            "{shown:?}{more} ({} bytes) is not a valid MQTT string: {e:?}",
            text.len()
        )
    })
}

fn qos(q: u8) -> Result<QoS, String> {
    QoS::from_bits(q).ok_or_else(|| format!("QoS {q} does not exist"))
}

impl Director<'_, '_> {
    /// The broker's counters after the last step: asked through its probe, the simulation run
    /// on until it answers. What clients do meanwhile is not part of the run: the trace is cut
    /// back to where the steps ended.
    fn broker_counters(&mut self) -> BrokerCounters {
        let down = !self.sim.is_host_running("broker") || self.disk_stopped;
        if down {
            return BrokerCounters::BrokerDown;
        }
        let asked = self.probe.borrow().as_ref().and_then(Probe::request);
        let Some(mut answer) = asked else {
            return BrokerCounters::Unanswered;
        };
        let steps_ended = self.trace.borrow().entries.len();
        let mut counters = BrokerCounters::Unanswered;
        for _ in 0..COUNTERS_WAIT_TICKS {
            match answer.try_recv() {
                Ok(snapshot) => {
                    counters = BrokerCounters::Read(Box::new(snapshot.core));
                    break;
                }
                Err(oneshot::error::TryRecvError::Closed) => break,
                Err(oneshot::error::TryRecvError::Empty) => {
                    if self.sim.step().is_err() {
                        break;
                    }
                }
            }
        }
        self.trace.borrow_mut().entries.truncate(steps_ended);
        counters
    }

    /// Runs the steps in order; stops at the first that fails (its number and why).
    fn run_steps(&mut self) -> Result<(), (usize, String)> {
        let steps = &self.scenario.steps;
        for (index, step) in steps.iter().enumerate() {
            self.note(index + 1, step);
            self.step(step).map_err(|message| (index + 1, message))?;
        }
        Ok(())
    }

    /// Every host that carries clients.
    fn client_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.own_host.iter().cloned().collect();
        if hosts.len() < self.scenario.clients.len() {
            hosts.push(SHARED_HOST.to_string());
        }
        hosts
    }

    fn note(&mut self, index: usize, step: &Step) {
        let text = format!("{step:?}");
        let text: String = text.chars().take(160).collect();
        self.trace
            .borrow_mut()
            .push(self.sim.elapsed(), "director", Event::Step { index, text });
    }

    fn fault(&mut self, what: String) {
        self.trace
            .borrow_mut()
            .push(self.sim.elapsed(), "director", Event::Fault(what));
    }

    fn send(&mut self, client: &str, command: Command) -> Result<(), String> {
        let sender = self.registry.borrow().get(client).cloned();
        let sender = sender.ok_or_else(|| format!("client {client} is not running"))?;
        sender
            .send(command)
            .map_err(|_| format!("client {client} is not running (crashed?)"))
    }

    fn packet_id(&mut self, client: &str) -> PacketId {
        let next = self.next_packet_id.entry(client.to_string()).or_insert(0);
        *next = next.wrapping_add(1).max(1);
        PacketId::new(*next).expect("non-zero")
    }

    /// Steps the simulation until `done` finds what it looks for in the trace entries after
    /// `from`, or `within` passes. Returns the index of the entry found.
    fn run_until(
        &mut self,
        within: Duration,
        from: usize,
        mut done: impl FnMut(usize, &crate::trace::Entry) -> bool,
    ) -> Result<Option<usize>, String> {
        let deadline = self.sim.elapsed() + within;
        let mut checked = from;
        loop {
            {
                let trace = self.trace.borrow();
                if let Some(offset) = trace.entries[checked..]
                    .iter()
                    .enumerate()
                    .position(|(i, e)| done(checked + i, e))
                {
                    return Ok(Some(checked + offset));
                }
                checked = trace.entries.len();
            }
            if self.sim.elapsed() >= deadline {
                return Ok(None);
            }
            self.sim
                .step()
                .map_err(|e| format!("simulation error: {e}"))?;
            if contain::panicked().is_some() {
                return Err("a task panicked".into());
            }
        }
    }

    fn run_for(&mut self, duration: Duration) -> Result<(), String> {
        let from = self.trace.borrow().entries.len();
        self.run_until(duration, from, |_, _| false).map(|_| ())
    }

    fn mark(&self) -> usize {
        self.trace.borrow().entries.len()
    }

    fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Connect(list) => {
                for spec in list {
                    self.connect(spec)?;
                }
                Ok(())
            }
            Step::Client { client, action } => self.action(client, action),
            Step::Wait(d) => self.run_for(*d),
            Step::Partition(link) | Step::Repair(link) => {
                let repair = matches!(step, Step::Repair(_));
                let verb = if repair { "repair" } else { "partition" };
                match link {
                    Link::Both([a, b]) => {
                        if repair {
                            self.sim.repair(a.as_str(), b.as_str())
                        } else {
                            self.sim.partition(a.as_str(), b.as_str())
                        }
                        self.fault(format!("{verb} {a} <-> {b}"));
                    }
                    Link::OneWay { from, to } => {
                        if repair {
                            self.sim.repair_oneway(from.as_str(), to.as_str())
                        } else {
                            self.sim.partition_oneway(from.as_str(), to.as_str())
                        }
                        self.fault(format!("{verb} {from} -> {to}"));
                    }
                }
                Ok(())
            }
            Step::Hold([a, b]) => {
                self.sim.hold(a.as_str(), b.as_str());
                self.fault(format!("hold {a} <-> {b}"));
                Ok(())
            }
            Step::Release([a, b]) => {
                self.sim.release(a.as_str(), b.as_str());
                self.fault(format!("release {a} <-> {b}"));
                Ok(())
            }
            Step::Latency {
                between: [a, b],
                latency,
            } => {
                self.sim.set_link_latency(a.as_str(), b.as_str(), *latency);
                self.fault(format!("latency {a} <-> {b} {latency:?}"));
                Ok(())
            }
            Step::Loss {
                between: [a, b],
                rate,
            } => {
                self.sim.set_link_fail_rate(a.as_str(), b.as_str(), *rate);
                self.fault(format!("loss {a} <-> {b} {rate}"));
                Ok(())
            }
            Step::Crash(host) => {
                if host == "broker" {
                    // Dropping the broker closes its sockets in an order set by tokio's task
                    // ids, which differ between runs in one process. With a fixed latency on
                    // every link the order cannot show in the trace, so the run stays
                    // reproducible (the links keep this latency for the rest of the run).
                    for host in self.client_hosts() {
                        self.sim
                            .set_link_latency(host.as_str(), "broker", FIXED_LATENCY);
                    }
                }
                self.sim.crash(host.as_str());
                self.crash_disk(host);
                self.fault(format!("crash {host}"));
                // The host's connections end at once; let the peers see it.
                self.run_for(Duration::from_millis(10))
            }
            Step::Disk(fault) => self.disk_fault(*fault),
            Step::Restart(host) => {
                if self.sim.is_host_running(host.as_str()) {
                    // A restart of a running host crashes it first: say so in the trace.
                    self.fault(format!("crash {host}"));
                }
                // Also after a broker that stopped by itself (a failed fsync): what no fsync
                // covered may be gone.
                self.crash_disk(host);
                if host == "broker" {
                    // The new process serves until a disk fault stops it again.
                    self.disk_stopped = false;
                }
                self.sim.bounce(host.as_str());
                self.fault(format!("restart {host}"));
                self.run_for(Duration::from_millis(10))
            }
        }
    }

    /// The broker's disk keeps only what was synced when its host goes down.
    fn crash_disk(&self, host: &str) {
        if let (Some(disk), "broker") = (&self.disk, host) {
            disk.crash();
        }
    }

    fn disk_fault(&mut self, fault: DiskFault) -> Result<(), String> {
        let disk = self
            .disk
            .as_ref()
            .ok_or("a disk fault needs `broker: { persistence: true }`")?;
        self.disk_stopped |= matches!(fault, DiskFault::FailFsync | DiskFault::TearWrite);
        match fault {
            DiskFault::FailFsync => disk.set_fail_sync(true),
            DiskFault::Full => disk.set_full(true),
            DiskFault::HasRoom => disk.set_full(false),
            DiskFault::TearWrite => disk.tear_next_sync(),
        }
        self.fault(format!("disk {fault}"));
        Ok(())
    }

    fn connect(&mut self, spec: &ConnectSpec) -> Result<(), String> {
        let name = spec.client.as_str();
        let client = &self.scenario.clients[name];
        if self.own_host.contains(name) && !self.sim.is_host_running(name) {
            // A crashed client comes back as a new process.
            self.sim.bounce(name);
            self.run_for(Duration::from_millis(1))?;
        }
        let version = protocol(client.version);
        let mut properties = Properties::new();
        if let Some(expiry) = client.session_expiry {
            properties.push(Property::SessionExpiryInterval(expiry));
        }
        if let Some(max) = client.receive_maximum {
            properties.push(Property::ReceiveMaximum(max));
        }
        if let Some(max) = client.topic_alias_max {
            properties.push(Property::TopicAliasMaximum(max));
        }
        let will = match &client.will {
            None => None,
            Some(w) => {
                let mut props = Properties::new();
                if let Some(delay) = w.delay {
                    props.push(Property::WillDelayInterval(delay.0.as_secs() as u32));
                }
                if let Some(expiry) = w.message_expiry {
                    props.push(Property::MessageExpiryInterval(expiry));
                }
                for (k, v) in &w.user_properties {
                    props.push(Property::UserProperty(s(k)?, s(v)?));
                }
                Some(Will {
                    topic: s(&w.topic)?,
                    payload: Bytes::from(w.payload.clone()),
                    qos: qos(w.qos)?,
                    retain: w.retain,
                    properties: props,
                })
            }
        };
        let connect = Connect {
            protocol: version,
            clean_start: client.clean,
            keep_alive: client.keep_alive.map_or(0, |d| d.0.as_secs() as u16),
            properties,
            client_id: s(client.id.as_deref().unwrap_or(name))?,
            will,
            username: client.username.as_deref().map(s).transpose()?,
            password: client.password.as_ref().map(|p| Bytes::from(p.clone())),
            bridge: client.bridge,
        };
        let from = self.mark();
        self.send(name, Command::Connect(Packet::Connect(Box::new(connect))))?;
        let found = self.run_until(ANSWER_WITHIN, from, |_, e| {
            e.host == name
                && matches!(
                    &e.event,
                    Event::Received(Packet::ConnAck(_))
                        | Event::ConnectFailed(_)
                        | Event::Closed { .. }
                )
        })?;
        let Some(index) = found else {
            return Err(format!("{name}: no CONNACK within {ANSWER_WITHIN:?}"));
        };
        let event = self.trace.borrow().entries[index].event.clone();
        match event {
            Event::Received(Packet::ConnAck(ack)) => {
                let code = if version.is_v5() {
                    ack.reason_code as u8
                } else {
                    ack.reason_code.to_v3_connack()
                };
                if code != spec.code {
                    return Err(format!(
                        "{name}: CONNACK code {code:#04x}, expected {:#04x}",
                        spec.code
                    ));
                }
                if let Some(expected) = spec.session_present {
                    if ack.session_present != expected {
                        return Err(format!(
                            "{name}: session present {}, expected {expected}",
                            ack.session_present
                        ));
                    }
                }
                Ok(())
            }
            other => Err(format!("{name}: connection failed: {other:?}")),
        }
    }

    /// A step that waits for the broker's answer needs a connection to send on: without one
    /// the client drops the command, and the step fails with its own kind of failure, never
    /// as if the broker had not answered (so shrinking cannot trade one for the other).
    fn require_connection(&self, name: &str) -> Result<(), String> {
        let trace = self.trace.borrow();
        let connected = trace
            .entries
            .iter()
            .rev()
            .filter(|e| e.host == name)
            .find_map(|e| match &e.event {
                Event::Received(Packet::ConnAck(a)) => Some(!a.reason_code.is_error()),
                Event::Closed { .. } | Event::Sent(Packet::Connect(_)) => Some(false),
                _ => None,
            })
            .unwrap_or(false);
        if connected {
            Ok(())
        } else {
            Err(format!("{name}: not connected, so nothing can answer"))
        }
    }

    fn action(&mut self, name: &str, action: &ClientAction) -> Result<(), String> {
        let version = protocol(self.scenario.clients[name].version);
        if matches!(
            action,
            ClientAction::Subscribe(_)
                | ClientAction::Unsubscribe(_)
                | ClientAction::Reauthenticate(_)
        ) {
            self.require_connection(name)?;
        }
        match action {
            ClientAction::Subscribe(spec) => {
                let id = self.packet_id(name);
                let options = SubscriptionOptions::new(qos(spec.qos)?);
                let packet = Packet::Subscribe(Subscribe {
                    packet_id: id,
                    properties: Properties::new(),
                    filters: vec![(s(&spec.filter)?, options)],
                });
                let from = self.mark();
                self.send(name, Command::Send(packet))?;
                let found = self.run_until(ANSWER_WITHIN, from, |_, e| {
                    e.host == name && matches!(&e.event, Event::Received(Packet::SubAck(a)) if a.packet_id == id)
                })?;
                let Some(index) = found else {
                    return Err(format!("{name}: no SUBACK within {ANSWER_WITHIN:?}"));
                };
                let Event::Received(Packet::SubAck(ack)) =
                    self.trace.borrow().entries[index].event.clone()
                else {
                    unreachable!()
                };
                let code = ack
                    .reason_codes
                    .first()
                    .copied()
                    .ok_or("SUBACK without a code")?;
                let code = if version.is_v5() {
                    code as u8
                } else {
                    code.to_v3_suback()
                };
                let expected = spec.expect_code.unwrap_or(spec.qos);
                if code != expected {
                    return Err(format!(
                        "{name}: SUBACK code {code:#04x}, expected {expected:#04x}"
                    ));
                }
                Ok(())
            }
            ClientAction::Unsubscribe(filter) => {
                let id = self.packet_id(name);
                let packet = Packet::Unsubscribe(Unsubscribe {
                    packet_id: id,
                    properties: Properties::new(),
                    filters: vec![s(filter)?],
                });
                let from = self.mark();
                self.send(name, Command::Send(packet))?;
                let found = self.run_until(ANSWER_WITHIN, from, |_, e| {
                    e.host == name && matches!(&e.event, Event::Received(Packet::UnsubAck(a)) if a.packet_id == id)
                })?;
                found
                    .map(|_| ())
                    .ok_or_else(|| format!("{name}: no UNSUBACK within {ANSWER_WITHIN:?}"))
            }
            ClientAction::Publish(spec) => {
                let q = qos(spec.qos)?;
                let mut last = None;
                let from = self.mark();
                for n in 0..spec.count.unwrap_or(1) {
                    last = self.publish(name, spec, q, n)?;
                }
                let Some(id) = last else {
                    return self.run_for(Duration::from_millis(10));
                };
                // Let the flow finish if it can; faults may legitimately stop it.
                self.run_until(spec.settle.map_or(PUBLISH_SETTLE, |d| d.0), from, |_, e| {
                    e.host == name
                        && matches!(&e.event, Event::Received(Packet::PubAck(a) | Packet::PubComp(a)) if a.packet_id == id)
                })?;
                Ok(())
            }
            ClientAction::Disconnect => {
                self.send(
                    name,
                    Command::Send(Packet::Disconnect(Disconnect::normal())),
                )?;
                self.send(name, Command::Close)?;
                self.run_for(Duration::from_millis(10))
            }
            ClientAction::DisconnectWithReason(code) => {
                let reason = ReasonCode::from_u8(*code)
                    .ok_or_else(|| format!("no reason code {code:#04x}"))?;
                let packet = Packet::Disconnect(Disconnect {
                    reason_code: reason,
                    properties: Properties::new(),
                });
                self.send(name, Command::Send(packet))?;
                self.send(name, Command::Close)?;
                self.run_for(Duration::from_millis(10))
            }
            ClientAction::Close => {
                self.send(name, Command::Close)?;
                self.run_for(Duration::from_millis(10))
            }
            ClientAction::Raw(bytes) => {
                self.send(name, Command::Raw(bytes.0.clone()))?;
                self.run_for(Duration::from_millis(10))
            }
            ClientAction::Expect(expect) => self.expect(name, expect),
            ClientAction::Reauthenticate(spec) => {
                let scram = self.scenario.clients[name]
                    .scram
                    .as_ref()
                    .ok_or_else(|| format!("{name}: reauthenticate needs `scram` in its client"))?;
                let password = spec.password.clone().unwrap_or(scram.password.clone());
                let from = self.mark();
                self.send(name, Command::Reauthenticate(password))?;
                if spec.expect_failure {
                    return self.run_for(Duration::from_millis(10));
                }
                let done = self.run_until(ANSWER_WITHIN, from, |_, e| {
                    e.host == name
                        && matches!(&e.event, Event::Received(Packet::Auth(a)) if a.reason_code == ReasonCode::Success)
                })?;
                done.map(|_| ()).ok_or_else(|| {
                    format!("{name}: re-authentication did not finish within {ANSWER_WITHIN:?}")
                })
            }
        }
    }

    /// Sends message `n` of a publish step; returns its packet id (QoS 1/2).
    fn publish(
        &mut self,
        name: &str,
        spec: &PublishSpec,
        q: QoS,
        n: u32,
    ) -> Result<Option<PacketId>, String> {
        let id = (q != QoS::AtMostOnce).then(|| self.packet_id(name));
        let mut properties = Properties::new();
        for (k, v) in &spec.user_properties {
            properties.push(Property::UserProperty(s(k)?, s(v)?));
        }
        if let Some(expiry) = spec.message_expiry {
            properties.push(Property::MessageExpiryInterval(expiry));
        }
        if let Some(alias) = spec.topic_alias {
            properties.push(Property::TopicAlias(alias));
        }
        let numbered = |text: &str| match spec.count {
            Some(_) => crate::scenario::numbered(text, n),
            None => text.to_string(),
        };
        let packet = Packet::Publish(Publish {
            dup: false,
            qos: q,
            retain: spec.retain,
            content: Content::new(
                s(&numbered(&spec.topic))?,
                Bytes::from(numbered(&spec.payload)),
            ),
            packet_id: id,
            properties,
        });
        self.send(name, Command::Send(packet))?;
        Ok(id)
    }

    fn expect(&mut self, name: &str, expect: &Expect) -> Result<(), String> {
        let from = self.mark();
        if let Some(want) = &expect.publish {
            let within = expect.within.map_or(ANSWER_WITHIN, |d| d.0);
            let count = expect.count.unwrap_or(1) as usize;
            let consumed = self.consumed.clone();
            let mut matched = Vec::new();
            let start = match expect.any_order {
                true => 0,
                false => self.anchor.get(name).copied().unwrap_or(0),
            };
            let found = self.run_until(within, start, |i, e| {
                if e.host == name && publish_matches(want, &e.event) && !consumed.contains(&i) {
                    matched.push(i);
                }
                matched.len() >= count
            })?;
            return match found {
                Some(_) => {
                    let after = matched.iter().max().map_or(0, |last| last + 1);
                    let anchor = self.anchor.entry(name.to_string()).or_default();
                    *anchor = (*anchor).max(after);
                    self.consumed.extend(matched);
                    Ok(())
                }
                None => Err(format!(
                    "{name}: {} of {count} PUBLISHes matching {want:?} within {within:?}",
                    matched.len()
                )),
            };
        }
        if let Some(nothing) = &expect.nothing {
            let during = expect.during.ok_or("`nothing` needs `for`")?.0;
            self.run_for(during)?;
            let trace = self.trace.borrow();
            let unexpected = trace.entries[from..].iter().find(|e| {
                e.host == name
                    && matches!(&e.event, Event::Received(Packet::Publish(p))
                        if nothing.topic.as_deref().is_none_or(|t| p.topic() == t))
            });
            return match unexpected {
                Some(e) => Err(format!("{name}: expected nothing, got: {}", e.line())),
                None => Ok(()),
            };
        }
        if let Some(want) = &expect.disconnected {
            let within = expect.within.map_or(ANSWER_WITHIN, |d| d.0);
            // The connection may have ended during an earlier step: look from its CONNECT on.
            let from = {
                let trace = self.trace.borrow();
                trace
                    .entries
                    .iter()
                    .rposition(|e| {
                        e.host == name && matches!(e.event, Event::Sent(Packet::Connect(_)))
                    })
                    .unwrap_or(0)
            };
            let found = self.run_until(within, from, |_, e| {
                e.host == name
                    && matches!(
                        e.event,
                        Event::Closed {
                            by_client: false,
                            ..
                        }
                    )
            })?;
            if found.is_none() {
                return Err(format!("{name}: still connected after {within:?}"));
            }
            if let Some(reason) = want.reason {
                let trace = self.trace.borrow();
                let got = trace.entries[from..]
                    .iter()
                    .rev()
                    .find_map(|e| match &e.event {
                        Event::Received(Packet::Disconnect(d)) if e.host == name => {
                            Some(d.reason_code as u8)
                        }
                        _ => None,
                    });
                if got != Some(reason) {
                    return Err(format!(
                        "{name}: DISCONNECT reason {got:?}, expected {reason:#04x}"
                    ));
                }
            }
            return Ok(());
        }
        Err("an expect step needs `publish`, `nothing` or `disconnected`".into())
    }
}

fn publish_matches(want: &PublishMatch, event: &Event) -> bool {
    let Event::Received(Packet::Publish(p)) = event else {
        return false;
    };
    want.topic.as_deref().is_none_or(|t| p.topic() == t)
        && want
            .payload
            .as_deref()
            .is_none_or(|x| p.payload() == x.as_bytes())
        && want.qos.is_none_or(|q| p.qos.bits() == q)
        && want.retain.is_none_or(|r| p.retain == r)
        && want.dup.is_none_or(|d| p.dup == d)
        && want.user_properties.as_ref().is_none_or(|want| {
            let got: Vec<(String, String)> = p
                .properties
                .user_properties()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            &got == want
        })
}
