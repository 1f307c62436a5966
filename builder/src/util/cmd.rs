//! The one door to the outside world: every subprocess berth starts goes through [`Cmd`].
//!
//! stdin is always null (a tool that prompts must not hang a build), the command line is logged at
//! debug level, and a failure's error carries the exit status and the tail of stderr, so the
//! user sees why `apt-get` or `qemu-img` failed without re-running anything.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// Lines of stderr kept in an error message.
const STDERR_TAIL_LINES: usize = 15;

pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            envs: Vec::new(),
            cwd: None,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }

    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    fn display(&self) -> String {
        let mut s = self.program.to_string_lossy().into_owned();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args).stdin(Stdio::null());
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        c
    }

    /// Runs to completion, capturing output; a non-zero exit is an error with stderr's tail.
    pub fn output(&self) -> Result<Output> {
        tracing::debug!(cmd = %self.display(), "running");
        let out = self
            .command()
            .output()
            .with_context(|| format!("could not start `{}`", self.program.to_string_lossy()))?;
        if !out.status.success() {
            bail!(
                "`{}` failed ({}){}",
                self.display(),
                out.status,
                tail(&String::from_utf8_lossy(&out.stderr))
            );
        }
        Ok(out)
    }

    /// Runs to completion; returns stdout as text.
    pub fn stdout(&self) -> Result<String> {
        let out = self.output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs and returns the raw output whatever the exit status (for tools whose non-zero exit is
    /// an answer, like `e2fsck -n` or `veritysetup verify`).
    pub fn output_unchecked(&self) -> Result<Output> {
        tracing::debug!(cmd = %self.display(), "running");
        self.command()
            .output()
            .with_context(|| format!("could not start `{}`", self.program.to_string_lossy()))
    }
}

fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    format!(":\n  {}", lines[start..].join("\n  "))
}

/// A host tool berth needs, with why and how to get it (checked before any work starts).
pub struct Tool {
    pub name: &'static str,
    pub reason: &'static str,
    pub debian_package: &'static str,
}

/// Finds `name` on PATH or in the sbin directories (which a non-root PATH often lacks).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Checks all `tools` at once and reports every missing one with its install hint.
pub fn check_tools(tools: &[Tool]) -> Result<()> {
    let missing: Vec<String> = tools
        .iter()
        .filter(|t| find_tool(t.name).is_none())
        .map(|t| {
            format!(
                "  {} (needed to {}): install with `apt-get install {}`",
                t.name, t.reason, t.debian_package
            )
        })
        .collect();
    if !missing.is_empty() {
        bail!("missing host tools:\n{}", missing.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reports_status_and_stderr_tail() {
        let e = Cmd::new("sh")
            .args(["-c", "echo first >&2; echo boom >&2; exit 3"])
            .output();
        let msg = format!("{:#}", e.unwrap_err());
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.contains("boom"), "{msg}");
    }

    #[test]
    fn stdin_is_null_so_readers_see_eof() {
        let out = Cmd::new("sh")
            .args(["-c", "cat; echo done"])
            .stdout()
            .unwrap();
        assert_eq!(out.trim(), "done");
    }

    #[test]
    fn missing_tools_are_listed_with_hints() {
        let e = check_tools(&[Tool {
            name: "berth-no-such-tool",
            reason: "test",
            debian_package: "nothing",
        }])
        .unwrap_err();
        assert!(e.to_string().contains("apt-get install nothing"));
    }
}
