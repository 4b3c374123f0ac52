//! `tern passwd`: add, update or delete a user in a password file, as `mosquitto_passwd`
//! does. Tern writes argon2id hashes; the file stays readable by Mosquitto 2.1.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use tern::auth::password_file::{
    hash_password, valid_user_name, with_user, without_user, PasswordFile,
};
use tern::auth::OsEntropy;

#[derive(Debug, clap::Args)]
pub struct PasswdArgs {
    /// Create the file, replacing it if it exists (mosquitto_passwd -c).
    #[arg(short = 'c', long, conflicts_with = "delete")]
    create: bool,
    /// Delete the user (mosquitto_passwd -D).
    #[arg(short = 'D', long)]
    delete: bool,
    /// Read the password from standard input (one line) even on a terminal. Without a
    /// terminal it is always read from standard input.
    #[arg(long)]
    stdin: bool,
    /// The password file.
    file: PathBuf,
    /// The user name.
    user: String,
}

pub fn run(args: PasswdArgs) -> anyhow::Result<()> {
    valid_user_name(&args.user).map_err(|why| anyhow::anyhow!("{why}"))?;
    let existing = match std::fs::read_to_string(&args.file) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", args.file.display())),
    };
    if let Some(text) = &existing {
        // Refuse to edit a file the broker could not read (and so would not start with).
        PasswordFile::parse(text).with_context(|| format!("{}", args.file.display()))?;
    }
    let text = if args.delete {
        let Some(text) = existing else {
            bail!("{} does not exist", args.file.display());
        };
        let (text, found) = without_user(&text, &args.user);
        ensure!(
            found,
            "user {:?} is not in {}",
            args.user,
            args.file.display()
        );
        text
    } else {
        let base = match (existing, args.create) {
            (_, true) => String::new(),
            (Some(text), false) => text,
            (None, false) => bail!(
                "{} does not exist (use --create to make it)",
                args.file.display()
            ),
        };
        let password = read_password(args.stdin)?;
        with_user(
            &base,
            &args.user,
            &hash_password(password.as_bytes(), &mut OsEntropy),
        )
    };
    write_privately(&args.file, &text)
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        let password = line.trim_end_matches(['\r', '\n']).to_owned();
        ensure!(!password.is_empty(), "no password on standard input");
        return Ok(password);
    }
    let password = rpassword::prompt_password("Password: ")?;
    let again = rpassword::prompt_password("Reenter password: ")?;
    ensure!(password == again, "the passwords do not match");
    ensure!(!password.is_empty(), "empty password");
    Ok(password)
}

/// Writes `text` to `path` through a temporary file and a rename, readable by its owner only:
/// a crash leaves the old file or the new one, never half of one.
fn write_privately(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&temporary)
        .with_context(|| format!("writing {}", temporary.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}
