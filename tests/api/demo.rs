//! `callstream demo` drives a whole call through the public API and exits 0.

#[test]
fn the_demo_runs_end_to_end() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_callstream")).arg("demo").output().expect("run demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for step in [
        "LiveKit webhook room_started",
        "resumed from 6",
        "ada approves mid-call",
        "signed delivery",
        "hash chain intact",
        "demo finished",
    ] {
        assert!(stdout.contains(step), "missing `{step}` in:\n{stdout}");
    }
}
