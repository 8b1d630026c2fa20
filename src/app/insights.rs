//! Post-call insights: `GET /v1/call/sessions/{id}/insights`, and the `insights.computed` event a
//! terminal session's final insights are appended as (docs/insights.md).
//!
//! Insights are a function of the transcript projection (each segment's winning final or edit)
//! and the session's lifecycle, so they are recomputed whenever the transcript changes and
//! `rebuild` reproduces them. While a session is open they are computed on read (`final: false`);
//! the transaction that ends it appends them as `insights.computed`, and a transcript change after
//! the end appends a new revision. A terminal session is answered from its latest revision, which
//! also outlives an erasure of the tenant: the speaker labels are sealed, the numbers are not.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::sessions::visible_session;
use crate::config::InsightsConfig;
use crate::domain::insights::{self, CallMetrics, Segment, Settings, SpeakerMetrics};
use crate::domain::principal::Principal;
use crate::domain::session::{SessionEvent, SessionState};
use crate::domain::time::Timestamp;
use crate::error::AppError;
use crate::orchestration::executors::Outcome;
use crate::store::log::{Actor, StoredEvent};
use crate::store::{Reads, SessionRecord, WriteUnit};

pub const COMPUTED: &str = "insights.computed";

/// Why a revision of `insights.computed` was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The session reached a terminal state.
    Ended,
    /// The transcript of the terminal session changed (a late final, an edit).
    TranscriptChanged,
}

/// The payload of `insights.computed` (schemas/insights.computed.v1.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputedPayload {
    pub revision: u64,
    pub reason: Reason,
    #[serde(flatten)]
    pub basis: Basis,
    pub call: CallMetrics,
    pub speakers: Vec<SpeakerMetrics>,
    /// `None` once the tenant's data key is destroyed (the opened payload says `null`).
    pub speaker_labels: Option<Vec<Option<String>>>,
}

/// What the numbers were computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Basis {
    /// The highest seq among the winning segments: the transcript state the numbers describe.
    pub transcript_seq: u64,
    /// The filler lexicon, `id@version`.
    pub lexicon: String,
    pub pause_threshold_ms: i64,
    /// Winning finals and edits counted.
    pub segments: u64,
    /// Of those, without a usable `startMs`/`endMs`: words and fillers only.
    pub untimed_segments: u64,
    /// Segments whose latest revision is still a partial: not counted until final.
    pub pending_partials: u64,
}

/// One speaker in an answer: the label (personal) and the numbers.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpeakerView {
    /// `null` for segments without a speaker, and for every speaker once erased.
    pub speaker: Option<String>,
    #[serde(flatten)]
    pub metrics: SpeakerMetrics,
}

/// `GET /v1/call/sessions/{id}/insights` (schemas/api.insights.v1.json).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InsightsView {
    pub session_id: String,
    pub state: SessionState,
    /// True once the session is terminal: the numbers are its `insights.computed`.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// The `insights.computed` revision served; `null` while live.
    pub revision: Option<u64>,
    /// When they were computed: the event's `recordedAt`, or now while live.
    pub computed_at: String,
    /// The speaker labels were erased with the tenant's data key.
    pub erased: bool,
    #[serde(flatten)]
    pub basis: Basis,
    pub call: CallMetrics,
    pub speakers: Vec<SpeakerView>,
}

/// When the session became active and when it ended, from its lifecycle events.
fn lifecycle(reads: &dyn Reads, session_id: &str) -> Result<(Option<Timestamp>, Option<Timestamp>), AppError> {
    let (mut active_at, mut ended_at) = (None, None);
    for event in reads.events_of_type(session_id, "call.session.")? {
        let Some(change) = SessionEvent::from_envelope_parts(&event.event_type, &event.payload) else { continue };
        if let SessionEvent::StateChanged { to: SessionState::Active, .. } = change
            && active_at.is_none()
        {
            active_at = Timestamp::parse(&event.recorded_at);
        }
        if change.ends_session() && ended_at.is_none() {
            ended_at = Timestamp::parse(&event.recorded_at);
        }
    }
    Ok((active_at, ended_at))
}

/// The insights of the session's current transcript; a call still open is measured up to `now`.
fn compute(
    reads: &dyn Reads,
    config: &InsightsConfig,
    session_id: &str,
    now: Timestamp,
) -> Result<(Basis, insights::Insights), AppError> {
    let transcript = reads.transcript(session_id)?;
    let (mut segments, mut pending_partials, mut transcript_seq) = (Vec::new(), 0, 0);
    for record in transcript {
        if record.kind == "partial" {
            pending_partials += 1;
            continue;
        }
        transcript_seq = transcript_seq.max(record.seq);
        segments.push(Segment {
            speaker: record.speaker,
            start_ms: record.start_ms,
            end_ms: record.end_ms,
            text: record.text,
        });
    }
    let (active_at, ended_at) = lifecycle(reads, session_id)?;
    let lifecycle_ms = active_at.map(|active| ended_at.unwrap_or(now).millis_since(active).max(0));
    let computed = insights::compute(&config.lexicon, Settings { pause_ms: config.pause_ms }, &segments, lifecycle_ms);
    let basis = Basis {
        transcript_seq,
        lexicon: config.lexicon.name(),
        pause_threshold_ms: config.pause_ms,
        segments: segments.len() as u64,
        untimed_segments: computed.untimed_segments,
        pending_partials,
    };
    Ok((basis, computed))
}

/// The session's `insights.computed` events, oldest first, opened.
fn revisions(reads: &dyn Reads, session_id: &str) -> Result<Vec<StoredEvent>, AppError> {
    Ok(reads.events_of_type(session_id, COMPUTED)?)
}

fn parse(event: &StoredEvent) -> Result<(ComputedPayload, bool), AppError> {
    let payload: Value = serde_json::from_str(&event.payload).map_err(AppError::internal)?;
    let erased = payload.get(crate::store::sealing::ERASED) == Some(&Value::Bool(true));
    Ok((serde_json::from_value(payload).map_err(AppError::internal)?, erased))
}

/// Append the session's final insights when they differ from its latest revision (always on
/// `Ended` when there is none). Runs in the transaction that ended the session or changed its
/// transcript; answers whether a revision was appended.
pub fn append_final(
    tx: &mut dyn WriteUnit,
    config: &InsightsConfig,
    session: &SessionRecord,
    reason: Reason,
) -> Result<bool, AppError> {
    let (basis, computed) = compute(tx, config, &session.session_id, tx.recorded_at())?;
    let previous = revisions(tx, &session.session_id)?;
    // A call that never became active and holds no transcript has nothing to say.
    let said_nothing = basis.segments == 0 && basis.pending_partials == 0;
    if previous.is_empty() && said_nothing && lifecycle(tx, &session.session_id)?.0.is_none() {
        return Ok(false);
    }
    let payload = ComputedPayload {
        revision: previous.len() as u64 + 1,
        reason,
        basis,
        call: computed.call,
        speakers: computed.speakers,
        speaker_labels: Some(computed.speaker_labels),
    };
    if let Some(latest) = previous.last() {
        let (latest, _) = parse(latest)?;
        let same = latest.basis == payload.basis
            && latest.call == payload.call
            && latest.speakers == payload.speakers
            && latest.speaker_labels == payload.speaker_labels;
        if same {
            return Ok(false);
        }
    }
    let event_id = format!("insights:{}:{}", session.session_id, payload.revision);
    super::billing::append_fact(
        tx,
        &session.tenant_id,
        &session.session_id,
        &Actor::system(),
        COMPUTED,
        &event_id,
        &payload,
    )?;
    Ok(true)
}

/// Whether an appended event changes what the insights count (a final or an edit).
pub fn changes_insights(event: &StoredEvent) -> bool {
    matches!(event.event_type.as_str(), "transcript.segment.final" | "transcript.segment.edited")
}

/// `GET /v1/call/sessions/{id}/insights`: the owner, the tenant's operators and services.
#[tracing::instrument(skip_all, fields(session_id = %session_id), err)]
pub async fn insights(state: &AppState, principal: &Principal, session_id: String) -> Result<InsightsView, AppError> {
    let record = visible_session(state, principal, session_id).await?;
    let config = state.config.insights.clone();
    let now = state.clock.now();
    state.store.read(move |reads| view(reads, &config, record, now)).await
}

fn view(
    reads: &dyn Reads,
    config: &InsightsConfig,
    record: SessionRecord,
    now: Timestamp,
) -> Result<InsightsView, AppError> {
    if record.is_terminal()
        && let Some(latest) = revisions(reads, &record.session_id)?.pop()
    {
        let (payload, erased) = parse(&latest)?;
        let labels = payload.speaker_labels.unwrap_or_default();
        let speakers = payload
            .speakers
            .into_iter()
            .enumerate()
            .map(|(i, metrics)| SpeakerView { speaker: labels.get(i).cloned().flatten(), metrics })
            .collect();
        return Ok(InsightsView {
            session_id: record.session_id,
            state: record.state,
            is_final: true,
            revision: Some(payload.revision),
            computed_at: latest.recorded_at,
            erased,
            basis: payload.basis,
            call: payload.call,
            speakers,
        });
    }
    let (basis, computed) = compute(reads, config, &record.session_id, now)?;
    let speakers = computed
        .speaker_labels
        .into_iter()
        .zip(computed.speakers)
        .map(|(speaker, metrics)| SpeakerView { speaker, metrics })
        .collect();
    Ok(InsightsView {
        session_id: record.session_id,
        state: record.state,
        is_final: record.state.is_terminal(),
        revision: None,
        computed_at: now.to_rfc3339(),
        erased: false,
        basis,
        call: computed.call,
        speakers,
    })
}

// ---- The evaluator (`insights.evaluate`) ---------------------------------------------------------

/// What an external evaluator must answer (docs/insights.md): a summary, and optionally
/// recommendations, scores and who made them.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EvaluatorAnswer {
    summary: String,
    #[serde(default)]
    recommendations: Vec<String>,
    #[serde(default)]
    scores: std::collections::BTreeMap<String, f64>,
    provider: Option<String>,
    model: Option<String>,
}

impl EvaluatorAnswer {
    fn parse(body: &str) -> Result<EvaluatorAnswer, String> {
        let answer: EvaluatorAnswer = serde_json::from_str(body).map_err(|e| format!("not an evaluation: {e}"))?;
        let short = |text: &str, max: usize| !text.trim().is_empty() && text.chars().count() <= max;
        if !short(&answer.summary, 10_000) {
            return Err("`summary` must be 1–10000 characters".into());
        }
        if answer.recommendations.len() > 50 || !answer.recommendations.iter().all(|r| short(r, 2_000)) {
            return Err("`recommendations` must be at most 50 strings of 1–2000 characters".into());
        }
        if answer.scores.len() > 50 || !answer.scores.values().all(|v| v.is_finite()) {
            return Err("`scores` must be at most 50 finite numbers".into());
        }
        for name in [&answer.provider, &answer.model].into_iter().flatten() {
            if !short(name, 128) {
                return Err("`provider` and `model` must be 1–128 characters".into());
            }
        }
        Ok(answer)
    }
}

/// Run `insights.evaluate` for a session: post its insights and transcript to the configured
/// evaluator (signed, with the executors' timeout and bounded retries) and record its verdict, or
/// fall back to the rule-based evaluation, saying why. The action is executed either way.
pub async fn evaluate(state: &AppState, action_id: &str, session_id: &str, instructions: Option<String>) -> Outcome {
    let config = state.config.insights.clone();
    let (now, session) = (state.clock.now(), session_id.to_owned());
    let read = state
        .store
        .read(move |reads| -> Result<_, AppError> {
            let record = reads.session(&session)?.ok_or_else(|| super::session_not_found(&session))?;
            let transcript = reads.transcript(&session)?;
            Ok((view(reads, &config, record, now)?, transcript))
        })
        .await;
    let (view, transcript) = match read {
        Ok(read) => read,
        Err(err) => {
            return Outcome::Failed {
                error_code: crate::domain::error::ErrorCode::Internal,
                attempts: 0,
                message: format!("the session's insights could not be read: {err}"),
            };
        }
    };
    let labels: Vec<Option<String>> = view.speakers.iter().map(|s| s.speaker.clone()).collect();
    let metrics: Vec<SpeakerMetrics> = view.speakers.iter().map(|s| s.metrics.clone()).collect();
    let rules = insights::evaluate_metrics(&view.call, &labels, &metrics);
    let outcome_ref = format!("insights:{action_id}");
    let basis = json!({ "insightsRevision": view.revision, "transcriptSeq": view.basis.transcript_seq });
    let fallback = |code: &str, message: String, attempts: u64, latency_ms: u64| Outcome::Executed {
        outcome_ref: outcome_ref.clone(),
        attempts: attempts.max(1),
        result: json!({
            "source": "rules", "provider": "callstream", "model": view.basis.lexicon,
            "latencyMs": latency_ms, "attempts": attempts,
            "fallbackReason": { "code": code, "message": message },
            "evaluation": rules, "basis": basis,
        }),
    };
    let Some(url) = state.config.insights.evaluator_url.clone() else {
        return fallback("EVALUATOR_NOT_CONFIGURED", "CALLSTREAM_INSIGHTS_EVALUATOR_URL is not set".into(), 0, 0);
    };
    let segments: Vec<Value> = transcript
        .iter()
        .filter(|s| s.kind != "partial")
        .map(|s| {
            json!({"segmentId": s.segment_id, "speaker": s.speaker, "startMs": s.start_ms, "endMs": s.end_ms,
                   "text": s.text, "language": s.language})
        })
        .collect();
    let body = json!({
        "actionId": action_id, "sessionId": session_id, "instructions": instructions,
        "insights": view, "transcript": segments,
    });
    let started = std::time::Instant::now();
    let client = state.actions.guarded_client();
    let posted = crate::orchestration::executors::post_signed(
        &state.config.orchestration,
        &client,
        &state.clock,
        &url,
        action_id,
        &body.to_string(),
    )
    .await;
    let latency_ms = started.elapsed().as_millis() as u64;
    match posted {
        Err(failed) => fallback(failed.error_code.as_str(), failed.message, failed.attempts, latency_ms),
        Ok(delivered) => match EvaluatorAnswer::parse(&delivered.body) {
            Err(why) => fallback("EVALUATOR_RESPONSE_INVALID", why, delivered.attempts, latency_ms),
            Ok(answer) => {
                let provider = answer.provider.clone().unwrap_or_else(|| {
                    reqwest::Url::parse(&url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default()
                });
                Outcome::Executed {
                    outcome_ref,
                    attempts: delivered.attempts,
                    result: json!({
                        "source": "evaluator", "provider": provider, "model": answer.model,
                        "latencyMs": delivered.elapsed_ms, "attempts": delivered.attempts, "fallbackReason": null,
                        "evaluation": {"summary": answer.summary, "recommendations": answer.recommendations, "scores": answer.scores},
                        "basis": basis,
                    }),
                }
            }
        },
    }
}
