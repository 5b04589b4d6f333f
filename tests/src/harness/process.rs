//! The real gengate binaries as child processes: located in the cargo target directory, started
//! with an explicit environment, their output kept in a log file per process.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::process::{Child, Command};

/// The directory holding the workspace's binaries for the profile these tests were built with
/// (`target/debug` or `target/release`).
pub fn bin_dir() -> PathBuf {
    // A test executable lives in `target/<profile>/deps/`; the binaries one level up.
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    if deps.ends_with("deps") {
        deps.parent().expect("profile dir").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// Path of a workspace binary, built (once per test process) unless `GENGATE_TEST_BINS_READY` says
/// the caller already built them, as `deploy/dev test` does. Building here keeps a plain
/// `cargo nextest run` from testing stale binaries.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if std::env::var_os("GENGATE_TEST_BINS_READY").is_some() {
            return;
        }
        let release = bin_dir().ends_with("release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "--quiet", "--workspace", "--bins"]);
        // The test runner's own variables (package metadata, library paths) would make cargo see a
        // different build environment and rebuild dependencies; build as a shell would.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let runner_var =
                (key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_TARGET_DIR")
                    || key.starts_with("NEXTEST")
                    || key.starts_with("RUSTUP_TOOLCHAIN")
                    || key == "LD_LIBRARY_PATH"
                    || key == "RUST_RECURSION_COUNT";
            if runner_var {
                build.env_remove(key.as_ref());
            }
        }
        if release {
            build.arg("--release");
        }
        let status = build
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .status()
            .expect("run cargo build for the binaries under test");
        assert!(status.success(), "building the binaries under test failed");
    });
    let path = bin_dir().join(name);
    assert!(path.exists(), "{} is missing; run `cargo build --workspace --bins`", path.display());
    path
}

/// Where a test's process logs go: `target/test-logs/<run id>/`.
pub fn log_dir(run_id: &str) -> PathBuf {
    let dir = bin_dir().join("..").join("test-logs").join(run_id);
    std::fs::create_dir_all(&dir).expect("create test log dir");
    dir
}

/// A running child process, killed when dropped.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    addr_file: PathBuf,
}

impl Process {
    /// Starts `binary args…` with exactly `env` on top of a minimal environment, writing its
    /// output to `<log_dir>/<name>.log` and its bound address to `<log_dir>/<name>.addr`.
    pub fn start(
        name: &str,
        binary: &Path,
        args: &[&str],
        env: &BTreeMap<String, String>,
        log_dir: &Path,
    ) -> Self {
        let log = log_dir.join(format!("{name}.log"));
        let addr_file = log_dir.join(format!("{name}.addr"));
        let _ = std::fs::remove_file(&addr_file);
        let out = File::options().create(true).append(true).open(&log).expect("open process log");
        let err = out.try_clone().expect("clone log handle");
        let mut command = Command::new(binary);
        command
            .args(args)
            .arg("--addr-file")
            .arg(&addr_file)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let child = command.spawn().unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        Self { name: name.to_owned(), child: Some(child), log, addr_file }
    }

    /// The address the process bound, once it has written it (waits up to 30 s).
    pub async fn bound_addr(&mut self) -> String {
        self.bound_addrs().await.swap_remove(0)
    }

    /// Every address the process bound, a line each in its address file (the API: the public
    /// listener, then the operations listener), once it has written them (waits up to 30 s).
    pub async fn bound_addrs(&mut self) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.addr_file)
                && text.ends_with('\n')
            {
                return text.lines().map(str::to_owned).collect();
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "{} exited with {status} before listening:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not start listening:\n{}",
                self.name,
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether it was started and not yet stopped or killed by the test.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The OS process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Sends SIGTERM and waits for the exit status (graceful shutdown).
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("process already stopped");
        if let Some(pid) = child.id() {
            signal(pid, "TERM");
        }
        tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!("{} did not exit within 60 s of SIGTERM:\n{}", self.name, self.log_tail(40))
            })
            .expect("wait for process")
    }

    /// The exit status, if the process has ended by itself (it is then no longer running).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().expect("poll the process")?;
        self.child = None;
        Some(status)
    }

    /// SIGKILL: the process dies mid-flight, as in a crash.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// The last `lines` lines of the process's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

fn signal(pid: u32, name: &str) {
    let _ =
        std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
}

/// `127.0.0.1:PORT` with a port free now, for a process that binds it a moment later (when its
/// address must be known before it starts: the API's callback URLs, s3s-fs's endpoint). The port is
/// drawn below the kernel's ephemeral range, which the kernel never hands out by itself: a port
/// from `bind(0)` could be given to another process (a worker's health server, an outgoing
/// connection) before ours binds it, and that process would start with "Address already in use".
pub fn free_address() -> String {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    for _ in 0..100 {
        let port = rand::random_range(10_000..ephemeral_low.max(10_001));
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().expect("its address").to_string();
        }
    }
    panic!("no free port below the ephemeral range after 100 tries");
}
