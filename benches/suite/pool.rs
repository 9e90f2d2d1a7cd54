//! The worker pool of the offload servers (issue 14): the same pool for
//! netpool-offload and tokio-offload, so that the two differ only in how a
//! reply finds its way back, in order, to its connection.
//!
//! `THREADS` threads take jobs from one channel (a mutex around std's
//! receiver, the textbook pool); each job is a request line and where its
//! reply goes ([`Reply`]). The work is the protocol's own reply, computed
//! on the worker: cheap on purpose, so that what is measured is the cost of
//! offloading, not of the work.

use std::sync::{mpsc, Arc, Mutex};

use crate::proto::{self, Proto};

/// Worker threads: one per core, at least two (two on the 2-core benchmark
/// machine, beside the loop and the load generator).
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

/// Where a finished reply goes.
pub trait Reply: Send + 'static {
    fn reply(self, bytes: Vec<u8>);
}

/// Jobs for the pool; the workers end when every `Pool` is dropped.
pub struct Pool<R: Reply> {
    jobs: mpsc::Sender<(Vec<u8>, R)>,
}

impl<R: Reply> Clone for Pool<R> {
    fn clone(&self) -> Self {
        Pool {
            jobs: self.jobs.clone(),
        }
    }
}

impl<R: Reply> Pool<R> {
    pub fn new(proto: Proto) -> Self {
        let (jobs, queue) = mpsc::channel::<(Vec<u8>, R)>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads() {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("pool-{i}"))
                .spawn(move || loop {
                    let job = queue.lock().unwrap().recv();
                    let Ok((line, reply)) = job else { return };
                    let mut out = Vec::with_capacity(line.len() + 8);
                    proto::respond(proto, &line, &mut out);
                    reply.reply(out);
                })
                .expect("spawn a pool thread");
        }
        Pool { jobs }
    }

    /// Hands `line` (without its `\n`) to a worker.
    pub fn submit(&self, line: Vec<u8>, reply: R) {
        // The workers outlive every sender.
        let _ = self.jobs.send((line, reply));
    }
}
