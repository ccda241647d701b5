//! A server process that a test harness started (sshd, Apache, Azurite): its output
//! drained into a log for as long as it lives (a full pipe would stall it), a wait
//! until it listens, a few fresh tries when it does not start, and a kill on drop.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running server; killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Runs `command` (stdin closed, stdout and stderr gathered into the log);
    /// `name` is how messages call it.
    pub fn spawn(name: &str, command: &mut Command) -> Result<Daemon, String> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {name}: {e}"))?;
        let log = Arc::new(Mutex::new(String::new()));
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ];
        for pipe in pipes.into_iter().flatten() {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        Ok(Daemon {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// Waits until `ready` says so, failing when the server exits first or `timeout`
    /// passes; the error carries what it logged.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&Daemon) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while !ready(self) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited with {status}:\n{}",
                    self.name,
                    self.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not {what} within {timeout:?}:\n{}",
                    self.name,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Waits until the server accepts connections on loopback `port`.
    pub fn wait_for_port(&mut self, port: u16, timeout: Duration) -> Result<(), String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        self.wait_until(&format!("listen on port {port}"), timeout, |_| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
        })
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit: its exit
    /// status, or why there is none.
    pub fn terminate(&mut self, timeout: Duration) -> Result<std::process::ExitStatus, String> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if !sent.success() {
            return Err(format!("kill -TERM {pid} failed"));
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not exit within {timeout:?} of SIGTERM:\n{}",
                    self.name,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server with `spawn`, trying afresh up to `attempts` times (a free port may
/// be taken in between); fails the test with every try's reason.
pub fn start<T>(what: &str, attempts: usize, mut spawn: impl FnMut() -> Result<T, String>) -> T {
    let mut failures = Vec::new();
    for _ in 0..attempts {
        match spawn() {
            Ok(server) => return server,
            Err(why) => failures.push(why),
        }
    }
    panic!("{what} did not start:\n{}", failures.join("\n---\n"));
}
