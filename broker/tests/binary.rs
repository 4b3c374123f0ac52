//! The `tern` binary itself: it starts, serves MQTT, reports bad config clearly, and exits 0
//! on SIGTERM after telling its clients.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use tern::codec::*;
use tern::types::{PacketId, QoS};

/// SIGTERM, then everything it wrote.
fn terminate(child: Child) -> std::process::Output {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait_with_output().unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tern")
}

/// Connects, retrying while the broker starts.
fn connect(addr: SocketAddr) -> TcpStream {
    for _ in 0..100 {
        if let Ok(stream) = TcpStream::connect(addr) {
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            return stream;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("tern did not start listening on {addr}");
}

fn exchange(stream: &mut TcpStream, packet: Packet) -> Packet {
    write_packet(stream, packet);
    read_packet(stream)
}

fn write_packet(stream: &mut TcpStream, packet: Packet) {
    let mut out = BytesMut::new();
    encode(&packet, ProtocolVersion::V5, &mut out).unwrap();
    stream.write_all(&out).unwrap();
}

/// Reads one packet; only for exchanges where nothing else can follow it in the same read.
fn read_packet(stream: &mut TcpStream) -> Packet {
    read_buffered(stream, &mut BytesMut::new())
}

/// Reads one packet, keeping what follows it in `buf` for the next call.
fn read_buffered(stream: &mut TcpStream, buf: &mut BytesMut) -> Packet {
    loop {
        if let Some(packet) = decode(buf, ProtocolVersion::V5, PACKET_BYTES_MAX).unwrap() {
            return packet;
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).expect("read from tern");
        assert!(n > 0, "tern closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn serves_mqtt_and_exits_cleanly_on_sigterm() {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = spawn(&["--listen", &addr.to_string(), "--in-memory"]);
    let mut stream = connect(addr);
    let connect = Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 30,
        properties: Properties::new(),
        client_id: ByteStr::from_static("binary-test"),
        will: None,
        username: None,
        password: None,
        bridge: false,
    };
    match exchange(&mut stream, Packet::Connect(Box::new(connect))) {
        Packet::ConnAck(ack) => assert_eq!(ack.reason_code, ReasonCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    assert_eq!(exchange(&mut stream, Packet::PingReq), Packet::PingResp);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    match read_packet(&mut stream) {
        Packet::Disconnect(d) => assert_eq!(d.reason_code, ReasonCode::ServerShuttingDown),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    let exit = child.wait().unwrap();
    assert!(exit.success(), "tern exited with {exit}");
}

#[test]
fn broken_config_is_reported_with_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("tern-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.toml");
    std::fs::write(
        &path,
        "[limits]\ninflight_count_max = 10\nqueued_mesages_max = 5\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken.toml"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("queued_mesages_max"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn example_config_in_the_repository_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tern.example.toml");
    tern::config::Config::load(std::path::Path::new(path)).expect("tern.example.toml parses");
}

#[test]
fn help_lists_the_options() {
    let output = Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("--config") && text.contains("--listen"),
        "{text}"
    );
}

#[test]
fn scram_credential_is_printed_for_a_password_on_stdin() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("--scram-credential")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("tern runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let credential =
        tern::auth::scram::Credential::parse(text.trim()).expect("a stored credential");
    assert_eq!(credential.iterations, tern::auth::scram::ITERATIONS_DEFAULT);
    let derived = tern::auth::scram::Credential::derive(
        "correct horse",
        &credential.salt,
        credential.iterations,
    );
    assert_eq!(derived, credential, "the credential is the password's");
}

/// A fresh data directory, removed at drop.
struct DataDir(std::path::PathBuf);

impl DataDir {
    fn new(name: &str) -> DataDir {
        let dir = std::env::temp_dir().join(format!("tern-data-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        DataDir(dir)
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn v5_connect(id: &str, clean_start: bool) -> Packet {
    let mut properties = Properties::new();
    properties.push(Property::SessionExpiryInterval(3600));
    Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        clean_start,
        keep_alive: 0,
        properties,
        client_id: ByteStr::new(id).unwrap(),
        will: None,
        username: None,
        password: None,
        bridge: false,
    }))
}

fn connack(stream: &mut TcpStream, id: &str, clean_start: bool) -> ConnAck {
    match exchange(stream, v5_connect(id, clean_start)) {
        Packet::ConnAck(ack) => {
            assert_eq!(ack.reason_code, ReasonCode::Success);
            ack
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

// The promise of issue 12, on the real binary: a PUBACK means the message survives the broker
// being killed (SIGKILL: no shutdown, no flush) and comes to the persistent subscriber, as does
// its subscription and a retained message.
#[test]
fn acknowledged_messages_survive_sigkill() {
    let data = DataDir::new("sigkill");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let args = ["--listen", &addr.to_string(), "--data-dir", data.arg()];
    let mut child = spawn(&args);
    let mut sub = connect(addr);
    connack(&mut sub, "sub", true);
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        properties: Properties::new(),
        filters: vec![(
            ByteStr::from_static("t/#"),
            SubscriptionOptions::new(QoS::AtLeastOnce),
        )],
    });
    assert!(matches!(exchange(&mut sub, subscribe), Packet::SubAck(_)));
    drop(sub);
    let mut publisher = connect(addr);
    connack(&mut publisher, "pub", true);
    for n in 1..=50u16 {
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: n == 50,
            content: Content::new(
                ByteStr::new(&format!("t/{n}")).unwrap(),
                bytes::Bytes::from(n.to_string()),
            ),
            packet_id: PacketId::new(n),
            properties: Properties::new(),
        };
        match exchange(&mut publisher, Packet::Publish(publish)) {
            Packet::PubAck(ack) => assert_eq!(ack.packet_id.get(), n),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let mut child = spawn(&args);
    let mut sub = connect(addr);
    write_packet(&mut sub, v5_connect("sub", false));
    let mut buf = BytesMut::new();
    match read_buffered(&mut sub, &mut buf) {
        Packet::ConnAck(ack) => assert!(ack.session_present),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    let mut got = Vec::new();
    while got.len() < 50 {
        match read_buffered(&mut sub, &mut buf) {
            Packet::Publish(p) => {
                write_packet(&mut sub, Packet::PubAck(Ack::new(p.packet_id.unwrap())));
                got.push(String::from_utf8(p.payload().to_vec()).unwrap());
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    let expected: Vec<String> = (1..=50).map(|n: u16| n.to_string()).collect();
    assert_eq!(got, expected);
    let mut late = connect(addr);
    connack(&mut late, "late", true);
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        properties: Properties::new(),
        filters: vec![(
            ByteStr::from_static("t/50"),
            SubscriptionOptions::new(QoS::AtMostOnce),
        )],
    });
    write_packet(&mut late, subscribe);
    let mut buf = BytesMut::new();
    assert!(matches!(
        read_buffered(&mut late, &mut buf),
        Packet::SubAck(_)
    ));
    match read_buffered(&mut late, &mut buf) {
        Packet::Publish(p) => assert!(p.retain && p.payload() == b"50"),
        other => panic!("expected the retained message, got {other:?}"),
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_data_directory_in_use_is_refused_with_a_clear_error() {
    let data = DataDir::new("in-use");
    let first_addr = format!("127.0.0.1:{}", free_port());
    let mut first = spawn(&["--listen", &first_addr, "--data-dir", data.arg()]);
    connect(first_addr.parse().unwrap());
    let output = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args([
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
            data.arg(),
        ])
        .output()
        .unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tern.redb") && stderr.contains("another tern"),
        "{stderr}"
    );
}

// Logs go to stderr, and without terminal colour codes when it is not a terminal (a file, a
// pipe): `tern 2> tern.log` gives a readable file.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["--listen", &addr, "--in-memory"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    connect(addr.parse().unwrap());
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("listening for MQTT"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr:?}"
    );
    assert!(output.stdout.is_empty(), "logs on stdout");
}

/// The `tern` of an operator: JSON logs with one line per connect and per disconnect (client
/// id, address, listener, protocol, reason), and `/metrics` on the `[metrics]` address.
#[test]
fn json_logs_name_each_connect_and_disconnect_and_metrics_are_served() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = std::env::temp_dir().join(format!("tern-json-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "log_format = \"json\"\n[metrics]\nbind = \"{metrics}\"\n[persistence]\nenabled = false\n[[listener]]\nbind = \"{addr}\"\n"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stream = connect(addr);
    match exchange(&mut stream, v5_connect("json-logs", true)) {
        Packet::ConnAck(ack) => assert_eq!(ack.reason_code, ReasonCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    let local = stream.local_addr().unwrap();
    write_packet(&mut stream, Packet::Disconnect(Disconnect::normal()));
    // The broker closes after the DISCONNECT.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);

    let mut http = connect(metrics);
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: tern\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response.contains("\ntern_connections_accepted_total 1\n"),
        "{response}"
    );
    assert!(response.contains("\ntern_disconnections_total{by=\"client\"} 1\n"));

    let output = terminate(child);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let find = |message: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in {stderr}"))
    };
    for message in ["client connected", "client disconnected"] {
        let fields = &find(message)["fields"];
        assert_eq!(fields["client_id"], "json-logs", "{fields}");
        assert_eq!(fields["addr"], local.to_string().as_str(), "{fields}");
        assert_eq!(fields["listener"], 0, "{fields}");
        assert_eq!(fields["protocol"], 5, "{fields}");
    }
    let reason = &find("client disconnected")["fields"]["reason"];
    assert_eq!(reason, "client sent DISCONNECT (Success)");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client that sends garbage again and again gets one warning line per minute, not one per
/// connection: the log cannot be flooded from one address.
#[test]
fn repeated_hostile_input_from_one_address_is_warned_about_once() {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["--listen", &addr, "--in-memory"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: SocketAddr = addr.parse().unwrap();
    for _ in 0..50 {
        let mut stream = connect(addr);
        // Packet type 0 is reserved: malformed at the first byte.
        stream.write_all(&[0x00, 0x00]).unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    }
    let output = terminate(child);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let warnings = stderr.matches("hostile input").count();
    assert_eq!(warnings, 1, "{stderr}");
    assert!(stderr.contains("malformed packet"), "{stderr}");
}
