//! The TOML configuration file: listeners, limits, authentication.
//!
//! Every field is optional and defaults to `Limits::default()` (documented in `limits.rs` and
//! the README). Unknown keys are errors, so a typo cannot silently leave a default in place.
//! Errors name the file, the line and column, and the field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::auth::scram::{Credential, CREDENTIAL_PREFIX, ITERATIONS_DEFAULT, ITERATIONS_MAX};
use crate::codec::ByteStr;
use crate::core;
use crate::limits::{Limits, QueueOverflow};
use crate::net::tls::TlsFiles;
use crate::types::QoS;

/// Where the broker listens when nothing is configured: loopback only, like Mosquitto 2.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1883";

/// The WebSocket path when a listener names none (what MQTT.js and Paho use).
pub const DEFAULT_WEBSOCKET_PATH: &str = "/mqtt";

/// Where the store lives when nothing is configured (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "./tern-data";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config file {path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

/// One listener: where, over what, and with which password file and ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub bind: SocketAddr,
    /// Some: MQTT over WebSocket, upgraded on this path.
    pub websocket_path: Option<String>,
    /// Some: TLS (under the WebSocket, if both).
    pub tls: Option<TlsFiles>,
    /// The listener's password file (its own, or `[auth]`'s).
    pub password_file: Option<PathBuf>,
    /// The listener's ACL file (its own, or `[auth]`'s).
    pub acl_file: Option<PathBuf>,
}

impl ListenerConfig {
    /// Plain MQTT on `bind`, with `[auth]`'s files.
    pub fn plain(bind: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            bind,
            websocket_path: None,
            tls: None,
            password_file: None,
            acl_file: None,
        }
    }
}

/// The whole configuration, as used by the binary.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listeners: Vec<ListenerConfig>,
    pub core: core::Config,
    /// The data directory of the store; `None`: nothing survives the process.
    pub data_dir: Option<PathBuf>,
    /// `[auth]`'s password and ACL files: what a listener without its own uses.
    pub password_file: Option<PathBuf>,
    pub acl_file: Option<PathBuf>,
    /// `[auth] allow_anonymous` as written. Unset, anonymous clients are accepted only where
    /// there is no password file (Mosquitto 2 refuses them once authentication is set up).
    pub allow_anonymous: Option<bool>,
    /// `[metrics] bind`: where Prometheus text is served (`/metrics`); `None`: nowhere.
    pub metrics_bind: Option<SocketAddr>,
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text per event (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl Default for Config {
    fn default() -> Config {
        let mut config = Config {
            listeners: Vec::new(),
            core: core::Config::default(),
            data_dir: Some(PathBuf::from(DEFAULT_DATA_DIR)),
            password_file: None,
            acl_file: None,
            allow_anonymous: None,
            metrics_bind: None,
            log_format: LogFormat::Text,
        };
        config.replace_listeners(&[DEFAULT_LISTEN.parse().expect("valid address")]);
        config
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// "text" or "json".
    log_format: Option<String>,
    /// How often `$SYS` is published (Mosquitto's `sys_interval`); 0: never.
    sys_interval_secs: Option<u64>,
    #[serde(default)]
    metrics: MetricsSection,
    #[serde(default)]
    listener: Vec<ListenerSection>,
    #[serde(default)]
    auth: AuthSection,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    features: FeaturesSection,
    #[serde(default)]
    persistence: PersistenceSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    bind: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersistenceSection {
    enabled: Option<bool>,
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeaturesSection {
    shared_subscriptions: Option<bool>,
    maximum_qos: Option<u8>,
    retain_available: Option<bool>,
    response_information: Option<String>,
    server_reference: Option<String>,
    server_moved: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerSection {
    bind: String,
    /// "mqtt" (default) or "websocket".
    protocol: Option<String>,
    websocket_path: Option<String>,
    allow_anonymous: Option<bool>,
    password_file: Option<PathBuf>,
    acl_file: Option<PathBuf>,
    tls: Option<TlsSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    require_certificate: bool,
    #[serde(default)]
    use_identity_as_username: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    allow_anonymous: Option<bool>,
    password_file: Option<PathBuf>,
    acl_file: Option<PathBuf>,
    #[serde(default)]
    users: BTreeMap<String, String>,
    #[serde(default)]
    scram: ScramSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScramSection {
    #[serde(default)]
    users: BTreeMap<String, String>,
    iterations: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    connect_timeout_secs: Option<u64>,
    packet_bytes_max: Option<usize>,
    inflight_count_max: Option<u16>,
    receive_maximum_count: Option<u16>,
    queued_messages_max: Option<usize>,
    queued_bytes_max: Option<usize>,
    queued_message_age_max_secs: Option<u64>,
    queue_qos0: Option<bool>,
    queue_overflow: Option<String>,
    keep_alive_grace_tenths: Option<u32>,
    keep_alive_max_secs: Option<u16>,
    session_expiry_max_secs: Option<u32>,
    sessions_max: Option<usize>,
    subscriptions_per_session_max: Option<usize>,
    retained_messages_max: Option<usize>,
    retained_bytes_max: Option<usize>,
    memory_bytes_max: Option<usize>,
    topic_alias_max: Option<u16>,
    outbound_topic_alias_max: Option<u16>,
    client_id_bytes_max: Option<usize>,
    topic_levels_max: Option<usize>,
    connections_max: Option<usize>,
    outbound_queue_packets_max: Option<usize>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Replaces the listeners with plain MQTT ones on `addrs` (`tern --listen`), logging
    /// clients in with `[auth]`'s settings and files.
    pub fn replace_listeners(&mut self, addrs: &[SocketAddr]) {
        self.listeners = addrs
            .iter()
            .map(|&bind| ListenerConfig {
                password_file: self.password_file.clone(),
                acl_file: self.acl_file.clone(),
                ..ListenerConfig::plain(bind)
            })
            .collect();
        let access = core::ListenerAccess {
            allow_anonymous: self.allow_anonymous.unwrap_or(self.password_file.is_none()),
            password_file: self.password_file.is_some(),
            use_identity_as_username: false,
        };
        self.core.listeners = vec![access; addrs.len()];
    }

    /// Parses config text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        let invalid = |field, message: String| ConfigError::Invalid {
            path: path.into(),
            field,
            message,
        };
        let mut config = Config {
            allow_anonymous: file.auth.allow_anonymous,
            ..Config::default()
        };
        config.core.allow_anonymous = file
            .auth
            .allow_anonymous
            .unwrap_or(file.auth.password_file.is_none());
        if !file.listener.is_empty() {
            let (listeners, access) = file
                .listener
                .iter()
                .cloned()
                .map(|section| read_listener(section, &file.auth))
                .collect::<Result<(Vec<_>, Vec<_>), _>>()
                .map_err(|(field, message)| invalid(field, message))?;
            config.listeners = listeners;
            config.core.listeners = access;
        }
        config.password_file = file.auth.password_file.clone();
        config.acl_file = file.auth.acl_file.clone();
        if file.listener.is_empty() {
            config.replace_listeners(&[DEFAULT_LISTEN.parse().expect("valid address")]);
        }
        if let Some(dir) = file.persistence.data_dir {
            config.data_dir = Some(dir);
        }
        if file.persistence.enabled == Some(false) {
            config.data_dir = None;
        }
        config.core.users = file.auth.users;
        read_scram(file.auth.scram, &mut config.core.scram)
            .map_err(|(field, message)| invalid(field, message))?;
        read_limits(file.limits, &mut config.core.limits)
            .map_err(|(field, message)| invalid(field, message))?;
        read_features(file.features, &mut config.core.features)
            .map_err(|(field, message)| invalid(field, message))?;
        if let Some(format) = file.log_format {
            config.log_format = match format.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(invalid(
                        "log_format",
                        format!("{other:?} is not one of \"text\", \"json\""),
                    ))
                }
            };
        }
        if let Some(secs) = file.sys_interval_secs {
            config.core.sys_interval = Duration::from_secs(secs);
        }
        if let Some(bind) = file.metrics.bind {
            let addr = bind
                .parse()
                .map_err(|e| invalid("metrics.bind", format!("{bind:?}: {e}")))?;
            config.metrics_bind = Some(addr);
        }
        Ok(config)
    }
}

/// One `[[listener]]`: its address and transport, and its login policy (its own settings,
/// else `[auth]`'s).
fn read_listener(
    section: ListenerSection,
    auth: &AuthSection,
) -> Result<(ListenerConfig, core::ListenerAccess), (&'static str, String)> {
    let bind = section.bind.parse().map_err(|e| {
        (
            "listener.bind",
            format!("{:?} is not an address: {e}", section.bind),
        )
    })?;
    let websocket_path = read_websocket_path(section.protocol.as_deref(), section.websocket_path)?;
    let use_identity_as_username = section
        .tls
        .as_ref()
        .is_some_and(|tls| tls.use_identity_as_username);
    let tls = section.tls.map(read_tls).transpose()?;
    let password_file = section.password_file.or_else(|| auth.password_file.clone());
    let access = core::ListenerAccess {
        allow_anonymous: section
            .allow_anonymous
            .or(auth.allow_anonymous)
            .unwrap_or(password_file.is_none()),
        password_file: password_file.is_some(),
        use_identity_as_username,
    };
    let listener = ListenerConfig {
        bind,
        websocket_path,
        tls,
        password_file,
        acl_file: section.acl_file.or_else(|| auth.acl_file.clone()),
    };
    Ok((listener, access))
}

/// `protocol` and `websocket_path`: the WebSocket path, if the listener speaks WebSocket.
fn read_websocket_path(
    protocol: Option<&str>,
    path: Option<String>,
) -> Result<Option<String>, (&'static str, String)> {
    let websocket = match protocol {
        None | Some("mqtt") => false,
        Some("websocket") => true,
        Some(other) => {
            return Err((
                "listener.protocol",
                format!("{other:?} is not one of \"mqtt\", \"websocket\""),
            ))
        }
    };
    match (websocket, path) {
        (false, Some(_)) => Err((
            "listener.websocket_path",
            "needs protocol = \"websocket\"".into(),
        )),
        (false, None) => Ok(None),
        (true, None) => Ok(Some(DEFAULT_WEBSOCKET_PATH.to_owned())),
        (true, Some(path)) if path.starts_with('/') => Ok(Some(path)),
        (true, Some(path)) => Err((
            "listener.websocket_path",
            format!("{path:?} must start with /"),
        )),
    }
}

/// `[listener.tls]`: the files, and whether a client certificate is required.
fn read_tls(tls: TlsSection) -> Result<TlsFiles, (&'static str, String)> {
    if (tls.require_certificate || tls.use_identity_as_username) && tls.client_ca_file.is_none() {
        return Err((
            "listener.tls.client_ca_file",
            "require_certificate and use_identity_as_username need a client_ca_file".into(),
        ));
    }
    Ok(TlsFiles {
        cert_file: tls.cert_file,
        key_file: tls.key_file,
        client_ca_file: tls.client_ca_file,
        // A certificate whose identity is the user name is needed, not optional.
        require_certificate: tls.require_certificate || tls.use_identity_as_username,
    })
}

/// `[auth.scram]`: stored credentials must parse; iterations within what RFC 7677 asks.
fn read_scram(
    section: ScramSection,
    scram: &mut core::ScramConfig,
) -> Result<(), (&'static str, String)> {
    for (user, secret) in &section.users {
        if secret.starts_with(CREDENTIAL_PREFIX) {
            Credential::parse(secret)
                .map_err(|why| ("auth.scram.users", format!("user {user:?}: {why}")))?;
        }
    }
    scram.users = section.users;
    if let Some(iterations) = section.iterations {
        let range = ITERATIONS_DEFAULT..=ITERATIONS_MAX;
        if !range.contains(&iterations) {
            return Err((
                "auth.scram.iterations",
                format!("{iterations} is outside {ITERATIONS_DEFAULT}..={ITERATIONS_MAX} (RFC 7677 asks for at least 4096)"),
            ));
        }
        scram.iterations = iterations;
    }
    Ok(())
}

/// `[limits]`: each value given replaces its default; then the limits are checked together.
fn read_limits(l: LimitsSection, limits: &mut Limits) -> Result<(), (&'static str, String)> {
    macro_rules! set {
        ($($field:ident),*) => { $(if let Some(v) = l.$field { limits.$field = v; })* };
    }
    set!(
        packet_bytes_max,
        inflight_count_max,
        receive_maximum_count,
        queued_messages_max,
        queued_bytes_max,
        queue_qos0,
        keep_alive_max_secs,
        sessions_max,
        subscriptions_per_session_max,
        retained_messages_max,
        retained_bytes_max,
        memory_bytes_max,
        topic_alias_max,
        outbound_topic_alias_max,
        client_id_bytes_max,
        topic_levels_max,
        connections_max,
        outbound_queue_packets_max
    );
    if let Some(secs) = l.connect_timeout_secs {
        limits.connect_timeout = Duration::from_secs(secs);
    }
    if let Some(secs) = l.queued_message_age_max_secs {
        limits.queued_message_age_max = Duration::from_secs(secs);
    }
    if let Some(tenths) = l.keep_alive_grace_tenths {
        limits.keep_alive_tenths = tenths;
    }
    if let Some(secs) = l.session_expiry_max_secs {
        limits.session_expiry_max_secs = secs;
    }
    if let Some(policy) = l.queue_overflow {
        limits.queue_overflow = match policy.as_str() {
            "drop_oldest" => QueueOverflow::DropOldest,
            "drop_newest" => QueueOverflow::DropNewest,
            other => {
                return Err((
                    "limits.queue_overflow",
                    format!("{other:?} is not one of \"drop_oldest\", \"drop_newest\""),
                ))
            }
        };
    }
    validate(limits)
}

fn read_features(
    section: FeaturesSection,
    features: &mut core::Features,
) -> Result<(), (&'static str, String)> {
    if let Some(on) = section.shared_subscriptions {
        features.shared_subscriptions = on;
    }
    if let Some(on) = section.retain_available {
        features.retain_available = on;
    }
    if let Some(level) = section.maximum_qos {
        features.maximum_qos = QoS::from_bits(level)
            .ok_or(("features.maximum_qos", format!("{level} is not 0, 1 or 2")))?;
    }
    let mqtt_string = |field: &'static str, text: String| {
        ByteStr::new(&text)
            .map(|_| text)
            .map_err(|e| (field, format!("not a valid MQTT string: {e:?}")))
    };
    if let Some(text) = section.response_information {
        features.response_information = Some(mqtt_string("features.response_information", text)?);
    }
    if let Some(text) = section.server_reference {
        if text.is_empty() {
            return Err(("features.server_reference", "must not be empty".into()));
        }
        features.server_reference = Some(mqtt_string("features.server_reference", text)?);
    }
    if let Some(moved) = section.server_moved {
        if moved && features.server_reference.is_none() {
            return Err((
                "features.server_moved",
                "needs features.server_reference (where clients should go)".into(),
            ));
        }
        features.server_moved = moved;
    }
    Ok(())
}

/// Values that parse but cannot work.
/// The smallest outbound queue that leaves room for both deliveries and replies.
const OUTBOUND_QUEUE_PACKETS_MIN: usize = 4;

fn validate(limits: &Limits) -> Result<(), (&'static str, String)> {
    let positive = [
        ("limits.packet_bytes_max", limits.packet_bytes_max),
        (
            "limits.inflight_count_max",
            limits.inflight_count_max.into(),
        ),
        (
            "limits.receive_maximum_count",
            limits.receive_maximum_count.into(),
        ),
        ("limits.connections_max", limits.connections_max),
        (
            "limits.outbound_queue_packets_max",
            limits.outbound_queue_packets_max,
        ),
        ("limits.sessions_max", limits.sessions_max),
        ("limits.topic_levels_max", limits.topic_levels_max),
    ];
    for (field, value) in positive {
        if value == 0 {
            return Err((field, "must be at least 1".into()));
        }
    }
    if limits.packet_bytes_max > crate::codec::PACKET_BYTES_MAX {
        return Err((
            "limits.packet_bytes_max",
            format!("must be at most {}", crate::codec::PACKET_BYTES_MAX),
        ));
    }
    if limits.outbound_queue_packets_max < OUTBOUND_QUEUE_PACKETS_MIN {
        return Err((
            "limits.outbound_queue_packets_max",
            format!(
                "must be at least {OUTBOUND_QUEUE_PACKETS_MIN} (a quarter is kept for replies)"
            ),
        ));
    }
    if limits.keep_alive_tenths < 10 {
        return Err((
            "limits.keep_alive_grace_tenths",
            "must be at least 10 (1.0x the keep alive)".into(),
        ));
    }
    if limits.connect_timeout.is_zero() {
        return Err(("limits.connect_timeout_secs", "must be at least 1".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("tern.toml"))
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn every_section_is_read() {
        let config = parse(
            r#"
            [[listener]]
            bind = "127.0.0.1:1884"
            [[listener]]
            bind = "[::1]:1885"
            [auth]
            allow_anonymous = false
            users = { alice = "secret" }
            [limits]
            queued_messages_max = 5
            queue_overflow = "drop_newest"
            connect_timeout_secs = 3
            "#,
        )
        .unwrap();
        let observed = parse(
            r#"
            log_format = "json"
            sys_interval_secs = 0
            [metrics]
            bind = "127.0.0.1:9883"
            "#,
        )
        .unwrap();
        assert_eq!(observed.log_format, LogFormat::Json);
        assert_eq!(observed.core.sys_interval, Duration::ZERO);
        assert_eq!(
            observed.metrics_bind,
            Some("127.0.0.1:9883".parse().unwrap())
        );
        assert_eq!(
            parse("").unwrap().core.sys_interval,
            Duration::from_secs(10)
        );
        let wrong = parse("log_format = \"xml\"").unwrap_err().to_string();
        assert!(wrong.contains("log_format"), "{wrong}");
        let wrong = parse("[metrics]\nbind = \"localhost\"")
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("metrics.bind"), "{wrong}");
        assert_eq!(config.listeners.len(), 2);
        assert!(!config.core.allow_anonymous);
        assert_eq!(config.core.users["alice"], "secret");
        assert_eq!(config.core.limits.queued_messages_max, 5);
        assert_eq!(config.core.limits.queue_overflow, QueueOverflow::DropNewest);
        assert_eq!(config.core.limits.connect_timeout, Duration::from_secs(3));
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let err = parse("[limits]\nqueued_messages_max = 5\nqueue_lenght = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tern.toml"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("queue_lenght"), "{err}");

        let err = parse("[limits]\ninflight_count_max = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("inflight_count_max"),
            "{err}"
        );

        let err = parse("[[listener]]\nbind = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listener.bind"), "{err}");

        let err = parse("[limits]\ninflight_count_max = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("limits.inflight_count_max") && err.contains("at least 1"),
            "{err}"
        );

        let err = parse("[limits]\nqueue_overflow = \"drop_all\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.queue_overflow"), "{err}");

        let err = parse("[features]\nmaximum_qos = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("features.maximum_qos"), "{err}");

        let err = parse("[features]\nserver_moved = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("features.server_moved"), "{err}");
    }

    #[test]
    fn scram_users_are_read_and_iterations_checked() {
        let config = parse("[auth.scram]\nusers = { bob = \"pw\" }\niterations = 10000\n").unwrap();
        assert_eq!(config.core.scram.users["bob"], "pw");
        assert_eq!(config.core.scram.iterations, 10000);
        let err = parse("[auth.scram]\niterations = 10\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.scram.iterations"), "{err}");
        let err = parse("[auth.scram]\nusers = { bob = \"SCRAM-SHA-256$1:x\" }\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth.scram.users") && err.contains("bob"),
            "{err}"
        );
    }

    #[test]
    fn listeners_read_their_transport_and_login_policy() {
        let config = parse(
            r#"
            [[listener]]
            bind = "127.0.0.1:1883"
            [[listener]]
            bind = "127.0.0.1:8084"
            protocol = "websocket"
            allow_anonymous = true
            acl_file = "ws.acl"
            [listener.tls]
            cert_file = "s.crt"
            key_file = "s.key"
            client_ca_file = "ca.crt"
            use_identity_as_username = true
            [auth]
            password_file = "passwords"
            "#,
        )
        .unwrap();
        let [plain, wss] = &config.listeners[..] else {
            panic!("two listeners")
        };
        assert_eq!(plain.websocket_path, None);
        assert_eq!(plain.password_file.as_deref(), Some(Path::new("passwords")));
        assert_eq!(wss.websocket_path.as_deref(), Some("/mqtt"));
        assert_eq!(wss.acl_file.as_deref(), Some(Path::new("ws.acl")));
        let tls = wss.tls.as_ref().unwrap();
        assert!(tls.require_certificate, "the identity needs a certificate");
        // With a password file, anonymous access is off unless a listener turns it on.
        assert!(!config.core.listeners[0].allow_anonymous);
        assert!(config.core.listeners[1].allow_anonymous);
        assert!(config.core.listeners[1].use_identity_as_username);
        assert!(config.core.listeners[0].password_file);
        // `--listen` keeps [auth]'s files and policy.
        let mut replaced = config.clone();
        replaced.replace_listeners(&["127.0.0.1:1".parse().unwrap()]);
        assert!(!replaced.core.listeners[0].allow_anonymous);
        assert!(replaced.listeners[0].password_file.is_some());

        let err = |text: &str| parse(text).unwrap_err().to_string();
        let e = err("[[listener]]\nbind = \"127.0.0.1:1\"\nprotocol = \"quic\"\n");
        assert!(e.contains("listener.protocol"), "{e}");
        let e = err("[[listener]]\nbind = \"127.0.0.1:1\"\nwebsocket_path = \"/x\"\n");
        assert!(e.contains("listener.websocket_path"), "{e}");
        let e = err("[[listener]]\nbind = \"127.0.0.1:1\"\nprotocol = \"websocket\"\nwebsocket_path = \"x\"\n");
        assert!(e.contains("must start with /"), "{e}");
        let e = err("[[listener]]\nbind = \"127.0.0.1:1\"\n[listener.tls]\ncert_file = \"a\"\nkey_file = \"b\"\nrequire_certificate = true\n");
        assert!(e.contains("client_ca_file"), "{e}");
    }

    #[test]
    fn features_are_read() {
        let config = parse(
            r#"
            [features]
            shared_subscriptions = false
            maximum_qos = 1
            retain_available = false
            response_information = "replies/{client_id}"
            server_reference = "mqtt2.example.com:1883"
            server_moved = true
            "#,
        )
        .unwrap();
        let features = &config.core.features;
        assert!(!features.shared_subscriptions);
        assert_eq!(features.maximum_qos, QoS::AtLeastOnce);
        assert!(!features.retain_available);
        assert_eq!(
            features.response_information.as_deref(),
            Some("replies/{client_id}")
        );
        assert!(features.server_moved);
    }
}
