//! The operator console (issue 15): its page and policy over HTTP, and an end-to-end run in a real
//! headless Chromium (`browser.rs`) through every view, with a cut network in the middle.
//! Screenshots land in `target/console-screenshots/`.

use callstream::domain::principal::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::browser::{Browser, Proxy};
use crate::helpers::{TestApp, spawn_app, spawn_app_with};

#[tokio::test]
async fn the_console_is_served_from_the_binary_under_a_strict_policy() {
    let app = spawn_app().await;
    let page = app.client.get(format!("{}/console", app.address)).send().await.expect("console");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"].to_str().expect("type").starts_with("text/html"));
    let policy = page.headers()["content-security-policy"].to_str().expect("csp").to_owned();
    assert!(policy.contains("script-src 'self'") && policy.contains("connect-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    let html = page.text().await.expect("html");
    // No inline script or style, no third-party origin.
    assert!(!html.contains("<script>") && !html.contains("style="), "inline code in the page");
    assert!(!html.contains("http://") && !html.contains("https://"), "the page loads nothing from elsewhere");
    for (file, kind) in [("app.js", "text/javascript"), ("app.css", "text/css")] {
        let asset = app.client.get(format!("{}/console/{file}", app.address)).send().await.expect("asset");
        assert_eq!(asset.status(), StatusCode::OK, "{file}");
        assert!(asset.headers()["content-type"].to_str().expect("type").starts_with(kind), "{file}");
    }
    let missing = app.client.get(format!("{}/console/secrets.json", app.address)).send().await.expect("missing");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(crate::helpers::error_code(missing).await, "ROUTE_NOT_FOUND");
    // Every other answer keeps the API's policy.
    let api = app.client.get(format!("{}/health/live", app.address)).send().await.expect("health");
    assert_eq!(api.headers()["content-security-policy"], "default-src 'none'; frame-ancestors 'none'");
}

/// The console's reads and writes are the public API's: with a user's token it can do only what
/// a user may.
#[tokio::test]
async fn the_console_adds_no_privilege() {
    let source = include_str!("../../console/app.js");
    for forbidden in ["localStorage", "sessionStorage", "document.cookie", "innerHTML", "eval("] {
        assert!(!source.contains(forbidden), "the console must not use {forbidden}");
    }
    let app = spawn_app().await;
    let alice = app.user("alice");
    let tenants = app.get("/v1/operator/tenants", &alice).await;
    assert_eq!(crate::helpers::error_code(tenants).await, "FORBIDDEN_ROLE");
}

async fn ingest(app: &TestApp, token: &str, session: &str, events: Vec<Value>) {
    assert_eq!(app.ingest(token, session, events).await.status(), StatusCode::OK);
}

fn final_segment(session: &str, n: u64, speaker: &str, text: &str) -> Value {
    json!({"eventId": format!("{session}-c{n}"), "sessionId": session, "ts": "2026-11-23T10:00:00Z",
        "type": "transcript.segment.final", "schemaVersion": 1,
        "payload": {"segmentId": format!("c{n}"), "revision": 1, "speaker": speaker, "startMs": n * 4_000,
                    "endMs": n * 4_000 + 3_000, "text": text}})
}

async fn transition(app: &TestApp, token: &str, session: &str, to: &str) {
    let response = app.post(&format!("/v1/call/sessions/{session}/state"), token, &json!({ "to": to })).await;
    assert_eq!(response.status(), StatusCode::OK, "→ {to}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_runs_the_console_in_a_real_browser() {
    let Some(browser) = Browser::start("console::an_operator_runs_the_console_in_a_real_browser").await else { return };
    // A billing sink that refuses everything: the call's usage is dead-lettered at once.
    let sink = crate::sink::start(vec![422]).await;
    let secret = crate::billing::sink_secret();
    let app = spawn_app_with(&[
        ("CALLSTREAM_TEST_CLOCK", "1"),
        ("CALLSTREAM_BILLING_POLL_MS", "20"),
        ("CALLSTREAM_BILLING_SINK_URL", &sink.url),
        ("CALLSTREAM_BILLING_SINK_SECRET", &secret),
    ])
    .await;
    let proxy = Proxy::start(&app.address).await;
    let ttl = 7 * 86_400;
    let ops = app.token_for("ops", "t1", &[Role::Operator], ttl);
    let alice = app.token_for("alice", "t1", &[Role::User], ttl);

    // Sign in by pasting the token.
    browser.goto(&format!("{}/console", proxy.address)).await;
    browser.until("the sign-in form", "return document.getElementById('token') !== null").await;
    browser.screenshot("01-sign-in").await;
    browser.type_into("#token", &ops).await;
    browser.click("#sign-in").await;
    browser.until("signed in", "return !document.getElementById('nav').hidden").await;
    let who = browser.run("return document.getElementById('who').textContent", json!([])).await;
    assert!(who.as_str().is_some_and(|w| w.contains("ops") && w.contains("operator")), "{who}");

    // A live call appears.
    let session = app.create_session(&alice).await;
    transition(&app, &alice, &session, "connecting").await;
    transition(&app, &alice, &session, "active").await;
    let row = format!("tr[data-session=\"{session}\"]");
    browser.until("the call in the live list", &format!("return document.querySelector('{row}') !== null")).await;
    browser.screenshot("02-live-sessions").await;

    // Its timeline and transcript stream in; layout shifts are measured from here on.
    browser.click(&format!("{row} a")).await;
    browser.until("the timeline", "return document.querySelectorAll('#timeline li').length >= 3").await;
    browser
        .run(
            "window.__shift = 0; new PerformanceObserver((list) => { for (const e of list.getEntries()) \
             if (!e.hadRecentInput) window.__shift += e.value; }).observe({type: 'layout-shift', buffered: false}); return true",
            json!([]),
        )
        .await;
    let lines = [
        ("alice", "Um, so, thanks for joining. Where are we on the launch?"),
        ("bob", "We're, like, two days out. I mean, QA signed off."),
        ("alice", "Great. Let's ship on Thursday then."),
    ];
    for (n, (speaker, text)) in lines.iter().enumerate() {
        ingest(&app, &alice, &session, vec![final_segment(&session, n as u64, speaker, text)]).await;
    }
    browser
        .until(
            "the conversation",
            "return document.getElementById('conversation').textContent.includes('ship on Thursday')",
        )
        .await;
    browser.until("the insights", "return document.querySelectorAll('#insights tbody tr').length === 2").await;
    browser.screenshot("03-session-timeline").await;

    // The page's network goes away: it says so, and resumes without a gap once it is back.
    proxy.cut();
    browser
        .until(
            "reconnecting shown",
            "return document.getElementById('connection').textContent.includes('reconnecting')",
        )
        .await;
    for n in 3..8 {
        ingest(
            &app,
            &alice,
            &session,
            vec![final_segment(&session, n, "bob", &format!("while the page was away {n}"))],
        )
        .await;
    }
    browser.screenshot("04-reconnecting").await;
    proxy.restore();
    let head = app.replay(&alice, &session, 0, 1).await["diagnostics"]["headSeq"].as_u64().expect("head");
    browser
        .until(
            "every event after the cut",
            // The resume itself appends `call.connection.resumed` after these.
            &format!("return document.querySelectorAll('#timeline li').length > {head} && document.getElementById('connection').textContent.includes('live')"),
        )
        .await;
    let seqs = browser
        .run("return [...document.querySelectorAll('#timeline li')].map(li => Number(li.dataset.seq))", json!([]))
        .await;
    let seqs: Vec<u64> = serde_json::from_value(seqs).expect("seqs");
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<u64>>(), "every event once, in order");
    let types = browser
        .run(
            "return [...document.querySelectorAll('#timeline li .type')].map(t => t.firstChild.textContent)",
            json!([]),
        )
        .await;
    assert!(types.as_array().expect("types").iter().any(|t| t == "call.connection.resumed"), "{types}");
    let shift = browser.run("return window.__shift", json!([])).await.as_f64().expect("shift");
    assert!(shift < 0.05, "streaming events shifted the layout by {shift}");
    browser.screenshot("05-resumed").await;

    // The call ends; its usage is refused by the sink and dead-lettered.
    app.advance_clock(30).await;
    transition(&app, &alice, &session, "ended").await;
    browser
        .until(
            "the final insights",
            "return document.getElementById('insights').textContent.includes('Final (revision 1)')",
        )
        .await;

    // Billing: reconcile the window once it has closed.
    app.advance_clock(2 * 3600).await;
    browser.click("#nav a[data-view=billing]").await;
    browser.until("the scheduler switch", "return document.getElementById('scheduler-enabled') !== null").await;
    browser.click("#trigger").await;
    browser.until("the run", "return document.querySelector('#runs-body tr[data-run]') !== null").await;
    browser
        .until("the run's detail", "return document.getElementById('run-detail').textContent.includes('Mismatches')")
        .await;
    browser.until("the usage chart", "return document.querySelector('#usage figure svg rect') !== null").await;
    browser.screenshot("06-billing").await;

    // Dead letters: replay one.
    browser.click("#nav a[data-view=dead-letters]").await;
    browser.until("the dead letter", "return document.querySelector('tr[data-dead-letter] button') !== null").await;
    browser.click("tr[data-dead-letter] button").await;
    browser.until("replayed", "return document.querySelector('tr[data-dead-letter] .badge.replayed') !== null").await;
    browser.screenshot("07-dead-letters").await;

    // Tenants: suspend, and the tenant's calls are refused; then resume.
    let created = app.post("/v1/operator/tenants", &ops, &json!({"tenantId": "t1", "name": "Acme"})).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    browser.click("#nav a[data-view=tenants]").await;
    browser.click("tr[data-tenant=t1] button").await;
    browser.until("suspended", "return document.querySelector('tr[data-tenant=t1] .badge.suspended') !== null").await;
    let refused = app.post("/v1/call/sessions", &alice, &json!({})).await;
    assert_eq!(crate::helpers::error_code(refused).await, "TENANT_SUSPENDED");
    browser.screenshot("08-tenants").await;
    browser.click("tr[data-tenant=t1] button").await;
    browser.until("active again", "return document.querySelector('tr[data-tenant=t1] .badge.active') !== null").await;
    assert_eq!(app.post("/v1/call/sessions", &alice, &json!({})).await.status(), StatusCode::CREATED);

    // The audit trail shows what the console did.
    browser.click("#nav a[data-view=audit]").await;
    browser
        .until(
            "the audit entries",
            "return document.getElementById('audit-body').textContent.includes('tenant.suspended')",
        )
        .await;
    browser.screenshot("09-audit").await;

    // A refused action shows its code.
    browser.click("#nav a[data-view=billing]").await;
    browser.until("the trigger", "return document.getElementById('trigger') !== null").await;
    browser.run("document.getElementById('window-start').value = '2099-01-01T10:00'; return true", json!([])).await;
    browser.click("#trigger").await;
    browser
        .until(
            "the refusal's code",
            "return document.getElementById('status').textContent.includes('WINDOW_NOT_CLOSED')",
        )
        .await;

    // Keyboard: the skip link comes first, and every control has a name.
    browser.goto("about:blank").await;
    browser.goto(&format!("{}/console#/sessions", proxy.address)).await;
    browser.until("signed out by the reload", "return document.getElementById('token') !== null").await;
    let focused = browser.run("return document.activeElement.id", json!([])).await;
    assert_eq!(focused, "token", "the sign-in field has the focus");
    browser.chord(&['\u{E008}', '\u{E004}']).await;
    let focused = browser
        .run("const e = document.activeElement; return e.tagName + '.' + e.className + '#' + e.id", json!([]))
        .await;
    assert_eq!(focused, "A.skip#", "before it in the tab order: only the skip link");
    browser.keys("\u{E004}").await;
    browser.type_into("#token", &ops).await;
    browser.keys("\u{E004}\u{E007}").await; // Tab to the button, Enter
    browser.until("signed in by keyboard", "return !document.getElementById('nav').hidden").await;
    let unnamed = browser
        .run(
            "return [...document.querySelectorAll('button, a, input, textarea, select')].filter(e => \
             !(e.textContent.trim() || e.getAttribute('aria-label') || (e.id && document.querySelector(`label[for=\"${e.id}\"]`)) || e.closest('label'))).length",
            json!([]),
        )
        .await;
    assert_eq!(unnamed, 0, "every control has an accessible name");

    // A phone-sized viewport: the session view still reads.
    browser.resize(390, 844).await;
    browser.goto("about:blank").await;
    browser.goto(&format!("{}/console#/sessions", proxy.address)).await;
    browser.type_into("#token", &ops).await;
    browser.click("#sign-in").await;
    browser.until("signed in", "return !document.getElementById('nav').hidden").await;
    browser.run(&format!("location.hash = '#/session/{session}'; return true"), json!([])).await;
    browser
        .until("the timeline on a phone", &format!("return document.querySelectorAll('#timeline li').length >= {head}"))
        .await;
    let overflow = browser.run("return document.documentElement.scrollWidth - window.innerWidth", json!([])).await;
    assert!(overflow.as_i64().is_some_and(|o| o <= 0), "no sideways scrolling on a phone: {overflow}");
    browser.screenshot("10-phone-session").await;
    let violations = browser.run("return document.documentElement.dataset.cspViolations || '0'", json!([])).await;
    assert_eq!(violations, "0", "the page broke its own security policy");
}
