//! The workers stopped for the windows of `api-alone` and `one-client`, so that what is measured
//! is the API's submit path alone: its CPU time, commits, WAL and messages, without the workers
//! taking the jobs it accepts.
//!
//! The workers are the processes of the `worker*.pid` files `deploy/dev` writes next to
//! `dev.env`. `SIGSTOP` stops a process where it stands (it can neither catch nor ignore it) and
//! `SIGCONT` lets it go on; the jobs accepted meanwhile wait in the queue. A [`PausedWorkers`]
//! resumes its workers when it is dropped, so that no error or panic of the scenario leaves the
//! stack's workers stopped; the second Ctrl-C, which exits at once without running destructors,
//! calls [`resume_all`] first. Only a bench that is killed by a signal it does not handle
//! (`SIGKILL`, `SIGTERM`, a closed terminal) leaves them stopped:
//! `kill -CONT $(cat .run/worker*.pid)` resumes them.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::rss::{Watched, find_pid_files};

/// The pids this process has stopped and not resumed yet: what [`resume_all`] resumes.
static STOPPED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn stopped_pids() -> MutexGuard<'static, Vec<u32>> {
    // A panic elsewhere while the list was held must not keep the workers stopped.
    STOPPED.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The worker processes whose pid files (`worker*.pid`) are in `dir` and which are alive.
pub fn find_workers(dir: &Path) -> Vec<Watched> {
    find_pid_files(dir, |name| name.starts_with("worker"))
}

/// Workers stopped with `SIGSTOP`; dropping it sends them `SIGCONT`.
#[derive(Debug)]
pub struct PausedWorkers {
    stopped: Vec<Watched>,
}

impl PausedWorkers {
    /// Stops each of `workers`. Also returns, for each one that could not be stopped, its name,
    /// pid and why (`worker1 (pid 4242): EPERM: Operation not permitted`).
    pub fn pause(workers: &[Watched]) -> (Self, Vec<String>) {
        let mut paused = Self { stopped: Vec::with_capacity(workers.len()) };
        let mut failures = Vec::new();
        for worker in workers {
            // Listed before the signal is sent, so that a hard exit right after it still resumes
            // the worker.
            stopped_pids().push(worker.pid);
            match send(worker.pid, Signal::SIGSTOP) {
                Ok(()) => paused.stopped.push(worker.clone()),
                Err(errno) => {
                    forget(worker.pid);
                    failures.push(format!("{} (pid {}): {errno}", worker.name, worker.pid));
                }
            }
        }
        (paused, failures)
    }

    /// The workers stopped and not resumed yet.
    pub fn stopped(&self) -> &[Watched] {
        &self.stopped
    }

    /// Resumes every stopped worker (once: a second call has nothing left to resume). Returns,
    /// for each one that could not be resumed, its name, pid and why; a worker that is gone
    /// answers `ESRCH`.
    pub fn resume(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        for worker in self.stopped.drain(..) {
            if let Err(errno) = send(worker.pid, Signal::SIGCONT) {
                failures.push(format!("{} (pid {}): {errno}", worker.name, worker.pid));
            }
            forget(worker.pid);
        }
        failures
    }
}

impl Drop for PausedWorkers {
    fn drop(&mut self) {
        // Whatever ended the scenario (an error, Ctrl-C, a panic), the workers go on. A failure
        // here has no one to be reported to; the explicit `resume` after the window reports.
        let _ = self.resume();
    }
}

/// Resumes every worker this process has stopped and not resumed yet; for an exit that skips
/// destructors (the second Ctrl-C). Returns how many were sent `SIGCONT`.
pub fn resume_all() -> usize {
    let pids: Vec<u32> = stopped_pids().drain(..).collect();
    pids.iter().filter(|pid| send(**pid, Signal::SIGCONT).is_ok()).count()
}

/// Takes one listing of `pid` off the list of stopped workers.
fn forget(pid: u32) {
    let mut pids = stopped_pids();
    if let Some(at) = pids.iter().position(|p| *p == pid) {
        pids.swap_remove(at);
    }
}

/// Sends `signal` to the single process `pid`.
fn send(pid: u32, signal: Signal) -> Result<(), Errno> {
    // kill(2) reads 0 and negative pids as process groups (0: the bench's own group), and a pid
    // file holding the bench's own pid would stop the bench with nobody left to resume it.
    let target = i32::try_from(pid).ok().filter(|p| *p > 0 && pid != std::process::id());
    let target = target.ok_or(Errno::EINVAL)?;
    kill(Pid::from_raw(target), signal)
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::*;

    /// One signalling test at a time: `resume_all` resumes every worker of the process, those of
    /// the other tests too.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A `sleep` child standing in for a worker; killed and reaped when dropped, also when a
    /// test fails.
    struct Sleeper(std::process::Child);

    impl Sleeper {
        fn start() -> Self {
            let child =
                Command::new("sleep").arg("60").stdin(Stdio::null()).spawn().expect("sleep starts");
            Self(child)
        }

        fn as_worker(&self) -> Watched {
            Watched { name: "worker1".into(), pid: self.0.id() }
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Field 3 of `/proc/<pid>/stat`: `T` when stopped by a signal.
    fn state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 1..].split_whitespace().next()?.chars().next()
    }

    /// The kernel stops and resumes a process when it next runs: wait a little for it.
    fn becomes_stopped(pid: u32, stopped: bool) -> bool {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if state(pid).is_some_and(|s| (s == 'T') == stopped) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn pauses_and_resumes_a_worker() {
        let _serial = serial();
        let sleeper = Sleeper::start();
        let worker = sleeper.as_worker();
        let (mut paused, failures) = PausedWorkers::pause(std::slice::from_ref(&worker));
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(paused.stopped(), std::slice::from_ref(&worker));
        assert!(becomes_stopped(worker.pid, true), "state {:?}", state(worker.pid));
        assert_eq!(paused.resume(), Vec::<String>::new());
        assert!(becomes_stopped(worker.pid, false), "state {:?}", state(worker.pid));
        assert!(paused.stopped().is_empty());
        assert!(!stopped_pids().contains(&worker.pid));
    }

    #[test]
    fn dropping_the_guard_resumes_the_workers() {
        let _serial = serial();
        let sleeper = Sleeper::start();
        let worker = sleeper.as_worker();
        let (paused, _) = PausedWorkers::pause(std::slice::from_ref(&worker));
        assert!(becomes_stopped(worker.pid, true));
        drop(paused);
        assert!(becomes_stopped(worker.pid, false), "state {:?}", state(worker.pid));
    }

    #[test]
    fn a_panic_in_the_window_resumes_the_workers() {
        let _serial = serial();
        let sleeper = Sleeper::start();
        let worker = sleeper.as_worker();
        let pid = worker.pid;
        let outcome = std::panic::catch_unwind(move || {
            let (_paused, _) = PausedWorkers::pause(&[worker]);
            assert!(becomes_stopped(pid, true));
            panic!("the scenario failed");
        });
        assert!(outcome.is_err());
        assert!(becomes_stopped(pid, false), "state {:?}", state(pid));
    }

    #[test]
    fn resume_all_resumes_what_a_hard_exit_would_leave_stopped() {
        let _serial = serial();
        let sleeper = Sleeper::start();
        let worker = sleeper.as_worker();
        let (paused, _) = PausedWorkers::pause(std::slice::from_ref(&worker));
        assert!(becomes_stopped(worker.pid, true));
        // As `std::process::exit` would: no destructor runs.
        std::mem::forget(paused);
        assert_eq!(resume_all(), 1);
        assert!(becomes_stopped(worker.pid, false), "state {:?}", state(worker.pid));
    }

    #[test]
    fn never_signals_a_process_group_or_the_bench_itself() {
        let _serial = serial();
        let ourselves = std::process::id();
        let workers = [
            Watched { name: "worker0".into(), pid: 0 },
            Watched { name: "worker1".into(), pid: ourselves },
            Watched { name: "worker2".into(), pid: u32::MAX },
        ];
        let (paused, failures) = PausedWorkers::pause(&workers);
        assert!(paused.stopped().is_empty());
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(failures[1].starts_with(&format!("worker1 (pid {ourselves}): EINVAL")));
        assert!(!stopped_pids().contains(&ourselves));
    }

    #[test]
    fn finds_only_the_workers_pid_files() {
        let sleeper = Sleeper::start();
        let dir = std::env::temp_dir().join(format!("gengate-bench-pause-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("api.pid"), format!("{}\n", sleeper.0.id())).unwrap();
        std::fs::write(dir.join("worker1.pid"), format!("{}\n", sleeper.0.id())).unwrap();
        std::fs::write(dir.join("worker2.pid"), "not a pid").unwrap();
        let found = find_workers(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found, vec![sleeper.as_worker()]);
    }
}
