//! The PostgreSQL tools: finding the ones that match the server, and running them
//! (their output checked, stored or fed from the repository).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::error::{Code, Failure};
use crate::pipeline::ChunkSource;
use crate::repo::format::Entry;

use super::*;

/// The tools of one PostgreSQL major version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub bin_dir: PathBuf,
    pub major: u32,
}

impl Tools {
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

fn tool_major(pg_dump: &Path) -> Option<u32> {
    let out = Command::new(pg_dump).arg("--version").output().ok()?;
    // "pg_dump (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)"
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(2)?;
    version.split('.').next()?.parse().ok()
}

/// Finds `pg_dump` and friends whose major version is at least `server_major`: the
/// configured folder, else `/usr/lib/postgresql/*/bin` (newest first), else `PATH`.
pub fn find_tools(bin_dir: Option<&Path>, server_major: u32) -> Result<Tools, Failure> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    match bin_dir {
        Some(dir) => candidates.push(dir.to_path_buf()),
        None => {
            if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
                let mut dirs: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.path().join("bin"))
                    .collect();
                dirs.sort();
                dirs.reverse();
                candidates.extend(dirs);
            }
            if let Some(path) = std::env::var_os("PATH") {
                candidates.extend(std::env::split_paths(&path));
            }
        }
    }
    let mut seen = Vec::new();
    for dir in candidates {
        let dump = dir.join("pg_dump");
        if !dump.is_file() {
            continue;
        }
        if let Some(major) = tool_major(&dump) {
            seen.push(major);
            if major >= server_major {
                return Ok(Tools {
                    bin_dir: dir,
                    major,
                });
            }
        }
    }
    Err(Failure::new(
        Code::SourceFailed,
        format!(
            "the server runs PostgreSQL {server_major}, and no pg_dump of version {server_major} or newer was found (found: {})",
            if seen.is_empty() {
                "none".to_string()
            } else {
                seen.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            }
        ),
    )
    .with_help(format!(
        "install postgresql-client-{server_major} (or newer), or set `bin_dir` on the source"
    )))
}

/// Reads a child's stdout, checking the first bytes against `magic`, and hands a copy
/// of what it reads to `tap`.
pub(super) struct Checked<R> {
    pub(super) inner: R,
    pub(super) magic: &'static [u8],
    pub(super) seen: Vec<u8>,
    pub(super) tap: Option<custom::LayoutReader>,
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(tap) = &mut self.tap {
            tap.push(&buf[..n]);
        }
        if self.seen.len() < self.magic.len() {
            let take = (self.magic.len() - self.seen.len()).min(n);
            self.seen.extend_from_slice(&buf[..take]);
            if !self.magic.starts_with(&self.seen) {
                return Err(io::Error::other(
                    "the dump does not start like a pg_dump archive",
                ));
            }
        }
        Ok(n)
    }
}

/// A tool started with its stderr read on the side, so a chatty tool cannot block on
/// a full pipe.
pub(super) struct Tool {
    pub(super) child: Child,
    errors: std::thread::JoinHandle<String>,
}

impl Tool {
    /// Starts `cmd` with `stdin` and `stdout` as given.
    pub(super) fn start(
        mut cmd: Command,
        what: &str,
        stdin: Stdio,
        stdout: Stdio,
    ) -> Result<Tool, Failure> {
        let mut child = cmd
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("cannot run {what}: {e}")))?;
        let mut stderr = child.stderr.take();
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.read_to_string(&mut text);
            }
            text
        });
        Ok(Tool { child, errors })
    }

    /// Waits for it to exit: its status and its stderr.
    pub(super) fn wait(
        mut self,
        what: &str,
    ) -> Result<(std::process::ExitStatus, String), Failure> {
        let status = self
            .child
            .wait()
            .map_err(|e| failed(format!("{what}: {e}")))?;
        Ok((status, self.errors.join().unwrap_or_default()))
    }

    /// Waits for it; a non-zero exit fails with the tool's own reason. Returns its
    /// stderr.
    pub(super) fn finish(self, what: &str) -> Result<String, Failure> {
        let (status, errors) = self.wait(what)?;
        if !status.success() {
            return Err(tool_failed(what, status, &errors));
        }
        Ok(errors)
    }
}

/// The last lines of a tool's stderr, for a message: the lines saying `error:` when
/// there are any (pg_restore ends with the failed command, often many lines), else the
/// last three.
fn stderr_tail(errors: &str) -> String {
    let mut tail: Vec<&str> = errors
        .lines()
        .filter(|l| l.contains("error:") || l.contains("ERROR:"))
        .take(3)
        .collect();
    if tail.is_empty() {
        tail = errors.lines().rev().take(3).collect();
        tail.reverse();
    }
    tail.join("; ")
}

/// `WHAT failed (STATUS): TAIL`.
pub(super) fn tool_failed(what: &str, status: std::process::ExitStatus, errors: &str) -> Failure {
    let tail = stderr_tail(errors);
    failed(format!(
        "{what} failed ({status}){}",
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        }
    ))
}

/// Runs a tool that reads and writes files itself (no stdin, stdout discarded);
/// fails on a non-zero exit with the tool's own reason. Returns its stderr.
pub(super) fn run_tool(cmd: Command, what: &str) -> Result<String, Failure> {
    Tool::start(cmd, what, Stdio::null(), Stdio::null())?.finish(what)
}

pub(super) fn run_fed(
    cmd: Command,
    what: &str,
    entry: &Entry,
    source: &mut dyn ChunkSource,
    strict: bool,
) -> Result<String, Failure> {
    run_fed_capturing(cmd, what, entry, source, strict, false).map(|(errors, _)| errors)
}

/// A tool fed with an entry whose output is small (a listing, a few statements):
/// returns what it printed. It may stop reading early (`pg_restore --list` reads a
/// custom-format archive's table of contents only): the rest is not fetched.
pub(super) fn fed_output(
    cmd: Command,
    what: &str,
    entry: &Entry,
    source: &mut dyn ChunkSource,
) -> Result<String, Failure> {
    let (_, out) = run_fed_capturing(cmd, what, entry, source, true, true)?;
    String::from_utf8(out).map_err(|_| failed(format!("{what}: its output is not UTF-8")))
}

/// [`run_fed`], keeping the tool's stdout when `capture` (read on the side).
fn run_fed_capturing(
    cmd: Command,
    what: &str,
    entry: &Entry,
    source: &mut dyn ChunkSource,
    strict: bool,
    capture: bool,
) -> Result<(String, Vec<u8>), Failure> {
    let stdout = if capture {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut tool = Tool::start(cmd, what, Stdio::piped(), stdout)?;
    let output = tool.child.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            out.read_to_end(&mut bytes).map(|_| bytes)
        })
    });
    let mut stdin = Pipe {
        inner: tool
            .child
            .stdin
            .take()
            .ok_or_else(|| failed(format!("{what}: no input")))?,
        broken: false,
    };
    // Stops at the first chunk that the tool no longer reads.
    let fed = feed(entry, source, &mut stdin);
    let broken = stdin.broken;
    drop(stdin);
    let output = match output {
        Some(reader) => reader
            .join()
            .map_err(|_| failed(format!("{what}: reading its output stopped")))?
            .map_err(|e| failed(format!("{what}: reading its output: {e}")))?,
        None => Vec::new(),
    };
    let (status, errors) = tool.wait(what)?;
    // The tool's own reason first: when it stops at an error, feeding it fails with a
    // broken pipe, which says nothing.
    if strict && !status.success() {
        return Err(tool_failed(what, status, &errors));
    }
    match fed {
        // A partial restore (`--table`, `--schema`) may finish without reading the
        // rest of the archive.
        Err(_) if broken && status.success() => {}
        other => {
            other?;
        }
    }
    Ok((errors, output))
}

/// A tool's standard input that remembers whether the tool closed it.
struct Pipe<W> {
    inner: W,
    broken: bool,
}

impl<W: Write> Write for Pipe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.write(buf);
        if matches!(&r, Err(e) if e.kind() == io::ErrorKind::BrokenPipe) {
            self.broken = true;
        }
        r
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
