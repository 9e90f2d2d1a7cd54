//! Child processes of the suite: servers and load generators (this same binary
//! re-executed with `--serve` / `--load`), `redis-server` and `redis-benchmark`.
//!
//! The parent talks to a child through lines: it reads the child's stdout on a
//! thread that forwards each line to a channel, so every wait has a deadline.
//! A child is killed and reaped when its handle drops, so no run can leave a
//! server behind.

use std::io::{self, BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

pub struct Child {
    child: std::process::Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pub pid: u32,
    /// Set once we reaped the child ourselves (wait4); from then on its pid may
    /// belong to another process, so it must never be signalled again.
    reaped: bool,
    name: String,
}

impl Child {
    /// Re-executes this binary with `args`.
    pub fn spawn_self(name: &str, args: &[String]) -> io::Result<Child> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(args);
        Child::spawn(name, cmd)
    }

    /// Starts `cmd` with piped stdin/stdout; stderr is inherited so a child's
    /// complaint reaches the person running the suite.
    pub fn spawn(name: &str, mut cmd: Command) -> io::Result<Child> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Child {
            pid: child.id(),
            child,
            stdin,
            lines: rx,
            reaped: false,
            name: name.to_string(),
        })
    }

    /// The next stdout line, waiting at most `timeout`.
    pub fn next_line(&self, timeout: Duration) -> io::Result<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Ok(l),
            Err(RecvTimeoutError::Timeout) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{}: no output within {timeout:?}", self.name),
            )),
            Err(RecvTimeoutError::Disconnected) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: exited early", self.name),
            )),
        }
    }

    /// Reads lines until one satisfies `pred`, within `timeout` in all.
    pub fn wait_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> io::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next_line(left)?;
            if pred(&line) {
                return Ok(line);
            }
        }
    }

    /// Reads lines until stdout closes (the child is exiting) and returns them.
    pub fn read_to_end(&self, timeout: Duration) -> io::Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => out.push(l),
                Err(RecvTimeoutError::Disconnected) => return Ok(out),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{}: did not finish within {timeout:?}", self.name),
                    ))
                }
            }
        }
    }

    pub fn send_line(&mut self, line: &str) -> io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::other("stdin closed"))?;
        writeln!(stdin, "{line}")?;
        stdin.flush()
    }

    /// Reaps an exiting child and returns its exit status and the CPU time
    /// (user + system, µs) it used, from `wait4`'s rusage. Call after stdout
    /// closed; a child that does not exit within `timeout` is killed.
    pub fn reap_with_cpu(mut self, timeout: Duration) -> io::Result<(i32, u64)> {
        self.stdin.take();
        let deadline = Instant::now() + timeout;
        loop {
            let mut status = 0;
            // SAFETY: wait4 on our own child's pid with a zeroed rusage.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            let r = unsafe {
                libc::wait4(self.pid as libc::pid_t, &mut status, libc::WNOHANG, &mut ru)
            };
            if r == self.pid as libc::pid_t {
                self.reaped = true;
                let cpu = crate::procfs::tv_us(ru.ru_utime) + crate::procfs::tv_us(ru.ru_stime);
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    -1
                };
                return Ok((code, cpu));
            }
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{}: did not exit", self.name),
                ));
            }
            // The child has closed stdout and is on its way out: a short,
            // bounded poll for its exit status.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            self.stdin.take();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
