//! Who a client is and what it may do, as pure data and functions (no IO, no clock):
//! password files (`password_file`), ACLs (`acl`), and enhanced authentication (MQTT 5
//! section 4.12): the pluggable authenticator interface, the entropy it may need, and the
//! methods Tern ships (SCRAM-SHA-256).
//!
//! An [`Authenticator`] names a method ("SCRAM-SHA-256") and begins one [`AuthExchange`] per
//! CONNECT or re-authentication that asks for it. The core feeds the exchange the
//! Authentication Data of each CONNECT/AUTH packet and turns each [`AuthStep`] into the AUTH,
//! CONNACK or DISCONNECT to send. Exchanges do no IO and read no clock; randomness comes in
//! through [`Entropy`], so the same seed replays the same exchange in simulation.

pub mod acl;
pub mod password_file;
pub mod scram;

use sha2::{Digest, Sha256};

/// Compares without an early exit, so timing does not reveal how much of a secret was right.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    a.len() == b.len() && diff == 0
}

/// Whether `given` is the password `expected` (None: no such user). The time taken depends
/// neither on where the two first differ nor on their lengths nor on whether the user exists:
/// both sides are hashed to fixed-size digests, and an unknown user is compared against a
/// made-up password, so a client cannot learn user names or password prefixes by timing.
pub fn password_matches(expected: Option<&str>, given: Option<&[u8]>) -> bool {
    let digest = |bytes: &[u8]| -> [u8; 32] { Sha256::digest(bytes).into() };
    let expected_digest = digest(expected.map_or(b"\0no such user\0".as_slice(), str::as_bytes));
    let given_digest = digest(given.unwrap_or_default());
    let equal = constant_time_eq(&expected_digest, &given_digest);
    equal && expected.is_some() && given.is_some()
}

/// A source of unpredictable bytes (nonces, salts). Production uses the OS; the simulation
/// and tests a seeded generator.
pub trait Entropy: Send {
    fn fill(&mut self, buf: &mut [u8]);
}

/// Unpredictable bytes from the operating system: what the driver gives the core. The core
/// itself never reaches for it (docs/design.md section 3: no randomness inside the state machine).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        // Without OS randomness no nonce can be trusted; there is nothing sensible to fall
        // back to.
        getrandom::fill(buf).expect("the operating system provides random bytes");
    }
}

/// Reproducible bytes from a seed (SplitMix64). For simulation and tests only: its output is
/// predictable to anyone who knows the seed.
#[derive(Debug, Clone)]
pub struct SeededEntropy(u64);

impl SeededEntropy {
    pub fn new(seed: u64) -> SeededEntropy {
        SeededEntropy(seed)
    }
}

impl Entropy for SeededEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// What an exchange wants next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// Send this Authentication Data in an AUTH 0x18 (Continue authentication) and wait for
    /// the client's next AUTH.
    Continue(Vec<u8>),
    /// The client is authenticated as `user`; `data` (if any) goes in the CONNACK or the AUTH
    /// 0x00 that ends the exchange.
    Success { user: String, data: Option<Vec<u8>> },
    /// Refused; `why` is logged and, where the client asked for problem information, sent as
    /// the reason string.
    Failure { why: String },
}

/// One authentication method.
pub trait Authenticator: Send {
    /// The Authentication Method name clients send, e.g. "SCRAM-SHA-256".
    fn method(&self) -> &str;
    /// Begins an exchange for one CONNECT or re-authentication.
    fn begin(&self, entropy: &mut dyn Entropy) -> Box<dyn AuthExchange>;
}

/// One authentication in progress.
pub trait AuthExchange: Send {
    /// The client's next Authentication Data (empty when the packet had none).
    fn step(&mut self, data: &[u8]) -> AuthStep;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_comparison() {
        assert!(password_matches(Some("secret"), Some(b"secret")));
        assert!(!password_matches(Some("secret"), Some(b"secreT")));
        assert!(!password_matches(Some("secret"), Some(b"secret2")));
        assert!(!password_matches(Some("secret"), None));
        assert!(!password_matches(None, Some(b"\0no such user\0")));
        assert!(!password_matches(None, None));
        assert!(constant_time_eq(b"ab", b"ab"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"ab", b"ac"));
    }

    #[test]
    fn seeded_entropy_replays_and_differs_by_seed() {
        let bytes = |seed| {
            let mut buf = [0u8; 20];
            SeededEntropy::new(seed).fill(&mut buf);
            buf
        };
        assert_eq!(bytes(1), bytes(1));
        assert_ne!(bytes(1), bytes(2));
        assert_ne!(bytes(1)[..8], bytes(1)[8..16], "successive words differ");
    }
}
