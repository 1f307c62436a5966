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

    /// Runs a long job: `input` (if any) is fed to stdin from a thread, every stdout line is
    /// handed to `on_line` as it comes (progress), and only the last lines of stderr are kept,
    /// for the error of a non-zero exit (a kernel build writes megabytes of warnings there).
    pub fn stream(&self, input: Option<&[u8]>, on_line: &mut dyn FnMut(&str)) -> Result<()> {
        use std::io::{BufRead, BufReader, Write};
        tracing::debug!(cmd = %self.display(), "running");
        let mut c = self.command();
        c.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .with_context(|| format!("could not start `{}`", self.program.to_string_lossy()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let (fed, err_tail) = std::thread::scope(|s| {
            let feeder = s.spawn(move || -> std::io::Result<()> {
                if let (Some(mut w), Some(data)) = (stdin, input) {
                    w.write_all(data)?;
                }
                Ok(())
            });
            let errs = s.spawn(move || {
                let mut last: std::collections::VecDeque<String> = Default::default();
                if let Some(e) = stderr {
                    for line in BufReader::new(e).lines().map_while(|l| l.ok()) {
                        if last.len() == STDERR_TAIL_LINES * 4 {
                            last.pop_front();
                        }
                        last.push_back(line);
                    }
                }
                last.into_iter().collect::<Vec<_>>().join("\n")
            });
            if let Some(o) = stdout {
                for line in BufReader::new(o).split(b'\n').map_while(|l| l.ok()) {
                    on_line(&String::from_utf8_lossy(&line));
                }
            }
            (
                feeder.join().unwrap_or(Ok(())),
                errs.join().unwrap_or_default(),
            )
        });
        let status = child
            .wait()
            .with_context(|| format!("waiting for `{}`", self.display()))?;
        if !status.success() {
            bail!("`{}` failed ({status}){}", self.display(), tail(&err_tail));
        }
        fed.with_context(|| format!("feeding the input of `{}`", self.display()))?;
        Ok(())
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
    fn stream_feeds_stdin_hands_out_lines_and_reports_the_stderr_tail() {
        let mut lines = Vec::new();
        Cmd::new("sh")
            .args(["-c", "tr a-z A-Z; echo second"])
            .stream(Some(b"first\n"), &mut |l| lines.push(l.to_string()))
            .unwrap();
        assert_eq!(lines, ["FIRST", "second"]);
        let e = Cmd::new("sh")
            .args([
                "-c",
                "for i in $(seq 200); do echo noise$i >&2; done; echo fatal >&2; exit 2",
            ])
            .stream(None, &mut |_| {})
            .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("exit status: 2") && msg.contains("fatal"),
            "{msg}"
        );
        assert!(!msg.contains("noise1\n"), "only the tail is kept: {msg}");
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
