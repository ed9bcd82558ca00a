//! Running external commands loudly: every command is echoed before it runs,
//! and a failure names the command line and its exit status.

use std::{
    ffi::OsStr,
    fmt::Write as _,
    process::{Command, Output},
};

use anyhow::{Context as _, Result, bail};

/// Runs `cmd` with inherited stdio and fails unless it exits successfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    eprintln!("    $ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed: {status}");
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout; on failure the error carries its stderr.
pub fn capture(cmd: &mut Command) -> Result<String> {
    let line = display(cmd);
    String::from_utf8(capture_bytes(cmd)?)
        .with_context(|| format!("`{line}` printed non-UTF-8 output"))
}

/// [`capture`] for binary output.
pub fn capture_bytes(cmd: &mut Command) -> Result<Vec<u8>> {
    let line = display(cmd);
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!(
            "`{line}` failed: {status}\n{}",
            String::from_utf8_lossy(&stderr).trim_end()
        );
    }
    Ok(stdout)
}

/// The command as a shell-like line, with the environment it sets in front.
pub fn display(cmd: &Command) -> String {
    let mut line = String::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            let _ = write!(line, "{}={} ", quote(key), quote(value));
        }
    }
    line.push_str(&quote(cmd.get_program()));
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line
}

/// `word` as one shell word: unchanged when plain, single-quoted otherwise.
pub fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=+:,@%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_what_needs_it() {
        let mut cmd = Command::new("cargo");
        cmd.env("LLVM_PREFIX", "/opt/x")
            .args(["test", "--", "--test-threads=1", "a b", "it's"]);
        assert_eq!(
            display(&cmd),
            r"LLVM_PREFIX=/opt/x cargo test -- --test-threads=1 'a b' 'it'\''s'"
        );
    }
}
