//! A fresh PostgreSQL database per test, cloned from a migrated template.
//!
//! The template is named after a digest of the migrations, built once under an advisory lock
//! (parallel test processes wait for the first), and cloned with `CREATE DATABASE … TEMPLATE`,
//! which is far faster than migrating each database. Databases are dropped when the test ends;
//! ones left behind by killed runs are dropped by the next run once they are an hour old.

use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use uuid::Uuid;

/// Server URL (any database) for administrative statements; override with
/// `GENGATE_TEST_DATABASE_URL`.
pub fn admin_url() -> String {
    std::env::var("GENGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn url_for(database: &str) -> String {
    let admin = admin_url();
    let (base, _) = admin.rsplit_once('/').expect("database URL has a path");
    format!("{base}/{database}")
}

const TEST_PREFIX: &str = "gengate_t_";

/// A database of one test, dropped (with any connections to it) when this value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates a migrated database with a unique name.
    pub async fn create() -> Self {
        let template = ensure_template().await;
        let name = format!("{TEST_PREFIX}{}", Uuid::now_v7().simple());
        let mut admin = PgConnection::connect(&admin_url()).await.expect("connect to PostgreSQL");
        let statement = format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"");
        // Parallel clones of one template can collide on its lock; a short retry settles it.
        for attempt in 0.. {
            match run(&mut admin, statement.clone()).await {
                Ok(_) => break,
                Err(err) if attempt < 20 && err.to_string().contains("being accessed") => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("create test database {name}: {err}"),
            }
        }
        let url = url_for(&name);
        Self { name, url }
    }

    /// Creates an unmigrated database with a unique name, loaded with `sql` (another system's
    /// tables, e.g. a legacy database to import from).
    pub async fn create_loaded(sql: &str) -> Self {
        let name = format!("{TEST_PREFIX}{}", Uuid::now_v7().simple());
        let mut admin = PgConnection::connect(&admin_url()).await.expect("connect to PostgreSQL");
        run(&mut admin, format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|err| panic!("create test database {name}: {err}"));
        let url = url_for(&name);
        let mut loaded = PgConnection::connect(&url).await.expect("connect to the new database");
        loaded.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))).await.expect("load it");
        loaded.close().await.ok();
        Self { name, url }
    }

    /// The database's connection URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A small pool for the test's own queries and assertions.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(4)
            .connect(&self.url)
            .await
            .expect("connect to test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any async context we could rely on; use a short-lived runtime on a
        // thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url()).await.ok()?;
                run(&mut admin, format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// Creates the migrated template for the current migrations if it does not exist yet, and clears
/// out test databases abandoned by earlier runs.
async fn ensure_template() -> String {
    let mut digest = Sha256::new();
    for migration in gengate_shared::db::MIGRATOR.iter() {
        digest.update(migration.version.to_be_bytes());
        digest.update(&*migration.checksum);
    }
    let mut admin = PgConnection::connect(&admin_url()).await.expect(
        "connect to PostgreSQL for tests (set GENGATE_TEST_DATABASE_URL, or run `deploy/dev test`)",
    );
    // A role without superuser may only clone databases it owns, so each role gets a template of
    // its own: a template left behind by `postgres` must not break a run as `gengate`.
    let role: String =
        sqlx::query_scalar("SELECT current_user::text").fetch_one(&mut admin).await.expect("role");
    digest.update(role.as_bytes());
    let name = format!("gengate_tpl_{}", &hex::encode(digest.finalize())[..16]);
    // One process builds the template; the others wait here and then find it.
    admin.execute("SELECT pg_advisory_lock(7305612341)").await.expect("advisory lock");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .expect("look up template");
    if !exists {
        let building = format!("{name}_building");
        run(&mut admin, format!("DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"))
            .await
            .expect("drop half-built template");
        run(&mut admin, format!("CREATE DATABASE \"{building}\"")).await.expect("create template");
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url_for(&building))
            .await
            .expect("connect to template");
        gengate_shared::db::migrate(&pool).await.expect("migrate template");
        pool.close().await;
        run(&mut admin, format!("ALTER DATABASE \"{building}\" RENAME TO \"{name}\""))
            .await
            .expect("publish template");
        drop_stale(&mut admin, &name).await;
    }
    admin.execute("SELECT pg_advisory_unlock(7305612341)").await.expect("advisory unlock");
    name
}

/// Drops old templates and test databases whose UUID v7 name says they are over an hour old.
/// Only the current role's own databases are considered; other roles' are not ours to drop.
async fn drop_stale(admin: &mut PgConnection, current_template: &str) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database \
         WHERE (datname LIKE 'gengate\\_t\\_%' OR datname LIKE 'gengate\\_tpl\\_%') \
           AND datdba = (SELECT oid FROM pg_roles WHERE rolname = current_user)",
    )
    .fetch_all(&mut *admin)
    .await
    .unwrap_or_default();
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for name in names {
        let stale = if let Some(id) = name.strip_prefix(TEST_PREFIX) {
            Uuid::parse_str(id)
                .ok()
                .and_then(|id| id.get_timestamp())
                .map(|ts| {
                    let (secs, nanos) = ts.to_unix();
                    SystemTime::UNIX_EPOCH + Duration::new(secs, nanos) < hour_ago
                })
                .unwrap_or(false)
        } else {
            name != current_template && !name.ends_with("_building")
        };
        if stale {
            let _ = run(admin, format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
        }
    }
}

/// Runs one administrative statement built at run time. Only names this module generates (UUIDs
/// and digests) are ever interpolated.
async fn run(conn: &mut PgConnection, sql: String) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(conn).await.map(|_| ())
}
