//! Results are kept: a completed job's files are copied into gengate's storage (the filesystem
//! store and a real S3-protocol server), probed, given a poster, and handed to clients by signed,
//! expiring links; sources that are gone, too large or not videos end as described; archiving
//! twice writes once.

use std::time::Duration;

use gengate_shared::config::Settings;
use gengate_shared::queue::{Envelope, payloads};
use gengate_sim::{TINY_MP4, TINY_PNG};
use gengate_tests::harness::eventually;
use gengate_tests::requests::{SORA_COST, sora};
use gengate_tests::{TestApp, TestUser};
use gengate_worker::context::WorkerContext;
use gengate_worker::handlers::{Outcome, dispatch};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(30);

/// `nano-banana` (kie.ai, prepaid), text2image: 4 × 1.0.
fn image(prompt: &str) -> Value {
    json!({"model": "nano-banana", "mode": "text2image", "prompt": prompt, "aspect_ratio": "1:1"})
}

/// Waits until every file of a generation has left `pending`; returns the client's view.
async fn archived(app: &TestApp, user: &TestUser, id: &str) -> Value {
    archived_within(app, user, id, WAIT).await
}

async fn archived_within(app: &TestApp, user: &TestUser, id: &str, wait: Duration) -> Value {
    eventually(&format!("the files of {id} to be archived or failed"), wait, || async {
        let view = app.wait_for_status(user, id, "completed", WAIT).await;
        let result = &view["result"];
        let files: Vec<&Value> = ["videos", "images"]
            .iter()
            .flat_map(|k| result[*k].as_array().into_iter().flatten())
            .collect();
        (!files.is_empty() && files.iter().all(|f| f["archive_status"] != "pending"))
            .then_some(view)
    })
    .await
}

async fn download(
    app: &TestApp,
    url: &str,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let response = app.http.get(url).send().await.expect("GET the file");
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap_or_default().to_vec())
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A JPEG starts with its SOI marker and an APPn/DQT segment, and ends with EOI.
fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.len() > 100 && bytes.starts_with(&[0xff, 0xd8, 0xff]) && bytes.ends_with(&[0xff, 0xd9])
}

async fn a_video_and_an_image_are_kept_with_their_poster_and_probe(app: &TestApp) {
    let user = app.create_user(1000).await;
    let video = app.submit_ok(&user, &sora("a lighthouse")).await;
    let picture = app.submit_ok(&user, &image("a cat")).await;

    let done = archived(app, &user, &video).await;
    assert_eq!(done["charged"], SORA_COST, "archiving never changes what a job costs");
    let file = &done["result"]["videos"][0];
    assert_eq!(file["archive_status"], "archived", "{done}");
    assert!(file["archive_detail"].is_null(), "{file}");
    let url = file["url"].as_str().unwrap();
    assert!(!url.starts_with(app.sim.url()), "gengate's copy, not the provider's: {url}");
    let (status, headers, bytes) = download(app, url).await;
    assert_eq!(status, 200, "{url}");
    assert_eq!(headers["content-type"], "video/mp4");
    assert_eq!(sha256(&bytes), sha256(TINY_MP4), "the same bytes as the provider's");
    assert_eq!(file["size_bytes"], TINY_MP4.len());
    assert_eq!((file["width"].as_i64(), file["height"].as_i64()), (Some(64), Some(36)));
    let duration = file["duration"].as_f64().unwrap();
    assert!((duration - 1.0).abs() < 0.05, "probed duration {duration}");
    let (status, _, poster) = download(app, file["poster_url"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert!(is_jpeg(&poster), "the poster is a JPEG ({} bytes)", poster.len());

    let done = archived(app, &user, &picture).await;
    let file = &done["result"]["images"][0];
    assert_eq!(file["archive_status"], "archived", "{done}");
    let (status, headers, bytes) = download(app, file["url"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(sha256(&bytes), sha256(TINY_PNG));
    assert_eq!((file["width"].as_i64(), file["height"].as_i64()), (Some(32), Some(32)));

    // The provider's URL stays in the audit trail.
    let generation = app.admin_generation(&video).await;
    let archive = generation["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["cause"] == "archive")
        .cloned()
        .expect("an archive event");
    let source = archive["detail"]["source_url"].as_str().unwrap();
    assert_eq!(archive["detail"]["status"], "archived");
    assert!(source.starts_with(app.sim.url()), "{archive}");
    app.assert_reconciled().await;
}

#[tokio::test]
async fn results_are_kept_in_the_filesystem_store() {
    let app = TestApp::builder().workers(1).spawn().await;
    a_video_and_an_image_are_kept_with_their_poster_and_probe(&app).await;
}

#[tokio::test]
async fn results_are_kept_in_an_s3_store() {
    let app = TestApp::builder().workers(1).s3_storage().spawn().await;
    a_video_and_an_image_are_kept_with_their_poster_and_probe(&app).await;
    // The links are the store's own, presigned.
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("another lighthouse")).await;
    let done = archived(&app, &user, &id).await;
    let url = done["result"]["videos"][0]["url"].as_str().unwrap();
    let s3 = app.s3.as_ref().unwrap();
    assert!(url.starts_with(s3.endpoint()), "{url}");
    assert!(url.contains("X-Amz-Signature="), "{url}");
}

#[tokio::test]
async fn links_expire_are_made_fresh_on_every_read_and_refuse_tampering() {
    let app =
        TestApp::builder().workers(1).env("GENGATE__STORAGE__LINK_TTL_SECS", "2").spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("a lighthouse")).await;
    let done = archived(&app, &user, &id).await;
    let url = done["result"]["videos"][0]["url"].as_str().unwrap().to_owned();
    assert_eq!(download(&app, &url).await.0, 200);

    // One byte range, for players that seek.
    let part = app.http.get(&url).header("range", "bytes=4-11").send().await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], format!("bytes 4-11/{}", TINY_MP4.len()));
    assert_eq!(part.bytes().await.unwrap().as_ref(), &TINY_MP4[4..12]);

    // Tampered: another signature, another file, a longer life, no signature at all.
    let (path, query) = url.split_once('?').unwrap();
    let expires: i64 =
        query.split('&').find_map(|p| p.strip_prefix("expires=")).unwrap().parse().unwrap();
    let sig = query.split('&').find_map(|p| p.strip_prefix("sig=")).unwrap();
    let flipped: String = sig
        .chars()
        .enumerate()
        .map(|(i, c)| if i == 0 { if c == '0' { '1' } else { '0' } } else { c })
        .collect();
    for (tampered, what) in [
        (format!("{path}?expires={expires}&sig={flipped}"), "another signature"),
        (format!("{}?{query}", path.replace(".mp4", ".poster.jpg")), "another file"),
        (format!("{path}?expires={}&sig={sig}", expires + 3600), "a longer life"),
        (path.to_owned(), "no signature"),
    ] {
        let response = app.http.get(&tampered).send().await.unwrap();
        assert_eq!(response.status(), 403, "{what}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "link_invalid", "{what}");
    }
    // Only keys gengate makes are served at all.
    let other =
        app.http.get(format!("{}/files/../../etc/passwd", app.api_url)).send().await.unwrap();
    assert_eq!(other.status(), 404);

    // Two seconds on, the link has expired; reading the generation again gives a working one.
    let expired = eventually("the link to expire", WAIT, || async {
        let response = app.http.get(&url).send().await.unwrap();
        (response.status() == 403).then_some(response)
    })
    .await;
    assert_eq!(expired.json::<Value>().await.unwrap()["code"], "link_expired");
    let again = app.wait_for_status(&user, &id, "completed", WAIT).await;
    let fresh = again["result"]["videos"][0]["url"].as_str().unwrap();
    assert_ne!(fresh, url);
    assert_eq!(download(&app, fresh).await.0, 200);
}

#[tokio::test]
async fn sources_that_are_gone_too_large_or_not_videos_end_as_described() {
    let app = TestApp::builder()
        .workers(1)
        .env("GENGATE__ARCHIVE__MAX_FILE_BYTES", "100000")
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let gone = app.submit_ok(&user, &sora("expired [[sim:result-gone]]")).await;
    let large = app.submit_ok(&user, &sora("huge [[sim:result-size=200000]]")).await;
    let text = app.submit_ok(&user, &sora("not a video [[sim:result-text]]")).await;
    let moved = app.submit_ok(&user, &sora("elsewhere [[sim:result-redirect]]")).await;

    for (id, detail) in
        [(&gone, "source_gone"), (&large, "too_large"), (&moved, "redirect_refused")]
    {
        let done = archived(&app, &user, id).await;
        assert_eq!(done["status"], "completed", "the job is done whatever becomes of its copy");
        assert_eq!(done["charged"], SORA_COST);
        let file = &done["result"]["videos"][0];
        assert_eq!(file["archive_status"], "failed", "{done}");
        assert!(file["archive_detail"].as_str().unwrap().starts_with(detail), "{file}");
        assert!(
            file["url"].as_str().unwrap().starts_with(app.sim.url()),
            "the provider's URL stays"
        );
        assert!(file["poster_url"].is_null());
    }
    let done = archived(&app, &user, &text).await;
    let file = &done["result"]["videos"][0];
    assert_eq!(file["archive_status"], "archived", "{done}");
    assert!(file["poster_url"].is_null());
    assert!(
        file["archive_detail"]
            .as_str()
            .unwrap()
            .starts_with("archived without a poster: not a video"),
        "{file}"
    );
    let (status, _, bytes) = download(&app, file["url"].as_str().unwrap()).await;
    assert_eq!((status.as_u16(), bytes.as_slice()), (200, b"this is not a video\n".as_slice()));

    // Operators see the failures counted.
    let metrics = app.worker_metrics(0).await;
    for reason in ["source_gone", "too_large", "redirect_refused"] {
        assert!(
            metrics.contains(&format!("gengate_archive_failures_total{{reason=\"{reason}\"}} 1")),
            "{metrics}"
        );
    }
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_source_that_stalls_is_retried_then_failed_and_retried_by_an_operator() {
    let mut app = TestApp::builder()
        .workers(1)
        .env("GENGATE__ARCHIVE__READ_TIMEOUT_MS", "300")
        .env("GENGATE__ARCHIVE__ATTEMPTS", "2")
        .env("GENGATE__ARCHIVE__MAX_FILE_BYTES", "1000")
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let stalled = app.submit_ok(&user, &sora("stuck [[sim:result-stall]]")).await;
    let done = archived(&app, &user, &stalled).await;
    let file = &done["result"]["videos"][0];
    assert_eq!(file["archive_status"], "failed");
    assert!(file["archive_detail"].as_str().unwrap().contains("timed out"), "{file}");

    // A file refused for its size is copied once the operator raised the limit and retried it.
    let large = app.submit_ok(&user, &sora("a lighthouse")).await;
    let done = archived(&app, &user, &large).await;
    assert_eq!(done["result"]["videos"][0]["archive_status"], "failed", "{done}");
    app.workers[0].process.kill().await;
    app.start_worker_with(&[("GENGATE__ARCHIVE__MAX_FILE_BYTES", "2147483648")]).await;
    let retried = app.ctl_json(&["archive", "retry", &large, "--json"]).await;
    assert_eq!(retried["queued"], json!([large]));
    let done = archived(&app, &user, &large).await;
    assert_eq!(done["result"]["videos"][0]["archive_status"], "archived", "{done}");
    // Nothing failed is left for that generation; a second retry is refused.
    let again = app.ctl(&["archive", "retry", &large]).await;
    assert_eq!(again.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archiving_twice_writes_once() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("a lighthouse")).await;
    let first = archived(&app, &user, &id).await;
    let objects = || walk(&app.log_dir().join("objects"));
    assert_eq!(objects().len(), 2, "the video and its poster");
    let archive_events = || async {
        let generation = app.admin_generation(&id).await;
        generation["events"].as_array().unwrap().iter().filter(|e| e["cause"] == "archive").count()
    };
    assert_eq!(archive_events().await, 1);

    // As if its message were delivered twice more while the copy was under way: the file is
    // pending again, and two copies run at once (here, in this process).
    sqlx::query(
        "UPDATE generation_videos SET archive_status = 'pending' WHERE generation_id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();
    let settings = Settings::load_from(None, Some(app.env().clone())).expect("settings");
    let broker = app.broker.broker().await;
    let ctx = WorkerContext::new(settings, app.pool.clone(), broker).expect("context");
    let message = Envelope::of(id.parse().unwrap(), &payloads::Archive {});
    let (a, b) = tokio::join!(dispatch(&ctx, &message, true), dispatch(&ctx, &message, true));
    assert!(matches!(a, Ok(Outcome::Done)) && matches!(b, Ok(Outcome::Done)), "{a:?} {b:?}");

    // Both copies wrote the same objects; one of them recorded the file.
    assert_eq!(archive_events().await, 2, "the first archiving and one of the two copies");
    assert_eq!(objects().len(), 2);
    let again = archived(&app, &user, &id).await;
    assert_eq!(again["result"]["videos"][0]["archive_status"], "archived");
    assert_eq!(
        again["result"]["videos"][0]["size_bytes"],
        first["result"]["videos"][0]["size_bytes"]
    );
}

#[tokio::test]
async fn old_results_are_purged_on_an_operators_word_after_a_dry_run() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("a lighthouse")).await;
    archived(&app, &user, &id).await;
    let objects = || walk(&app.log_dir().join("objects"));
    assert_eq!(objects().len(), 2);

    // Nothing is that old yet.
    let none =
        app.ctl_json(&["archive", "purge", "--older-than", "1d", "--dry-run", "--json"]).await;
    assert_eq!(none["files"], 0);
    // Everything that ended before now: a dry run says what would go, and deletes nothing.
    let dry =
        app.ctl_json(&["archive", "purge", "--older-than", "0s", "--dry-run", "--json"]).await;
    assert_eq!((dry["files"].as_i64(), dry["generations"].as_i64()), (Some(1), Some(1)), "{dry}");
    assert_eq!(dry["bytes"], TINY_MP4.len());
    assert_eq!(objects().len(), 2);
    // Without a terminal and without --yes, nothing is deleted.
    let unconfirmed = app.ctl(&["archive", "purge", "--older-than", "0s"]).await;
    assert_eq!(unconfirmed.status.code(), Some(2));
    assert_eq!(objects().len(), 2);

    let purged = app.ctl_json(&["archive", "purge", "--older-than", "0s", "--yes", "--json"]).await;
    assert_eq!(purged["purged"], 1, "{purged}");
    assert!(objects().is_empty(), "the video and its poster are deleted");
    let view = app.wait_for_status(&user, &id, "completed", WAIT).await;
    let file = &view["result"]["videos"][0];
    assert_eq!(file["archive_status"], "purged");
    assert!(file["url"].as_str().unwrap().starts_with(app.sim.url()), "{file}");
    assert!(file["poster_url"].is_null());
    app.assert_reconciled().await;
}

/// The most memory a process has held (`VmHWM`, resident), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib * 1024
}

#[tokio::test]
async fn a_large_file_is_copied_as_a_stream_in_little_memory() {
    const SIZE: u64 = 500 * 1024 * 1024;
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora(&format!("a long film [[sim:result-size={SIZE}]]"))).await;
    let done = archived_within(&app, &user, &id, Duration::from_secs(300)).await;
    let file = &done["result"]["videos"][0];
    assert_eq!(file["archive_status"], "archived", "{done}");
    assert_eq!(file["size_bytes"], SIZE);
    let stored = walk(&app.log_dir().join("objects"));
    assert_eq!(stored.len(), 1, "the file, and no poster (it is filler, not a video)");
    assert_eq!(std::fs::metadata(&stored[0]).unwrap().len(), SIZE);
    let pid = app.workers[0].process.pid().expect("the worker runs");
    let peak = peak_rss(pid);
    assert!(peak < 60 * 1024 * 1024, "the worker's peak RSS was {} MiB", peak / 1024 / 1024);
    eprintln!(
        "copied {} MiB; the worker's peak RSS: {:.1} MiB",
        SIZE >> 20,
        peak as f64 / 1048576.0
    );
}

/// Every file below `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
