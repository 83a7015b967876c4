//! `strata_capture::postgres::replication` against the dev stack's PostgreSQL: login, replication
//! commands, exported snapshots, streaming and acknowledgements.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use strata_capture::postgres::pgoutput::Lsn;
use strata_capture::postgres::replication::{
    AuthMethod, ReplicationConfig, ReplicationConnection, ReplicationError, ReplicationStream,
    SlotSnapshot, quote_publication_names,
};

use crate::support::{pg_client, pg_url, unique};

/// Longest wait for the server to do something it should do promptly.
const WAIT: Duration = Duration::from_secs(30);

fn config() -> ReplicationConfig {
    ReplicationConfig::from_url(&pg_url()).expect("STRATA_PG_URL parses")
}

async fn connect() -> ReplicationConnection {
    ReplicationConnection::connect(&config())
        .await
        .unwrap_or_else(|e| panic!("replication connection: {e}"))
}

/// Drops a permanent slot when the test ends, also on panic, so no slot is left pinning WAL.
struct SlotGuard(String);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let slot = self.0.clone();
        // Drop runs inside the test's runtime: use a thread with its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let client = pg_client().await;
                // An active slot cannot be dropped: wait for its walsender to go away.
                for _ in 0..100 {
                    let rows = client
                        .query(
                            "SELECT active, CASE WHEN NOT active \
                             THEN pg_drop_replication_slot(slot_name)::text END \
                             FROM pg_replication_slots WHERE slot_name = $1",
                            &[&slot],
                        )
                        .await?;
                    if rows.is_empty() || !rows[0].get::<_, bool>(0) {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                eprintln!("replication slot {slot} is still active; not dropped");
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        });
        if let Ok(Err(e)) = cleanup.join() {
            eprintln!("dropping replication slot {}: {e}", self.0);
        }
    }
}

async fn slot_exists(client: &tokio_postgres::Client, slot: &str) -> bool {
    let rows = client
        .query(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .expect("pg_replication_slots");
    !rows.is_empty()
}

async fn confirmed_flush(client: &tokio_postgres::Client, slot: &str) -> Lsn {
    let row = client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .expect("pg_replication_slots");
    row.get::<_, String>(0).parse().expect("an LSN")
}

/// A standby status update: write, flush and apply positions, the client's clock, no reply.
fn standby_status_update(lsn: Lsn) -> Vec<u8> {
    let postgres_epoch_micros = 946_684_800_000_000_i64;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let clock = i64::try_from(now.as_micros()).expect("clock in range") - postgres_epoch_micros;
    let mut update = vec![b'r'];
    for position in [lsn.0, lsn.0, lsn.0] {
        update.extend_from_slice(&position.to_be_bytes());
    }
    update.extend_from_slice(&clock.to_be_bytes());
    update.push(0);
    update
}

/// The WAL position in an XLogData header (`w`, data start, WAL end, send time).
fn xlogdata_start(payload: &[u8]) -> Lsn {
    let start = payload.get(1..9).expect("an XLogData header");
    Lsn(u64::from_be_bytes(start.try_into().expect("8 bytes")))
}

/// Reads payloads until one is XLogData containing `needle` (any XLogData for `b""`); returns it. Keepalives and other
/// XLogData (Begin, Relation, Commit...) are skipped.
async fn next_xlogdata_with(stream: &mut ReplicationStream, needle: &[u8]) -> Bytes {
    let search = async {
        loop {
            let payload = stream
                .next()
                .await
                .unwrap_or_else(|e| panic!("streaming: {e}"))
                .expect("the stream ended early");
            assert!(
                matches!(payload.first(), Some(b'w' | b'k')),
                "payload starts with {:?}",
                payload.first()
            );
            if payload[0] == b'w'
                && (needle.is_empty() || payload.windows(needle.len()).any(|w| w == needle))
            {
                return payload;
            }
        }
    };
    tokio::time::timeout(WAIT, search)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no XLogData containing {:?} within {WAIT:?}",
                String::from_utf8_lossy(needle)
            )
        })
}

#[tokio::test]
async fn connects_with_scram_and_fixes_the_session_settings() {
    let conn = connect().await;
    assert_eq!(conn.authentication(), AuthMethod::ScramSha256);
    let version = conn
        .parameter("server_version")
        .expect("server_version reported");
    assert!(
        version.starts_with(|c: char| c.is_ascii_digit()),
        "{version}"
    );
    assert_eq!(conn.parameter("client_encoding"), Some("UTF8"));
    assert!(
        conn.parameter("DateStyle")
            .is_some_and(|s| s.starts_with("ISO"))
    );
    assert_eq!(conn.parameter("TimeZone"), Some("UTC"));
    assert_eq!(conn.parameter("application_name"), Some("strata"));
    assert!(conn.backend_pid().is_some());
    conn.close().await.expect("close");
}

#[tokio::test]
async fn wrong_password_is_28p01_naming_the_user() {
    let mut config = config();
    config.password = Some(b"definitely-not-the-password".to_vec());
    let err = ReplicationConnection::connect(&config)
        .await
        .expect_err("a wrong password logs in");
    assert_eq!(err.sqlstate(), Some("28P01"), "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("user {:?}", config.user)), "{text}");
    assert!(text.contains(&config.addr()), "{text}");
    assert!(!text.contains("definitely-not-the-password"), "{text}");
}

#[tokio::test]
async fn md5_stored_password_logs_in_with_md5() {
    // pg_hba.conf says md5: a role whose password is stored as MD5 gets a real MD5 challenge
    // (SCRAM-stored ones are upgraded to SCRAM).
    let client = pg_client().await;
    let role = unique("strata_it_md5");
    client
        .batch_execute(&format!(
            "SET password_encryption = 'md5'; \
             CREATE ROLE {role} LOGIN REPLICATION PASSWORD 'md5-secret'"
        ))
        .await
        .expect("creating an MD5 role");
    let mut config = config();
    config.user = role.clone();
    config.password = Some(b"md5-secret".to_vec());
    let login = async {
        let mut conn = ReplicationConnection::connect(&config).await?;
        let method = conn.authentication();
        let dbname = conn.identify_system().await?.dbname;
        conn.close().await?;
        Ok::<_, ReplicationError>((method, dbname))
    }
    .await;
    let mut wrong = config.clone();
    wrong.password = Some(b"nope".to_vec());
    let wrong = ReplicationConnection::connect(&wrong).await;
    client
        .batch_execute(&format!("DROP ROLE {role}"))
        .await
        .expect("dropping the MD5 role");

    let (method, dbname) = login.unwrap_or_else(|e| panic!("MD5 login: {e}"));
    assert_eq!(method, AuthMethod::Md5);
    assert_eq!(dbname, Some(config.dbname.clone()));
    assert_eq!(
        wrong.expect_err("wrong MD5 password").sqlstate(),
        Some("28P01")
    );
}

#[tokio::test]
async fn identify_system_matches_the_cluster() {
    let mut conn = connect().await;
    let info = conn.identify_system().await.expect("IDENTIFY_SYSTEM");
    let client = pg_client().await;
    let row = client
        .query_one(
            "SELECT system_identifier::text, timeline_id, pg_current_wal_lsn()::text \
             FROM pg_control_system(), pg_control_checkpoint()",
            &[],
        )
        .await
        .expect("pg_control_system");
    assert_eq!(info.system_id.to_string(), row.get::<_, String>(0));
    assert_eq!(i64::from(info.timeline), i64::from(row.get::<_, i32>(1)));
    let current: Lsn = row.get::<_, String>(2).parse().expect("an LSN");
    assert!(
        info.xlogpos > Lsn::INVALID && info.xlogpos <= current,
        "{} vs {current}",
        info.xlogpos
    );
    assert_eq!(info.dbname.as_deref(), Some(config().dbname.as_str()));
}

#[tokio::test]
async fn simple_query_runs_replication_commands_and_survives_errors() {
    let mut conn = connect().await;
    assert_eq!(
        conn.simple_query("SHOW wal_level").await.expect("SHOW"),
        vec![vec![Some("logical".to_owned())]]
    );
    let missing = unique("strata_it_none");
    // READ_REPLICATION_SLOT answers a missing slot with a row of NULLs, not an error.
    assert_eq!(
        conn.simple_query(&format!("READ_REPLICATION_SLOT {missing}"))
            .await
            .expect("READ_REPLICATION_SLOT"),
        vec![vec![None, None, None]]
    );
    let err = conn
        .simple_query(&format!("DROP_REPLICATION_SLOT \"{missing}\""))
        .await
        .expect_err("dropping a missing slot");
    assert_eq!(err.sqlstate(), Some("42704"));
    let err = conn
        .simple_query("NOT A COMMAND")
        .await
        .expect_err("garbage");
    assert_eq!(err.sqlstate(), Some("42601"), "{err}");
    // Plain SQL works on a replication=database connection, and the session is still usable.
    assert_eq!(
        conn.simple_query("SELECT 1, NULL::text, 'x'")
            .await
            .expect("SELECT"),
        vec![vec![Some("1".to_owned()), None, Some("x".to_owned())]]
    );
}

#[tokio::test]
async fn missing_slot_is_distinguishable() {
    let slot = unique("strata_it_missing");
    let mut conn = connect().await;
    let err = conn
        .drop_slot(&slot)
        .await
        .expect_err("dropping a missing slot");
    assert!(err.is_missing_slot(), "{err}");
    let err = conn
        .start_logical(&slot, Lsn::INVALID, &[("proto_version", "1")])
        .await
        .expect_err("streaming from a missing slot");
    assert!(err.is_missing_slot(), "{err}");
    assert_eq!(err.sqlstate(), Some("42704"));
    assert!(matches!(&err, ReplicationError::MissingSlot { slot: s, .. } if *s == slot));
}

#[tokio::test]
async fn temporary_slot_goes_away_with_its_connection() {
    let slot = unique("strata_it_temp");
    let client = pg_client().await;
    let mut conn = connect().await;
    let created = conn
        .create_logical_slot(&slot, SlotSnapshot::NoExport, true)
        .await
        .expect("CREATE_REPLICATION_SLOT TEMPORARY");
    assert_eq!(created.slot_name, slot);
    assert_eq!(created.snapshot_name, None);
    assert!(created.consistent_point > Lsn::INVALID);
    assert!(slot_exists(&client, &slot).await);
    conn.close().await.expect("close");
    let gone = async {
        while slot_exists(&client, &slot).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT, gone)
        .await
        .expect("temporary slot dropped on disconnect");
}

/// The whole life of a slot: create with an exported snapshot, import the snapshot elsewhere,
/// stream what changed after it, acknowledge, stop, drop.
#[tokio::test]
async fn exported_snapshot_then_stream_acknowledge_and_drop() {
    let table = unique("strata_it_t");
    let publication = unique("strata_it_pub");
    let slot = unique("strata_it_slot");
    let client = pg_client().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, note text); \
             INSERT INTO {table} VALUES (1, 'before the slot'); \
             CREATE PUBLICATION {publication} FOR TABLE {table}"
        ))
        .await
        .expect("creating the table and publication");

    let _guard = SlotGuard(slot.clone());
    let mut conn = connect().await;
    let created = conn
        .create_logical_slot(&slot, SlotSnapshot::Export, false)
        .await
        .expect("CREATE_REPLICATION_SLOT ... (SNAPSHOT 'export')");
    let snapshot = created
        .snapshot_name
        .clone()
        .expect("an exported snapshot name");
    let start_flush = confirmed_flush(&client, &slot).await;
    assert_eq!(start_flush, created.consistent_point);

    // A change after the slot's consistent point: invisible in the snapshot, sent by the stream.
    let note = unique("after-the-slot");
    client
        .execute(&format!("INSERT INTO {table} VALUES (2, $1)"), &[&note])
        .await
        .expect("insert after the slot");

    let reader = pg_client().await;
    reader
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '{snapshot}'"
        ))
        .await
        .expect("importing the exported snapshot");
    let ids: Vec<i32> = reader
        .query(&format!("SELECT id FROM {table} ORDER BY id"), &[])
        .await
        .expect("reading in the snapshot")
        .iter()
        .map(|row| row.get(0))
        .collect();
    reader.batch_execute("COMMIT").await.expect("COMMIT");
    assert_eq!(ids, [1], "the snapshot shows the table as of the slot");

    let publications = quote_publication_names(&[&publication]);
    let mut stream = conn
        .start_logical(
            &slot,
            Lsn::INVALID,
            &[
                ("proto_version", "1"),
                ("publication_names", &publications),
                ("messages", "true"),
            ],
        )
        .await
        .expect("START_REPLICATION");
    let insert = next_xlogdata_with(&mut stream, note.as_bytes()).await;
    // The insert may be the very first record after the consistent point.
    let insert_at = xlogdata_start(&insert);
    assert!(
        insert_at >= created.consistent_point,
        "{insert_at} vs {}",
        created.consistent_point
    );
    // Only the row inserted after the slot is streamed.
    assert!(!insert.windows(15).any(|w| w == b"before the slot"));
    // The transaction's Commit message (pgoutput tag 'C' after the 25-byte XLogData header)
    // carries the end of the commit record: the position to acknowledge.
    let commit = next_xlogdata_with(&mut stream, b"").await;
    assert_eq!(commit.get(25), Some(&b'C'), "Commit follows the insert");
    let commit_end = xlogdata_start(&commit);
    assert!(commit_end > created.consistent_point);

    // Acknowledge the commit; the slot's confirmed_flush_lsn follows.
    stream
        .send(&standby_status_update(commit_end))
        .await
        .expect("standby status update");
    let advanced = async {
        loop {
            let flushed = confirmed_flush(&client, &slot).await;
            if flushed >= commit_end {
                return flushed;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let flushed = tokio::time::timeout(WAIT, advanced)
        .await
        .expect("confirmed_flush_lsn advanced");
    assert!(flushed > start_flush);

    // Stop streaming, then reuse the same connection to drop the slot.
    let mut conn = tokio::time::timeout(WAIT, stream.finish())
        .await
        .expect("finish in time")
        .expect("finish");
    conn.drop_slot(&slot).await.expect("DROP_REPLICATION_SLOT");
    assert!(!slot_exists(&client, &slot).await);

    client
        .batch_execute(&format!(
            "DROP PUBLICATION {publication}; DROP TABLE {table}"
        ))
        .await
        .expect("cleanup");
}

/// A publication that does not exist is reported only when the first change is decoded, as an
/// error with the same SQLSTATE as a missing slot: it must not be taken for one.
#[tokio::test]
async fn missing_publication_fails_the_stream_but_is_not_a_missing_slot() {
    let table = unique("strata_it_t");
    let slot = unique("strata_it_slot");
    let client = pg_client().await;
    client
        .batch_execute(&format!("CREATE TABLE {table} (id int PRIMARY KEY)"))
        .await
        .expect("creating the table");
    let mut conn = connect().await;
    conn.create_logical_slot(&slot, SlotSnapshot::NoExport, true)
        .await
        .expect("temporary slot");
    let publications = quote_publication_names(&["strata_it_no_such_publication"]);
    let mut stream = conn
        .start_logical(
            &slot,
            Lsn::INVALID,
            &[("proto_version", "1"), ("publication_names", &publications)],
        )
        .await
        .expect("START_REPLICATION accepts an unknown publication");
    client
        .execute(&format!("INSERT INTO {table} VALUES (1)"), &[])
        .await
        .expect("insert");
    let failure = async {
        loop {
            match stream.next().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the stream ended without an error"),
                Err(e) => return e,
            }
        }
    };
    let err = tokio::time::timeout(WAIT, failure)
        .await
        .expect("an error in time");
    assert_eq!(err.sqlstate(), Some("42704"), "{err}");
    assert!(!err.is_missing_slot(), "{err}");
    // After an ERROR (not FATAL) the walsender is back in command mode.
    let mut conn = stream
        .finish()
        .await
        .expect("connection back after the error");
    assert_eq!(
        conn.simple_query("SHOW wal_level").await.expect("SHOW"),
        vec![vec![Some("logical".to_owned())]]
    );
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .expect("cleanup");
}
