//! Post-call speech metrics: a pure function of a call's winning transcript segments and its
//! duration. Every rule (words, fillers and their context, pauses, monologues, interruptions,
//! silence) is stated in docs/insights.md; the tests below hold the code to it.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// The filler lexicon shipped with callstream (`policy/fillers.json`).
pub const BUILT_IN_LEXICON: &str = include_str!("../../policy/fillers.json");

/// Default shortest silence that counts as a pause.
pub const DEFAULT_PAUSE_MS: i64 = 2_000;

/// Where a filler counts (docs/insights.md, "Contextual fillers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum Context {
    /// Wherever the phrase stands, but for its exceptions.
    #[default]
    Always,
    /// Only set apart from the sentence around it: after a pause (punctuation) or the start of a
    /// segment, before a pause or the end of a segment, next to another filler, or after one of
    /// `alsoAfter`.
    SetApart,
    /// Only set off by pauses on both sides: after punctuation or the start of a segment, and
    /// before punctuation, another filler or the end of the segment ("So, um, …", "okay, so, …").
    BetweenPauses,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FillerFile {
    id: String,
    version: u32,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    fillers: Vec<FillerEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FillerEntry {
    phrase: String,
    label: Option<String>,
    #[serde(default)]
    context: Context,
    #[serde(default)]
    not_after: Vec<String>,
    #[serde(default)]
    not_before: Vec<String>,
    #[serde(default)]
    also_after: Vec<String>,
}

#[derive(Debug, Clone)]
struct Filler {
    words: Vec<String>,
    label: String,
    context: Context,
    not_after: HashSet<String>,
    not_before: HashSet<String>,
    also_after: HashSet<String>,
}

/// A validated filler lexicon, phrases longest first (the longest match wins).
#[derive(Debug, Clone)]
pub struct Lexicon {
    pub id: String,
    pub version: u32,
    fillers: Vec<Filler>,
    /// Single-word fillers that count wherever they stand: "next to another filler" means these.
    plain: HashSet<String>,
}

fn words_of(text: &str) -> Vec<String> {
    tokenize(text).into_iter().map(|t| t.word).collect()
}

impl Lexicon {
    pub fn built_in() -> Lexicon {
        Lexicon::parse(BUILT_IN_LEXICON).unwrap_or_else(|e| panic!("policy/fillers.json is invalid: {e}"))
    }

    /// Parse a lexicon file; the message names what is wrong.
    pub fn parse(json: &str) -> Result<Lexicon, String> {
        let file: FillerFile = serde_json::from_str(json).map_err(|e| format!("not a filler lexicon: {e}"))?;
        if file.id.trim().is_empty() {
            return Err("`id` must not be empty".into());
        }
        let mut fillers: Vec<Filler> = Vec::with_capacity(file.fillers.len());
        for entry in file.fillers {
            let words = words_of(&entry.phrase);
            if words.is_empty() || words.join(" ") != entry.phrase.trim().to_lowercase().replace('’', "'") {
                return Err(format!("phrase `{}` must be words separated by single spaces", entry.phrase));
            }
            if fillers.iter().any(|f| f.words == words) {
                return Err(format!("phrase `{}` is listed twice", entry.phrase));
            }
            let set = |list: Vec<String>| list.iter().flat_map(|w| words_of(w)).collect::<HashSet<String>>();
            fillers.push(Filler {
                label: entry.label.map(|l| l.to_lowercase()).unwrap_or_else(|| words.join(" ")),
                words,
                context: entry.context,
                not_after: set(entry.not_after),
                not_before: set(entry.not_before),
                also_after: set(entry.also_after),
            });
        }
        fillers.sort_by_key(|f| std::cmp::Reverse(f.words.len()));
        let plain = fillers
            .iter()
            .filter(|f| f.words.len() == 1 && f.context == Context::Always)
            .map(|f| f.words[0].clone())
            .collect();
        Ok(Lexicon { id: file.id, version: file.version, fillers, plain })
    }

    /// `id@version`, as insights name the lexicon they used.
    pub fn name(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }
}

/// One word of a segment's text, lowercased, with what stood between it and the word before.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    word: String,
    /// Punctuation (or the segment's start) separates it from the word before.
    pause_before: bool,
    /// It opens the segment or follows `.`, `!`, `?` or `…`.
    sentence_start: bool,
}

fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '’' | 'ʼ')
}

/// Words are runs of letters, digits and apostrophes holding at least one letter or digit (a
/// contraction is one word; apostrophes at a word's edges are quotes, not part of it).
fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    let mut gap = String::new();
    let mut first = true;
    let mut flush = |word: &mut String, gap: &mut String, tokens: &mut Vec<Token>| {
        let trimmed: String =
            word.trim_matches(is_apostrophe).chars().map(|c| if is_apostrophe(c) { '\'' } else { c }).collect();
        if trimmed.chars().any(char::is_alphanumeric) {
            let sentence_end = gap.contains(['.', '!', '?', '…']);
            let pause = sentence_end
                || gap.contains([',', ';', ':', '—', '–', '(', ')', '"', '“', '”'])
                || gap.contains(" - ")
                || gap.contains(" -\n");
            tokens.push(Token {
                word: trimmed.to_lowercase(),
                pause_before: first || pause,
                sentence_start: first || sentence_end,
            });
            first = false;
            gap.clear();
        } else {
            // A run of apostrophes alone is punctuation between words.
            gap.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_alphanumeric() || is_apostrophe(c) {
            word.push(c);
        } else {
            if !word.is_empty() {
                flush(&mut word, &mut gap, &mut tokens);
            }
            gap.push(c);
        }
    }
    if !word.is_empty() {
        flush(&mut word, &mut gap, &mut tokens);
    }
    tokens
}

/// The fillers in one segment's tokens, by label, in order.
fn find_fillers<'l>(lexicon: &'l Lexicon, tokens: &[Token]) -> Vec<&'l str> {
    let mut found = Vec::new();
    let mut i = 0;
    // The token index just past the last counted filler.
    let mut after_filler = usize::MAX;
    while i < tokens.len() {
        let matched = lexicon.fillers.iter().find(|filler| {
            let len = filler.words.len();
            if i + len > tokens.len() {
                return false;
            }
            let span = &tokens[i..i + len];
            if span.iter().zip(&filler.words).any(|(t, w)| t.word != *w) || span[1..].iter().any(|t| t.pause_before) {
                return false;
            }
            // Neighbours joined to the phrase without a pause; punctuation sets a phrase apart.
            let prev = (i > 0 && !tokens[i].pause_before).then(|| tokens[i - 1].word.as_str());
            let next_token = tokens.get(i + len);
            let next = next_token.filter(|t| !t.pause_before).map(|t| t.word.as_str());
            if prev.is_some_and(|p| filler.not_after.contains(p)) || next.is_some_and(|n| filler.not_before.contains(n))
            {
                return false;
            }
            let pause_after = next.is_none();
            let next_is_filler = next.is_some_and(|n| lexicon.plain.contains(n));
            match filler.context {
                Context::Always => true,
                Context::SetApart => {
                    tokens[i].pause_before
                        || after_filler == i
                        || prev.is_some_and(|p| filler.also_after.contains(p))
                        || pause_after
                        || next_is_filler
                }
                Context::BetweenPauses => tokens[i].pause_before && (pause_after || next_is_filler),
            }
        });
        match matched {
            Some(filler) => {
                found.push(filler.label.as_str());
                i += filler.words.len();
                after_filler = i;
            }
            None => i += 1,
        }
    }
    found
}

/// What a segment contributes: its words and fillers.
pub fn count_words_and_fillers<'l>(lexicon: &'l Lexicon, text: &str) -> (u64, Vec<&'l str>) {
    let tokens = tokenize(text);
    let fillers = find_fillers(lexicon, &tokens);
    (tokens.len() as u64, fillers)
}

/// One winning transcript segment (a final or an edit).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub speaker: Option<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// `None` when the text is not readable (erased).
    pub text: Option<String>,
}

impl Segment {
    fn timing(&self) -> Option<(i64, i64)> {
        match (self.start_ms, self.end_ms) {
            (Some(start), Some(end)) if end >= start => Some((start, end)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub pause_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fillers {
    pub count: u64,
    /// Fillers per 100 words; `null` without words.
    pub per_100_words: Option<f64>,
    /// Count per filler label.
    pub by_filler: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pauses {
    pub count: u64,
    pub total_ms: i64,
    pub longest_ms: i64,
}

/// One speaker's numbers. Which speaker is kept apart (`Insights::speaker_labels`): the label is
/// personal data, the numbers are not once it is gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpeakerMetrics {
    pub segments: u64,
    pub talk_time_ms: i64,
    /// Of all speakers' talk time, 0–1; `null` when nobody's segments are timed.
    pub talk_share: Option<f64>,
    pub words: u64,
    /// Words of timed segments per minute of the speaker's own talk time.
    pub words_per_minute: Option<f64>,
    pub fillers: Fillers,
    pub pauses: Pauses,
    pub longest_monologue_ms: i64,
    /// Times this speaker started while another was still speaking.
    pub interruptions: u64,
    /// Times another speaker started while this one was still speaking.
    pub interrupted: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallMetrics {
    /// The call's length: active → end (or now, live), at least as long as its transcript.
    pub duration_ms: i64,
    /// Time someone speaks (the union of timed segments).
    pub speech_ms: i64,
    pub silence_ms: i64,
    /// `silenceMs / durationMs`; `null` for a call of no length.
    pub silence_share: Option<f64>,
    /// Time two or more speak at once.
    pub overlap_ms: i64,
    pub turn_count: u64,
    pub speaker_count: u64,
    pub words: u64,
    pub fillers: u64,
    pub interruptions: u64,
}

/// Insights of one call, speakers in order of first speech.
#[derive(Debug, Clone, PartialEq)]
pub struct Insights {
    pub call: CallMetrics,
    /// Parallel to `speakers`: each one's label (`None`: segments without a speaker).
    pub speaker_labels: Vec<Option<String>>,
    pub speakers: Vec<SpeakerMetrics>,
    pub untimed_segments: u64,
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

fn ratio(part: f64, whole: f64, places: i32) -> Option<f64> {
    (whole > 0.0).then(|| round(part / whole, places))
}

#[derive(Default)]
struct Tally {
    segments: u64,
    talk_ms: i64,
    words: u64,
    timed_words: u64,
    fillers: BTreeMap<String, u64>,
    pauses: Vec<i64>,
    longest_monologue_ms: i64,
    interruptions: u64,
    interrupted: u64,
}

/// Compute a call's insights from its winning segments (in transcript order) and, when known,
/// its lifecycle duration.
pub fn compute(lexicon: &Lexicon, settings: Settings, segments: &[Segment], lifecycle_ms: Option<i64>) -> Insights {
    let mut order: Vec<Option<String>> = Vec::new();
    let mut index_of: HashMap<Option<String>, usize> = HashMap::new();
    let mut tallies: Vec<Tally> = Vec::new();
    let mut speaker_index = |speaker: &Option<String>, tallies: &mut Vec<Tally>| -> usize {
        *index_of.entry(speaker.clone()).or_insert_with(|| {
            order.push(speaker.clone());
            tallies.push(Tally::default());
            order.len() - 1
        })
    };
    // Speakers in order of first speech: timed segments by start first, then untimed ones.
    let mut timed: Vec<(i64, i64, usize)> = Vec::new();
    let mut untimed = 0;
    for (index, segment) in segments.iter().enumerate() {
        match segment.timing() {
            Some((start, end)) => timed.push((start, end, index)),
            None => untimed += 1,
        }
    }
    timed.sort_by_key(|&(start, end, index)| (start, end, index));
    let mut speaker_of_segment = vec![0usize; segments.len()];
    for &(_, _, index) in &timed {
        speaker_of_segment[index] = speaker_index(&segments[index].speaker, &mut tallies);
    }
    for (index, segment) in segments.iter().enumerate() {
        if segment.timing().is_none() {
            speaker_of_segment[index] = speaker_index(&segment.speaker, &mut tallies);
        }
    }

    for (index, segment) in segments.iter().enumerate() {
        let tally = &mut tallies[speaker_of_segment[index]];
        tally.segments += 1;
        let (words, fillers) = count_words_and_fillers(lexicon, segment.text.as_deref().unwrap_or_default());
        tally.words += words;
        if let Some((start, end)) = segment.timing() {
            tally.talk_ms += end - start;
            tally.timed_words += words;
        }
        for label in fillers {
            *tally.fillers.entry(label.to_owned()).or_default() += 1;
        }
    }

    // Silences, pauses and overlap over the timeline of timed segments, in start order.
    let mut covered_end: Option<i64> = None;
    // The speaker whose segment reaches `covered_end`: a silence after it is their pause.
    let mut holder = 0usize;
    let mut silence_ms = 0i64;
    let first_start = timed.first().map_or(0, |t| t.0);
    silence_ms += first_start.max(0);
    for &(start, end, index) in &timed {
        let speaker = speaker_of_segment[index];
        match covered_end {
            Some(covered) if start > covered => {
                let gap = start - covered;
                silence_ms += gap;
                if gap >= settings.pause_ms {
                    tallies[holder].pauses.push(gap);
                }
                covered_end = Some(end);
                holder = speaker;
            }
            Some(covered) => {
                if end >= covered {
                    covered_end = Some(end);
                    holder = speaker;
                }
            }
            None => {
                covered_end = Some(end);
                holder = speaker;
            }
        }
    }
    let transcript_end = covered_end.unwrap_or(0);
    let duration_ms = lifecycle_ms.unwrap_or(0).max(transcript_end).max(0);
    silence_ms += duration_ms - transcript_end;
    let speech_ms = duration_ms - silence_ms;

    // Overlap: a sweep over segment edges, ends before starts at the same instant.
    let mut edges: Vec<(i64, i32)> = timed.iter().flat_map(|&(s, e, _)| [(s, 1), (e, -1)]).collect();
    edges.sort_by_key(|&(at, delta)| (at, delta));
    let (mut active, mut overlap_ms, mut last_at) = (0i32, 0i64, 0i64);
    for (at, delta) in edges {
        if active >= 2 {
            overlap_ms += at - last_at;
        }
        active += delta;
        last_at = at;
    }

    // Turns, monologues and interruptions, in start order.
    let mut turn_count = 0u64;
    let mut turn: Option<(usize, i64, i64)> = None;
    let mut interruptions = 0u64;
    for (k, &(start, end, index)) in timed.iter().enumerate() {
        let speaker = speaker_of_segment[index];
        if k > 0 {
            let (_, prev_end, prev_index) = timed[k - 1];
            let prev_speaker = speaker_of_segment[prev_index];
            if prev_speaker != speaker && start < prev_end {
                tallies[speaker].interruptions += 1;
                tallies[prev_speaker].interrupted += 1;
                interruptions += 1;
            }
        }
        turn = match turn {
            Some((current, first, last)) if current == speaker => Some((current, first, last.max(end))),
            Some((current, first, last)) => {
                let monologue = &mut tallies[current].longest_monologue_ms;
                *monologue = (*monologue).max(last - first);
                turn_count += 1;
                Some((speaker, start, end))
            }
            None => Some((speaker, start, end)),
        };
    }
    if let Some((current, first, last)) = turn {
        let monologue = &mut tallies[current].longest_monologue_ms;
        *monologue = (*monologue).max(last - first);
        turn_count += 1;
    }

    let total_talk: i64 = tallies.iter().map(|t| t.talk_ms).sum();
    let speakers: Vec<SpeakerMetrics> = tallies
        .iter()
        .map(|t| {
            let count: u64 = t.fillers.values().sum();
            SpeakerMetrics {
                segments: t.segments,
                talk_time_ms: t.talk_ms,
                talk_share: ratio(t.talk_ms as f64, total_talk as f64, 4),
                words: t.words,
                words_per_minute: ratio(t.timed_words as f64 * 60_000.0, t.talk_ms as f64, 1),
                fillers: Fillers {
                    count,
                    per_100_words: ratio(count as f64 * 100.0, t.words as f64, 2),
                    by_filler: t.fillers.clone(),
                },
                pauses: Pauses {
                    count: t.pauses.len() as u64,
                    total_ms: t.pauses.iter().sum(),
                    longest_ms: t.pauses.iter().copied().max().unwrap_or(0),
                },
                longest_monologue_ms: t.longest_monologue_ms,
                interruptions: t.interruptions,
                interrupted: t.interrupted,
            }
        })
        .collect();
    Insights {
        call: CallMetrics {
            duration_ms,
            speech_ms,
            silence_ms,
            silence_share: ratio(silence_ms as f64, duration_ms as f64, 4),
            overlap_ms,
            turn_count,
            speaker_count: order.iter().filter(|s| s.is_some()).count() as u64,
            words: speakers.iter().map(|s| s.words).sum(),
            fillers: speakers.iter().map(|s| s.fillers.count).sum(),
            interruptions,
        },
        speaker_labels: order,
        speakers,
        untimed_segments: untimed,
    }
}

/// The rule-based evaluation: what a coach would point out first, from the numbers alone. Also
/// the fallback when an external evaluator fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    pub summary: String,
    pub recommendations: Vec<String>,
}

pub fn evaluate_by_rules(insights: &Insights) -> Evaluation {
    evaluate_metrics(&insights.call, &insights.speaker_labels, &insights.speakers)
}

/// `evaluate_by_rules` over the numbers as served (`labels[i]` names `speakers[i]`).
pub fn evaluate_metrics(call: &CallMetrics, labels: &[Option<String>], speakers: &[SpeakerMetrics]) -> Evaluation {
    let mut recommendations = Vec::new();
    let several = speakers.len() > 1;
    for (label, speaker) in labels.iter().chain(std::iter::repeat(&None)).zip(speakers) {
        let who = label.as_deref().unwrap_or("an unattributed speaker");
        if let Some(rate) = speaker.fillers.per_100_words
            && rate >= 3.0
        {
            let top = speaker.fillers.by_filler.iter().max_by_key(|(label, n)| (**n, std::cmp::Reverse(*label)));
            let top = top.map(|(label, n)| format!("; the most frequent was \"{label}\" ({n})")).unwrap_or_default();
            recommendations.push(format!(
                "{who} used {} filler words ({rate} per 100 words){top}: pausing silently instead reads as confident.",
                speaker.fillers.count
            ));
        }
        match speaker.words_per_minute {
            Some(wpm) if wpm > 170.0 => {
                recommendations.push(format!("{who} spoke fast ({wpm} words per minute): slow down around key points."))
            }
            Some(wpm) if wpm < 110.0 && speaker.words >= 50 => {
                recommendations.push(format!("{who} spoke slowly ({wpm} words per minute): tighten the delivery."))
            }
            _ => {}
        }
        if several && speaker.talk_share.is_some_and(|share| share > 0.7) {
            let percent = speaker.talk_share.map_or(0.0, |s| round(s * 100.0, 0));
            recommendations.push(format!("{who} held {percent} % of the talk time: leave room for the others."));
        }
        if speaker.longest_monologue_ms > 90_000 {
            recommendations.push(format!(
                "{who}'s longest monologue lasted {} s: check in with the listener more often.",
                speaker.longest_monologue_ms / 1000
            ));
        }
        if speaker.interruptions >= 3 {
            recommendations
                .push(format!("{who} interrupted {} times: let the other speaker finish.", speaker.interruptions));
        }
    }
    let summary = format!(
        "{} speakers, {} words over {} s; {} filler words, {} turns, {} interruptions, {} % silence.",
        speakers.len(),
        call.words,
        call.duration_ms / 1000,
        call.fillers,
        call.turn_count,
        call.interruptions,
        call.silence_share.map_or(0.0, |s| round(s * 100.0, 0)),
    );
    Evaluation { summary, recommendations }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fillers_in(text: &str) -> Vec<String> {
        let lexicon = Lexicon::built_in();
        count_words_and_fillers(&lexicon, text).1.into_iter().map(str::to_owned).collect()
    }

    fn words_in(text: &str) -> u64 {
        count_words_and_fillers(&Lexicon::built_in(), text).0
    }

    #[test]
    fn words_are_runs_of_letters_digits_and_apostrophes() {
        assert_eq!(words_in("Don't stop — it's 2026, y'all!"), 5);
        assert_eq!(words_in("well-known"), 2, "a hyphen separates words");
        assert_eq!(words_in("'quoted' ... ’tis"), 2);
        assert_eq!(words_in("  ,,, ''  "), 0);
        assert_eq!(words_in("Größe café 東京"), 3);
    }

    #[test]
    fn plain_fillers_match_whole_words_in_any_case_and_punctuation() {
        assert_eq!(fillers_in("Um, I think, UH... yes umm"), ["um", "uh", "um"]);
        assert!(fillers_in("An umbrella, likely a summary").is_empty(), "inside words never counts");
        assert_eq!(fillers_in("erm. hmm? er"), ["erm", "hmm", "er"]);
    }

    #[test]
    fn multi_word_fillers_need_adjacent_words_and_respect_their_exceptions() {
        assert_eq!(fillers_in("It was, you know, fine"), ["you know"]);
        assert_eq!(fillers_in("you know, the thing is"), ["you know"], "a pause sets it apart from the object");
        assert!(fillers_in("Do you know the way?").is_empty());
        assert!(fillers_in("you know the answer").is_empty());
        assert!(fillers_in("you, know").is_empty(), "a pause inside the phrase breaks it");
        assert_eq!(fillers_in("I mean, we could"), ["i mean"]);
        assert!(fillers_in("I mean it").is_empty());
        assert!(fillers_in("that's what I mean").is_empty());
        assert_eq!(fillers_in("it's sort of broken and kind of slow"), ["sort of", "kind of"]);
        assert!(fillers_in("what kind of car is that sort of thing").is_empty());
    }

    #[test]
    fn like_counts_only_set_apart_from_the_sentence() {
        assert_eq!(fillers_in("Like, I don't know"), ["like"]);
        assert_eq!(fillers_in("it was, like, huge"), ["like"]);
        assert_eq!(fillers_in("and like we went there"), ["like"]);
        assert_eq!(fillers_in("it's um like broken"), ["um", "like"], "next to another filler");
        assert!(fillers_in("I like pizza").is_empty());
        assert!(fillers_in("It looks like rain").is_empty());
        assert!(fillers_in("the one like this").is_empty());
        assert!(fillers_in("I'd like to say, you like it").is_empty());
        assert!(fillers_in("something like that").is_empty());
    }

    #[test]
    fn so_counts_only_between_pauses() {
        assert_eq!(fillers_in("So, um, where were we"), ["so", "um"]);
        assert_eq!(fillers_in("Okay, so, the plan"), ["so"]);
        assert_eq!(fillers_in("Right. So... the plan"), ["so"]);
        assert!(fillers_in("So I went home").is_empty());
        assert!(fillers_in("it was so good, so what").is_empty());
        assert!(fillers_in("I think so.").is_empty());
    }

    #[test]
    fn a_lexicon_with_mistakes_is_refused_with_a_reason() {
        assert!(Lexicon::parse("{}").is_err());
        let bad = r#"{"id": "x", "version": 1, "fillers": [{"phrase": "you  know"}]}"#;
        assert!(Lexicon::parse(bad).unwrap_err().contains("single spaces"));
        let twice = r#"{"id": "x", "version": 1, "fillers": [{"phrase": "um"}, {"phrase": "UM"}]}"#;
        assert!(Lexicon::parse(twice).unwrap_err().contains("twice"));
        let unknown = r#"{"id": "x", "version": 1, "fillers": [{"phrase": "um", "when": "always"}]}"#;
        assert!(Lexicon::parse(unknown).is_err());
    }

    fn seg(speaker: &str, start: i64, end: i64, text: &str) -> Segment {
        Segment { speaker: Some(speaker.into()), start_ms: Some(start), end_ms: Some(end), text: Some(text.into()) }
    }

    #[test]
    fn timing_metrics_follow_the_rules() {
        let segments = vec![
            seg("a", 1_000, 11_000, "one two three four five six seven eight nine ten"),
            // b interrupts a (starts before a's segment ends).
            seg("b", 9_000, 12_000, "yes yes"),
            // 3 s of silence after b: b's pause.
            seg("a", 15_000, 20_000, "um so anyway"),
            seg("a", 20_500, 25_000, "and then"),
            // 1 s gap: silence, not a pause.
            seg("b", 26_000, 30_000, "ok"),
        ];
        let insights = compute(&Lexicon::built_in(), Settings { pause_ms: 2_000 }, &segments, Some(40_000));
        let (a, b) = (&insights.speakers[0], &insights.speakers[1]);
        assert_eq!(insights.speaker_labels, [Some("a".to_owned()), Some("b".to_owned())]);
        assert_eq!((a.talk_time_ms, b.talk_time_ms), (10_000 + 5_000 + 4_500, 3_000 + 4_000));
        assert_eq!(a.talk_share, Some(round(19_500.0 / 26_500.0, 4)));
        assert_eq!(a.words, 15);
        assert_eq!(a.words_per_minute, Some(round(15.0 * 60_000.0 / 19_500.0, 1)));
        assert_eq!(a.fillers.count, 1);
        assert_eq!((b.pauses.count, b.pauses.total_ms, b.pauses.longest_ms), (1, 3_000, 3_000));
        assert_eq!(a.pauses.count, 0, "0.5 s and 1 s gaps are below the threshold");
        assert_eq!((b.interruptions, a.interrupted, a.interruptions), (1, 1, 0));
        assert_eq!(a.longest_monologue_ms, 10_000, "15–25 s is a 10 s turn, 1–11 s too");
        assert_eq!(insights.call.turn_count, 4);
        assert_eq!(insights.call.overlap_ms, 2_000);
        // Silence: 1 s lead, 3 s, 0.5 s, 1 s, and 10 s after the last segment up to 40 s.
        assert_eq!(insights.call.silence_ms, 1_000 + 3_000 + 500 + 1_000 + 10_000);
        assert_eq!(insights.call.duration_ms, 40_000);
        assert_eq!(insights.call.speech_ms, 40_000 - 15_500);
        assert_eq!(insights.call.silence_share, Some(round(15_500.0 / 40_000.0, 4)));
    }

    #[test]
    fn untimed_and_unattributed_segments_count_words_only() {
        let segments = vec![
            Segment { speaker: None, start_ms: None, end_ms: None, text: Some("um hello there".into()) },
            Segment { speaker: Some("a".into()), start_ms: Some(5), end_ms: Some(1), text: Some("x".into()) },
        ];
        let insights = compute(&Lexicon::built_in(), Settings { pause_ms: 2_000 }, &segments, None);
        assert_eq!(insights.untimed_segments, 2, "an end before the start is not a timing");
        assert_eq!(insights.call.duration_ms, 0);
        assert_eq!(insights.call.silence_share, None);
        assert_eq!(insights.call.speaker_count, 1, "segments without a speaker are no speaker");
        assert_eq!(insights.speakers[0].words, 3);
        assert_eq!(insights.speakers[0].words_per_minute, None);
        assert_eq!(insights.call.turn_count, 0);
    }

    #[test]
    fn the_rules_evaluation_names_what_stands_out() {
        let segments = vec![seg("a", 0, 60_000, &"um word ".repeat(100)), seg("b", 60_000, 61_000, "ok")];
        let insights = compute(&Lexicon::built_in(), Settings { pause_ms: 2_000 }, &segments, None);
        let evaluation = evaluate_by_rules(&insights);
        assert!(evaluation.recommendations.iter().any(|r| r.contains("100 filler words")), "{evaluation:?}");
        assert!(evaluation.recommendations.iter().any(|r| r.contains("spoke fast")), "{evaluation:?}");
        assert!(evaluation.recommendations.iter().any(|r| r.contains("% of the talk time")), "{evaluation:?}");
        assert!(evaluation.summary.starts_with("2 speakers, 201 words"), "{}", evaluation.summary);
    }
}
