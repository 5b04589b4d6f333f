//! A real S3-protocol server for a test: `s3s-fs` (crates.io; `deploy/dev test` installs it with
//! `cargo install s3s-fs --features binary`) on a free port, over a directory of its own, with one
//! bucket. Dropping it stops the server and removes the directory.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::eventually;

/// The bucket every test server has.
pub const BUCKET: &str = "gengate-test";
/// Its access key.
pub const ACCESS_KEY: &str = "gengate-test-access";
/// Its secret key.
pub const SECRET_KEY: &str = "gengate-test-secret-key";

/// A running `s3s-fs`.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    root: PathBuf,
    endpoint: String,
}

/// Where `s3s-fs` is: on `PATH`, or where `cargo install` puts it.
fn program() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|p| p.join("s3s-fs")).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.is_file());
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    on_path
        .or_else(|| cargo_home.map(|home| home.join("bin").join("s3s-fs")).filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "s3s-fs is not installed: `cargo install s3s-fs --version 0.14.1 --features binary` \
                 (deploy/dev test does it)"
            )
        })
}

impl S3Server {
    /// Starts a server with an empty bucket and waits until it answers.
    pub async fn start() -> Self {
        let root = std::env::temp_dir().join(format!("gengate-s3-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(root.join(BUCKET)).expect("create the S3 root and bucket");
        // A free port, which s3s-fs takes a moment later.
        let address = super::process::free_address();
        let port = address.rsplit(':').next().expect("host:port").to_owned();
        let child = Command::new(program())
            .args(["--host", "127.0.0.1", "--port", &port])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start s3s-fs");
        let endpoint = format!("http://127.0.0.1:{port}");
        eventually("s3s-fs to listen", Duration::from_secs(20), || {
            let address = address.clone();
            async move { tokio::net::TcpStream::connect(&address).await.ok().map(drop) }
        })
        .await;
        Self { child, root, endpoint }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The settings that point gengate at this server.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("GENGATE__STORAGE__BACKEND", "s3".to_owned()),
            ("GENGATE__STORAGE__BUCKET", BUCKET.to_owned()),
            ("GENGATE__STORAGE__ENDPOINT", self.endpoint.clone()),
            ("GENGATE__STORAGE__ALLOW_HTTP", "true".to_owned()),
            ("GENGATE__STORAGE__ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("GENGATE__STORAGE__SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
