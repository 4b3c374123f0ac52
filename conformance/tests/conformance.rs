//! Runs the conformance matrix: every case on rumqttc, paho-mqtt and the raw codec client, in
//! MQTT 3.1.1 and 5.0, against the real broker over loopback TCP. Prints the table and checks
//! that `conformance/README.md` shows the same one.

use tern_conformance::matrix::Matrix;

/// The whole matrix takes about a minute; each case has its own timeout, but a client library
/// stuck in C code (Paho's connect has hung past its own timeout) can hold a runtime thread
/// and the process with it. Past this the test fails instead of holding CI until its limit.
const MATRIX_WATCHDOG: std::time::Duration = std::time::Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_passes_every_case_it_supports() {
    // An OS thread, not a task: it must run even if every runtime thread is stuck.
    #[allow(clippy::disallowed_methods)]
    std::thread::spawn(|| {
        std::thread::sleep(MATRIX_WATCHDOG);
        // Written to the real stderr: the test harness captures eprintln! (this thread
        // inherits the capture), and the exit below would take the captured text with it.
        let why = format!(
            "the conformance matrix did not finish in {MATRIX_WATCHDOG:?}: a client hung\n"
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), why.as_bytes());
        std::process::exit(1);
    });
    let matrix = Matrix::run().await.expect("brokers start");
    let table = matrix.to_markdown();
    println!("{table}");
    let failures = matrix.failures();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains(&table),
        "conformance/README.md does not show the current table:\n{table}"
    );
}
