//! The transcript of a session, its snapshot history, and retention compaction.

use serde::{Deserialize, Serialize};

use super::AppState;
use super::sessions::visible_session;
use crate::domain::principal::{Ownership, Principal};
use crate::error::{AppError, ErrorCode};
use crate::store::{SegmentRecord, SnapshotRecord, StoreError};

/// `GET /v1/realtime/sessions/{id}/transcript`: the winning revision of every segment.
#[tracing::instrument(skip_all, fields(session_id = %session_id), err)]
pub async fn transcript(
    state: &AppState,
    principal: &Principal,
    session_id: String,
) -> Result<TranscriptView, AppError> {
    visible_session(state, principal, session_id.clone()).await?;
    let (segments, head) = state
        .store
        .read(move |conn| -> Result<_, StoreError> {
            Ok((conn.transcript(&session_id)?, conn.stream_head(&session_id)?))
        })
        .await?;
    let text =
        segments.iter().filter_map(|s| s.text.as_deref()).filter(|t| !t.is_empty()).collect::<Vec<_>>().join(" ");
    Ok(TranscriptView { segments, text, head_seq: head, epoch: state.store.epoch().to_owned() })
}

/// The current transcript: every segment's winning revision, and the text they make.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptView {
    pub segments: Vec<SegmentRecord>,
    pub text: String,
    pub head_seq: u64,
    pub epoch: String,
}

/// A page of the transcript's snapshot history, in seq order.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotPage {
    pub snapshots: Vec<SnapshotRecord>,
    pub next_after: Option<u64>,
    pub stats: SnapshotStats,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct SnapshotStats {
    pub snapshots: u64,
    pub superseded: u64,
    pub current: u64,
}

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct CompactionAnswer {
    pub examined: u64,
    pub deleted: u64,
    pub kept: u64,
}

pub const MAX_SNAPSHOT_LIMIT: u64 = 1000;

/// `GET /v1/realtime/sessions/{id}/transcript-snapshots?after=&limit=`: in seq order; `after` is a seq.
#[tracing::instrument(skip_all, fields(session_id = %session_id), err)]
pub async fn snapshots(
    state: &AppState,
    principal: &Principal,
    session_id: String,
    after: u64,
    limit: u64,
) -> Result<SnapshotPage, AppError> {
    if !(1..=MAX_SNAPSHOT_LIMIT).contains(&limit) {
        return Err(AppError::new(
            ErrorCode::QueryInvalid,
            format!("`limit` must be between 1 and {MAX_SNAPSHOT_LIMIT}"),
        ));
    }
    visible_session(state, principal, session_id.clone()).await?;
    let (rows, (total, superseded)) = state
        .store
        .read(move |conn| -> Result<_, StoreError> {
            Ok((conn.transcript_snapshots(&session_id, after, limit)?, conn.snapshot_stats(&session_id)?))
        })
        .await?;
    let next_after = rows.last().map(|r| r.seq);
    Ok(SnapshotPage {
        snapshots: rows,
        next_after,
        stats: SnapshotStats { snapshots: total, superseded, current: total - superseded },
    })
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CompactRequest {
    /// Only superseded snapshots recorded at least this long ago are deleted (default 0: all).
    pub older_than_secs: Option<u64>,
}

/// `POST /v1/realtime/sessions/{id}/transcript-snapshots/compact`: delete superseded snapshots,
/// never events and never a segment's current snapshot. Owner, operator or service.
#[tracing::instrument(skip_all, fields(session_id = %session_id), err)]
pub async fn compact(
    state: &AppState,
    principal: &Principal,
    session_id: String,
    request: CompactRequest,
) -> Result<CompactionAnswer, AppError> {
    let record = visible_session(state, principal, session_id.clone()).await?;
    principal.session_access(Ownership { tenant_id: &record.tenant_id, owner_id: &record.owner_id }).map_err(|_| {
        AppError::new(ErrorCode::ForbiddenRole, "your roles do not allow compacting this session's snapshots")
    })?;
    let older_than_secs = request.older_than_secs.unwrap_or(0).min(10 * 365 * 86_400) as i64;
    let stats = state
        .store
        .writer
        .execute(move |tx| {
            // Strictly before the cutoff; a zero age covers everything recorded up to now.
            let before = tx.recorded_at().plus_seconds(-older_than_secs).plus_millis(1);
            tx.compact_snapshots(&session_id, before)
        })
        .await?;
    Ok(CompactionAnswer { examined: stats.examined, deleted: stats.deleted, kept: stats.kept })
}
