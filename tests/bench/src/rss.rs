//! Memory of the processes under test: their resident set sampled from `/proc/<pid>/status`
//! while the bench runs, and the kernel's high-water mark (`VmHWM`, the peak since the process
//! started) at the end.
//!
//! The pids come from the pid files `deploy/dev` writes next to `dev.env`: `api.pid` and
//! `worker*.pid`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// How often the resident set is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// The memory figures of one `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStatus {
    /// `VmRSS`: resident now.
    pub rss_kib: Option<u64>,
    /// `VmHWM`: the peak resident set since the process started.
    pub hwm_kib: Option<u64>,
}

/// Reads `VmRSS` and `VmHWM` out of the text of `/proc/<pid>/status` (lines like
/// `VmRSS:\t   12345 kB`). A kernel thread or an odd kernel may lack them: `None`.
pub fn parse_status(text: &str) -> MemoryStatus {
    let mut status = MemoryStatus::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let slot = match key.trim() {
            "VmRSS" => &mut status.rss_kib,
            "VmHWM" => &mut status.hwm_kib,
            _ => continue,
        };
        *slot = parse_kib(value);
    }
    status
}

fn parse_kib(value: &str) -> Option<u64> {
    let mut parts = value.split_whitespace();
    let number: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        // The kernel always says kB (meaning KiB).
        Some("kB") | None => Some(number),
        Some(_) => None,
    }
}

/// One process to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// `api`, `worker1`, … (the pid file's name).
    pub name: String,
    /// Its pid.
    pub pid: u32,
}

/// The API and worker processes whose pid files are in `dir` and which are alive.
pub fn find_processes(dir: &Path) -> Vec<Watched> {
    find_pid_files(dir, |name| name == "api" || name.starts_with("worker"))
}

/// The processes whose pid files (`NAME.pid`) are in `dir`, whose `NAME` is accepted, and which
/// are alive; by name.
pub fn find_pid_files(dir: &Path, accept: impl Fn(&str) -> bool) -> Vec<Watched> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<Watched> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            let name = path.file_name()?.to_str()?.strip_suffix(".pid")?.to_owned();
            if !accept(&name) {
                return None;
            }
            let pid: u32 = std::fs::read_to_string(&path).ok()?.trim().parse().ok()?;
            status_path(pid).exists().then_some(Watched { name, pid })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

fn status_path(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/status"))
}

fn read_status(pid: u32) -> Option<MemoryStatus> {
    std::fs::read_to_string(status_path(pid)).ok().map(|text| parse_status(&text))
}

/// What was seen of one process.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProcessMemory {
    /// `api`, `worker1`, …
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// The largest `VmRSS` sampled during the run, in KiB.
    pub peak_rss_kib: Option<u64>,
    /// `VmHWM` at the end of the run: the peak since the process started, in KiB.
    pub vm_hwm_kib: Option<u64>,
    /// How many samples were taken.
    pub samples: u64,
    /// False when the process was gone by the end of the run.
    pub alive_at_end: bool,
}

/// Samples the watched processes every [`SAMPLE_EVERY`] until stopped.
#[derive(Debug)]
pub struct Sampler {
    state: Arc<Mutex<Vec<ProcessMemory>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling `processes`.
    pub fn start(processes: &[Watched]) -> Self {
        let state = Arc::new(Mutex::new(
            processes
                .iter()
                .map(|p| ProcessMemory {
                    name: p.name.clone(),
                    pid: p.pid,
                    peak_rss_kib: None,
                    vm_hwm_kib: None,
                    samples: 0,
                    alive_at_end: true,
                })
                .collect::<Vec<_>>(),
        ));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let state = state.clone();
            let stop = stop.clone();
            async move {
                let mut tick = tokio::time::interval(SAMPLE_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => sample(&state),
                    }
                }
            }
        });
        Self { state, stop, task }
    }

    /// Takes a last sample and reads each process's `VmHWM`.
    pub async fn finish(self) -> Vec<ProcessMemory> {
        self.stop.cancel();
        let _ = self.task.await;
        sample(&self.state);
        let mut processes = self.state.lock().expect("sampler lock").clone();
        for process in &mut processes {
            match read_status(process.pid) {
                Some(status) => process.vm_hwm_kib = status.hwm_kib,
                None => process.alive_at_end = false,
            }
        }
        processes
    }
}

fn sample(state: &Mutex<Vec<ProcessMemory>>) {
    let mut processes = state.lock().expect("sampler lock");
    for process in processes.iter_mut() {
        if let Some(rss) = read_status(process.pid).and_then(|s| s.rss_kib) {
            process.peak_rss_kib = Some(process.peak_rss_kib.map_or(rss, |peak| peak.max(rss)));
            process.samples += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tgengate-api
Umask:\t0022
State:\tS (sleeping)
Tgid:\t4242
Pid:\t4242
VmPeak:\t  812344 kB
VmSize:\t  812344 kB
VmLck:\t       0 kB
VmHWM:\t   48212 kB
VmRSS:\t   45100 kB
RssAnon:\t   30000 kB
Threads:\t5
";

    #[test]
    fn reads_rss_and_high_water_mark() {
        assert_eq!(
            parse_status(STATUS),
            MemoryStatus { rss_kib: Some(45_100), hwm_kib: Some(48_212) }
        );
    }

    #[test]
    fn a_kernel_thread_has_no_memory_lines() {
        let status = parse_status("Name:\tkthreadd\nState:\tS (sleeping)\nPid:\t2\n");
        assert_eq!(status, MemoryStatus::default());
    }

    #[test]
    fn odd_values_are_none_not_zero() {
        assert_eq!(parse_status("VmRSS:\tlots kB\n").rss_kib, None);
        assert_eq!(parse_status("VmRSS:\t12 furlongs\n").rss_kib, None);
    }

    #[test]
    fn finds_this_process_through_a_pid_file() {
        let dir = std::env::temp_dir().join(format!("gengate-bench-rss-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("api.pid"), format!("{}\n", std::process::id())).unwrap();
        std::fs::write(dir.join("sim.pid"), format!("{}\n", std::process::id())).unwrap();
        std::fs::write(dir.join("worker1.pid"), "not a pid").unwrap();
        let found = find_processes(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found, vec![Watched { name: "api".into(), pid: std::process::id() }]);
    }
}
