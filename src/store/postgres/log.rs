//! Appending to, reading and verifying the log on PostgreSQL (see the module docs for why the
//! append lock makes positions dense and gapless for every reader).

use std::collections::HashMap;

use postgres::GenericClient;

use super::APPEND_LOCK;
use crate::domain::error::{ErrorCode, Rejection};
use crate::store::log::{Actor, ActorKind, GENESIS_HASH, NewEvent, StoredEvent, chain_hash};
use crate::store::{AppendOutcome, StoreError};

const SELECT_COLUMNS: &str = "position, tenant_id, stream_id, seq, event_id, type, schema_version, ts, \
     recorded_at, actor_kind, actor_id, payload, content_hash, prev_hash, hash";

/// One append of a group: events for one stream, in order.
pub struct Append {
    pub tenant_id: String,
    pub stream_id: String,
    pub actor: Actor,
    pub events: Vec<NewEvent>,
}

fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Backend(format!("negative {what} in the log")))
}

fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Backend("position or seq beyond i64".into()))
}

fn hash(bytes: Vec<u8>) -> Result<[u8; 32], StoreError> {
    bytes.try_into().map_err(|_| StoreError::Backend("a hash in the log is not 32 bytes".into()))
}

fn from_row(row: &postgres::Row) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        position: to_u64(row.get(0), "position")?,
        tenant_id: row.get(1),
        stream_id: row.get(2),
        seq: to_u64(row.get(3), "seq")?,
        event_id: row.get(4),
        event_type: row.get(5),
        schema_version: u32::try_from(row.get::<_, i32>(6))
            .map_err(|_| StoreError::Backend("negative schema version in the log".into()))?,
        ts: row.get(7),
        recorded_at: row.get(8),
        actor: Actor { kind: ActorKind::parse(row.get(9)), id: row.get(10) },
        payload: row.get(11),
        content_hash: hash(row.get(12))?,
        prev_hash: hash(row.get(13))?,
        hash: hash(row.get(14))?,
    })
}

/// Insert `rows` in one statement (one round trip, however many rows): every column as an array,
/// unnested. Row-at-a-time inserts are bound by the round trip, not by the database.
/// `skip_known`: a row whose eventId the tenant already used is skipped, not an error. Answers the
/// rows inserted.
pub(crate) fn insert_rows(
    client: &mut impl GenericClient,
    rows: &[StoredEvent],
    skip_known: bool,
) -> Result<u64, StoreError> {
    insert_rows_with(client, insert_rows_sql(skip_known).as_str(), rows)
}

/// The statement `insert_rows` runs, for a caller that prepares it once.
pub(crate) fn insert_rows_sql(skip_known: bool) -> String {
    format!(
        "INSERT INTO events ({SELECT_COLUMNS}) SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], \
         $4::int8[], $5::text[], $6::text[], $7::int4[], $8::text[], $9::text[], $10::text[], $11::text[], \
         $12::text[], $13::bytea[], $14::bytea[], $15::bytea[]){}",
        if skip_known { " ON CONFLICT (tenant_id, event_id) DO NOTHING" } else { "" }
    )
}

/// `insert_rows` with `statement` (its text, or prepared from it).
pub(crate) fn insert_rows_with<T>(
    client: &mut impl GenericClient,
    statement: &T,
    rows: &[StoredEvent],
) -> Result<u64, StoreError>
where
    T: postgres::ToStatement + ?Sized,
{
    if rows.is_empty() {
        return Ok(0);
    }
    let mut positions = Vec::with_capacity(rows.len());
    let mut seqs = Vec::with_capacity(rows.len());
    let mut versions = Vec::with_capacity(rows.len());
    for row in rows {
        positions.push(to_i64(row.position)?);
        seqs.push(to_i64(row.seq)?);
        versions.push(
            i32::try_from(row.schema_version).map_err(|_| StoreError::Backend("schema version beyond i32".into()))?,
        );
    }
    let text = |field: fn(&StoredEvent) -> &str| rows.iter().map(field).collect::<Vec<&str>>();
    let bytes = |field: fn(&StoredEvent) -> &[u8; 32]| rows.iter().map(|r| field(r).as_slice()).collect::<Vec<&[u8]>>();
    Ok(client.execute(
        statement,
        &[
            &positions,
            &text(|r| &r.tenant_id),
            &text(|r| &r.stream_id),
            &seqs,
            &text(|r| &r.event_id),
            &text(|r| &r.event_type),
            &versions,
            &text(|r| &r.ts),
            &text(|r| &r.recorded_at),
            &text(|r| r.actor.kind.as_str()),
            &text(|r| &r.actor.id),
            &text(|r| &r.payload),
            &bytes(|r| &r.content_hash),
            &bytes(|r| &r.prev_hash),
            &bytes(|r| &r.hash),
        ],
    )?)
}

/// Append a node's group in one transaction, under the append lock. Each append runs in its own
/// savepoint: a rejected one (an eventId reused for other content) is rolled back alone and
/// answered with its error; the others commit.
pub fn append_group(
    client: &mut postgres::Client,
    group: Vec<Append>,
    recorded_at: &str,
) -> Result<Vec<Result<Vec<AppendOutcome>, StoreError>>, StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&APPEND_LOCK])?;
    let mut tip = match tx.query_opt("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1", &[])? {
        None => (0, GENESIS_HASH),
        Some(row) => (to_u64(row.get(0), "position")?, hash(row.get(1))?),
    };
    let mut answers = Vec::with_capacity(group.len());
    for append in group {
        let mut savepoint = tx.savepoint("command")?;
        match append_one(&mut savepoint, append, recorded_at, tip) {
            Ok((outcomes, new_tip)) => {
                savepoint.commit()?;
                tip = new_tip;
                answers.push(Ok(outcomes));
            }
            Err(err) => {
                savepoint.rollback()?;
                answers.push(Err(err));
            }
        }
    }
    // Delivered on commit, in commit order, to every node that listens (`feed`).
    tx.execute("SELECT pg_notify($1, $2)", &[&super::feed::CHANNEL, &tip.0.to_string()])?;
    tx.commit()?;
    Ok(answers)
}

type Tip = (u64, [u8; 32]);

fn append_one(
    tx: &mut impl GenericClient,
    append: Append,
    recorded_at: &str,
    tip: Tip,
) -> Result<(Vec<AppendOutcome>, Tip), StoreError> {
    let head = to_u64(
        tx.query_one("SELECT COALESCE(MAX(seq), 0) FROM events WHERE stream_id = $1", &[&append.stream_id])?.get(0),
        "seq",
    )?;
    // Retries are rare: first assume no event is already in the log and insert, skipping any that
    // is (`ON CONFLICT DO NOTHING`). If one was skipped, the positions after it would leave a gap:
    // undo the attempt, look the batch's eventIds up, and place only the new ones.
    let (fresh, outcomes, new_tip) = place(&append, recorded_at, tip, head, HashMap::new())?;
    let mut attempt = tx.transaction()?;
    if insert_rows(&mut attempt, &fresh, true)? == fresh.len() as u64 {
        attempt.commit()?;
        return Ok((outcomes, new_tip));
    }
    attempt.rollback()?;
    // Every writer holds the append lock, so no eventId can appear between this read and the insert.
    let ids: Vec<&str> = append.events.iter().map(|e| e.event_id.as_str()).collect();
    let mut known = HashMap::new();
    for row in tx.query(
        "SELECT event_id, stream_id, seq, position, content_hash FROM events WHERE tenant_id = $1 AND event_id = ANY($2)",
        &[&append.tenant_id, &ids],
    )? {
        let earlier = Earlier {
            stream_id: row.get(1),
            seq: to_u64(row.get(2), "seq")?,
            position: to_u64(row.get(3), "position")?,
            content_hash: hash(row.get(4))?,
        };
        known.insert(row.get(0), earlier);
    }
    let (fresh, outcomes, new_tip) = place(&append, recorded_at, tip, head, known)?;
    insert_rows(tx, &fresh, false)?;
    Ok((outcomes, new_tip))
}

/// Positions, seqs and chain links for the batch's events after `tip` and `head`, skipping the
/// eventIds `known` to be in the log already, or earlier in the batch: a repeat (same stream and
/// content) is answered with its place, other content is `EVENT_ID_CONFLICT`.
fn place(
    append: &Append,
    recorded_at: &str,
    mut tip: Tip,
    mut head: u64,
    mut known: HashMap<String, Earlier>,
) -> Result<(Vec<StoredEvent>, Vec<AppendOutcome>, Tip), StoreError> {
    let mut fresh = Vec::with_capacity(append.events.len());
    let mut outcomes = Vec::with_capacity(append.events.len());
    for (index, event) in append.events.iter().enumerate() {
        if let Some(earlier) = known.get(&event.event_id) {
            if earlier.stream_id != append.stream_id || earlier.content_hash != event.content_hash {
                return Err(conflict(&event.event_id, index));
            }
            outcomes.push(AppendOutcome {
                event_id: event.event_id.clone(),
                seq: earlier.seq,
                position: earlier.position,
                duplicate: true,
            });
            continue;
        }
        let mut candidate = StoredEvent {
            position: tip.0 + 1,
            tenant_id: append.tenant_id.clone(),
            stream_id: append.stream_id.clone(),
            seq: head + 1,
            event_id: event.event_id.clone(),
            event_type: event.event_type.to_owned(),
            schema_version: event.schema_version,
            ts: event.ts.clone(),
            recorded_at: recorded_at.to_owned(),
            actor: append.actor.clone(),
            payload: event.payload.clone(),
            content_hash: event.content_hash,
            prev_hash: tip.1,
            hash: [0; 32],
        };
        candidate.hash = chain_hash(&candidate);
        head = candidate.seq;
        tip = (candidate.position, candidate.hash);
        let earlier = Earlier {
            stream_id: append.stream_id.clone(),
            seq: candidate.seq,
            position: candidate.position,
            content_hash: candidate.content_hash,
        };
        known.insert(candidate.event_id.clone(), earlier);
        outcomes.push(AppendOutcome {
            event_id: candidate.event_id.clone(),
            seq: candidate.seq,
            position: candidate.position,
            duplicate: false,
        });
        fresh.push(candidate);
    }
    Ok((fresh, outcomes, tip))
}

/// Where an eventId already is in the tenant's log.
struct Earlier {
    stream_id: String,
    seq: u64,
    position: u64,
    content_hash: [u8; 32],
}

fn conflict(event_id: &str, index: usize) -> StoreError {
    StoreError::Rejected(
        Rejection::new(
            ErrorCode::EventIdConflict,
            format!("eventId `{event_id}` was already used in this tenant for different content"),
        )
        .with_details(serde_json::json!({ "index": index, "eventId": event_id })),
    )
}

/// Up to `limit` events after `position`, in position order.
pub fn read_after(client: &mut impl GenericClient, position: u64, limit: u64) -> Result<Vec<StoredEvent>, StoreError> {
    client
        .query(
            &format!("SELECT {SELECT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"),
            &[&to_i64(position)?, &to_i64(limit)?],
        )?
        .iter()
        .map(from_row)
        .collect()
}

/// The first break in the log, if any: a position out of sequence, a stream's seq out of
/// sequence, a `prev_hash` that is not the previous event's hash, or a hash that does not match
/// the event.
pub fn verify(client: &mut postgres::Client) -> Result<Option<(u64, String)>, StoreError> {
    let mut expected = (1u64, GENESIS_HASH);
    let mut heads: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let page = 10_000;
    loop {
        let events = read_after(client, expected.0 - 1, page)?;
        if events.is_empty() {
            return Ok(None);
        }
        for event in &events {
            let head = heads.entry(event.stream_id.clone()).or_default();
            let broken = if event.position != expected.0 {
                Some(format!("position {} follows {}", event.position, expected.0 - 1))
            } else if event.seq != *head + 1 {
                Some(format!("stream {} has seq {} after {}", event.stream_id, event.seq, head))
            } else if event.prev_hash != expected.1 {
                Some("prev_hash is not the previous event's hash".to_owned())
            } else if chain_hash(event) != event.hash {
                Some("the hash does not match the event".to_owned())
            } else {
                None
            };
            if let Some(reason) = broken {
                return Ok(Some((event.position, reason)));
            }
            *head = event.seq;
            expected = (event.position + 1, event.hash);
        }
    }
}

/// The benchmark's baseline: `rows` inserted with the same one-statement insert, one transaction
/// per `batch` rows, with none of the append's work (lock, tip, heads, eventId lookups, hashing);
/// answers events per second.
pub fn raw_insert_rate(client: &mut postgres::Client, rows: &[StoredEvent], batch: usize) -> Result<f64, StoreError> {
    let started = std::time::Instant::now();
    for chunk in rows.chunks(batch.max(1)) {
        let mut tx = client.transaction()?;
        insert_rows(&mut tx, chunk, false)?;
        tx.commit()?;
    }
    Ok(rows.len() as f64 / started.elapsed().as_secs_f64())
}
