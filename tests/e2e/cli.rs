//! The `strata` binary as a user meets it: help, configuration errors, `strata check`,
//! `strata gc`.

use std::process::{Command, Output};
use std::sync::Arc;

use object_store::{ObjectStoreExt as _, PutPayload, path::Path};
use strata_catalog::{Action, Catalog, CatalogConfig, CommitInfo, Segment, TableId};

use crate::support::{kafka_brokers, pg_url, s3_settings, s3_store, unique};

/// `strata <args>` with exactly `env`: no STRATA_* overrides leak in from the caller's
/// environment.
pub(crate) fn command(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.args(args);
    for (var, _) in std::env::vars() {
        if var.starts_with("STRATA_") || var == "RUST_LOG" {
            cmd.env_remove(var);
        }
    }
    for (var, value) in env {
        cmd.env(var, value);
    }
    cmd
}

/// strata's `storage.*` settings for the stack's S3 server, under `root` in its bucket.
pub(crate) fn s3_storage_env(root: &Path) -> Vec<(&'static str, String)> {
    let (endpoint, bucket, key, secret, region) = s3_settings();
    vec![
        ("STRATA_STORAGE__URL", format!("s3://{bucket}/{root}")),
        ("STRATA_STORAGE__S3__ENDPOINT", endpoint),
        ("STRATA_STORAGE__S3__REGION", region),
        ("STRATA_STORAGE__S3__ACCESS_KEY_ID", key),
        ("STRATA_STORAGE__S3__SECRET_ACCESS_KEY", secret),
        ("STRATA_STORAGE__S3__ALLOW_HTTP", "true".into()),
    ]
}

/// Runs `strata <args>` to the end, in a fresh directory.
pub(crate) fn strata(args: &[&str], env: &[(&str, String)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    command(args, env).current_dir(dir.path()).output().unwrap()
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_every_subcommand() {
    let out = strata(&["--help"], &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for sub in [
        "run", "sql", "restore", "export", "status", "gc", "check", "config",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{sub} "))),
            "`{sub}` missing from --help:\n{help}"
        );
    }
}

#[test]
fn unknown_config_key_is_named_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strata.toml");
    std::fs::write(
        &path,
        "[kafka]\nbrokers = \"127.0.0.1:9092\"\ntopic_prefx = \"x\"\n",
    )
    .unwrap();
    let out = strata(&["--config", path.to_str().unwrap(), "config"], &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("kafka.topic_prefx"), "{err}");
    assert!(err.contains("unknown field"), "{err}");
    assert!(err.contains("strata.toml"), "{err}");
}

#[test]
fn ill_typed_env_override_is_named_and_fails() {
    let out = strata(
        &["config"],
        &[("STRATA_KAFKA__CONNECT_TIMEOUT", "soon".into())],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("kafka.connect_timeout"), "{err}");
    assert!(err.contains("STRATA_KAFKA__CONNECT_TIMEOUT"), "{err}");
}

#[test]
fn printed_defaults_load_back_as_a_config_file() {
    let out = strata(&["config", "--defaults"], &[]);
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strata.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let shown = strata(&["--config", path.to_str().unwrap(), "config"], &[]);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let effective = text(&shown.stdout);
    assert!(
        effective.contains("brokers = \"127.0.0.1:9092\""),
        "{effective}"
    );
    assert!(effective.contains("[source.postgres]"), "{effective}");
    // The password of the source URL is not shown.
    assert!(!effective.contains("strata:strata@"), "{effective}");
}

#[test]
fn commands_not_built_yet_say_so_and_fail() {
    let out = strata(&["restore", "--table", "public.x"], &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("not built yet"));
}

#[test]
fn check_passes_against_the_real_stack() {
    let mut env = s3_storage_env(&Path::from(unique("check")));
    env.extend([
        ("STRATA_KAFKA__BROKERS", kafka_brokers()),
        ("STRATA_SOURCE__POSTGRES__URL", pg_url()),
    ]);
    let out = strata(&["check"], &env);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for (name, finding) in [
        ("kafka", "broker(s)"),
        ("storage", "put-if-absent honoured"),
        ("source.postgres", "wal_level=logical"),
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(name) && l.contains(finding)),
            "no ok line for {name}:\n{stdout}"
        );
    }
}

#[test]
fn check_names_an_unreachable_broker_and_database() {
    let env = [
        ("STRATA_KAFKA__BROKERS", "127.0.0.1:1".to_owned()),
        ("STRATA_KAFKA__CONNECT_TIMEOUT", "2s".into()),
        ("STRATA_STORAGE__URL", "memory://".into()),
        (
            "STRATA_SOURCE__POSTGRES__URL",
            "postgres://strata:x@127.0.0.1:1/strata".into(),
        ),
    ];
    let out = strata(&["check"], &env);
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{stdout}"))
            .to_owned()
    };
    let kafka = line("kafka");
    assert!(
        kafka.starts_with("FAIL") && kafka.contains("127.0.0.1:1"),
        "{kafka}"
    );
    let pg = line("source.postgres");
    assert!(
        pg.starts_with("FAIL") && pg.contains("cannot connect"),
        "{pg}"
    );
    assert!(!pg.contains("strata:x@"), "password shown: {pg}");
    // The memory store itself is fine.
    assert!(line("storage").starts_with("ok"), "{stdout}");
}

/// `strata gc` refuses a grace period below its floor before touching storage, and says how
/// to override it; so does the configuration of the periodic gc.
#[test]
fn gc_refuses_a_short_grace_without_the_override() {
    let env = [("STRATA_STORAGE__URL", "memory://".to_owned())];
    let out = strata(&["gc", "--older-than", "1s"], &env);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for part in [
        "--older-than 1s",
        "minimum of 10m",
        "--unsafe-allow-short-grace",
    ] {
        assert!(err.contains(part), "{part:?} missing: {err}");
    }
    assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));

    let out = strata(&["config"], &[("STRATA_GC__OLDER_THAN", "1s".to_owned())]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for part in [
        "gc.older_than",
        "1s",
        "minimum of 10m",
        "STRATA_GC__UNSAFE_ALLOW_SHORT_GRACE=true",
    ] {
        assert!(err.contains(part), "{part:?} missing: {err}");
    }
}

/// On the stack's S3 server: `strata gc` deletes the history file no commit references and
/// keeps the committed one, the quarantine and the catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_on_s3_deletes_only_unreferenced_history_files() {
    let (store, root) = s3_store();
    let at = |relative: &str| {
        relative
            .split('/')
            .fold(root.clone(), |path: Path, part| path.join(part))
    };
    let live = "pg/public/t/changes/live.parquet";
    let orphan = "pg/public/t/changes/orphan.parquet";
    let quarantined = "_quarantine/pg.public.t/0/7.json";
    for path in [live, orphan, quarantined] {
        store
            .put(&at(path), PutPayload::from_static(b"bytes"))
            .await
            .unwrap();
    }
    let catalog = Catalog::open(Arc::clone(&store), root.clone(), CatalogConfig::default())
        .await
        .unwrap();
    let table = TableId::new("pg", "public", "t");
    catalog
        .commit(
            vec![Action::AddSegment(Segment {
                table: table.clone(),
                path: live.into(),
                rows: 1,
                bytes: 5,
                min_key: "i1".into(),
                max_key: "i1".into(),
                min_commit_ts: 1,
                max_commit_ts: 1,
                min_position: "1".into(),
                max_position: "1".into(),
                content_version: None,
            })],
            CommitInfo::new("e2e", "compact"),
        )
        .await
        .unwrap();

    let env = s3_storage_env(&root);
    // Young: kept by the default grace period.
    let out = strata(&["gc"], &env);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("orphaned        0 files"), "{stdout}");
    assert!(
        stdout.contains("young           1 unreferenced"),
        "{stdout}"
    );
    // A dry run names it; the real run deletes it.
    let out = strata(&["gc", "--older-than", "0s", "--dry-run"], &env);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("would be deleted") && stdout.contains(orphan),
        "{stdout}"
    );
    assert!(store.head(&at(orphan)).await.is_ok());
    let out = strata(
        &["gc", "--older-than", "0s", "--unsafe-allow-short-grace"],
        &env,
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("orphaned        1 files") && stdout.contains("deleted"),
        "{stdout}"
    );
    assert!(store.head(&at(orphan)).await.is_err(), "the orphan is gone");
    for kept in [live, quarantined] {
        assert!(store.head(&at(kept)).await.is_ok(), "{kept} was deleted");
    }
    assert_eq!(catalog.state().segments(&table).len(), 1);
}
