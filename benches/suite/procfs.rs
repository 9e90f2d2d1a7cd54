//! What the parent reads about its children from `/proc`, and the descriptor
//! limit the children raise.

use std::io;

/// Clock ticks per second of `/proc/PID/stat` times.
fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// CPU time of a whole process (all threads): user and system, in µs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    pub user_us: u64,
    pub sys_us: u64,
}

impl Cpu {
    pub fn total_us(self) -> u64 {
        self.user_us + self.sys_us
    }

    /// CPU used between two samples.
    pub fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            user_us: self.user_us.saturating_sub(earlier.user_us),
            sys_us: self.sys_us.saturating_sub(earlier.sys_us),
        }
    }
}

/// User + system CPU time of a whole process (all threads), in µs.
///
/// `/proc/PID/stat` counts in clock ticks (10 ms here), so runs are kept long
/// enough (full mode: seconds) that a tick is a small error.
///
/// The split between user and system time is sampled at clock ticks by the
/// kernel; over a run of seconds it is a fair estimate, the sum is exact.
pub fn cpu(pid: u32) -> io::Result<Cpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: count fields
    // from the last ')'. After it: state(3) ... utime(14) stime(15).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc stat field"))
    };
    // fields[0] is field 3 (state), so field N is fields[N - 3].
    let us = |ticks: u64| ticks * 1_000_000 / clk_tck();
    Ok(Cpu {
        user_us: us(get(14 - 3)?),
        sys_us: us(get(15 - 3)?),
    })
}

/// Resident set size of a process, in bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            let kb: u64 = v
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad VmRSS"))?;
            return Ok(kb * 1024);
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "no VmRSS"))
}

/// CPU time (user + system) this process has used so far, in µs.
pub fn self_cpu_us() -> u64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    tv_us(ru.ru_utime) + tv_us(ru.ru_stime)
}

pub fn tv_us(tv: libc::timeval) -> u64 {
    tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64
}

/// Raises the soft descriptor limit to the hard one; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: plain get/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur as u64;
            }
        }
        lim.rlim_cur as u64
    }
}

/// The hard descriptor limit, which children can raise their soft limit to.
pub fn nofile_hard() -> u64 {
    // SAFETY: plain getrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        lim.rlim_max as u64
    }
}
