//! The `tern` binary itself: it starts, serves MQTT, reports bad config clearly, and exits 0
//! on SIGTERM after telling its clients.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use tern::codec::*;

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
    let mut out = BytesMut::new();
    encode(&packet, ProtocolVersion::V5, &mut out).unwrap();
    stream.write_all(&out).unwrap();
    read_packet(stream)
}

fn read_packet(stream: &mut TcpStream) -> Packet {
    let mut buf = BytesMut::new();
    loop {
        if let Some(packet) = decode(&mut buf, ProtocolVersion::V5, PACKET_BYTES_MAX).unwrap() {
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
    let mut child = spawn(&["--listen", &addr.to_string()]);
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
