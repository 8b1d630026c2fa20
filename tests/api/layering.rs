//! Dependencies point one way: `domain` ← `store` ← `app` ← `http` / `realtime` / CLI, the
//! domain is pure, and each storage backend alone names its driver. A new arrow back up fails here.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn offending_lines(module: &str, forbidden: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(module);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(!files.is_empty(), "no sources under src/{module}");
    let mut offending = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for (number, line) in text.lines().enumerate() {
            if forbidden.iter().any(|name| {
                line.contains(&format!("{name}::"))
                    || (name.contains("::") || name.starts_with(char::is_uppercase)) && line.contains(name)
            }) {
                offending.push(format!("{}:{}: {}", file.display(), number + 1, line.trim()));
            }
        }
    }
    offending
}

#[test]
fn the_domain_does_no_io() {
    // Addresses (`std::net::IpAddr`) are data; sockets and name resolution are I/O.
    let offending = offending_lines(
        "domain",
        &[
            "actix_web",
            "actix_ws",
            "rusqlite",
            "tokio",
            "reqwest",
            "std::fs",
            "std::net::Tcp",
            "std::net::Udp",
            "ToSocketAddrs",
        ],
    );
    assert!(offending.is_empty(), "{offending:#?}");
}

/// Which of the crate's modules each module may name (`crate::<module>`). Modules not listed
/// (the command line, the demo, the benchmarks, the wiring in `lib.rs`) sit on top and may use all.
const ALLOWED: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("context", &[]),
    ("clock", &["domain"]),
    ("config", &["domain"]),
    ("store", &["domain", "clock", "config"]),
    ("error", &["domain", "store", "context"]),
    ("metrics", &["store"]),
    ("telemetry", &["context"]),
    ("livekit", &["domain", "config", "error"]),
    ("orchestration", &["domain", "config", "clock", "context", "error"]),
    ("app", &["domain", "clock", "config", "context", "error", "store", "metrics", "livekit", "orchestration"]),
    ("realtime", &["domain", "clock", "config", "context", "error", "store", "metrics", "app"]),
    ("http", &["domain", "clock", "config", "context", "error", "store", "metrics", "app", "realtime"]),
];

#[test]
fn imports_point_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut offending = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src").to_string_lossy().into_owned();
        let module = relative.split('/').next().unwrap_or_default().trim_end_matches(".rs").to_owned();
        let Some((_, allowed)) = ALLOWED.iter().find(|(name, _)| *name == module) else { continue };
        let text = std::fs::read_to_string(&file).expect("read");
        for (number, line) in text.lines().enumerate() {
            for (at, _) in line.match_indices("crate::") {
                let named: String =
                    line[at + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if named != module && !allowed.contains(&named.as_str()) {
                    offending.push(format!("src/{relative}:{}: `{module}` may not use `crate::{named}`", number + 1));
                }
            }
        }
    }
    assert!(offending.is_empty(), "{offending:#?}");
}

#[test]
fn each_backend_alone_names_its_driver() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut offending = Vec::new();
    for (backend, driver) in [("sqlite", "rusqlite"), ("postgres", "postgres")] {
        let home = src.join("store").join(backend);
        for file in files.iter().filter(|file| !file.starts_with(&home)) {
            let text = std::fs::read_to_string(file).expect("read");
            offending.extend(
                text.lines()
                    .enumerate()
                    .filter(|(_, line)| {
                        let line = line.replace("store::postgres::", "");
                        line.contains(&format!("{driver}::")) || line.contains(&format!("use {driver}"))
                    })
                    .map(|(number, line)| format!("{}:{}: {}", file.display(), number + 1, line.trim())),
            );
        }
    }
    assert!(offending.is_empty(), "{offending:#?}");
}

#[test]
fn the_use_cases_hold_no_sql() {
    let offending = offending_lines("app", &["rusqlite", "SELECT ", "INSERT INTO", "UPDATE ", "DELETE FROM"]);
    assert!(offending.is_empty(), "{offending:#?}");
}
