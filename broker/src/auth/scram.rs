//! SCRAM-SHA-256 (RFC 5802 with RFC 7677's hash) as an MQTT 5 enhanced authentication method.
//!
//! The client proves it knows the password without sending it, and the server proves it knows
//! the salted password too. Three messages, carried in CONNECT, AUTH and AUTH (or in AUTH
//! 0x19 and two AUTH for re-authentication); the server's final message goes in the CONNACK
//! (or the closing AUTH 0x00):
//!
//! ```text
//! client-first  n,,n=user,r=<client nonce>
//! server-first  r=<client nonce><server nonce>,s=<salt>,i=<iterations>
//! client-final  c=biws,r=<both nonces>,p=<client proof>
//! server-final  v=<server signature>
//! ```
//!
//! Channel binding is not offered (gs2 header "n,,"; "y,," is accepted, "p=" refused), as
//! MQTT has no standard way to name the TLS channel. Unknown users get a full exchange with a
//! made-up salt and fail at the end, so the exchange does not tell which user names exist.
//! [`ScramClient`] is the client side, for tests and tools.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::{constant_time_eq, AuthExchange, AuthStep, Authenticator, Entropy};

pub const METHOD: &str = "SCRAM-SHA-256";
/// RFC 7677's minimum and the usual default.
pub const ITERATIONS_DEFAULT: u32 = 4096;
/// Bounds the work one client can make the server do at start-up per user.
pub const ITERATIONS_MAX: u32 = 1_000_000;
const SALT_BYTES: usize = 16;
const SERVER_NONCE_BYTES: usize = 18;
/// Longest SCRAM message accepted from a client (they are a few hundred bytes at most).
const MESSAGE_BYTES_MAX: usize = 2048;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// PBKDF2-HMAC-SHA-256 with one block of output: SCRAM's Hi().
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &block);
    let mut result = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (r, x) in result.iter_mut().zip(u) {
            *r ^= x;
        }
    }
    result
}

/// What the server stores for a user: never the password itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

/// How a stored credential starts (the form PostgreSQL uses for SCRAM-SHA-256 verifiers):
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64 throughout.
pub const CREDENTIAL_PREFIX: &str = "SCRAM-SHA-256$";

impl Credential {
    /// The stored form, to put in the config file instead of a password.
    pub fn encode(&self) -> String {
        format!(
            "{CREDENTIAL_PREFIX}{}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }

    /// Reads the stored form made by [`Credential::encode`].
    pub fn parse(text: &str) -> Result<Credential, String> {
        let rest = text
            .strip_prefix(CREDENTIAL_PREFIX)
            .ok_or_else(|| format!("a stored credential starts with {CREDENTIAL_PREFIX:?}"))?;
        let (salting, keys) = rest
            .split_once('$')
            .ok_or("expected <iterations>:<salt>$<StoredKey>:<ServerKey>")?;
        let (iterations, salt) = salting
            .split_once(':')
            .ok_or("expected <iterations>:<salt> before the '$'")?;
        let (stored, server) = keys
            .split_once(':')
            .ok_or("expected <StoredKey>:<ServerKey> after the '$'")?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| format!("iterations {iterations:?} is not a number"))?;
        if !(1..=ITERATIONS_MAX).contains(&iterations) {
            return Err(format!(
                "iterations {iterations} is outside 1..={ITERATIONS_MAX}"
            ));
        }
        let key = |name, b64: &str| -> Result<[u8; 32], String> {
            BASE64
                .decode(b64)
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| format!("{name} is not 32 bytes of base64"))
        };
        Ok(Credential {
            salt: BASE64
                .decode(salt)
                .map_err(|_| "salt is not base64".to_string())?,
            iterations,
            stored_key: key("StoredKey", stored)?,
            server_key: key("ServerKey", server)?,
        })
    }

    /// A new credential for `password` with a fresh random salt.
    pub fn generate(password: &str, iterations: u32, entropy: &mut dyn Entropy) -> Credential {
        let mut salt = [0u8; SALT_BYTES];
        entropy.fill(&mut salt);
        Credential::derive(password, &salt, iterations)
    }

    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> Credential {
        assert!(iterations >= 1, "SCRAM needs at least one iteration");
        let salted = salted_password(password.as_bytes(), salt, iterations);
        Credential {
            salt: salt.to_vec(),
            iterations,
            stored_key: sha256(&hmac(&salted, b"Client Key")),
            server_key: hmac(&salted, b"Server Key"),
        }
    }
}

/// The SCRAM-SHA-256 method with its user store.
pub struct ScramSha256 {
    users: BTreeMap<String, Credential>,
    /// Salts for unknown users are derived from this, so a repeated attempt sees the same salt.
    decoy_key: [u8; 32],
    iterations: u32,
}

impl ScramSha256 {
    /// Each user's credential: a stored credential ([`CREDENTIAL_PREFIX`]) as it is, a
    /// password derived with a fresh random salt (which costs `iterations` HMACs per user at
    /// start-up; stored credentials cost nothing). A malformed stored credential leaves its
    /// user out (config loading refuses such files first).
    pub fn from_passwords(
        passwords: &BTreeMap<String, String>,
        iterations: u32,
        entropy: &mut dyn Entropy,
    ) -> ScramSha256 {
        let users = passwords
            .iter()
            .filter_map(|(user, secret)| {
                if secret.starts_with(CREDENTIAL_PREFIX) {
                    match Credential::parse(secret) {
                        Ok(credential) => Some((user.clone(), credential)),
                        Err(why) => {
                            tracing::error!(%user, why, "bad SCRAM credential; user left out");
                            None
                        }
                    }
                } else {
                    Some((
                        user.clone(),
                        Credential::generate(secret, iterations, entropy),
                    ))
                }
            })
            .collect();
        let mut decoy_key = [0u8; 32];
        entropy.fill(&mut decoy_key);
        ScramSha256 {
            users,
            decoy_key,
            iterations,
        }
    }

    pub fn from_credentials(users: BTreeMap<String, Credential>, decoy_key: [u8; 32]) -> Self {
        ScramSha256 {
            users,
            decoy_key,
            iterations: ITERATIONS_DEFAULT,
        }
    }
}

impl Authenticator for ScramSha256 {
    fn method(&self) -> &str {
        METHOD
    }

    fn begin(&self, entropy: &mut dyn Entropy) -> Box<dyn AuthExchange> {
        let mut nonce = [0u8; SERVER_NONCE_BYTES];
        entropy.fill(&mut nonce);
        Box::new(ScramExchange {
            users: self.users.clone(),
            decoy_key: self.decoy_key,
            iterations: self.iterations,
            server_nonce: BASE64.encode(nonce),
            state: State::ClientFirst,
        })
    }
}

enum State {
    ClientFirst,
    ClientFinal {
        user: String,
        credential: Option<Credential>,
        gs2_header: String,
        nonce: String,
        /// client-first-bare + "," + server-first: the start of the AuthMessage.
        messages: String,
    },
    Done,
}

struct ScramExchange {
    // A copy keeps the exchange independent of later changes to the store; user stores are
    // small (configured by hand).
    users: BTreeMap<String, Credential>,
    decoy_key: [u8; 32],
    iterations: u32,
    server_nonce: String,
    state: State,
}

fn failure(why: impl Into<String>) -> AuthStep {
    AuthStep::Failure { why: why.into() }
}

/// The value of `key=` in a SCRAM attribute.
fn attribute(part: Option<&str>, key: char) -> Result<&str, String> {
    let part = part.ok_or_else(|| format!("SCRAM message lacks '{key}='"))?;
    part.strip_prefix(key)
        .and_then(|rest| rest.strip_prefix('='))
        .ok_or_else(|| format!("SCRAM message has {part:?} where '{key}=' belongs"))
}

/// A saslname: "=2C" stands for ',' and "=3D" for '='; any other '=' is malformed.
fn decode_saslname(name: &str) -> Result<String, String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err("SCRAM user name has a bad '=' escape".into()),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

impl ScramExchange {
    fn client_first(&mut self, message: &str) -> Result<AuthStep, String> {
        // gs2-header: "n,," or "y,," (no channel binding), optionally with an authzid.
        let mut parts = message.splitn(3, ',');
        let binding = parts.next().unwrap_or_default();
        if binding.starts_with("p=") {
            return Err("SCRAM channel binding is not supported".into());
        }
        if binding != "n" && binding != "y" {
            return Err(format!("SCRAM gs2 header starts with {binding:?}"));
        }
        let authzid = parts.next().ok_or("SCRAM message lacks its gs2 header")?;
        if !authzid.is_empty() {
            return Err("SCRAM authorization identities are not supported".into());
        }
        let bare = parts.next().ok_or("SCRAM client-first message is empty")?;
        let gs2_header = format!("{binding},,");
        let mut fields = bare.split(',');
        let first = fields.next();
        if first.is_some_and(|f| f.starts_with("m=")) {
            return Err("SCRAM mandatory extensions are not supported".into());
        }
        let user = decode_saslname(attribute(first, 'n')?)?;
        let client_nonce = attribute(fields.next(), 'r')?;
        if client_nonce.is_empty()
            || !client_nonce
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b',')
        {
            return Err("SCRAM client nonce is empty or has characters it may not".into());
        }
        let credential = self.users.get(&user).cloned();
        let salt = match &credential {
            Some(c) => c.salt.clone(),
            None => hmac(&self.decoy_key, user.as_bytes())[..SALT_BYTES].to_vec(),
        };
        let iterations = credential
            .as_ref()
            .map_or(self.iterations, |c| c.iterations);
        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!("r={nonce},s={},i={iterations}", BASE64.encode(&salt));
        self.state = State::ClientFinal {
            user,
            credential,
            gs2_header,
            nonce,
            messages: format!("{bare},{server_first}"),
        };
        Ok(AuthStep::Continue(server_first.into_bytes()))
    }

    fn client_final(&mut self, message: &str) -> Result<AuthStep, String> {
        let State::ClientFinal {
            user,
            credential,
            gs2_header,
            nonce,
            messages,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            unreachable!("called in the ClientFinal state only");
        };
        let (without_proof, proof) = message
            .rsplit_once(",p=")
            .ok_or("SCRAM client-final message lacks its proof")?;
        let mut fields = without_proof.split(',');
        let binding = attribute(fields.next(), 'c')?;
        if BASE64.decode(binding).ok().as_deref() != Some(gs2_header.as_bytes()) {
            return Err("SCRAM channel binding data does not match the gs2 header".into());
        }
        if attribute(fields.next(), 'r')? != nonce {
            return Err("SCRAM nonce does not match".into());
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| "SCRAM proof is not base64".to_string())?;
        let Some(credential) = credential else {
            return Err(format!("SCRAM authentication failed for {user:?}"));
        };
        let auth_message = format!("{messages},{without_proof}");
        let client_signature = hmac(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(format!("SCRAM authentication failed for {user:?}"));
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        if !constant_time_eq(&sha256(&client_key), &credential.stored_key) {
            return Err(format!("SCRAM authentication failed for {user:?}"));
        }
        let server_signature = hmac(&credential.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", BASE64.encode(server_signature));
        Ok(AuthStep::Success {
            user,
            data: Some(server_final.into_bytes()),
        })
    }
}

impl AuthExchange for ScramExchange {
    fn step(&mut self, data: &[u8]) -> AuthStep {
        if data.len() > MESSAGE_BYTES_MAX {
            self.state = State::Done;
            return failure("SCRAM message too long");
        }
        let Ok(message) = std::str::from_utf8(data) else {
            self.state = State::Done;
            return failure("SCRAM message is not UTF-8");
        };
        let result = match self.state {
            State::ClientFirst => self.client_first(message),
            State::ClientFinal { .. } => self.client_final(message),
            State::Done => Err("SCRAM exchange already finished".into()),
        };
        result.unwrap_or_else(|why| {
            self.state = State::Done;
            failure(why)
        })
    }
}

/// The client side of SCRAM-SHA-256, for tests and tools.
pub struct ScramClient {
    user: String,
    password: String,
    client_nonce: String,
    client_first_bare: String,
    server_signature: Option<[u8; 32]>,
}

impl ScramClient {
    pub fn new(user: &str, password: &str, client_nonce: &str) -> ScramClient {
        let name = user.replace('=', "=3D").replace(',', "=2C");
        ScramClient {
            user: user.to_string(),
            password: password.to_string(),
            client_nonce: client_nonce.to_string(),
            client_first_bare: format!("n={name},r={client_nonce}"),
            server_signature: None,
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// The client-final message answering `server_first`.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| "server-first is not UTF-8")?;
        let mut fields = server_first.split(',');
        let nonce = attribute(fields.next(), 'r')?;
        if !nonce.starts_with(&self.client_nonce) {
            return Err("server nonce does not extend ours".into());
        }
        let salt = BASE64
            .decode(attribute(fields.next(), 's')?)
            .map_err(|_| "salt is not base64")?;
        let iterations: u32 = attribute(fields.next(), 'i')?
            .parse()
            .map_err(|_| "iteration count is not a number")?;
        let salted = salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = sha256(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        self.server_signature = Some(hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Whether `server_final` proves the server knows our salted password.
    pub fn verify_server(&self, server_final: &[u8]) -> bool {
        let expected = self
            .server_signature
            .map(|s| format!("v={}", BASE64.encode(s)));
        expected.is_some_and(|e| e.as_bytes() == server_final)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 section 3, the SCRAM-SHA-256 example exchange.
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_exchange() -> ScramExchange {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let mut users = BTreeMap::new();
        users.insert("user".into(), Credential::derive("pencil", &salt, 4096));
        ScramExchange {
            users,
            decoy_key: [7; 32],
            iterations: 4096,
            server_nonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            state: State::ClientFirst,
        }
    }

    #[test]
    fn server_reproduces_the_rfc_7677_example() {
        let mut exchange = rfc_exchange();
        assert_eq!(
            exchange.step(CLIENT_FIRST.as_bytes()),
            AuthStep::Continue(SERVER_FIRST.as_bytes().to_vec())
        );
        assert_eq!(
            exchange.step(CLIENT_FINAL.as_bytes()),
            AuthStep::Success {
                user: "user".into(),
                data: Some(SERVER_FINAL.as_bytes().to_vec())
            }
        );
    }

    #[test]
    fn client_reproduces_the_rfc_7677_example() {
        let mut client = ScramClient::new("user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(client.client_first(), CLIENT_FIRST.as_bytes());
        let last = client.client_final(SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(last, CLIENT_FINAL.as_bytes());
        assert!(client.verify_server(SERVER_FINAL.as_bytes()));
        assert!(!client.verify_server(b"v=AAAA"));
    }

    fn run(server: &ScramSha256, user: &str, password: &str) -> AuthStep {
        let mut entropy = super::super::SeededEntropy::new(3);
        let mut exchange = server.begin(&mut entropy);
        let mut client = ScramClient::new(user, password, "abcdefgh");
        let AuthStep::Continue(first) = exchange.step(&client.client_first()) else {
            panic!("no server-first");
        };
        let last = client.client_final(&first).unwrap();
        exchange.step(&last)
    }

    fn server() -> ScramSha256 {
        let mut passwords = BTreeMap::new();
        passwords.insert("alice".to_string(), "secret".to_string());
        passwords.insert("a,b=c".to_string(), "odd".to_string());
        let mut entropy = super::super::SeededEntropy::new(1);
        ScramSha256::from_passwords(&passwords, 64, &mut entropy)
    }

    #[test]
    fn stored_credentials_round_trip_and_authenticate() {
        let mut entropy = super::super::SeededEntropy::new(4);
        let credential = Credential::generate("hunter2", 4096, &mut entropy);
        let text = credential.encode();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
        assert_eq!(Credential::parse(&text), Ok(credential));
        let mut stored = BTreeMap::new();
        stored.insert("bob".to_string(), text);
        let server = ScramSha256::from_passwords(&stored, 64, &mut entropy);
        assert!(matches!(
            run(&server, "bob", "hunter2"),
            AuthStep::Success { .. }
        ));
        assert!(matches!(
            run(&server, "bob", "hunter3"),
            AuthStep::Failure { .. }
        ));
        for bad in [
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$0:c2FsdA==$",
            "SCRAM-SHA-256$many:c2FsdA==$a:b",
        ] {
            assert!(Credential::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn right_password_passes_and_the_server_proves_itself() {
        let server = server();
        let AuthStep::Success { user, data } = run(&server, "alice", "secret") else {
            panic!("refused");
        };
        assert_eq!(user, "alice");
        assert!(data.unwrap().starts_with(b"v="));
        assert!(
            matches!(run(&server, "a,b=c", "odd"), AuthStep::Success { user, .. } if user == "a,b=c")
        );
    }

    #[test]
    fn wrong_password_and_unknown_user_fail_only_at_the_end() {
        let server = server();
        assert!(matches!(
            run(&server, "alice", "guess"),
            AuthStep::Failure { .. }
        ));
        // An unknown user gets a server-first like anyone else (the salt is made up, and the
        // same on every attempt), then fails.
        let mut entropy = super::super::SeededEntropy::new(9);
        let first = |entropy: &mut dyn Entropy| {
            let mut exchange = server.begin(entropy);
            match exchange.step(b"n,,n=mallory,r=xyz") {
                AuthStep::Continue(first) => String::from_utf8(first).unwrap(),
                other => panic!("{other:?}"),
            }
        };
        let salt = |s: &str| s.split(',').nth(1).unwrap().to_string();
        assert_eq!(salt(&first(&mut entropy)), salt(&first(&mut entropy)));
        assert!(matches!(
            run(&server, "mallory", "x"),
            AuthStep::Failure { .. }
        ));
    }

    proptest::proptest! {
        /// Whatever a client sends, the exchange answers without panicking, and once it has
        /// failed it stays failed.
        #[test]
        fn any_messages_never_panic(
            messages in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80), 1..4),
            prefix in proptest::sample::select(vec![&b""[..], b"n,,n=alice,r=", b"c=biws,r=", b"n,,n=x=2C,r=a"]),
        ) {
            let server = server();
            let mut entropy = super::super::SeededEntropy::new(5);
            let mut exchange = server.begin(&mut entropy);
            let mut failed = false;
            for message in messages {
                let mut data = prefix.to_vec();
                data.extend(message);
                let step = exchange.step(&data);
                let is_failure = matches!(step, AuthStep::Failure { .. });
                if failed {
                    proptest::prop_assert!(is_failure, "a failed exchange stays failed");
                }
                let is_success = matches!(step, AuthStep::Success { .. });
                proptest::prop_assert!(!is_success, "random bytes never authenticate");
                failed |= is_failure;
            }
        }
    }

    #[test]
    fn malformed_messages_fail_with_a_reason() {
        let server = server();
        let mut entropy = super::super::SeededEntropy::new(2);
        for bad in [
            &b"p=tls-unique,,n=alice,r=x"[..],
            b"n,a=admin,n=alice,r=x",
            b"n,,m=ext,n=alice,r=x",
            b"n,,n=al=ice,r=x",
            b"n,,n=alice",
            b"n,,n=alice,r=",
            b"hello",
            b"\xff\xfe",
            &[b'n'; MESSAGE_BYTES_MAX + 1],
        ] {
            let mut exchange = server.begin(&mut entropy);
            assert!(
                matches!(exchange.step(bad), AuthStep::Failure { .. }),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
            assert!(
                matches!(exchange.step(b"n,,n=alice,r=x"), AuthStep::Failure { .. }),
                "a failed exchange stays failed"
            );
        }
        // A client-final with the wrong nonce or no proof.
        for bad_final in [&b"c=biws,r=other,p=AAAA"[..], b"c=biws,r=x"] {
            let mut exchange = server.begin(&mut entropy);
            assert!(matches!(
                exchange.step(b"n,,n=alice,r=x"),
                AuthStep::Continue(_)
            ));
            assert!(matches!(exchange.step(bad_final), AuthStep::Failure { .. }));
        }
    }
}
