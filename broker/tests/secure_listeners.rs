//! The binary with the getting-started setup an operator copies: TLS with a password file
//! and an ACL, a listener that takes client certificates, reached by Mosquitto's own
//! mosquitto_pub and mosquitto_sub; SIGHUP reloads the ACL; `tern passwd` writes the file.
//! Certificates are made by the test (`tern_conformance::pki`).

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tern_conformance::pki::{Pki, CLIENT_CN};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mosquitto_clients_present() -> bool {
    Command::new("mosquitto_pub").arg("--help").output().is_ok()
}

/// `tern passwd` with the password on standard input.
fn tern_passwd(args: &[&str], password: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("passwd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

struct Tern(Child);

impl Drop for Tern {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("tern did not listen on {port}");
}

fn mosquitto(program: &str, pki: &Pki, port: u16, args: &[&str]) -> Command {
    // Line-buffered output (coreutils' stdbuf): mosquitto_sub's "received SUBACK" must reach
    // the test when it happens, not when the pipe's buffer fills.
    let mut command = Command::new("stdbuf");
    command
        .args(["-oL", program])
        .args(["-h", "localhost", "-p", &port.to_string(), "--cafile"])
        .arg(&pki.ca_file)
        .args(args);
    command
}

fn publish(pki: &Pki, port: u16, args: &[&str]) -> Output {
    mosquitto("mosquitto_pub", pki, port, args)
        .output()
        .unwrap()
}

/// A mosquitto_sub waiting for one message; its output is kept open (a closed pipe would
/// kill it when it prints the message).
struct Subscriber {
    child: Child,
    _output: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Subscriber {
    /// Whether it received its message (and exited 0), waiting at most 20 s.
    fn received(mut self) -> bool {
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        false
    }

    fn done(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(status)) if status.success())
    }
}

/// Starts mosquitto_sub for one message and waits until it is subscribed (its -d output
/// shows the SUBACK).
fn subscribe_one(pki: &Pki, port: u16, args: &[&str]) -> Subscriber {
    let mut child = mosquitto("mosquitto_sub", pki, port, args)
        .args(["-C", "1", "-W", "20", "-d"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    for line in lines.by_ref() {
        if line.unwrap().to_lowercase().contains("received suback") {
            break;
        }
    }
    Subscriber {
        child,
        _output: lines,
    }
}

fn config(dir: &Path, pki: &Pki, tls_port: u16, cert_port: u16) -> String {
    let path = |p: &Path| p.display().to_string();
    format!(
        r#"
[[listener]]
bind = "127.0.0.1:{tls_port}"
allow_anonymous = false
[listener.tls]
cert_file = "{cert}"
key_file = "{key}"

[[listener]]
bind = "127.0.0.1:{cert_port}"
[listener.tls]
cert_file = "{cert}"
key_file = "{key}"
client_ca_file = "{ca}"
use_identity_as_username = true

[auth]
password_file = "{passwords}"
acl_file = "{acl}"

[persistence]
enabled = false
"#,
        cert = path(&pki.server_cert_file),
        key = path(&pki.server_key_file),
        ca = path(&pki.ca_file),
        passwords = path(&dir.join("passwords")),
        acl = path(&dir.join("acl")),
    )
}

const ACL: &str = "user alice\ntopic readwrite sensors/#\nuser bob\ntopic read sensors/#\npattern readwrite devices/%u/#\n";

#[test]
fn mosquitto_clients_over_tls_with_a_password_file_an_acl_and_client_certificates() {
    if !mosquitto_clients_present() {
        // scripts/test.sh installs mosquitto-clients; a bare `cargo test` may lack them.
        panic!("mosquitto_pub/mosquitto_sub are missing: run ./scripts/test.sh (it installs them)");
    }
    let dir = std::env::temp_dir().join(format!("tern-secure-{}", std::process::id()));
    let pki = Pki::generate(&dir.join("pki")).unwrap();
    let passwords = dir.join("passwords");
    let _ = std::fs::remove_file(&passwords);
    // tern passwd writes argon2id; mosquitto_passwd adds a PBKDF2 user to the same file.
    let made = tern_passwd(
        &["--create", passwords.to_str().unwrap(), "alice"],
        "alice-pw",
    );
    assert!(made.status.success(), "{made:?}");
    let added = Command::new("mosquitto_passwd")
        .args(["-b", passwords.to_str().unwrap(), "bob", "bob-pw"])
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    std::fs::write(dir.join("acl"), ACL).unwrap();
    let (tls_port, cert_port) = (free_port(), free_port());
    let config_path = dir.join("tern.toml");
    std::fs::write(&config_path, config(&dir, &pki, tls_port, cert_port)).unwrap();
    let tern = Tern(
        Command::new(env!("CARGO_BIN_EXE_tern"))
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("tern.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for_port(tls_port);
    wait_for_port(cert_port);

    // bob (PBKDF2, read only) receives what alice (argon2id) publishes, over TLS.
    let sub = subscribe_one(
        &pki,
        tls_port,
        &["-u", "bob", "-P", "bob-pw", "-t", "sensors/#"],
    );
    let sent = publish(
        &pki,
        tls_port,
        &[
            "-u",
            "alice",
            "-P",
            "alice-pw",
            "-t",
            "sensors/kitchen",
            "-m",
            "21.5",
        ],
    );
    assert!(sent.status.success(), "{sent:?}");
    assert!(sub.received(), "bob got nothing");

    // A wrong password and an unknown user are refused; anonymous is refused here.
    for args in [
        &["-u", "alice", "-P", "wrong", "-t", "sensors/x", "-m", "x"][..],
        &["-u", "mallory", "-P", "x", "-t", "sensors/x", "-m", "x"],
        &["-t", "sensors/x", "-m", "x"],
    ] {
        let refused = publish(&pki, tls_port, args);
        assert!(!refused.status.success(), "{args:?} was accepted");
    }
    // No certificate trust, no connection: the client checks the server too.
    let untrusted = Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &tls_port.to_string(), "--cafile"])
        .arg(&pki.stranger_cert_file)
        .args([
            "-u",
            "alice",
            "-P",
            "alice-pw",
            "-t",
            "sensors/x",
            "-m",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!untrusted.status.success());

    // The certificate listener: the CN is the user name, %u in the ACL pattern.
    let own = format!("devices/{CLIENT_CN}/state");
    let cert_args = |topic: &str| -> Vec<String> {
        vec![
            "--cert".into(),
            pki.client_cert_file.display().to_string(),
            "--key".into(),
            pki.client_key_file.display().to_string(),
            "-t".into(),
            topic.into(),
        ]
    };
    let args = cert_args(&own);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sub = subscribe_one(&pki, cert_port, &args);
    let mut pub_args = args.clone();
    pub_args.extend(["-m", "on"]);
    assert!(publish(&pki, cert_port, &pub_args).status.success());
    assert!(sub.received(), "the certificate client got nothing");
    // Without a certificate the handshake fails.
    let no_cert = publish(&pki, cert_port, &["-t", &own, "-m", "x"]);
    assert!(!no_cert.status.success());
    // A certificate from another CA fails too.
    let stranger = publish(
        &pki,
        cert_port,
        &[
            "--cert",
            pki.stranger_cert_file.to_str().unwrap(),
            "--key",
            pki.stranger_key_file.to_str().unwrap(),
            "-t",
            &own,
            "-m",
            "x",
        ],
    );
    assert!(!stranger.status.success());

    // bob may not write: his publish never reaches alice, before or after a broken ACL file
    // is "reloaded" (a broken file keeps the old rules, it never opens everything up).
    let bob_publishes = || {
        let sent = publish(
            &pki,
            tls_port,
            &[
                "-u",
                "bob",
                "-P",
                "bob-pw",
                "-q",
                "1",
                "-t",
                "sensors/hall",
                "-m",
                "20",
            ],
        );
        assert!(sent.status.success(), "{sent:?}");
    };
    for broken_reload in [false, true] {
        if broken_reload {
            std::fs::write(dir.join("acl"), "this is not an ACL\n").unwrap();
            hangup(&tern);
        }
        let mut sub = subscribe_one(
            &pki,
            tls_port,
            &["-u", "alice", "-P", "alice-pw", "-t", "sensors/#"],
        );
        bob_publishes();
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            !sub.done(),
            "bob wrote without the right (broken reload: {broken_reload})"
        );
        let _ = sub.child.kill();
    }
    // SIGHUP re-reads the ACL: bob may now write.
    std::fs::write(
        dir.join("acl"),
        ACL.replace("topic read sensors/#", "topic readwrite sensors/#"),
    )
    .unwrap();
    hangup(&tern);
    let mut sub = subscribe_one(
        &pki,
        tls_port,
        &["-u", "alice", "-P", "alice-pw", "-t", "sensors/#"],
    );
    // Published at QoS 1 until it arrives: the reload is asynchronous.
    let mut delivered = false;
    for _ in 0..20 {
        bob_publishes();
        std::thread::sleep(Duration::from_millis(100));
        if sub.done() {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "bob's publish never arrived after the reload");
    let log = std::fs::read_to_string(dir.join("tern.log")).unwrap();
    assert!(
        log.contains("ACL not reloaded; keeping the old one") && log.contains("ACL reloaded"),
        "{log}"
    );
    let _ = sub.child.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

fn hangup(tern: &Tern) {
    let status = Command::new("kill")
        .args(["-HUP", &tern.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn tern_passwd_creates_updates_and_deletes_users() {
    let dir = std::env::temp_dir().join(format!("tern-passwd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("passwords");
    let path = file.to_str().unwrap();
    let missing = tern_passwd(&[path, "alice"], "pw");
    assert!(
        !missing.status.success(),
        "edited a file that does not exist"
    );
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--create"));
    assert!(tern_passwd(&["--create", path, "alice"], "pw1")
        .status
        .success());
    assert!(tern_passwd(&[path, "bob"], "pw2").status.success());
    assert!(tern_passwd(&[path, "alice"], "pw3").status.success());
    let passwords = tern::auth::password_file::PasswordFile::load(&file).unwrap();
    assert_eq!(passwords.len(), 2);
    assert!(passwords.verify("alice", b"pw3"));
    assert!(!passwords.verify("alice", b"pw1"));
    assert!(passwords.verify("bob", b"pw2"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("alice:$argon2id$") && !text.contains("pw3"),
        "{text}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the file is readable by others");
    }
    assert!(tern_passwd(&["-D", path, "bob"], "").status.success());
    assert!(
        !tern_passwd(&["-D", path, "bob"], "").status.success(),
        "deleted twice"
    );
    assert_eq!(
        tern::auth::password_file::PasswordFile::load(&file)
            .unwrap()
            .len(),
        1
    );
    let bad = tern_passwd(&[path, "a:b"], "pw");
    assert!(!bad.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
