//! CPU time of the processes a job goes through: user plus system time from `/proc/<pid>/stat`,
//! read at both ends of a scenario's window.
//!
//! A process is counted in a [`Group`]: one process named by a pid file (`api.pid`,
//! `worker1.pid`, `sim.pid`, which `deploy/dev` writes next to `dev.env`), every process with a
//! given command name (`postgres`: the postmaster and all its backends; `beam.smp`: RabbitMQ), or
//! the bench itself. A group's CPU time over a window is, for each of its processes, the growth of
//! `utime + stime` (its own threads) and of `cutime + cstime` (the children it waited for: the
//! `ffmpeg` a worker runs, the backends the postmaster reaps). A process that started inside the
//! window counts whole; one that ended inside it is counted through the member that reaped it,
//! less what it had used before the window (see [`group_ticks`]).

use std::collections::BTreeMap;
use std::path::Path;

/// What the report uses of one `/proc/<pid>/stat`, in clock ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 1.
    pub pid: u32,
    /// Field 2, without its parentheses: the executable's name as the kernel keeps it (at most
    /// 15 bytes; PostgreSQL's process titles do not change it).
    pub comm: String,
    /// Field 4: the parent's pid.
    pub ppid: u32,
    /// Field 14: user time of the process's threads.
    pub utime: u64,
    /// Field 15: system time of the process's threads.
    pub stime: u64,
    /// Field 16: user time of the children it waited for.
    pub cutime: u64,
    /// Field 17: system time of the children it waited for.
    pub cstime: u64,
    /// Field 22: when the process started, in ticks since boot (tells a reused pid apart).
    pub starttime: u64,
}

impl ProcStat {
    /// Its own CPU time.
    pub fn own(&self) -> u64 {
        self.utime + self.stime
    }

    /// The CPU time of the children it waited for.
    pub fn children(&self) -> u64 {
        self.cutime + self.cstime
    }
}

/// Parses the text of `/proc/<pid>/stat`. The command name may hold spaces and parentheses, so
/// the fields after it are counted from the last `)`. `None` for anything malformed.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_owned();
    // Field 3 (state) is at index 0 of what follows the command name.
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { rest.get(n - 3)?.parse().ok() };
    Some(ProcStat {
        pid,
        comm,
        ppid: u32::try_from(field(4)?).ok()?,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
        starttime: field(22)?,
    })
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`); 100, the Linux value everywhere, if the
/// call fails.
pub fn clock_ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|ticks| u64::try_from(ticks).ok())
        .filter(|ticks| *ticks > 0)
        .unwrap_or(100)
}

/// Which processes make up a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Members {
    /// One process, by pid (read from its pid file when the bench starts).
    Pid(u32),
    /// Every process whose command name is this, except those whose command line contains
    /// `unless_cmdline`.
    Comm {
        /// `postgres`, `beam.smp`.
        comm: &'static str,
        /// Skip processes whose arguments (joined by spaces) contain this.
        unless_cmdline: Option<&'static str>,
    },
    /// The bench's own process.
    This,
}

/// A named set of processes whose CPU time is added up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// `api`, `worker1`, `sim`, `postgres`, `rabbitmq`, `bench`.
    pub name: String,
    /// Who belongs to it.
    pub members: Members,
}

/// The processes of a group at one moment, by pid and start time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupSample {
    /// Keyed by (pid, start time), so a pid reused by a new process is a new process.
    pub processes: BTreeMap<(u32, u64), ProcStat>,
}

impl GroupSample {
    /// A sample of these processes.
    pub fn of(processes: impl IntoIterator<Item = ProcStat>) -> Self {
        Self { processes: processes.into_iter().map(|p| ((p.pid, p.starttime), p)).collect() }
    }

    /// The pids in the sample.
    pub fn pids(&self) -> Vec<u32> {
        self.processes.keys().map(|(pid, _)| *pid).collect()
    }
}

/// CPU time of a group between two samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupTicks {
    /// Clock ticks used inside the window.
    pub ticks: u64,
    /// Processes that ended inside the window without a member to reap them: what they used
    /// after the first sample is missing from `ticks`.
    pub lost: u32,
}

/// The CPU time a group used between `start` and `end`:
///
/// - a process in both samples: the growth of its own and its children's time;
/// - a process only in `end` (it started inside the window): all of it;
/// - a process only in `start` (it ended inside the window): its whole life is in the children's
///   time of the member that reaped it (its parent, if that parent is in both samples), so what it
///   had used before the window is taken off again; without such a parent it is lost.
pub fn group_ticks(start: &GroupSample, end: &GroupSample) -> GroupTicks {
    let mut total: i128 = 0;
    for (key, now) in &end.processes {
        let before = start.processes.get(key);
        let was = before.map_or(0, |b| b.own() + b.children());
        total += i128::from(now.own() + now.children()) - i128::from(was);
    }
    let mut lost = 0;
    for (key, gone) in &start.processes {
        if end.processes.contains_key(key) {
            continue;
        }
        let reaper_seen_throughout = end.processes.iter().any(|((pid, _), parent)| {
            *pid == gone.ppid && start.processes.contains_key(&(parent.pid, parent.starttime))
        });
        if reaper_seen_throughout {
            total -= i128::from(gone.own() + gone.children());
        } else {
            lost += 1;
        }
    }
    GroupTicks { ticks: u64::try_from(total.max(0)).unwrap_or(u64::MAX), lost }
}

/// Milliseconds in `ticks` clock ticks at `per_second` ticks a second.
pub fn ticks_to_ms(ticks: u64, per_second: u64) -> f64 {
    ticks as f64 * 1000.0 / per_second.max(1) as f64
}

fn read_stat(pid: u32) -> Option<ProcStat> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|t| parse_stat(&t))
}

fn read_self() -> Option<ProcStat> {
    std::fs::read_to_string("/proc/self/stat").ok().and_then(|t| parse_stat(&t))
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .unwrap_or_default()
}

/// Every process on the machine, as `/proc` lists them now.
fn all_processes() -> Vec<ProcStat> {
    let Ok(entries) = std::fs::read_dir(Path::new("/proc")) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// Samples every group now, in the order given. `/proc` is listed once for all the groups
/// that go by command name.
pub fn sample(groups: &[Group]) -> Vec<GroupSample> {
    let by_comm = groups.iter().any(|g| matches!(g.members, Members::Comm { .. }));
    let everyone = if by_comm { all_processes() } else { Vec::new() };
    groups
        .iter()
        .map(|group| match &group.members {
            Members::Pid(pid) => GroupSample::of(read_stat(*pid)),
            Members::This => GroupSample::of(read_self()),
            Members::Comm { comm, unless_cmdline } => GroupSample::of(
                everyone
                    .iter()
                    .filter(|p| p.comm == *comm)
                    .filter(|p| unless_cmdline.is_none_or(|skip| !cmdline(p.pid).contains(skip)))
                    .cloned(),
            ),
        })
        .collect()
}

/// The groups of a dev stack: the API, each worker and the simulator from the pid files in
/// `pid_dir` (those whose process is alive), all PostgreSQL processes, RabbitMQ's `beam.smp`
/// (not the CLI tools, which are escripts on the same virtual machine) and the bench.
pub fn stack_groups(pid_dir: Option<&Path>) -> Vec<Group> {
    let mut groups: Vec<Group> = pid_dir
        .map(|dir| {
            super::rss::find_pid_files(dir, |name| {
                name == "api" || name == "sim" || name.starts_with("worker")
            })
        })
        .unwrap_or_default()
        .into_iter()
        .map(|w| Group { name: w.name, members: Members::Pid(w.pid) })
        .collect();
    // api, worker1, worker2, …, sim: the request's path.
    groups.sort_by_key(|g| (g.name != "api", g.name == "sim", g.name.clone()));
    groups.push(Group {
        name: "postgres".into(),
        members: Members::Comm { comm: "postgres", unless_cmdline: None },
    });
    groups.push(Group {
        name: "rabbitmq".into(),
        members: Members::Comm { comm: "beam.smp", unless_cmdline: Some("escript") },
    });
    groups.push(Group { name: "bench".into(), members: Members::This });
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    // A PostgreSQL backend as /proc shows it (the title is in cmdline, not here).
    const BACKEND: &str = "19414 (postgres) S 19413 19414 19414 0 -1 4194368 1123 0 0 0 9 30 \
                           0 0 20 0 1 0 799398 223199232 14520 18446744073709551615 94346244173824 \
                           94346249630169 140729600335568 0 0 0 4194304 24145920 536873479 1 0 0 \
                           17 1 0 0 0 0 0\n";

    fn stat(pid: u32, ppid: u32, own: u64, children: u64, start: u64) -> ProcStat {
        ProcStat {
            pid,
            comm: "postgres".into(),
            ppid,
            utime: own,
            stime: 0,
            cutime: children,
            cstime: 0,
            starttime: start,
        }
    }

    #[test]
    fn reads_the_fields_of_a_stat_line() {
        assert_eq!(
            parse_stat(BACKEND),
            Some(ProcStat {
                pid: 19414,
                comm: "postgres".into(),
                ppid: 19413,
                utime: 9,
                stime: 30,
                cutime: 0,
                cstime: 0,
                starttime: 799398,
            })
        );
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let line = "4242 (tokio (rt) 2) R 1 4242 4242 0 -1 0 0 0 0 0 150 25 7 3 20 0 6 0 1000 0 0";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.comm, "tokio (rt) 2");
        assert_eq!((stat.ppid, stat.own(), stat.children(), stat.starttime), (1, 175, 10, 1000));
    }

    #[test]
    fn malformed_lines_are_none() {
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("12 (x) S 1 2 3"), None);
        assert_eq!(parse_stat("x (y) S 1 1 1 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 5"), None);
        assert_eq!(parse_stat(") 12 (x S"), None);
    }

    #[test]
    fn the_clock_ticks_are_positive() {
        assert!(clock_ticks_per_second() > 0);
        assert_eq!(ticks_to_ms(250, 100), 2500.0);
    }

    #[test]
    fn a_process_seen_throughout_counts_its_growth_and_its_childrens() {
        let start = GroupSample::of([stat(10, 1, 100, 5, 1)]);
        let end = GroupSample::of([stat(10, 1, 160, 25, 1)]);
        assert_eq!(group_ticks(&start, &end), GroupTicks { ticks: 80, lost: 0 });
    }

    #[test]
    fn a_process_started_in_the_window_counts_whole() {
        let start = GroupSample::of([stat(10, 1, 100, 0, 1)]);
        let end = GroupSample::of([stat(10, 1, 100, 0, 1), stat(11, 10, 40, 0, 500)]);
        assert_eq!(group_ticks(&start, &end).ticks, 40);
    }

    #[test]
    fn a_reaped_process_counts_only_its_time_inside_the_window() {
        // Backend 11 had used 30 ticks, used 12 more and exited; the postmaster (10) reaped it,
        // so its children's time grew by the backend's whole 42.
        let start = GroupSample::of([stat(10, 1, 100, 0, 1), stat(11, 10, 30, 0, 50)]);
        let end = GroupSample::of([stat(10, 1, 101, 42, 1)]);
        assert_eq!(group_ticks(&start, &end), GroupTicks { ticks: 1 + 12, lost: 0 });
    }

    #[test]
    fn a_process_that_ended_without_a_watched_parent_is_lost_not_subtracted() {
        let start = GroupSample::of([stat(10, 1, 100, 0, 1), stat(20, 1, 30, 0, 50)]);
        let end = GroupSample::of([stat(10, 1, 110, 0, 1)]);
        assert_eq!(group_ticks(&start, &end), GroupTicks { ticks: 10, lost: 1 });
    }

    #[test]
    fn a_reused_pid_is_a_new_process() {
        let start = GroupSample::of([stat(10, 1, 500, 0, 1)]);
        let end = GroupSample::of([stat(10, 1, 20, 0, 900)]);
        // The new process counts whole; the old one ended unreaped by the group.
        assert_eq!(group_ticks(&start, &end), GroupTicks { ticks: 20, lost: 1 });
    }

    #[test]
    fn this_process_can_be_sampled() {
        let groups = [Group { name: "bench".into(), members: Members::This }];
        let samples = sample(&groups);
        assert_eq!(samples[0].pids(), vec![std::process::id()]);
    }
}
