//! CPU pinning: a single-threaded server on one core, the load generator on
//! the others.
//!
//! Without it a single-connection round trip on this 2-core machine is
//! bimodal: when the scheduler happens to put client and server on the same
//! core, a reply wakes its reader on the core already running, and a round
//! trip takes about 7 µs; across cores it takes a wake-up of an idle core,
//! about 60 µs. Unpinned runs of `rr-c1` swung between 15k and 150k
//! requests/s from one round to the next (issue 12's first measurements),
//! whichever mode the scheduler chose. Pinned, every round measures the
//! cross-core case, which is the one a deployed server lives in (its
//! clients are elsewhere) and the one busy-polling is for.
//!
//! The orchestrator decides once, from the CPUs it may run on: the last is
//! the server's, the rest are the load's. It pins itself (so every load
//! generator it spawns, in-process or not, inherits the load CPUs) and
//! tells server children through the environment: a single-threaded
//! server pins itself to the server CPU, a multi-threaded one takes them
//! all. `NETPOOL_BENCH_PIN=0` turns it off; with one CPU there is nothing
//! to pin.

use std::io;
use std::process::Command;

/// Where a server child runs (set by the orchestrator for its children).
const SERVER_CPU: &str = "NETPOOL_BENCH_SERVER_CPU";
/// Every CPU of the run, comma-separated (for multi-threaded servers).
const ALL_CPUS: &str = "NETPOOL_BENCH_ALL_CPUS";

/// The orchestrator's plan: `Some(description)` once it pinned itself to
/// the load CPUs and exported the server's; `None` if pinning is off or
/// impossible.
pub fn plan() -> Option<String> {
    if std::env::var("NETPOOL_BENCH_PIN").is_ok_and(|v| v == "0") {
        return None;
    }
    let cpus = allowed().ok()?;
    if cpus.len() < 2 {
        return None;
    }
    let (server, load) = cpus.split_last()?;
    set(load).ok()?;
    let all: Vec<String> = cpus.iter().map(usize::to_string).collect();
    std::env::set_var(SERVER_CPU, server.to_string());
    std::env::set_var(ALL_CPUS, all.join(","));
    Some(format!(
        "single-threaded servers pinned to CPU {server}, load generators to CPU {}",
        load.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")
    ))
}

/// How many CPUs the run has: the orchestrator is pinned to the load CPUs
/// only, so its own count would be short.
pub fn cpus() -> usize {
    std::env::var(ALL_CPUS)
        .ok()
        .map(|v| v.split(',').count())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The CPUs a server child should run on: the server CPU if it is
/// single-threaded, every CPU if not; `None` if the run is not pinned.
fn for_server(single_threaded: bool) -> Option<Vec<usize>> {
    let parse =
        |v: String| -> Option<Vec<usize>> { v.split(',').map(|c| c.parse().ok()).collect() };
    if single_threaded {
        parse(std::env::var(SERVER_CPU).ok()?)
    } else {
        parse(std::env::var(ALL_CPUS).ok()?)
    }
}

/// Pins this process (a server child, before it starts its threads).
pub fn pin_server(single_threaded: bool) -> io::Result<()> {
    match for_server(single_threaded) {
        Some(cpus) => set(&cpus),
        None => Ok(()),
    }
}

/// Pins a server that is another program (redis-server) when it starts.
pub fn pin_command(cmd: &mut Command, single_threaded: bool) {
    use std::os::unix::process::CommandExt;
    if let Some(cpus) = for_server(single_threaded) {
        // SAFETY: between fork and exec only async-signal-safe calls are
        // allowed; sched_setaffinity is a plain system call on a set built
        // before the fork.
        let set = cpu_set(&cpus);
        unsafe {
            cmd.pre_exec(move || {
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: CPU_SET bounds-checks nothing, so the caller's CPU
        // numbers come from the kernel's own mask (below CPU_SETSIZE).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set
}

/// Pins the calling thread (and the threads it starts later) to `cpus`.
fn set(cpus: &[usize]) -> io::Result<()> {
    let set = cpu_set(cpus);
    // SAFETY: a valid set of the size passed; pid 0 is the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The CPUs this thread may run on.
fn allowed() -> io::Result<Vec<usize>> {
    // SAFETY: as in `cpu_set`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, writable set of the size passed.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: reading bits of an initialised set, below CPU_SETSIZE.
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}
