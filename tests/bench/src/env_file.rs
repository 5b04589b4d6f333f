//! Where the stack is: `.run/dev.env` as `deploy/dev up` writes it (`KEY=VALUE` lines, `#`
//! comments), with command-line overrides.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

use super::broker::metrics_url_for;

/// Parses the `KEY=VALUE` lines of an env file as a shell would `source` the simple ones:
/// blank lines and `#` comments are skipped, an `export ` prefix is allowed, a value wrapped in
/// matching single or double quotes loses them, and everything after the first `=` is the value.
/// Lines without `=` are ignored.
pub fn parse(text: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            continue;
        }
        vars.insert(key.to_owned(), unquote(value.trim()).to_owned());
    }
    vars
}

fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

/// How to reach the stack under test.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// The API's base URL (`GENGATE_URL`).
    pub url: String,
    /// The admin token (`GENGATE_ADMIN_TOKEN`).
    pub admin_token: String,
    /// The provider simulator's base URL (`GENGATE_SIM_URL`), for the e2e scenario.
    pub sim_url: Option<String>,
    /// PostgreSQL of the stack (`GENGATE__DATABASE__URL`), for seeding and the baseline.
    pub database_url: Option<String>,
    /// The broker's Prometheus endpoint: `--broker-metrics-url`, else port 15692 of the host in
    /// `GENGATE__AMQP__URL`.
    pub broker_metrics_url: Option<String>,
    /// The prefix of the stack's exchanges and queues (`GENGATE__AMQP__PREFIX`, else `gengate`).
    pub queue_prefix: String,
}

// Tokens and the database password stay out of debug output.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("sim_url", &self.sim_url)
            .field("broker_metrics_url", &self.broker_metrics_url)
            .field("queue_prefix", &self.queue_prefix)
            .finish_non_exhaustive()
    }
}

/// Values given on the command line, which win over the env file.
#[derive(Default)]
pub struct Overrides {
    /// `--url`.
    pub url: Option<String>,
    /// `--admin-token`.
    pub admin_token: Option<String>,
    /// `--sim-url`.
    pub sim_url: Option<String>,
    /// `--database-url`.
    pub database_url: Option<String>,
    /// `--broker-metrics-url`.
    pub broker_metrics_url: Option<String>,
}

impl std::fmt::Debug for Overrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overrides").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Target {
    /// Overrides first, then the env file's variables.
    pub fn resolve(vars: &BTreeMap<String, String>, overrides: Overrides) -> anyhow::Result<Self> {
        let var = |name: &str| vars.get(name).filter(|v| !v.is_empty()).cloned();
        let url = overrides
            .url
            .or_else(|| var("GENGATE_URL"))
            .context("no API URL: pass --url or an env file with GENGATE_URL")?;
        let admin_token = overrides.admin_token.or_else(|| var("GENGATE_ADMIN_TOKEN")).context(
            "no admin token: pass --admin-token or an env file with GENGATE_ADMIN_TOKEN",
        )?;
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            admin_token,
            sim_url: overrides
                .sim_url
                .or_else(|| var("GENGATE_SIM_URL"))
                .map(|u| u.trim_end_matches('/').to_owned()),
            database_url: overrides.database_url.or_else(|| var("GENGATE__DATABASE__URL")),
            broker_metrics_url: overrides
                .broker_metrics_url
                .or_else(|| var("GENGATE__AMQP__URL").and_then(|u| metrics_url_for(&u)))
                .map(|u| u.trim_end_matches('/').to_owned()),
            queue_prefix: var("GENGATE__AMQP__PREFIX").unwrap_or_else(|| "gengate".to_owned()),
        })
    }
}

/// Reads and parses an env file.
pub fn load(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} (run `deploy/dev up` first?)", path.display()))?;
    Ok(parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV_ENV: &str = "\
# Written by deploy/dev up. `source .run/dev.env` to use the local stack from a shell.
GENGATE_URL=http://127.0.0.1:8080
GENGATE_SIM_URL=http://127.0.0.1:8099
GENGATE_ADMIN_TOKEN=abc123
GENGATE_DEMO_KEY=
# Settings of the processes (GENGATE__SECTION__KEY overrides gengate.toml).
GENGATE__DATABASE__URL=postgres://gengate:gengate@127.0.0.1:5432/gengate?sslmode=disable&a=b
GENGATE__AMQP__URL=amqp://guest:guest@127.0.0.1:5672/%2f
";

    #[test]
    fn parses_what_deploy_dev_writes() {
        let vars = parse(DEV_ENV);
        assert_eq!(vars["GENGATE_URL"], "http://127.0.0.1:8080");
        assert_eq!(vars["GENGATE_DEMO_KEY"], "");
        assert_eq!(
            vars["GENGATE__DATABASE__URL"],
            "postgres://gengate:gengate@127.0.0.1:5432/gengate?sslmode=disable&a=b"
        );
        assert_eq!(vars.len(), 6);
    }

    #[test]
    fn handles_export_quotes_and_junk() {
        let vars = parse(
            "export A=1\n  B = \"two words\" \nC='x=y'\nnot a line\n=nokey\nD=\"unbalanced\n#E=5\n",
        );
        assert_eq!(vars["A"], "1");
        assert_eq!(vars["B"], "two words");
        assert_eq!(vars["C"], "x=y");
        assert_eq!(vars["D"], "\"unbalanced");
        assert!(!vars.contains_key("E"));
        assert_eq!(vars.len(), 4);
    }

    #[test]
    fn overrides_win_and_missing_values_are_named() {
        let vars = parse(DEV_ENV);
        let target = Target::resolve(
            &vars,
            Overrides { url: Some("http://127.0.0.1:18080/".into()), ..Overrides::default() },
        )
        .unwrap();
        assert_eq!(target.url, "http://127.0.0.1:18080");
        assert_eq!(target.admin_token, "abc123");
        assert_eq!(target.sim_url.as_deref(), Some("http://127.0.0.1:8099"));
        assert!(target.database_url.unwrap().starts_with("postgres://"));
        assert_eq!(target.broker_metrics_url.as_deref(), Some("http://127.0.0.1:15692"));
        assert_eq!(target.queue_prefix, "gengate");

        let target = Target::resolve(
            &parse(&format!("{DEV_ENV}GENGATE__AMQP__PREFIX=gg\n")),
            Overrides {
                broker_metrics_url: Some("http://broker.internal:15692/".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(target.broker_metrics_url.as_deref(), Some("http://broker.internal:15692"));
        assert_eq!(target.queue_prefix, "gg");

        let error = Target::resolve(&parse("GENGATE_URL=http://x\n"), Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("GENGATE_ADMIN_TOKEN"), "{error}");
    }
}
