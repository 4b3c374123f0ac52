//! Runs every case on every client kind and renders the client x case table.

use std::time::Duration;

use tern::auth::acl::Acl;
use tern::auth::password_file::PasswordFile;

use crate::broker::{Access, Broker};
use crate::cases::{
    Env, ACL_RULES, CASES, CERT_ACL_RULES, KEEP_ALIVE_MAX_SECS, MOVED_TO, PASSWORD_FILE,
    RESPONSE_INFORMATION, SCRAM_USER,
};
use crate::client::Kind;

/// A case gets this long per client before it counts as failed.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    /// The case does not apply to this client; the text says why.
    NotApplicable(&'static str),
}

pub struct Matrix {
    /// `results[case][kind]`, in the order of `CASES` and `Kind::ALL`.
    pub results: Vec<Vec<Outcome>>,
}

impl Matrix {
    /// Starts the brokers and runs everything; each case runs for all kinds at once.
    pub async fn run() -> anyhow::Result<Matrix> {
        let mut config = tern::core::Config::default();
        config.features.response_information = Some(RESPONSE_INFORMATION.into());
        config.limits.keep_alive_max_secs = KEEP_ALIVE_MAX_SECS;
        let broker = Broker::start(config).await?;
        let mut moved = tern::core::Config::default();
        moved.features.server_reference = Some(MOVED_TO.into());
        moved.features.server_moved = true;
        let moved_broker = Broker::start(moved).await?;
        let mut auth = tern::core::Config {
            allow_anonymous: false,
            ..Default::default()
        };
        let (scram_user, scram_password) = SCRAM_USER;
        auth.scram
            .users
            .insert(scram_user.into(), scram_password.into());
        let passwords = Access {
            password_file: Some(PasswordFile::parse(PASSWORD_FILE)?),
            ..Access::default()
        };
        let auth_broker = Broker::start_with(auth, passwords, None).await?;
        let acl = Access {
            acl: Some(Acl::parse(ACL_RULES)?),
            ..Access::default()
        };
        let acl_broker = Broker::start_with(Default::default(), acl, None).await?;
        let certificates = Access {
            acl: Some(Acl::parse(CERT_ACL_RULES)?),
            client_certificates: true,
            ..Access::default()
        };
        let cert_broker = Broker::start_with(Default::default(), certificates, None).await?;
        let env = Env {
            broker: broker.addr,
            auth_broker: auth_broker.addr,
            moved_broker: moved_broker.addr,
            acl_broker: acl_broker.addr,
            cert_broker: cert_broker.addr,
        };
        let mut results = Vec::new();
        for case in CASES {
            let mut handles = Vec::new();
            for kind in Kind::ALL {
                if let Some(why) = case.only.skip(kind) {
                    handles.push(Err(why));
                    continue;
                }
                let run = case.run;
                handles.push(Ok(tokio::spawn(async move {
                    tokio::time::timeout(CASE_TIMEOUT, run(env, kind)).await
                })));
            }
            let mut row = Vec::new();
            for handle in handles {
                row.push(match handle {
                    Err(why) => Outcome::NotApplicable(why),
                    Ok(handle) => match handle.await {
                        Ok(Ok(Ok(()))) => Outcome::Pass,
                        Ok(Ok(Err(error))) => Outcome::Fail(format!("{error:#}")),
                        Ok(Err(_)) => Outcome::Fail("timed out".into()),
                        Err(panic) => Outcome::Fail(format!("panicked: {panic}")),
                    },
                });
            }
            results.push(row);
        }
        broker.server.shutdown().await;
        auth_broker.server.shutdown().await;
        moved_broker.server.shutdown().await;
        acl_broker.server.shutdown().await;
        cert_broker.server.shutdown().await;
        Ok(Matrix { results })
    }

    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (case, row) in CASES.iter().zip(&self.results) {
            for (kind, outcome) in Kind::ALL.iter().zip(row) {
                if let Outcome::Fail(why) = outcome {
                    out.push(format!("{} / {kind}: {why}", case.name));
                }
            }
        }
        out
    }

    /// The table as Markdown: a row per case, a column per client.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from("| case |");
        for kind in Kind::ALL {
            out.push_str(&format!(" {kind} |"));
        }
        out.push_str("\n| --- |");
        for _ in Kind::ALL {
            out.push_str(" --- |");
        }
        out.push('\n');
        for (case, row) in CASES.iter().zip(&self.results) {
            out.push_str(&format!("| {} |", case.name));
            for outcome in row {
                let cell = match outcome {
                    Outcome::Pass => "pass",
                    Outcome::Fail(_) => "FAIL",
                    Outcome::NotApplicable(why) => why,
                };
                out.push_str(&format!(" {cell} |"));
            }
            out.push('\n');
        }
        out
    }
}
