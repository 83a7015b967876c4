//! strata's configuration: one TOML file, layered.
//!
//! ```text
//! built-in defaults  ──►  the file (--config / STRATA_CONFIG / ./strata.toml)  ──►  STRATA_* environment
//! ```
//!
//! Every key of the file can be overridden from the environment as
//! `STRATA_<SECTION>__<KEY>` (double underscore between levels, any case):
//! `STRATA_KAFKA__BROKERS=10.0.0.1:9092`, `STRATA_SOURCE__POSTGRES__URL=postgres://…`.
//! Values are read as TOML literals where they parse as one (`42`, `true`, `["a","b"]`) and as
//! strings otherwise. Variables without a double underscore (such as `STRATA_CONFIG` or the test
//! stack's `STRATA_KAFKA_BROKERS`) are not overrides.
//!
//! Unknown keys are errors, never ignored: the error names the key and where it came from.
//! `strata config --defaults` prints the file below with every default.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub(crate) use strata_capture::postgres::PostgresSourceConfig;
pub(crate) use strata_capture::postgres::config::redact_url;
pub(crate) use strata_capture::sink::RecordFormat;
pub(crate) use strata_compactor::CompactorConfig;
pub(crate) use strata_query::{CoalesceConfig, SnapshotConfig};

/// The documented default configuration. It is also the template `strata config --defaults` prints,
/// and a test checks that it parses to exactly [`Config::default`].
pub(crate) const DEFAULT_CONFIG_TOML: &str = include_str!("../strata.example.toml");

/// Prefix of environment overrides.
const ENV_PREFIX: &str = "STRATA_";
/// Separator between key levels in an environment override.
const ENV_SEPARATOR: &str = "__";

/// The whole configuration of a strata process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    /// Structured logs.
    pub(crate) log: LogConfig,
    /// The Prometheus endpoint.
    pub(crate) metrics: MetricsConfig,
    /// The Kafka cluster that carries change events between capture and compactor.
    pub(crate) kafka: KafkaConfig,
    /// Where history (change segments, snapshots, the catalog) is kept.
    pub(crate) storage: StorageConfig,
    /// The databases to capture. Each source is optional.
    pub(crate) source: SourcesConfig,
    /// What `strata run` runs in this process.
    pub(crate) run: RunConfig,
    /// The compactor: Kafka change topics into Parquet history under the catalog.
    pub(crate) compactor: CompactorConfig,
    /// Snapshots: the compactor part periodically folds each table's changes into its full state.
    pub(crate) snapshots: SnapshotConfig,
    /// Coalescing: the compactor part periodically rewrites many small change segments of a
    /// table as one.
    pub(crate) coalesce: CoalesceConfig,
    /// Garbage collection: the compactor part periodically deletes the history files no
    /// catalog commit references, as `strata gc` does.
    pub(crate) gc: GcConfig,
}

/// Periodic `strata gc` inside `strata run` (its compactor part).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct GcConfig {
    /// Collect at all. Default `true`.
    pub(crate) enabled: bool,
    /// How often. Default `1h`.
    #[serde(with = "humantime_serde")]
    pub(crate) interval: Duration,
    /// The grace period, as `strata gc --older-than`: unreferenced files younger than this, and
    /// replaced segments and thinned snapshots whose removal is younger than this, are kept. Default `1h`. Below
    /// [`MIN_OLDER_THAN`](crate::gc::MIN_OLDER_THAN) (10m) it is refused unless
    /// `unsafe_allow_short_grace`.
    #[serde(with = "humantime_serde")]
    pub(crate) older_than: Duration,
    /// Accept an `older_than` below 10m, as `strata gc --unsafe-allow-short-grace`. Safe only
    /// when nothing else writes to the storage: a file written but not yet committed would be
    /// deleted, and its commit would name a missing file. Default `false`.
    pub(crate) unsafe_allow_short_grace: bool,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(3600),
            older_than: Duration::from_secs(3600),
            unsafe_allow_short_grace: false,
        }
    }
}

/// The parts `strata run` starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RunConfig {
    /// Any of `capture` (every configured source) and `compactor`. Large deployments run them in
    /// separate processes; a small one runs both.
    pub(crate) parts: Vec<RunPart>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            parts: vec![RunPart::Capture, RunPart::Compactor],
        }
    }
}

/// A part of strata that `strata run` can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RunPart {
    /// The listeners of every configured source.
    Capture,
    /// The compactor.
    Compactor,
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogConfig {
    /// A `tracing` filter, as in `RUST_LOG` (`info`, `strata=debug,rdkafka=warn`). `RUST_LOG`, when
    /// set, wins.
    pub(crate) level: String,
    /// `text` for people, `json` for log pipelines (one JSON object per line).
    pub(crate) format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The Prometheus metrics endpoint of long-running commands (`strata run`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MetricsConfig {
    /// Serve `GET /metrics` on this address.
    pub(crate) enabled: bool,
    /// Address to listen on.
    pub(crate) listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// Kafka connection and topic naming.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct KafkaConfig {
    /// Bootstrap brokers, `host:port` separated by commas.
    pub(crate) brokers: String,
    /// Topics are named `<topic_prefix>.<source>.<namespace>.<table>`, as Debezium names them.
    pub(crate) topic_prefix: String,
    /// The Kafka client id strata announces.
    pub(crate) client_id: String,
    /// How long to wait for a broker before reporting it unreachable.
    #[serde(with = "humantime_serde")]
    pub(crate) connect_timeout: Duration,
    /// Partitions of the topics strata creates.
    pub(crate) partitions: i32,
    /// Replication factor of the topics strata creates; `-1` takes the broker's default.
    pub(crate) replication_factor: i32,
    /// How the capture writes change records: `json` (the JSON converter's envelope with its
    /// schema, as Debezium writes it; the default) or `avro` (Avro single-object encoding, each
    /// writer schema published once to `schema_topic`).
    pub(crate) format: RecordFormat,
    /// The compacted topic the writer schemas of `format = "avro"` are published to. Default
    /// `_strata_schemas`.
    pub(crate) schema_topic: String,
    /// Extra librdkafka properties passed as they are (`security.protocol`, `sasl.mechanism`, …).
    pub(crate) properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "strata".into(),
            client_id: "strata".into(),
            connect_timeout: Duration::from_secs(10),
            partitions: 4,
            replication_factor: -1,
            format: RecordFormat::Json,
            schema_topic: strata_catalog::avro::DEFAULT_SCHEMA_TOPIC.into(),
            properties: Default::default(),
        }
    }
}

/// The object store that holds history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct StorageConfig {
    /// `file:///abs/dir` or a relative `./dir` (local directory, the default), `s3://bucket/prefix`,
    /// or `memory://` (nothing kept; for trials).
    pub(crate) url: String,
    /// Settings used when `url` is `s3://…`.
    pub(crate) s3: S3Config,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: "./strata-data".into(),
            s3: S3Config::default(),
        }
    }
}

/// S3 or an S3-compatible server. Unset fields fall back to the usual `AWS_*` environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct S3Config {
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:9300`); empty for AWS.
    pub(crate) endpoint: Option<String>,
    /// Region.
    pub(crate) region: Option<String>,
    /// Access key id.
    pub(crate) access_key_id: Option<String>,
    /// Secret access key.
    pub(crate) secret_access_key: Option<String>,
    /// Allow plain `http://` endpoints.
    pub(crate) allow_http: bool,
}

/// Sources to capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SourcesConfig {
    /// A PostgreSQL database, read through logical replication (pgoutput).
    pub(crate) postgres: Option<PostgresSourceConfig>,
}

/// Where a configuration value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Built-in defaults only.
    Defaults,
    /// A file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Defaults => f.write_str("built-in defaults"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message with line and column.
        message: String,
    },
    /// A key is unknown or its value has the wrong type.
    #[error("config key `{key}` (from {origin}): {message}")]
    Key {
        /// Dotted path of the key (`kafka.brokers`).
        key: String,
        /// Where the offending value came from.
        origin: Origin,
        /// What is wrong.
        message: String,
    },
    /// A value parses but makes no sense.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// Dotted path of the key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Loads defaults, then `path` if given, then the `STRATA_*__*` variables of `env`.
    ///
    /// `env` is passed in (rather than read here) so that tests need not touch the process
    /// environment.
    pub(crate) fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (mut table, file_origin) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let table: toml::Table =
                    toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                        path: path.to_owned(),
                        message: e.to_string(),
                    })?;
                (table, Origin::File(path.to_owned()))
            }
            None => (toml::Table::new(), Origin::Defaults),
        };

        let mut env_keys: Vec<(Vec<String>, String)> = Vec::new();
        let mut vars: Vec<(String, String)> = env.into_iter().collect();
        vars.sort();
        for (var, raw) in vars {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if !rest.contains(ENV_SEPARATOR) {
                continue;
            }
            let key: Vec<String> = rest
                .split(ENV_SEPARATOR)
                .map(str::to_ascii_lowercase)
                .collect();
            if key.iter().any(String::is_empty) {
                return Err(ConfigError::Key {
                    key: key.join("."),
                    origin: Origin::Env(var),
                    message: "empty key segment".into(),
                });
            }
            set_path(&mut table, &key, env_value(&raw)).map_err(|message| ConfigError::Key {
                key: key.join("."),
                origin: Origin::Env(var.clone()),
                message,
            })?;
            env_keys.push((key, var));
        }

        let config: Config = serde_path_to_error::deserialize(table).map_err(|e| {
            let key = e.path().to_string();
            // Name the environment variable when the failing key (or a parent of it) came from one.
            let origin = env_keys
                .iter()
                .filter(|(k, _)| {
                    let k = k.join(".");
                    key == k
                        || key.starts_with(&format!("{k}."))
                        || k.starts_with(&format!("{key}."))
                })
                .map(|(_, var)| Origin::Env(var.clone()))
                .next()
                .unwrap_or_else(|| file_origin.clone());
            ConfigError::Key {
                key,
                origin,
                message: e.into_inner().to_string(),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        if self.kafka.brokers.split(',').all(|b| b.trim().is_empty()) {
            return Err(invalid("kafka.brokers", "no broker given".into()));
        }
        for broker in self.kafka.brokers.split(',').map(str::trim) {
            match broker.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => {
                    return Err(invalid(
                        "kafka.brokers",
                        format!("`{broker}` is not host:port"),
                    ));
                }
            }
        }
        if self.kafka.connect_timeout.is_zero() {
            return Err(invalid(
                "kafka.connect_timeout",
                "must be more than zero".into(),
            ));
        }
        if self.kafka.topic_prefix.is_empty() {
            return Err(invalid("kafka.topic_prefix", "must not be empty".into()));
        }
        let schema_topic = &self.kafka.schema_topic;
        if schema_topic.is_empty()
            || schema_topic.len() > 249
            || !schema_topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(invalid(
                "kafka.schema_topic",
                format!("`{schema_topic}` is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)"),
            ));
        }
        if schema_topic.starts_with(&format!("{}.", self.kafka.topic_prefix)) {
            return Err(invalid(
                "kafka.schema_topic",
                format!(
                    "`{schema_topic}` is under kafka.topic_prefix: change-topic patterns would \
                     read schemas as change events"
                ),
            ));
        }
        crate::storage::StorageLocation::parse(&self.storage.url)
            .map_err(|message| invalid("storage.url", message))?;
        if self.kafka.partitions < 1 {
            return Err(invalid("kafka.partitions", "must be at least 1".into()));
        }
        if self.kafka.replication_factor == 0 || self.kafka.replication_factor < -1 {
            return Err(invalid(
                "kafka.replication_factor",
                "must be -1 or at least 1".into(),
            ));
        }
        if self.run.parts.is_empty() {
            return Err(invalid("run.parts", "names nothing to run".into()));
        }
        self.compactor.validate().map_err(|e| match e {
            strata_compactor::Error::Config { field, reason } => {
                invalid(&format!("compactor.{field}"), reason)
            }
            other => invalid("compactor", other.to_string()),
        })?;
        self.snapshots.validate().map_err(|e| match e {
            strata_query::Error::Config { field, reason } => invalid(&field, reason),
            other => invalid("snapshots", other.to_string()),
        })?;
        if self.gc.interval.is_zero() {
            return Err(invalid("gc.interval", "must be more than 0".into()));
        }
        if !self.gc.unsafe_allow_short_grace
            && let Some(reason) = crate::gc::too_short(self.gc.older_than)
        {
            return Err(invalid(
                "gc.older_than",
                format!(
                    "{reason}. Raise it ({}) to {} or more, or set \
                     gc.unsafe_allow_short_grace = true ({}=true) if nothing else writes to \
                     this storage",
                    env_var("gc.older_than"),
                    humantime::format_duration(crate::gc::MIN_OLDER_THAN),
                    env_var("gc.unsafe_allow_short_grace"),
                ),
            ));
        }
        self.coalesce.validate().map_err(|e| match e {
            strata_query::Error::Config { field, reason } => invalid(&field, reason),
            other => invalid("coalesce", other.to_string()),
        })?;
        if let Some(pg) = &self.source.postgres {
            pg.validate()
                .map_err(|(key, message)| invalid(&format!("source.postgres.{key}"), message))?;
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets hidden.
    pub(crate) fn to_toml_redacted(&self) -> String {
        let mut shown = self.clone();
        if shown.storage.s3.secret_access_key.is_some() {
            shown.storage.s3.secret_access_key = Some("<redacted>".into());
        }
        if let Some(pg) = &mut shown.source.postgres {
            pg.url = redact_url(&pg.url);
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// The environment variable that overrides `key` (`gc.older_than`: `STRATA_GC__OLDER_THAN`).
fn env_var(key: &str) -> String {
    let levels: Vec<String> = key.split('.').map(str::to_uppercase).collect();
    format!("{ENV_PREFIX}{}", levels.join(ENV_SEPARATOR))
}

/// Reads an environment value as a TOML literal when it is one, else as a string.
fn env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

/// Sets `table[key[0]][key[1]]… = value`, creating tables on the way.
fn set_path(table: &mut toml::Table, key: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = key.split_last().ok_or_else(|| "empty key".to_owned())?;
    let mut current = table;
    for (depth, part) in parents.iter().enumerate() {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(format!("`{}` is not a section", key[..=depth].join("."))),
        };
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load_str(toml_text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.toml");
        std::fs::write(&path, toml_text).unwrap();
        Config::load(Some(&path), env(vars))
    }

    #[test]
    fn documented_defaults_are_the_defaults() {
        let parsed: Config = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
        let mut expected = Config::default();
        // The example enables the PostgreSQL source with its defaults, as the quick start uses it.
        expected.source.postgres = Some(PostgresSourceConfig::default());
        assert_eq!(parsed, expected);
    }

    #[test]
    fn no_file_no_env_gives_defaults() {
        assert_eq!(Config::load(None, env(&[])).unwrap(), Config::default());
    }

    #[test]
    fn file_then_env_layering() {
        let config = load_str(
            "[kafka]\nbrokers = \"a:1\"\nclient_id = \"x\"\n",
            &[
                ("STRATA_KAFKA__BROKERS", "b:2,c:3"),
                ("STRATA_METRICS__ENABLED", "false"),
            ],
        )
        .unwrap();
        assert_eq!(config.kafka.brokers, "b:2,c:3");
        assert_eq!(config.kafka.client_id, "x");
        assert!(!config.metrics.enabled);
    }

    #[test]
    fn env_without_double_underscore_is_not_an_override() {
        let config = Config::load(
            None,
            env(&[("STRATA_KAFKA_BROKERS", "nope"), ("STRATA_CONFIG", "x")]),
        )
        .unwrap();
        assert_eq!(config.kafka.brokers, "127.0.0.1:9092");
    }

    #[test]
    fn env_can_create_a_section_and_parse_lists_and_durations() {
        let config = Config::load(
            None,
            env(&[
                ("STRATA_SOURCE__POSTGRES__TABLES", r#"["public.a", "s.b"]"#),
                ("STRATA_KAFKA__CONNECT_TIMEOUT", "2s 500ms"),
            ]),
        )
        .unwrap();
        let pg = config.source.postgres.unwrap();
        assert_eq!(pg.tables, vec!["public.a", "s.b"]);
        assert_eq!(pg.slot_name, "strata");
        assert_eq!(config.kafka.connect_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let err = load_str("[kafka]\nbrokerz = \"a:1\"\n", &[]).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, ConfigError::Key { key, .. } if key == "kafka.brokerz"),
            "{msg}"
        );
        assert!(
            msg.contains("kafka.brokerz") && msg.contains("strata.toml"),
            "{msg}"
        );
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn kafka_format_is_json_unless_avro_is_asked_for() {
        let defaults = Config::default();
        assert_eq!(defaults.kafka.format, RecordFormat::Json);
        assert_eq!(defaults.kafka.schema_topic, "_strata_schemas");

        let config = load_str(
            "[kafka]\nformat = \"avro\"\nschema_topic = \"_my_schemas\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.kafka.format, RecordFormat::Avro);
        assert_eq!(config.kafka.schema_topic, "_my_schemas");

        let config = Config::load(None, env(&[("STRATA_KAFKA__FORMAT", "avro")])).unwrap();
        assert_eq!(config.kafka.format, RecordFormat::Avro);
    }

    #[test]
    fn unknown_kafka_format_is_named() {
        let err = load_str("[kafka]\nformat = \"xml\"\n", &[]).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, ConfigError::Key { key, .. } if key == "kafka.format"),
            "{msg}"
        );
        assert!(
            msg.contains("xml") && msg.contains("json") && msg.contains("avro"),
            "{msg}"
        );
        let err = Config::load(None, env(&[("STRATA_KAFKA__FORMAT", "xml")])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("kafka.format") && msg.contains("STRATA_KAFKA__FORMAT"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_section_is_named() {
        let err = load_str("[kafkaa]\nbrokers = \"a:1\"\n", &[]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Key { key, .. } if key == "kafkaa"),
            "{err}"
        );
    }

    #[test]
    fn ill_typed_key_is_named() {
        let err = load_str("[metrics]\nenabled = \"yes\"\n", &[]).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, ConfigError::Key { key, .. } if key == "metrics.enabled"),
            "{msg}"
        );
        assert!(msg.contains("invalid type"), "{msg}");
    }

    #[test]
    fn ill_typed_env_override_names_the_variable() {
        let err =
            Config::load(None, env(&[("STRATA_METRICS__LISTEN", "not-an-address")])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("metrics.listen"), "{msg}");
        assert!(msg.contains("STRATA_METRICS__LISTEN"), "{msg}");
    }

    #[test]
    fn unknown_env_override_names_the_variable() {
        let err = Config::load(None, env(&[("STRATA_KAFKA__BROKER", "a:1")])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("kafka.broker") && msg.contains("STRATA_KAFKA__BROKER"),
            "{msg}"
        );
    }

    #[test]
    fn env_override_into_a_scalar_is_refused() {
        // `log.level` is absent from the file, so the override makes it a table: refused by type.
        let err = Config::load(None, env(&[("STRATA_LOG__LEVEL__X", "1")])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("log.level") && msg.contains("STRATA_LOG__LEVEL__X"),
            "{msg}"
        );
        // Present in the file as a string, the override cannot descend into it.
        let err = load_str(
            "[log]\nlevel = \"info\"\n",
            &[("STRATA_LOG__LEVEL__X", "1")],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("`log.level` is not a section"),
            "{err}"
        );
    }

    #[test]
    fn syntax_error_names_the_file_and_line() {
        let err = load_str("[kafka\nbrokers = 1\n", &[]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{msg}");
        assert!(
            msg.contains("strata.toml") && msg.contains("line 1"),
            "{msg}"
        );
    }

    #[test]
    fn invalid_values_are_named() {
        let cases = [
            ("[kafka]\nbrokers = \"\"\n", "kafka.brokers"),
            ("[kafka]\nbrokers = \"nohostport\"\n", "kafka.brokers"),
            (
                "[kafka]\nconnect_timeout = \"0s\"\n",
                "kafka.connect_timeout",
            ),
            ("[kafka]\nschema_topic = \"\"\n", "kafka.schema_topic"),
            ("[kafka]\nschema_topic = \"a b\"\n", "kafka.schema_topic"),
            (
                "[kafka]\nschema_topic = \"strata.schemas\"\n",
                "kafka.schema_topic",
            ),
            ("[storage]\nurl = \"ftp://x\"\n", "storage.url"),
            (
                "[source.postgres]\nurl = \"mysql://x\"\n",
                "source.postgres.url",
            ),
            (
                "[source.postgres]\nslot_name = \"Bad-Slot\"\n",
                "source.postgres.slot_name",
            ),
            (
                "[source.postgres]\ntables = [\"orders\"]\n",
                "source.postgres.tables",
            ),
        ];
        for (text, want) in cases {
            let err = load_str(text, &[]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { key, .. } if key == want),
                "{text:?} gave {err}"
            );
        }
    }

    #[test]
    fn a_gc_grace_below_the_floor_is_refused_unless_overridden() {
        let err = load_str("[gc]\nolder_than = \"30s\"\n", &[]).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "gc.older_than"),
            "{msg}"
        );
        for part in [
            "gc.older_than",
            "30s",
            "minimum of 10m",
            "STRATA_GC__OLDER_THAN",
            "gc.unsafe_allow_short_grace = true",
            "STRATA_GC__UNSAFE_ALLOW_SHORT_GRACE=true",
        ] {
            assert!(msg.contains(part), "{part:?} missing: {msg}");
        }
        // From the environment too, and even with gc disabled (enabling it must not fail).
        let err = Config::load(
            None,
            env(&[
                ("STRATA_GC__OLDER_THAN", "0s"),
                ("STRATA_GC__ENABLED", "false"),
            ]),
        )
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "gc.older_than"),
            "{err}"
        );

        // At the floor: accepted, as any longer grace.
        let config = load_str("[gc]\nolder_than = \"10m\"\n", &[]).unwrap();
        assert_eq!(config.gc.older_than, crate::gc::MIN_OLDER_THAN);

        // The override accepts a shorter one, from the file or the environment.
        let config = load_str(
            "[gc]\nolder_than = \"30s\"\nunsafe_allow_short_grace = true\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.gc.older_than, Duration::from_secs(30));
        let config = Config::load(
            None,
            env(&[
                ("STRATA_GC__OLDER_THAN", "0s"),
                ("STRATA_GC__UNSAFE_ALLOW_SHORT_GRACE", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(config.gc.older_than, Duration::ZERO);
    }

    #[test]
    fn env_var_names_a_key_as_its_override() {
        assert_eq!(env_var("gc.older_than"), "STRATA_GC__OLDER_THAN");
        assert_eq!(
            env_var("source.postgres.url"),
            "STRATA_SOURCE__POSTGRES__URL"
        );
    }

    #[test]
    fn redacts_secrets() {
        let mut config = Config::default();
        config.storage.s3.secret_access_key = Some("hunter2".into());
        config.source.postgres = Some(PostgresSourceConfig {
            url: "postgres://u:pw@h/db".into(),
            ..Default::default()
        });
        let shown = config.to_toml_redacted();
        assert!(
            !shown.contains("hunter2") && !shown.contains(":pw@"),
            "{shown}"
        );
    }
}
