//! Where the signing key's passphrase comes from: a file, the CAPREPO_PASSPHRASE
//! environment variable, or a prompt on the terminal. Never a command-line
//! argument, since those are visible to every user through `ps`.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result, bail};
use zeroize::Zeroizing;

pub const ENV: &str = "CAPREPO_PASSPHRASE";

fn from_file(path: &Path) -> Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading passphrase file {}", path.display()))?,
    );
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        bail!("passphrase file {} is empty", path.display());
    }
    Ok(Zeroizing::new(line.to_string()))
}

/// For unlocking an existing key.
pub fn obtain(file: Option<&Path>) -> Result<Zeroizing<String>> {
    if let Some(file) = file {
        return from_file(file);
    }
    if let Ok(value) = std::env::var(ENV) {
        return Ok(Zeroizing::new(value));
    }
    if std::io::stderr().is_terminal() {
        return Ok(Zeroizing::new(rpassword::prompt_password(
            "caprepo: passphrase for the signing key: ",
        )?));
    }
    bail!(
        "the signing key is passphrase-protected: set {ENV}, use --passphrase-file FILE, or run on a terminal"
    )
}

/// For a new key: asks twice when prompting.
pub fn choose(file: Option<&Path>) -> Result<Zeroizing<String>> {
    if let Some(file) = file {
        return from_file(file);
    }
    if let Ok(value) = std::env::var(ENV) {
        if value.is_empty() {
            bail!("{ENV} is empty");
        }
        return Ok(Zeroizing::new(value));
    }
    if std::io::stderr().is_terminal() {
        let first = Zeroizing::new(rpassword::prompt_password(
            "caprepo: new passphrase for the signing key: ",
        )?);
        let second = Zeroizing::new(rpassword::prompt_password("caprepo: repeat it: ")?);
        if first.is_empty() || *first != *second {
            bail!("the passphrases were empty or did not match");
        }
        return Ok(first);
    }
    bail!(
        "no passphrase for the new signing key: set {ENV}, use --passphrase-file FILE, run on a terminal, or --no-passphrase for a demo"
    )
}
