//! `docker-compose.yml` is checked by parsing it (there is no Docker engine on the test machines):
//! its services are the ones strata needs, wired as strata expects, and strata accepts the
//! configuration it passes.

use std::collections::BTreeMap;
use std::process::Command;

use serde_yaml_ng::Value;

fn compose() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path} is not valid YAML: {e}"))
}

fn service<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc.get("services")
        .and_then(|s| s.get(name))
        .unwrap_or_else(|| panic!("docker-compose.yml has no service `{name}`"))
}

fn environment(service: &Value) -> BTreeMap<String, String> {
    let env = service
        .get("environment")
        .and_then(Value::as_mapping)
        .expect("environment map");
    env.iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other).unwrap().trim().to_owned(),
            };
            (k.as_str().unwrap().to_owned(), v)
        })
        .collect()
}

#[test]
fn compose_defines_kafka_kraft_postgres_logical_minio_and_strata() {
    let doc = compose();
    let kafka = environment(service(&doc, "kafka"));
    assert_eq!(
        kafka["KAFKA_PROCESS_ROLES"], "broker,controller",
        "Kafka must run in KRaft mode"
    );
    assert!(kafka.contains_key("KAFKA_CONTROLLER_QUORUM_VOTERS"));

    let postgres = service(&doc, "postgres");
    let command: Vec<&str> = postgres["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        command.contains(&"wal_level=logical"),
        "postgres needs wal_level=logical: {command:?}"
    );

    service(&doc, "minio");
    let strata = service(&doc, "strata");
    let depends: Vec<&str> = strata["depends_on"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    for needed in ["kafka", "postgres", "minio-init"] {
        assert!(
            depends.contains(&needed),
            "strata must wait for {needed}: {depends:?}"
        );
    }
    assert!(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).exists());
}

#[test]
fn strata_accepts_the_configuration_compose_passes() {
    let doc = compose();
    let env = environment(service(&doc, "strata"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    let dir = tempfile::tempdir().unwrap();
    cmd.arg("config").current_dir(dir.path());
    for (var, _) in std::env::vars() {
        if var.starts_with("STRATA_") {
            cmd.env_remove(var);
        }
    }
    cmd.envs(&env);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "strata rejects compose's environment: {stderr}"
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("brokers = \"kafka:9092\""), "{shown}");
    assert!(shown.contains("url = \"s3://strata/history\""), "{shown}");
    assert!(
        shown.contains("endpoint = \"http://minio:9000\""),
        "{shown}"
    );
    assert!(!shown.contains("stratasecret"), "secret shown: {shown}");
}
