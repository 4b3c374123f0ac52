//! A real browser: MQTT.js in headless Chromium subscribes and publishes through Tern over
//! WebSocket and over secure WebSocket, trusting the test CA (put in the NSS database of a
//! home directory of its own). Needs Chromium (Debian's `chromium`), `certutil` and the npm
//! packages of `tests/browser/`, which `scripts/test.sh` installs; without them the test says
//! what is missing and is skipped.

use std::path::Path;
use std::process::Command;

use tern_conformance::broker::{listener_for, Broker};
use tern_conformance::client::Net;
use tern_conformance::pki::Pki;

const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");

/// What is missing to run the browser, if anything.
fn missing() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some(format!("no Chromium at {chromium}"));
    }
    if Command::new("certutil").arg("-H").output().is_err() {
        return Some("no certutil (libnss3-tools)".into());
    }
    if !Path::new(BROWSER_DIR)
        .join("node_modules/playwright-core")
        .exists()
    {
        return Some("no node_modules in tests/browser (npm ci)".into());
    }
    None
}

/// A home directory whose NSS database trusts the test CA: Chromium on Linux reads its
/// trust anchors from there.
fn home_trusting(pki: &Pki) -> std::path::PathBuf {
    let home = pki.dir.join("browser-home");
    let nssdb = home.join(".pki/nssdb");
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&nssdb).unwrap();
    let db = format!("sql:{}", nssdb.display());
    let made = Command::new("certutil")
        .args(["-N", "--empty-password", "-d", &db])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let added = Command::new("certutil")
        .args(["-A", "-t", "C,,", "-n", "tern-test-ca", "-d", &db, "-i"])
        .arg(&pki.ca_file)
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    home
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_js_in_chromium_round_trips_over_ws_and_wss() {
    if let Some(what) = missing() {
        eprintln!("SKIPPED: the browser test needs Chromium and its npm packages: {what}; run ./scripts/test.sh, which installs them");
        return;
    }
    let broker = Broker::start(tern::core::Config::default()).await.unwrap();
    let ws = listener_for(broker.addr, Net::Ws);
    let wss = listener_for(broker.addr, Net::Wss);
    let home = home_trusting(Pki::shared());
    let mut node = Command::new("node");
    node.arg(Path::new(BROWSER_DIR).join("run.mjs"))
        .arg(format!("ws://127.0.0.1:{}/mqtt", ws.port()))
        // The server certificate names localhost and 127.0.0.1.
        .arg(format!("wss://localhost:{}/mqtt", wss.port()))
        .env("HOME", &home);
    let output = tokio::task::spawn_blocking(move || node.output())
        .await
        .unwrap()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.matches(": ok").count(), 2, "{stdout}");
    broker.server.shutdown().await;
}
