//! The container images (`Dockerfile`) and the compose stack (`compose.yaml`), built and run.
//!
//! What this proves, and what it stands in for (docs/deploy.md, "What the container test proves"):
//! - the Dockerfile's runtime stages (`runtime`, `worker`, `sim`) build, from a Debian bookworm base
//!   made locally (`deploy/containers/base-image`: no registry is reachable here) instead of
//!   `debian:bookworm-slim`, and with the binaries this suite already compiled (`BINARIES=prebuilt`)
//!   instead of the `build` stage's release compilation;
//! - the unchanged compose.yaml, run by podman-compose under a project name of the test's own,
//!   brings up PostgreSQL, RabbitMQ, the migrations, the API, two workers and the simulator; its
//!   health checks (`/readyz`, `pg_isready`, `rabbitmq-diagnostics`) pass; a job submitted through
//!   the containerised API completes, its video is copied with a poster (ffmpeg in the worker
//!   image) and downloadable from the API. PostgreSQL and RabbitMQ run from Debian-made stand-ins
//!   for the official images (`deploy/containers/services.Containerfile`);
//! - `down -v` leaves no container, volume or network of the project, and every image the test
//!   built is removed (the base image stays, tagged, for the next run).
//!
//! Needs root, podman (with runc), podman-compose, mmdebstrap, and for the offline validation
//! docker-compose and check-jsonschema (`deploy/dev test` installs them: `ensure_container_tools`).
//! `GENGATE_TEST_SKIP_CONTAINERS=1` skips these tests, saying so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use gengate_tests::harness::eventually;
use gengate_tests::harness::process::{binary, free_address, log_dir};
use serde_json::{Value, json};

/// The cached base image (kept between runs; `podman rmi` it to rebuild).
const BASE_IMAGE: &str = "localhost/gengate-base:bookworm";
/// The binaries the images are made of, from this suite's build.
const BINARIES: [&str; 4] = ["gengate-api", "gengate-worker", "gengatectl", "provider-sim"];
const WORKERS: usize = 2;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("repository root")
}

/// Whether the container tests are switched off (`GENGATE_TEST_SKIP_CONTAINERS=1`); otherwise a
/// missing tool fails them with what to install.
fn skipped() -> bool {
    if std::env::var("GENGATE_TEST_SKIP_CONTAINERS").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: container tests (GENGATE_TEST_SKIP_CONTAINERS=1)");
        return true;
    }
    false
}

fn require_tools(tools: &[&str]) {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}: `deploy/dev test` installs them (ensure_container_tools: apt-get \
         install podman runc mmdebstrap uidmap slirp4netns docker-compose; pip install \
         podman-compose check-jsonschema); GENGATE_TEST_SKIP_CONTAINERS=1 skips these tests"
    );
}

/// Runs `program args…` in `dir` with `env` added; its output is appended to `log`. Returns the
/// output; `check` panics on a non-zero exit with the log's tail.
fn run(
    program: &str,
    args: &[&str],
    dir: &Path,
    env: &BTreeMap<String, String>,
    log: &Path,
) -> Output {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let mut text = format!("$ {program} {}\n", args.join(" "));
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text.push_str(&format!("[{}]\n", output.status));
    use std::io::Write;
    let mut file = std::fs::File::options().create(true).append(true).open(log).expect("log");
    file.write_all(text.as_bytes()).expect("write log");
    output
}

fn check(output: Output, what: &str, log: &Path) -> String {
    if !output.status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        panic!(
            "{what} failed ({}); the last lines of {}:\n{}",
            output.status,
            log.display(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        );
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// podman's settings for this machine (`deploy/containers/containers.conf.in`: runc, the host's
/// open-file limit), written to `dir`; the path goes into `CONTAINERS_CONF`.
fn containers_conf(dir: &Path) -> PathBuf {
    let template =
        std::fs::read_to_string(repo_root().join("deploy/containers/containers.conf.in"))
            .expect("read deploy/containers/containers.conf.in");
    let nofile = Command::new("sh").args(["-c", "ulimit -Hn"]).output().expect("ulimit -Hn");
    let nofile = String::from_utf8_lossy(&nofile.stdout).trim().to_owned();
    let nofile =
        if nofile.is_empty() || nofile == "unlimited" { "1048576".to_owned() } else { nofile };
    let path = dir.join("containers.conf");
    std::fs::write(&path, template.replace("@NOFILE@", &nofile)).expect("write containers.conf");
    path
}

/// The build context of the prebuilt images: `bin/` with this suite's binaries (hard links where
/// the file system allows, copies otherwise).
fn build_context(dir: &Path) -> PathBuf {
    let context = dir.join("context");
    std::fs::create_dir_all(context.join("bin")).expect("create the build context");
    for name in BINARIES {
        let from = binary(name);
        let to = context.join("bin").join(name);
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
    }
    context
}

/// Everything of one run: its compose project, its images, and how to tear them down. Dropping it
/// (on a failed assertion) tears down whatever is left; the test tears down explicitly and checks.
struct Stack {
    project: String,
    run: String,
    env: BTreeMap<String, String>,
    images: Vec<String>,
    log_dir: PathBuf,
    up: bool,
}

impl Stack {
    fn log(&self, name: &str) -> PathBuf {
        self.log_dir.join(name)
    }

    fn podman(&self, args: &[&str]) -> Output {
        run("podman", args, &repo_root(), &self.env, &self.log("podman.log"))
    }

    fn compose(&self, args: &[&str]) -> Output {
        let mut all = vec!["-p", &self.project, "-f", "compose.yaml"];
        all.extend_from_slice(args);
        run("podman-compose", &all, &repo_root(), &self.env, &self.log("compose.log"))
    }

    /// The project's containers, `name → (state, exit code)`.
    fn containers(&self) -> BTreeMap<String, (String, i64)> {
        let filter = format!("label=io.podman.compose.project={}", self.project);
        let out = self.podman(&["ps", "-a", "--filter", &filter, "--format", "json"]);
        let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        listed
            .iter()
            .filter_map(|c| {
                let name = c["Names"][0].as_str()?.to_owned();
                let state = c["State"].as_str()?.to_owned();
                Some((name, (state, c["ExitCode"].as_i64()?)))
            })
            .collect()
    }

    /// Names of the project's volumes and networks still present.
    fn leftovers(&self) -> Vec<String> {
        let prefix = format!("{}_", self.project);
        let mut found = Vec::new();
        for (kind, format) in [("volume", "{{.Name}}"), ("network", "{{.Name}}")] {
            let out = self.podman(&[kind, "ls", "--format", format]);
            found.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|name| name.starts_with(&prefix))
                    .map(|name| format!("{kind} {name}")),
            );
        }
        found.extend(self.containers().into_keys().map(|name| format!("container {name}")));
        found
    }

    /// Images this run built (tagged or intermediate), by the run's label.
    fn own_images(&self) -> Vec<String> {
        let filter = format!("label=gengate.test.run={}", self.run);
        let out = self.podman(&["images", "-a", "-q", "--filter", &filter]);
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
    }

    /// Saves every container's log under the log directory (before `down` removes them).
    fn save_logs(&self) {
        for name in self.containers().keys() {
            let out = self.podman(&["logs", name]);
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            let _ = std::fs::write(self.log(&format!("{name}.log")), text);
        }
    }

    fn down(&mut self) -> Output {
        self.up = false;
        self.compose(&["down", "-v", "-t", "10"])
    }

    fn remove_images(&self) {
        if !self.images.is_empty() {
            let mut args = vec!["rmi", "--ignore"];
            args.extend(self.images.iter().map(String::as_str));
            self.podman(&args);
        }
        // Intermediate images of the builds (`--layers`) carry the run's label too; children first.
        for _ in 0..5 {
            let left = self.own_images();
            if left.is_empty() {
                break;
            }
            let mut args = vec!["rmi", "--ignore"];
            args.extend(left.iter().map(String::as_str));
            self.podman(&args);
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.up {
            self.save_logs();
            self.down();
        }
        self.remove_images();
    }
}

/// Builds the images of one run: the stand-ins for PostgreSQL and RabbitMQ on one thread, gengate's
/// three targets on another (they share the `base` stage through the layer cache).
fn build_images(stack: &mut Stack, context: &Path) {
    let root = repo_root();
    let label = format!("gengate.test.run={}", stack.run);
    let tag = |name: &str| format!("localhost/gengate-test-{name}:{}", stack.run);
    let services: Vec<(String, String)> =
        ["postgres", "rabbitmq"].iter().map(|t| ((*t).to_owned(), tag(t))).collect();
    let gengate: Vec<(String, String)> =
        ["worker", "runtime", "sim"].iter().map(|t| ((*t).to_owned(), tag(t))).collect();
    stack.images.extend(services.iter().chain(&gengate).map(|(_, tag)| tag.clone()));

    let build = |containerfile: PathBuf,
                 context: PathBuf,
                 args: Vec<String>,
                 targets: Vec<(String, String)>,
                 env: BTreeMap<String, String>,
                 log: PathBuf,
                 label: String| {
        move || {
            for (target, tag) in targets {
                let mut all = vec![
                    "build".to_owned(),
                    "--isolation".to_owned(),
                    "chroot".to_owned(),
                    "--label".to_owned(),
                    label.clone(),
                    "-f".to_owned(),
                    containerfile.display().to_string(),
                    "--target".to_owned(),
                    target.clone(),
                    "-t".to_owned(),
                    tag,
                ];
                for arg in &args {
                    all.push("--build-arg".to_owned());
                    all.push(arg.clone());
                }
                all.push(context.display().to_string());
                let all: Vec<&str> = all.iter().map(String::as_str).collect();
                let out = run("podman", &all, &context, &env, &log);
                check(out, &format!("podman build --target {target}"), &log);
            }
        }
    };
    let services_build = std::thread::spawn(build(
        root.join("deploy/containers/services.Containerfile"),
        root.join("deploy/containers"),
        vec![format!("BASE={BASE_IMAGE}")],
        services,
        stack.env.clone(),
        stack.log("build-services.log"),
        label.clone(),
    ));
    build(
        root.join("Dockerfile"),
        context.to_path_buf(),
        vec![format!("RUNTIME_BASE={BASE_IMAGE}"), "BINARIES=prebuilt".to_owned()],
        gengate,
        stack.env.clone(),
        stack.log("build-gengate.log"),
        label,
    )();
    if let Err(panic) = services_build.join() {
        std::panic::resume_unwind(panic);
    }
    for (var, name) in [
        ("GENGATE_IMAGE", "runtime"),
        ("GENGATE_WORKER_IMAGE", "worker"),
        ("GENGATE_SIM_IMAGE", "sim"),
        ("GENGATE_POSTGRES_IMAGE", "postgres"),
        ("GENGATE_RABBITMQ_IMAGE", "rabbitmq"),
    ] {
        stack.env.insert(var.to_owned(), tag(name));
    }
}

/// Runs every health check of the project once (podman schedules them with systemd timers, and
/// this machine has no systemd: the test is the timer); returns the containers not yet healthy.
fn unhealthy(stack: &Stack) -> Vec<String> {
    stack
        .containers()
        .into_iter()
        .filter(|(name, _)| !name.contains("_migrate_"))
        .filter(|(name, _)| !stack.podman(&["healthcheck", "run", name]).status.success())
        .map(|(name, (state, _))| format!("{name} ({state})"))
        .collect()
}

fn elapsed(start: Instant) -> String {
    format!("{:.0} s", start.elapsed().as_secs_f64())
}

/// The compose file validates offline, as Debian's docker-compose and the Compose Specification's
/// JSON schema read it.
#[test]
fn containers_compose_file_is_valid() {
    if skipped() {
        return;
    }
    require_tools(&["docker-compose", "check-jsonschema"]);
    let root = repo_root();
    let log = log_dir(&uuid::Uuid::now_v7().simple().to_string()).join("validate.log");
    let mut env = BTreeMap::new();
    for var in ["GENGATE_ADMIN_TOKEN", "GENGATE_INTERNAL_TOKEN", "GENGATE_WEBHOOK_SECRET"] {
        env.insert(var.to_owned(), "0123456789abcdef0123456789abcdef".to_owned());
    }
    let out = run("docker-compose", &["-f", "compose.yaml", "config", "-q"], &root, &env, &log);
    check(out, "docker-compose config", &log);
    let out = run(
        "check-jsonschema",
        &["--builtin-schema", "vendor.compose-spec", "compose.yaml"],
        &root,
        &env,
        &log,
    );
    check(out, "check-jsonschema --builtin-schema vendor.compose-spec", &log);
    // Without the secrets, the file refuses to start rather than run without them.
    let out = run(
        "docker-compose",
        &["-f", "compose.yaml", "config", "-q"],
        &root,
        &BTreeMap::new(),
        &log,
    );
    assert!(!out.status.success(), "compose.yaml must require GENGATE_ADMIN_TOKEN and friends");
}

#[tokio::test]
async fn containers_compose_stack_runs_a_job_and_leaves_nothing_behind() {
    if skipped() {
        return;
    }
    require_tools(&["podman", "podman-compose", "mmdebstrap"]);
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the container test runs rootful podman and mmdebstrap: run it as root \
         (GENGATE_TEST_SKIP_CONTAINERS=1 skips it)"
    );
    let start = Instant::now();
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let short = run_id[run_id.len() - 12..].to_owned();
    let dir = log_dir(&run_id);
    let api = free_address();
    let port = api.rsplit_once(':').expect("host:port").1.to_owned();
    let admin_token = format!("admin-{run_id}");

    let mut env = BTreeMap::new();
    env.insert("CONTAINERS_CONF".to_owned(), containers_conf(&dir).display().to_string());
    env.insert("GENGATE_API_PORT".to_owned(), port.clone());
    env.insert("GENGATE_BIND_ADDRESS".to_owned(), "127.0.0.1".to_owned());
    env.insert("GENGATE_PUBLIC_URL".to_owned(), format!("http://{api}"));
    env.insert("GENGATE_WORKERS".to_owned(), WORKERS.to_string());
    env.insert("GENGATE_ADMIN_TOKEN".to_owned(), admin_token.clone());
    env.insert("GENGATE_INTERNAL_TOKEN".to_owned(), format!("internal-{run_id}"));
    env.insert("GENGATE_WEBHOOK_SECRET".to_owned(), format!("webhook-{run_id}"));
    let mut stack = Stack {
        project: format!("gengate-ct-{short}"),
        run: short,
        env,
        images: Vec::new(),
        log_dir: dir.clone(),
        up: false,
    };
    eprintln!("container test: logs in {}", dir.display());

    // The base image: made once (about a minute), then reused.
    let base = run(
        &repo_root().join("deploy/containers/base-image").display().to_string(),
        &[BASE_IMAGE],
        &repo_root(),
        &stack.env,
        &stack.log("base-image.log"),
    );
    check(base, "deploy/containers/base-image", &stack.log("base-image.log"));
    eprintln!("container test: base image ready after {}", elapsed(start));

    let context = build_context(&dir);
    build_images(&mut stack, &context);
    eprintln!("container test: images built after {}", elapsed(start));

    stack.up = true;
    let up = stack.compose(&["up", "-d", "--no-build"]);
    check(up, "podman-compose up", &stack.log("compose.log"));
    let containers = stack.containers();
    let mut expected: Vec<String> = ["postgres", "rabbitmq", "migrate", "api", "sim"]
        .iter()
        .map(|s| format!("{}_{s}_1", stack.project))
        .collect();
    expected.extend((1..=WORKERS).map(|n| format!("{}_worker_{n}", stack.project)));
    expected.sort();
    assert_eq!(containers.keys().cloned().collect::<Vec<_>>(), expected, "{containers:?}");

    // Every health check passes, the migrations ended well, and the API answers from the host.
    let health_wait = Duration::from_secs(150);
    eventually("every container of the stack to be healthy", health_wait, || async {
        let waiting = unhealthy(&stack);
        if waiting.is_empty() {
            return Some(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        None
    })
    .await;
    let migrate = format!("{}_migrate_1", stack.project);
    let (state, code) = stack.containers()[&migrate].clone();
    assert_eq!((state.as_str(), code), ("exited", 0), "the migrations' container");
    eprintln!("container test: stack healthy after {}", elapsed(start));

    gengate_shared::install_crypto_provider();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let url = format!("http://{api}");
    let ready = http.get(format!("{url}/readyz")).send().await.expect("GET /readyz");
    assert_eq!(ready.status(), 200, "the API's /readyz through the published port");

    // A user with credits, through the admin API.
    let admin = |path: &str, body: Value| {
        http.post(format!("{url}{path}")).bearer_auth(&admin_token).json(&body).send()
    };
    let user: Value =
        admin("/admin/users", json!({"email": "containers@example.com", "name": "C"}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let user_id = user["id"].as_str().expect("user id").to_owned();
    let key: Value = admin(&format!("/admin/users/{user_id}/api-keys"), json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["key"].as_str().expect("API key").to_owned();
    let grant = admin(
        &format!("/admin/users/{user_id}/grants"),
        json!({"source": "system_add", "amount": 1000}),
    )
    .await
    .unwrap();
    assert!(grant.status().is_success(), "grant: {}", grant.text().await.unwrap_or_default());

    // A job, through the containerised API, to the simulator and back through a worker.
    let submitted = http
        .post(format!("{url}/v1/generations"))
        .bearer_auth(&key)
        .json(&json!({"model": "kling-v1-6-pro", "mode": "text2video", "prompt": "a container ship", "duration": 5, "aspect_ratio": "16:9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), 202);
    let id = submitted.json::<Value>().await.unwrap()["id"].as_str().expect("id").to_owned();
    let generation =
        eventually("the job to complete with its video copied", Duration::from_secs(90), || {
            let request = http.get(format!("{url}/v1/generations/{id}")).bearer_auth(&key).send();
            async move {
                let generation: Value = request.await.ok()?.json().await.ok()?;
                let video = &generation["result"]["videos"][0];
                (generation["status"] == "completed" && video["archive_status"] == "archived")
                    .then_some(generation)
            }
        })
        .await;
    let video = &generation["result"]["videos"][0];
    // ffprobe read it, ffmpeg cut a poster (the worker image's ffmpeg), and the API serves both
    // from the volume the workers wrote them to.
    assert!(video["poster_url"].is_string(), "a poster: {generation}");
    assert!(video["width"].as_i64().is_some_and(|w| w > 0), "probed: {generation}");
    for link in [&video["url"], &video["poster_url"]] {
        let link = link.as_str().expect("a link");
        assert!(link.starts_with(&url), "{link} points at the published API");
        let file = http.get(link).send().await.unwrap();
        assert_eq!(file.status(), 200, "{link}");
        assert!(!file.bytes().await.unwrap().is_empty(), "{link}");
    }
    eprintln!("container test: job {id} completed after {}", elapsed(start));

    // Down: nothing of the project is left, and the run's images go too.
    stack.save_logs();
    let down = stack.down();
    check(down, "podman-compose down", &stack.log("compose.log"));
    let left = stack.leftovers();
    assert!(left.is_empty(), "left behind by down -v: {left:?}");
    stack.remove_images();
    let images = stack.own_images();
    assert!(images.is_empty(), "images of this run left behind: {images:?}");
    let base = stack.podman(&["image", "exists", BASE_IMAGE]);
    assert!(base.status.success(), "the base image stays cached");
    eprintln!("container test: done after {}", elapsed(start));
    let _ = std::fs::remove_dir_all(&context);
}
