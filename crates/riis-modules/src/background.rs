//! A thread of a module's own for work no request should wait for (making
//! a compressed copy, writing a trace file), fed through a bounded queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, SendError, Sender};
use std::sync::{Arc, Mutex};

/// A named thread that runs `work` on each job queued, started with the
/// first job. Held by a module's factory: when a configuration reload drops
/// it, the thread finishes the jobs already queued and ends (at process exit
/// it simply stops).
pub(crate) struct Background<J> {
    name: &'static str,
    /// Threads taking jobs from the queue.
    threads: usize,
    capacity: usize,
    /// Jobs queued through [`Background::queue`] and not yet taken: at
    /// most `capacity`.
    waiting: Arc<AtomicUsize>,
    work: Arc<dyn Fn(J) + Send + Sync>,
    state: Mutex<State<J>>,
}

/// A queued job, and whether it counts against the capacity.
type Queued<J> = (J, bool);

struct State<J> {
    sender: Option<Sender<Queued<J>>>,
    /// The thread could not be started last time (logged once until it
    /// starts).
    spawn_failed: bool,
}

impl<J: Send + 'static> Background<J> {
    /// A thread called `name` (started later) that holds at most `capacity`
    /// jobs waiting.
    pub(crate) fn new(
        name: &'static str,
        capacity: usize,
        work: impl Fn(J) + Send + Sync + 'static,
    ) -> Self {
        Self::with_threads(name, 1, capacity, work)
    }

    /// [`Background::new`] with `threads` threads taking jobs (at least one).
    pub(crate) fn with_threads(
        name: &'static str,
        threads: usize,
        capacity: usize,
        work: impl Fn(J) + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            threads: threads.max(1),
            capacity,
            waiting: Arc::new(AtomicUsize::new(0)),
            work: Arc::new(work),
            state: Mutex::new(State {
                sender: None,
                spawn_failed: false,
            }),
        }
    }

    /// Queues `job`, starting the thread if it is not running; gives the job
    /// back when the queue is full or the thread cannot start. Never blocks.
    pub(crate) fn queue(&self, job: J) -> Result<(), J> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(job);
        }
        self.send(job, true).inspect_err(|_| {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
        })
    }

    /// Queues the next step of work already admitted through
    /// [`Background::queue`] (the next part of an answer whose head went
    /// out): not counted against the capacity, so a queue that new work
    /// filled meanwhile does not cut it short. Each admitted request has at
    /// most one such step waiting, so these are bounded by the requests.
    pub(crate) fn queue_admitted(&self, job: J) -> Result<(), J> {
        self.send(job, false)
    }

    fn send(&self, job: J, counted: bool) -> Result<(), J> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.sender.is_none() {
            let (sender, jobs) = channel::<Queued<J>>();
            let jobs = Arc::new(Mutex::new(jobs));
            let mut started = 0;
            let mut failure = None;
            for _ in 0..self.threads {
                let work = self.work.clone();
                let jobs = jobs.clone();
                let waiting = self.waiting.clone();
                let name = self.name;
                let spawned = std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || loop {
                        // One thread waits on the queue at a time; the lock
                        // is let go before the job runs.
                        let next = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok((job, counted)) = next else { break };
                        if counted {
                            waiting.fetch_sub(1, Ordering::AcqRel);
                        }
                        // A panic loses that job only: the thread goes on
                        // with the ones queued behind it.
                        let done =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(job)));
                        if done.is_err() {
                            tracing::error!(thread = name, "a background job panicked");
                        }
                    });
                match spawned {
                    Ok(_) => started += 1,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failure {
                if !std::mem::replace(&mut state.spawn_failed, true) {
                    tracing::error!(
                        thread = self.name,
                        started,
                        "cannot start a background thread: {e}"
                    );
                }
            }
            // The threads that started serve the queue; with none there is
            // no queue.
            if started == 0 {
                return Err(job);
            }
            state.sender = Some(sender);
            if started == self.threads {
                state.spawn_failed = false;
            }
        }
        let sent = match &state.sender {
            Some(sender) => sender.send((job, counted)),
            None => return Err(job),
        };
        match sent {
            Ok(()) => Ok(()),
            // The threads are gone: the next job starts others.
            Err(SendError((job, _))) => {
                state.sender = None;
                Err(job)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Background;
    use std::sync::mpsc::channel;
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    #[test]
    fn a_full_queue_gives_the_job_back_and_a_panic_loses_only_its_job() {
        // Also: the next step of admitted work passes a full queue.
        let (started, runs) = channel();
        let started = std::sync::Mutex::new(started);
        let gate = Arc::new(Barrier::new(2));
        let hold = gate.clone();
        let worker = Background::new("riis-test", 1, move |n: u32| {
            started.lock().unwrap().send(n).unwrap();
            match n {
                0 => {
                    // Holds the thread while the test fills the queue.
                    hold.wait();
                }
                1 => panic!("job 1 fails"),
                _ => {}
            }
        });
        let next = || runs.recv_timeout(Duration::from_secs(10)).unwrap();
        worker.queue(0).unwrap();
        assert_eq!(next(), 0);
        // Job 0 runs; the queue has room for one.
        worker.queue(1).unwrap();
        assert_eq!(worker.queue(2), Err(2));
        worker.queue_admitted(9).unwrap();
        gate.wait();
        assert_eq!(next(), 1);
        // Job 1 panicked; the thread goes on, and taken jobs give their
        // room back.
        assert_eq!(next(), 9);
        worker.queue(3).unwrap();
        assert_eq!(next(), 3);
    }
}
