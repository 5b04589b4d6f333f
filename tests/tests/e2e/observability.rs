//! What operators are given to watch gengate with (`deploy/observability/`): the Prometheus alert
//! rules pass `promtool` and their unit tests, each alert links to its runbook section, the
//! Grafana dashboard's queries parse, and every gengate metric the rules and the dashboard use is
//! one the API or a worker really exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use gengate_tests::TestApp;
use gengate_tests::requests::sora;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

fn observability(file: &str) -> PathBuf {
    repo().join("deploy/observability").join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Runs `promtool` (a missing promtool fails the test: `deploy/dev test` installs it).
fn promtool(args: &[&str], dir: &Path) -> Output {
    Command::new("promtool").args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!(
            "could not run promtool ({e}): install it with `apt-get install prometheus` \
             (the Debian package; `deploy/dev test` does this)"
        )
    })
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A directory of its own under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("gengate-observability-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = observability("");
    let check = promtool(&["check", "rules", "alerts.yml"], &dir);
    assert!(check.status.success(), "promtool check rules alerts.yml: {}", describe(&check));
    let tests = promtool(&["test", "rules", "alerts_test.yml"], &dir);
    assert!(tests.status.success(), "promtool test rules alerts_test.yml: {}", describe(&tests));
    let config = promtool(&["check", "config", "prometheus.example.yml"], &dir);
    assert!(config.status.success(), "promtool check config: {}", describe(&config));
}

#[test]
fn promtool_refuses_a_broken_rule_file() {
    let dir = TempDir::new();
    let broken = [
        // Unbalanced parentheses.
        "groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: sum(rate(gengate_dlq_messages[5m])\n",
        // An alert without an expression.
        "groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        for: 5m\n",
        // A template that does not parse.
        "groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: gengate_dlq_messages > 0\n        annotations:\n          summary: \"{{ $value \"\n",
    ];
    for (i, rules) in broken.iter().enumerate() {
        let file = format!("broken-{i}.yml");
        std::fs::write(dir.0.join(&file), rules).unwrap();
        let check = promtool(&["check", "rules", &file], &dir.0);
        assert!(!check.status.success(), "promtool accepted {rules}: {}", describe(&check));
    }
}

/// One alert of `alerts.yml`, as written.
struct Alert {
    name: String,
    annotations: Vec<(String, String)>,
}

/// The alerts of a rule file, read line by line (the file's own layout: `- alert:` starts a
/// rule, `annotations:` holds `key: value` lines). promtool has checked the YAML itself.
fn alerts(rules: &str) -> Vec<Alert> {
    let mut alerts: Vec<Alert> = Vec::new();
    let mut in_annotations = false;
    for line in rules.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("- alert: ") {
            alerts.push(Alert { name: name.trim().to_owned(), annotations: Vec::new() });
            in_annotations = false;
        } else if trimmed.starts_with("- record: ") {
            in_annotations = false;
        } else if trimmed == "annotations:" {
            in_annotations = true;
        } else if in_annotations
            && let Some((key, value)) = trimmed.split_once(':')
            && ["summary", "description", "runbook_url"].contains(&key)
            && let Some(alert) = alerts.last_mut()
        {
            alert.annotations.push((key.to_owned(), value.trim().to_owned()));
        }
    }
    alerts
}

/// The anchors GitHub gives a Markdown file's headings.
fn anchors(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter(|line| line.starts_with('#'))
        .map(|line| {
            line.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

#[test]
fn every_alert_says_what_happened_links_its_runbook_and_is_tested_both_ways() {
    let rules = read(&observability("alerts.yml"));
    let tests = read(&observability("alerts_test.yml"));
    let runbook = anchors(&read(&repo().join("docs/operations.md")));
    let alerts = alerts(&rules);
    let names: Vec<&str> = alerts.iter().map(|a| a.name.as_str()).collect();
    for wanted in [
        "GengateDeadLettersWaiting",
        "GengateQueueAge",
        "GengateJobsStuckPastDeadline",
        "GengateProviderErrorRate",
        "GengateWebhookRejectionSpike",
        "GengateLedgerReconcileMismatch",
        "GengateLedgerAuditNotRunning",
        "GengateLedgerInconsistency",
        "GengateSubmitSlow",
        "GengateRefundFailureRate",
    ] {
        assert!(names.contains(&wanted), "no alert {wanted} in alerts.yml: {names:?}");
    }
    let test_lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for alert in &alerts {
        let annotation = |key: &str| {
            alert
                .annotations
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{} has no {key} annotation", alert.name))
        };
        annotation("summary");
        annotation("description");
        let url = annotation("runbook_url");
        let (_, anchor) = url.split_once("docs/operations.md#").unwrap_or_else(|| {
            panic!("{}: runbook_url {url} is not a docs/operations.md section", alert.name)
        });
        assert!(
            runbook.contains(anchor),
            "{}: docs/operations.md has no section #{anchor} (its sections: {runbook:?})",
            alert.name
        );

        // Each alert's unit tests: at least one case where it fires and one where it does not.
        let cases: Vec<&str> = test_lines
            .windows(2)
            .filter(|w| w[0] == format!("alertname: {}", alert.name))
            .map(|w| w[1])
            .collect();
        assert!(
            cases.contains(&"exp_alerts: []"),
            "{}: no test where it does not fire",
            alert.name
        );
        assert!(cases.contains(&"exp_alerts:"), "{}: no test where it fires", alert.name);
    }
}

/// The dashboard's queries (`targets[].expr`) and the panels' titles.
fn dashboard() -> (Value, Vec<String>) {
    let dashboard: Value = serde_json::from_str(&read(&observability("grafana/gengate.json")))
        .expect("the dashboard is JSON");
    let exprs = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().expect("a target's expr").to_owned())
        .collect();
    (dashboard, exprs)
}

#[test]
fn the_dashboard_reads_one_prometheus_data_source_and_its_queries_parse() {
    let (dashboard, exprs) = dashboard();
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "schemaVersion");
    let variables = dashboard["templating"]["list"].as_array().expect("templating");
    assert!(
        variables.iter().any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource"),
        "no DS_PROMETHEUS data source variable"
    );
    let source = json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    let panels = dashboard["panels"].as_array().unwrap();
    let titles: Vec<String> = panels
        .iter()
        .filter(|p| p["type"] != "row")
        .map(|p| p["title"].as_str().unwrap().to_lowercase())
        .collect();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(panel["datasource"], source, "panel {}", panel["title"]);
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(target["datasource"], source, "a target of {}", panel["title"]);
        }
    }
    for wanted in [
        "submits",
        "completions",
        "queue depths",
        "provider latency",
        "settlement outcomes",
        "credits moved",
        "request duration (p95) per route",
    ] {
        assert!(titles.iter().any(|t| t.contains(wanted)), "no panel on {wanted}: {titles:?}");
    }

    // Every query parses: as recording rules, with Grafana's interval variable filled in.
    let dir = TempDir::new();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr.replace("$__rate_interval", "5m");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    std::fs::write(dir.0.join("dashboard.yml"), rules).unwrap();
    let check = promtool(&["check", "rules", "dashboard.yml"], &dir.0);
    assert!(check.status.success(), "the dashboard's queries: {}", describe(&check));
}

/// The `gengate_…` names a text uses (series names, with their `_bucket`/`_count` suffixes).
fn gengate_metrics(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("gengate_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        // A `gengate_` inside another word (`x_gengate_…`) is not a metric.
        let inside_word = rest[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !inside_word {
            names.insert(tail[..end].trim_end_matches('_').to_owned());
        }
        rest = &tail[end.max(1)..];
    }
    names
}

/// Whether the Prometheus text has a sample of `series`.
fn has_series(text: &str, series: &str) -> bool {
    text.lines().any(|line| {
        line.strip_prefix(series).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

#[tokio::test]
async fn every_gengate_metric_the_alerts_and_the_dashboard_use_is_exported() {
    let (_, exprs) = dashboard();
    let mut wanted = gengate_metrics(&read(&observability("alerts.yml")));
    for expr in &exprs {
        wanted.extend(gengate_metrics(expr));
    }
    assert!(wanted.contains("gengate_http_request_duration_seconds_bucket"), "{wanted:?}");

    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    // One job completes (after the provider answered 500 once: a provider error), one fails.
    let done = app.submit_ok(&user, &sora("a calm sea [[sim:create-5xx=1]]")).await;
    let doomed = app.submit_ok(&user, &sora("doomed [[sim:fail]]")).await;
    app.wait_for_status(&user, &done, "completed", WAIT).await;
    app.wait_for_status(&user, &doomed, "failed", WAIT).await;
    // A forged provider webhook is rejected.
    let forged = app
        .http
        .post(format!("{}/api/generation/webhook?generation_id={done}&token=forged", app.api_url))
        .json(&json!({"code": 200, "data": {"taskId": "x", "state": "success"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    // A message no worker can read is dead-lettered.
    app.broker
        .broker()
        .await
        .publish(
            gengate_shared::queue::Parcel {
                routing_key: "job.submit".into(),
                body: b"{not json".to_vec(),
                message_id: Some(format!("poison-{}", uuid::Uuid::new_v4())),
                headers: Default::default(),
            },
            gengate_shared::queue::Route::Now,
        )
        .await
        .unwrap();
    // A path no route matches, and one read of a generation (a route with a parameter).
    assert_eq!(app.get("/no/such/path").await.status(), 404);
    assert_eq!(app.user_get(&user, &format!("/v1/generations/{done}")).await.status(), 200);

    // Gauges are sampled and counters appear with their first event: wait for them, then say
    // which never came.
    let deadline = tokio::time::Instant::now() + WAIT;
    let (api, worker, missing) = loop {
        let (api, worker) = (app.api_metrics().await, app.worker_metrics(0).await);
        let missing: Vec<&String> =
            wanted.iter().filter(|n| !has_series(&api, n) && !has_series(&worker, n)).collect();
        if missing.is_empty() || tokio::time::Instant::now() >= deadline {
            break (api, worker, missing);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(missing.is_empty(), "used by the rules or the dashboard, never exported: {missing:?}");

    // The request histogram: per matched route and status, a real histogram, never a raw path.
    let http: Vec<&str> = api
        .lines()
        .filter(|l| l.starts_with("gengate_http_request_duration_seconds_bucket{"))
        .collect();
    let submits = |status: &str| {
        http.iter().any(|l| {
            l.contains("route=\"/v1/generations\"")
                && l.contains("method=\"POST\"")
                && l.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(submits("202"), "no submit series with status 202: {http:#?}");
    assert!(
        http.iter()
            .any(|l| l.contains("route=\"/v1/generations/{id}\"") && l.contains("le=\"0.5\"")),
        "no series for the route template /v1/generations/{{id}}, or no 0.5 s bucket: {http:#?}"
    );
    assert!(
        http.iter().any(|l| l.contains("route=\"unmatched\"") && l.contains("status=\"404\"")),
        "an unmatched path is not counted as `unmatched`: {http:#?}"
    );
    assert!(
        !http.iter().any(|l| l.contains(&done) || l.contains("/no/such/path")),
        "a raw path became a label: {http:#?}"
    );
    assert!(
        api.contains("# TYPE gengate_http_request_duration_seconds histogram"),
        "the request duration is not exported as a histogram"
    );
    // The ledger figures seed 001 monitors: a refund applied, entries written and voided.
    let all = format!("{api}\n{worker}");
    assert!(
        all.lines().any(|l| l.starts_with("gengate_ledger_refunds_total{outcome=\"applied\"} ")
            && !l.ends_with(" 0")),
        "no applied refund counted"
    );
    for series in ["gengate_ledger_entries_written_total", "gengate_ledger_entries_voided_total"] {
        assert!(
            all.lines()
                .any(|l| l.starts_with(series) && l.contains("trans_type=\"video_generation\"")),
            "{series}{{trans_type=\"video_generation\"}} is missing"
        );
    }
}

/// The audits recorded so far: `(mismatches, first mismatch's kind)`, oldest first.
async fn audits(app: &TestApp) -> Vec<(i64, Option<String>)> {
    sqlx::query_as("SELECT mismatches, sample->0->>'kind' FROM ledger_audits ORDER BY ran_at, id")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_workers_audit_the_ledger_once_per_interval_and_report_what_does_not_add_up() {
    let app = TestApp::builder()
        .workers(2)
        .env("GENGATE__WORKER__LEDGER_AUDIT_INTERVAL_MS", "1000")
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("a cat")).await;
    app.wait_for_status(&user, &id, "completed", WAIT).await;
    gengate_tests::harness::eventually("two clean audits", WAIT, || async {
        let audits = audits(&app).await;
        (audits.len() >= 2)
            .then_some(())
            .map(|()| assert!(audits.iter().all(|a| a.0 == 0), "{audits:?}"))
    })
    .await;
    // Two workers ask every second, yet one audit runs per interval across both: no two runs
    // closer together than the interval.
    let too_close: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT ran_at - lag(ran_at) OVER (ORDER BY ran_at) AS gap
                               FROM ledger_audits) g
         WHERE gap < interval '1 second'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(too_close, 0);

    // A grant edited by hand no longer adds up: the next audit finds it, counts and keeps it.
    let clean_runs = audits(&app).await.len();
    sqlx::query("UPDATE credit_grants SET remaining = remaining + 5 WHERE user_id = $1::uuid")
        .bind(&user.id)
        .execute(&app.pool)
        .await
        .unwrap();
    let found =
        gengate_tests::harness::eventually("an audit that finds the grant", WAIT, || async {
            audits(&app).await.into_iter().skip(clean_runs).find(|a| a.0 > 0)
        })
        .await;
    assert_eq!(found, (1, Some("grant".to_owned())));
    let mut mismatch_runs = 0.0;
    for worker in 0..2 {
        let text = app.worker_metrics(worker).await;
        mismatch_runs += text
            .lines()
            .find(|l| l.starts_with("gengate_ledger_audits_total{outcome=\"mismatch\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    assert!(mismatch_runs >= 1.0, "no worker counted the mismatch");
    // Put it back, so the ledger is whole again.
    sqlx::query("UPDATE credit_grants SET remaining = remaining - 5 WHERE user_id = $1::uuid")
        .bind(&user.id)
        .execute(&app.pool)
        .await
        .unwrap();
    app.assert_reconciled().await;
}
