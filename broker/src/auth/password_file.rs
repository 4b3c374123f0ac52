//! Password files in Mosquitto's format, so an operator can bring theirs as it is.
//!
//! One `user:hash` per line; blank lines and lines starting with `#` are skipped. The hashes
//! read are the ones `mosquitto_passwd` writes:
//! - `$7$iterations$salt$hash`: PBKDF2-HMAC-SHA512 (Mosquitto 2.0's default);
//! - `$6$salt$hash`: SHA-512 of password then salt (Mosquitto 1.x);
//! - `$argon2id$v=19$m=...,t=...,p=...$salt$hash`: a PHC string (Mosquitto 2.1's default, and
//!   what Tern writes: [`hash_password`]).
//!
//! Checking a password is slow on purpose (argon2id takes tens of milliseconds), so it never
//! runs on the core's task: the driver checks a CONNECT's credentials on the blocking pool and
//! reports the verdict to the core (`Broker::credentials_checked`). An unknown user costs the
//! same work as a known one (a made-up hash of the file's first kind), so timing does not tell
//! which user names exist.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
use base64::alphabet::STANDARD as STANDARD_ALPHABET;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use hmac::Hmac;
use sha2::{Digest, Sha512};

use super::{constant_time_eq, Entropy};

/// OpenSSL writes padded base64; accept it with or without the padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD_ALPHABET,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Bounds on the work one check may cost, whatever the file says: a typo of a few zeros in
/// an iteration count must not let every CONNECT take minutes.
const PBKDF2_ITERATIONS_MAX: u32 = 10_000_000;
const ARGON2_MEMORY_KIB_MAX: u32 = 1024 * 1024;
const ARGON2_TIME_COST_MAX: u32 = 64;
const ARGON2_LANES_MAX: u32 = 16;

/// The argon2id cost Tern writes: OWASP's recommendation (19 MiB, 2 passes, 1 lane), about
/// 20 ms per check on one core.
const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
const ARGON2_TIME_COST: u32 = 2;
const ARGON2_LANES: u32 = 1;
const SALT_BYTES: usize = 16;

/// Longest line accepted (an argon2id line is about 120 bytes).
const LINE_BYTES_MAX: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    #[error("cannot read password file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("password file line {line}: {why}")]
    Line { line: usize, why: String },
}

/// One user's stored hash.
#[derive(Clone, PartialEq, Eq)]
enum Hash {
    Sha512 {
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Pbkdf2 {
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Argon2 {
        phc: String,
    },
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hashes stay out of logs and panics.
        f.write_str(match self {
            Hash::Sha512 { .. } => "Hash::Sha512",
            Hash::Pbkdf2 { .. } => "Hash::Pbkdf2",
            Hash::Argon2 { .. } => "Hash::Argon2",
        })
    }
}

impl Hash {
    fn parse(text: &str) -> Result<Hash, String> {
        if text.starts_with("$argon2") {
            return parse_argon2(text);
        }
        let fields: Vec<&str> = text.split('$').collect();
        let decode = |what: &str, field: &str| {
            BASE64
                .decode(field)
                .map_err(|e| format!("the {what} is not base64: {e}"))
        };
        match fields.as_slice() {
            ["", "6", salt, hash] => Ok(Hash::Sha512 {
                salt: decode("salt", salt)?,
                hash: check_len(decode("hash", hash)?, 64)?,
            }),
            ["", "7", iterations, salt, hash] => {
                let iterations: u32 = iterations
                    .parse()
                    .map_err(|_| format!("{iterations:?} is not an iteration count"))?;
                if iterations == 0 || iterations > PBKDF2_ITERATIONS_MAX {
                    return Err(format!(
                        "{iterations} iterations is outside 1..={PBKDF2_ITERATIONS_MAX}"
                    ));
                }
                Ok(Hash::Pbkdf2 {
                    iterations,
                    salt: decode("salt", salt)?,
                    hash: check_len(decode("hash", hash)?, 64)?,
                })
            }
            _ if !text.starts_with('$') => Err(
                "the password is not hashed (plain text?): hash the file with `tern passwd` or `mosquitto_passwd -U`"
                    .into(),
            ),
            _ => Err("unknown hash format (expected $6$, $7$ or $argon2id$)".into()),
        }
    }

    /// Whether `password` hashes to this. Takes the same time for every wrong password.
    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Sha512 { salt, hash } => {
                let mut digest = Sha512::new();
                digest.update(password);
                digest.update(salt);
                constant_time_eq(&digest.finalize(), hash)
            }
            Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2::<Hmac<Sha512>>(password, salt, *iterations, &mut out)
                    .expect("HMAC takes keys of any length");
                constant_time_eq(&out, hash)
            }
            Hash::Argon2 { phc } => {
                let parsed = PasswordHash::new(phc).expect("checked when the file was read");
                // The argon2 crate compares in constant time.
                Argon2::default().verify_password(password, &parsed).is_ok()
            }
        }
    }

    /// A hash of the same kind and cost that no password matches in practice: what an unknown
    /// user is checked against.
    fn decoy(&self) -> Hash {
        match self {
            Hash::Sha512 { salt, .. } => Hash::Sha512 {
                salt: vec![0; salt.len()],
                hash: vec![0; 64],
            },
            Hash::Pbkdf2 {
                iterations, salt, ..
            } => Hash::Pbkdf2 {
                iterations: *iterations,
                salt: vec![0; salt.len()],
                hash: vec![0; 64],
            },
            Hash::Argon2 { phc } => {
                let parsed = PasswordHash::new(phc).expect("checked when the file was read");
                let params = Params::try_from(&parsed).unwrap_or_default();
                Hash::Argon2 {
                    phc: argon2_phc(b"\0decoy\0", &[0x5a; SALT_BYTES], params),
                }
            }
        }
    }
}

fn check_len(bytes: Vec<u8>, len: usize) -> Result<Vec<u8>, String> {
    if bytes.len() == len {
        Ok(bytes)
    } else {
        Err(format!("the hash is {} bytes, not {len}", bytes.len()))
    }
}

fn parse_argon2(text: &str) -> Result<Hash, String> {
    let parsed = PasswordHash::new(text).map_err(|e| format!("not a PHC string: {e}"))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "{} is not supported (argon2id only)",
            parsed.algorithm
        ));
    }
    let params = Params::try_from(&parsed).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    if params.m_cost() > ARGON2_MEMORY_KIB_MAX
        || params.t_cost() > ARGON2_TIME_COST_MAX
        || params.p_cost() > ARGON2_LANES_MAX
    {
        return Err(format!(
            "argon2 cost m={},t={},p={} is above m={ARGON2_MEMORY_KIB_MAX},t={ARGON2_TIME_COST_MAX},p={ARGON2_LANES_MAX}",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        ));
    }
    if parsed.hash.is_none() {
        return Err("the PHC string has no hash".into());
    }
    Ok(Hash::Argon2 {
        phc: text.to_owned(),
    })
}

fn argon2_phc(password: &[u8], salt: &[u8], params: Params) -> String {
    let salt = SaltString::encode_b64(salt).expect("16 bytes make a valid salt");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password, &salt)
        .expect("argon2id hashes any password with valid parameters")
        .to_string()
}

/// A new argon2id hash of `password` with Tern's cost and a fresh salt: the value half of a
/// password file line.
pub fn hash_password(password: &[u8], entropy: &mut dyn Entropy) -> String {
    let mut salt = [0u8; SALT_BYTES];
    entropy.fill(&mut salt);
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_TIME_COST, ARGON2_LANES, None)
        .expect("Tern's argon2 parameters are valid");
    argon2_phc(password, &salt, params)
}

/// The users of a password file and their hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordFile {
    users: HashMap<String, Hash>,
    /// Checked instead when the user is unknown (same kind and cost as the first user's).
    decoy: Hash,
}

impl PasswordFile {
    pub fn load(path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| PasswordFileError::Read {
            path: path.into(),
            source,
        })?;
        PasswordFile::parse(&text)
    }

    pub fn parse(text: &str) -> Result<PasswordFile, PasswordFileError> {
        let mut users = HashMap::new();
        let mut first: Option<Hash> = None;
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let bad = |why: String| PasswordFileError::Line { line: line_no, why };
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            if line.len() > LINE_BYTES_MAX {
                return Err(bad(format!("longer than {LINE_BYTES_MAX} bytes")));
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(bad("expected user:hash".into()));
            };
            if user.is_empty() {
                return Err(bad("empty user name".into()));
            }
            let hash = Hash::parse(hash).map_err(|why| bad(format!("user {user:?}: {why}")))?;
            first.get_or_insert_with(|| hash.clone());
            if users.insert(user.to_owned(), hash).is_some() {
                return Err(bad(format!("user {user:?} appears twice")));
            }
        }
        let decoy = match first {
            Some(hash) => hash.decoy(),
            None => Hash::Argon2 {
                phc: argon2_phc(
                    b"\0decoy\0",
                    &[0x5a; SALT_BYTES],
                    Params::new(ARGON2_MEMORY_KIB, ARGON2_TIME_COST, ARGON2_LANES, None)
                        .expect("Tern's argon2 parameters are valid"),
                ),
            },
        };
        Ok(PasswordFile { users, decoy })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `password` is `user`'s. Slow (see the module comment): call it off the core's
    /// task. An unknown user costs the same work as a wrong password.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(hash) => hash.verify(password),
            None => {
                let _ = self.decoy.verify(password);
                false
            }
        }
    }
}

/// The lines of `text` with `user`'s line set to `hash` (added at the end if absent); other
/// lines, comments included, keep their order. For `tern passwd`.
pub fn with_user(text: &str, user: &str, hash: &str) -> String {
    let mut out = String::with_capacity(text.len() + hash.len() + user.len() + 2);
    let mut found = false;
    for line in text.lines() {
        if line_user(line) == Some(user) {
            if !found {
                out.push_str(&format!("{user}:{hash}\n"));
            }
            found = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !found {
        out.push_str(&format!("{user}:{hash}\n"));
    }
    out
}

/// The lines of `text` without `user`'s, and whether it was there.
pub fn without_user(text: &str, user: &str) -> (String, bool) {
    let mut out = String::with_capacity(text.len());
    let mut found = false;
    for line in text.lines() {
        if line_user(line) == Some(user) {
            found = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    (out, found)
}

fn line_user(line: &str) -> Option<&str> {
    if line.starts_with('#') {
        return None;
    }
    line.split_once(':').map(|(user, _)| user)
}

/// Checks a user name for a password file: not empty, no `:` (the separator), no control
/// characters (they would break the line format).
pub fn valid_user_name(user: &str) -> Result<(), &'static str> {
    if user.is_empty() {
        Err("the user name is empty")
    } else if user.contains(':') {
        Err("a user name cannot contain ':'")
    } else if user.starts_with('#') {
        Err("a user name cannot start with '#' (the line would read as a comment)")
    } else if user.chars().any(char::is_control) {
        Err("a user name cannot contain control characters")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::SeededEntropy;

    /// Written by `mosquitto_passwd` 2.0.11 (`-c`, password "secret"): a line of a real file.
    const MOSQUITTO_7: &str = "alice:$7$101$zCxZ4nlRG/5gXIfc$ZU+Xkwg3VG0pid1g4PDUR25LlRtyCNzLea5aGHUbfLviVxrlKHxXMH22NYmLbM4j9QS26Alc2wAkJvx03MpMbA==";

    #[test]
    fn reads_and_checks_mosquitto_pbkdf2() {
        let file = PasswordFile::parse(MOSQUITTO_7).unwrap();
        assert_eq!(file.len(), 1);
        assert!(file.verify("alice", b"secret"));
        assert!(!file.verify("alice", b"Secret"));
        assert!(!file.verify("alice", b""));
        assert!(!file.verify("bob", b"secret"));
    }

    #[test]
    fn reads_and_checks_sha512_and_argon2id() {
        // $6$: SHA-512(password || salt), as Mosquitto 1.x wrote it.
        let salt = b"0123456789ab";
        let mut digest = Sha512::new();
        digest.update(b"pw");
        digest.update(salt);
        let line = format!(
            "old:$6${}${}",
            BASE64.encode(salt),
            BASE64.encode(digest.finalize())
        );
        let new = format!("new:{}", hash_password(b"pw2", &mut SeededEntropy::new(1)));
        let file = PasswordFile::parse(&format!("# comment\n\n{line}\n{new}\n")).unwrap();
        assert!(file.verify("old", b"pw"));
        assert!(!file.verify("old", b"pw2"));
        assert!(file.verify("new", b"pw2"));
        assert!(!file.verify("new", b"pw"));
    }

    #[test]
    fn bad_lines_are_named() {
        let err = |text: &str| PasswordFile::parse(text).unwrap_err().to_string();
        assert!(
            err("alice:secret").contains("not hashed"),
            "{}",
            err("alice:secret")
        );
        assert!(err("\nalice").contains("line 2"));
        assert!(err("a:$7$0$AAAA$AAAA").contains("iterations"));
        assert!(err("a:$7$100000000$AAAA$AAAA").contains("iterations"));
        assert!(err("a:$7$101$!!$AAAA").contains("base64"));
        assert!(err("a:$7$101$AAAA$AAAA").contains("bytes"));
        assert!(err("a:$5$x$y").contains("unknown hash"));
        let twice = format!("{MOSQUITTO_7}\n{MOSQUITTO_7}");
        assert!(err(&twice).contains("twice"));
        assert!(
            err("a:$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
                .contains("argon2id only")
        );
        assert!(
            err("a:$argon2id$v=19$m=99999999,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo")
                .contains("above")
        );
    }

    #[test]
    fn editing_keeps_other_lines() {
        let text = "# users\nalice:h1\nbob:h2\n";
        assert_eq!(with_user(text, "bob", "h3"), "# users\nalice:h1\nbob:h3\n");
        assert_eq!(
            with_user(text, "carol", "h4"),
            "# users\nalice:h1\nbob:h2\ncarol:h4\n"
        );
        assert_eq!(
            without_user(text, "alice"),
            ("# users\nbob:h2\n".into(), true)
        );
        assert!(!without_user(text, "dave").1);
        assert!(valid_user_name("a:b").is_err());
        assert!(valid_user_name("").is_err());
        assert!(valid_user_name("a\nb").is_err());
        assert!(valid_user_name("alice").is_ok());
    }
}
