//! The store contract: what every backend must do, written once against the store interface
//! (`WriteUnit`, `Reads`, the commit feed) and run for each backend, SQLite and PostgreSQL (each
//! case on a database of its own).

use callstream::clock::Clock;
use callstream::config::Durability;
use callstream::domain::envelope::server_event;
use callstream::domain::error::ErrorCode;
use callstream::domain::event_types::EventType;
use callstream::domain::ids::SessionId;
use callstream::store::log::{Actor, NewEvent};
use callstream::store::postgres::scratch::ScratchDatabase;
use callstream::store::{Database, Store, StoreError, WriteUnit};

use crate::helpers::master_key;
use serde_json::{Value, json};

/// A fresh store of one backend, and what keeps its database alive.
struct Opened {
    store: Store,
    database: Database,
    _place: Place,
}

enum Place {
    Directory(#[allow(dead_code)] tempfile::TempDir),
    Scratch(#[allow(dead_code)] ScratchDatabase),
}

type Open = fn() -> Opened;

fn open_at(database: Database, place: Place) -> Opened {
    let (store, _writer) =
        Store::open(&database, Durability::Normal, 1024, Clock::system(), &master_key()).expect("open the store");
    Opened { store, database, _place: place }
}

fn sqlite() -> Opened {
    let dir = tempfile::tempdir().expect("dir");
    open_at(Database::Sqlite(dir.path().join("contract.db")), Place::Directory(dir))
}

fn postgres() -> Opened {
    let scratch = crate::pg_log::database("store_contract").expect("checked by the test");
    open_at(Database::Postgres(scratch.url.clone()), Place::Scratch(scratch))
}

fn event(session: &str, event_type: &str, payload: Value) -> NewEvent {
    let id = SessionId::parse(session).expect("session id");
    let event_type = EventType::lookup(event_type).expect("registered");
    server_event(&id, event_type, payload, "2026-11-24T10:00:00.000Z").expect("valid").into()
}

fn created(session: &str) -> NewEvent {
    event(session, "call.session.created", json!({ "ownerId": "alice" }))
}

fn line(session: &str, segment: &str) -> NewEvent {
    event(session, "transcript.segment.final", json!({ "segmentId": segment, "revision": 1, "text": "hello" }))
}

async fn append(store: &Store, session: &str, events: Vec<NewEvent>) -> Result<Vec<(u64, u64, bool)>, StoreError> {
    let session = session.to_owned();
    store
        .writer
        .execute(move |tx: &mut dyn WriteUnit| {
            let (outcomes, _) = tx.append("t1", &session, &Actor::system(), events)?;
            Ok(outcomes.into_iter().map(|o| (o.seq, o.position, o.duplicate)).collect())
        })
        .await
}

async fn head(store: &Store, session: &str) -> u64 {
    let session = session.to_owned();
    store.read(move |reads| reads.stream_head(&session)).await.expect("head")
}

async fn seqs_and_positions_are_gapless_and_dense(open: Open) {
    let opened = open();
    let store = opened.store.clone();
    let (a, b) = ("cs_contract_a", "cs_contract_b");
    append(&store, a, vec![created(a), line(a, "1")]).await.expect("a");
    append(&store, b, vec![created(b)]).await.expect("b");
    let more = append(&store, a, vec![line(a, "2"), line(a, "3")]).await.expect("a again");
    assert_eq!(more.iter().map(|(seq, ..)| *seq).collect::<Vec<_>>(), [3, 4], "per-stream seq continues");
    assert_eq!(more.iter().map(|(_, position, _)| *position).collect::<Vec<_>>(), [4, 5], "positions are dense");
    let events = store.read(move |reads| reads.stream_events(a, 0, 100)).await.expect("events");
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    for pair in events.windows(2) {
        assert!(pair[0].position < pair[1].position, "a stream reads in log order");
    }
    assert_eq!(head(&store, b).await, 1);
}

async fn a_repeat_is_idempotent_and_a_reused_id_conflicts(open: Open) {
    let opened = open();
    let store = opened.store.clone();
    let s = "cs_contract_idem";
    let first = line(s, "1");
    let original = append(&store, s, vec![created(s), first.clone()]).await.expect("first");
    let repeat = append(&store, s, vec![first.clone()]).await.expect("repeat");
    assert_eq!(repeat, [(original[1].0, original[1].1, true)], "the original seq and position, marked duplicate");
    let mut other = line(s, "other");
    other.event_id = first.event_id.clone();
    match append(&store, s, vec![line(s, "9"), other]).await {
        Err(StoreError::Rejected(rejection)) => assert_eq!(rejection.code, ErrorCode::EventIdConflict),
        other => panic!("expected EVENT_ID_CONFLICT, got {other:?}"),
    }
    assert_eq!(head(&store, s).await, 2, "the rejected batch appended nothing, not even its valid first event");
}

async fn a_failing_command_rolls_back_alone(open: Open) {
    let opened = open();
    let store = opened.store.clone();
    let (doomed, fine) = ("cs_contract_doomed", "cs_contract_fine");
    let failing = store.writer.execute(move |tx: &mut dyn WriteUnit| -> Result<(), StoreError> {
        tx.append("t1", doomed, &Actor::system(), vec![created(doomed)])?;
        Err(StoreError::Backend("the command changed its mind".into()))
    });
    let succeeding = append(&store, fine, vec![created(fine)]);
    let (failed, succeeded) = tokio::join!(failing, succeeding);
    assert!(failed.is_err());
    succeeded.expect("a neighbour in the same group still commits");
    assert_eq!(head(&store, doomed).await, 0);
    assert!(store.read(move |reads| reads.session(doomed)).await.expect("read").is_none(), "projections too");
    assert_eq!(head(&store, fine).await, 1);
}

async fn a_write_unit_reads_its_own_writes_and_projects_inline(open: Open) {
    let opened = open();
    let store = opened.store.clone();
    let s = "cs_contract_inline";
    let (seen, head_inside) = store
        .writer
        .execute(move |tx: &mut dyn WriteUnit| -> Result<_, StoreError> {
            tx.append("t1", s, &Actor::system(), vec![created(s), line(s, "1")])?;
            Ok((tx.session(s)?.map(|r| (r.owner_id, r.head_seq)), tx.stream_head(s)?))
        })
        .await
        .expect("append");
    assert_eq!(seen, Some(("alice".to_owned(), 2)));
    assert_eq!(head_inside, 2);
    let transcript = store.read(move |reads| reads.transcript(s)).await.expect("transcript");
    assert_eq!(transcript.len(), 1);
}

async fn claims_are_exclusive_under_concurrency(open: Open) {
    // A claim is "read the projection, append only if nobody holds it" inside one write unit;
    // the store must serialize such units so exactly one of many racers wins.
    let opened = open();
    let store = opened.store.clone();
    let s = "cs_contract_claim";
    append(&store, s, vec![created(s)]).await.expect("session");
    let racers = (0..16).map(|n| {
        store.writer.execute(move |tx: &mut dyn WriteUnit| -> Result<bool, StoreError> {
            let taken = tx.stream_events(s, 0, 100)?.iter().any(|e| e.event_type == "transcript.segment.final");
            if taken {
                return Ok(false);
            }
            tx.append("t1", s, &Actor::system(), vec![line(s, &format!("claim-{n}"))])?;
            Ok(true)
        })
    });
    let winners = futures_util::future::join_all(racers).await.into_iter().filter(|r| matches!(r, Ok(true))).count();
    assert_eq!(winners, 1);
    assert_eq!(head(&store, s).await, 2);
}

async fn the_commit_feed_announces_heads_in_commit_order(open: Open) {
    let opened = open();
    let store = opened.store.clone();
    let mut feed = store.writer.subscribe();
    let s = "cs_contract_feed";
    append(&store, s, vec![created(s)]).await.expect("one");
    append(&store, s, vec![line(s, "1"), line(s, "2")]).await.expect("two");
    let mut announced = Vec::new();
    while announced.last() != Some(&3) {
        let commit = tokio::time::timeout(std::time::Duration::from_secs(5), feed.recv())
            .await
            .expect("announced")
            .expect("feed open");
        announced.extend(commit.heads.iter().filter(|(stream, _)| stream == s).map(|(_, head)| *head));
    }
    assert!(announced.windows(2).all(|w| w[0] < w[1]), "heads only grow: {announced:?}");
    assert_eq!(announced.last(), Some(&head(&store, s).await));
}

async fn the_chain_verifies_and_projections_equal_a_replay(open: Open) {
    let opened = open();
    let store = opened.store.clone();
    for n in 0..5 {
        let s = format!("cs_contract_chain{n}");
        append(&store, &s, vec![created(&s), line(&s, "1"), line(&s, "2")]).await.expect("append");
    }
    let Opened { store: also, database, _place } = opened;
    drop((store, also));
    let report = callstream::store::verify(&database, &master_key()).expect("verify");
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.events, 15);
    assert!(callstream::store::diff_against_rebuild(&database, &master_key()).expect("diff").is_empty());
}

/// An erasure and a later append of the same tenant, committed in one writer group: the append
/// is sealed with a new key, not the destroyed one, so its text stays readable.
async fn data_appended_after_an_erasure_in_the_same_group_stays_readable(open: Open) {
    let opened = open();
    let store = opened.store.clone();
    let s = "cs_contract_erase";
    append(&store, s, vec![created(s), line(s, "1")]).await.expect("before the erasure");
    // Hold the writer in a command of its own while the erasure and the append queue behind it,
    // so the writer takes both into its next group.
    let (started, running) = std::sync::mpsc::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let writer = store.writer.clone();
    let blocker = tokio::spawn(async move {
        writer
            .execute(move |_: &mut dyn WriteUnit| {
                started.send(()).expect("started");
                released.recv().expect("released");
                Ok::<_, StoreError>(())
            })
            .await
    });
    tokio::task::spawn_blocking(move || running.recv().expect("the blocker runs")).await.expect("join");
    let writer = store.writer.clone();
    let erase =
        tokio::spawn(async move { writer.execute(|tx: &mut dyn WriteUnit| tx.erase_tenant("t1").map(|_| ())).await });
    while store.writer.queue_depth() < 1 {
        tokio::task::yield_now().await;
    }
    let late = {
        let store = store.clone();
        tokio::spawn(async move { append(&store, s, vec![line(s, "2")]).await })
    };
    while store.writer.queue_depth() < 2 {
        tokio::task::yield_now().await;
    }
    release.send(()).expect("release");
    blocker.await.expect("join").expect("blocker");
    erase.await.expect("join").expect("erase");
    late.await.expect("join").expect("append after the erasure");

    let events = store.read(move |reads| reads.stream_events(s, 0, 10)).await.expect("events");
    let texts: Vec<(Value, Value)> = events
        .iter()
        .filter(|e| e.event_type == "transcript.segment.final")
        .map(|e| serde_json::from_str::<Value>(&e.payload).expect("payload"))
        .map(|payload| (payload["text"].clone(), payload["erased"].clone()))
        .collect();
    assert_eq!(texts, vec![(Value::Null, json!(true)), (json!("hello"), Value::Null)], "{events:?}");
}

async fn run_contract(open: Open) {
    seqs_and_positions_are_gapless_and_dense(open).await;
    a_repeat_is_idempotent_and_a_reused_id_conflicts(open).await;
    a_failing_command_rolls_back_alone(open).await;
    a_write_unit_reads_its_own_writes_and_projects_inline(open).await;
    claims_are_exclusive_under_concurrency(open).await;
    the_commit_feed_announces_heads_in_commit_order(open).await;
    the_chain_verifies_and_projections_equal_a_replay(open).await;
    data_appended_after_an_erasure_in_the_same_group_stays_readable(open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_backend_meets_the_store_contract() {
    run_contract(sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_backend_meets_the_store_contract() {
    if crate::pg_log::database("store_contract::the_postgres_backend_meets_the_store_contract").is_none() {
        return;
    }
    run_contract(postgres).await;
}
