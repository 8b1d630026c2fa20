//! The Python peers the tests talk to (LiveKit's own SDK, the OpenAPI fuzzer) live in a virtual
//! environment under `target/`, created on first use with the machine's `python3`, so `cargo test`
//! needs nothing installed by hand. `PYTHON=/path/to/python` uses an interpreter that already has
//! the packages instead.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the peers need, pinned to a major version. Changing this line rebuilds the environment.
const REQUIREMENTS: &[&str] = &["livekit-api>=1,<2", "schemathesis>=4,<5"];

fn venv_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("test-venv")
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{what}: cannot start: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// A Python interpreter with every package of `REQUIREMENTS`, set up once (across test processes:
/// the set-up holds a file lock) and reused while the requirements stay the same.
pub fn interpreter() -> PathBuf {
    if let Ok(python) = std::env::var("PYTHON") {
        return PathBuf::from(python);
    }
    let dir = venv_dir();
    std::fs::create_dir_all(dir.parent().expect("target dir")).expect("create target/");
    let lock = File::create(dir.with_extension("lock")).expect("lock file");
    lock.lock().expect("lock the test environment");
    let python = dir.join("bin").join("python");
    let stamp = dir.join("requirements.txt");
    let wanted = REQUIREMENTS.join("\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        if let Err(err) = create(&dir, &python) {
            panic!(
                "cannot set up the Python test environment in {} with the machine's python3 \
                 (it needs the venv module; on Debian: apt install python3-venv). {err}",
                dir.display()
            );
        }
        std::fs::write(&stamp, &wanted).expect("stamp");
    }
    python
}

fn create(dir: &Path, python: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(dir);
    eprintln!("setting up {} (first use: pip install {})", dir.display(), REQUIREMENTS.join(" "));
    run(Command::new("python3").args(["-m", "venv"]).arg(dir), "python3 -m venv")?;
    run(
        Command::new(python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .args(REQUIREMENTS),
        "pip install",
    )
}
