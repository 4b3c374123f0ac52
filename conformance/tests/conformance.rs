//! Runs the conformance matrix: every case on rumqttc, paho-mqtt and the raw codec client, in
//! MQTT 3.1.1 and 5.0, against the real broker over loopback TCP. Prints the table and checks
//! that `conformance/README.md` shows the same one.

use tern_conformance::matrix::Matrix;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_passes_every_case_it_supports() {
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
