//! Dependencies point one way: the domain is pure, and the HTTP edge never touches SQL.

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

#[test]
fn http_never_touches_sql() {
    let offending = offending_lines("http", &["rusqlite"]);
    assert!(offending.is_empty(), "{offending:#?}");
}
