//! Rules of the code base that a compiler or clippy cannot check, checked on the sources.
//!
//! - Every `tokio::select!` starts with `biased;`: unbiased, tokio polls the ready branches in
//!   a random order, and a simulated run must replay the same way from the same seed
//!   (docs/design.md, "Determinism rules").

use std::path::{Path, PathBuf};

/// Where the workspace's Rust code is (fuzz/ is its own workspace, on nightly).
const SOURCE_DIRS: &[&str] = &[
    "broker/src",
    "sim/src",
    "sim/tests",
    "conformance/src",
    "conformance/tests",
    "tern-bench/src",
    "tern-bench/tests",
    "tests",
    "benches",
    "examples",
];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// `line` without a trailing `//` comment (good enough for these sources: no `//` in the
/// string literals that matter here).
fn code_of(line: &str) -> &str {
    line.find("//").map_or(line, |i| &line[..i]).trim()
}

/// Line numbers (1-based) of each `select!` invocation whose first statement is not
/// `biased;`. An invocation is `select!` then optional whitespace then `{`, `(` or `[`, in
/// code (not in a `//` comment).
fn unbiased_selects(source: &str) -> Vec<usize> {
    let mut found = Vec::new();
    for (offset, _) in source.match_indices("select!") {
        let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
        if source[line_start..offset].contains("//") {
            continue; // in a comment
        }
        let after = source[offset + "select!".len()..].trim_start();
        let Some(open) = after
            .chars()
            .next()
            .filter(|c| matches!(c, '{' | '(' | '['))
        else {
            continue; // the name, not an invocation
        };
        let body = &after[open.len_utf8()..];
        let first = body.lines().map(code_of).find(|l| !l.is_empty());
        if first != Some("biased;") {
            found.push(source[..offset].matches('\n').count() + 1);
        }
    }
    found
}

#[test]
fn every_select_is_biased() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} source files", files.len());
    let mut offences = Vec::new();
    // This file's own examples are strings, not code.
    files.retain(|f| !f.ends_with("tests/house_rules.rs"));
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap();
        for line in unbiased_selects(&source) {
            offences.push(format!("{}:{line}", file.display()));
        }
    }
    assert!(
        offences.is_empty(),
        "tokio::select! without `biased;` first: {offences:#?}"
    );
}

/// The checker itself: it must flag an unbiased select in each form and pass biased ones.
#[test]
fn the_select_rule_catches_an_unbiased_select() {
    let unbiased = "fn f() {\n    tokio::select! {\n        a = x() => {}\n    }\n}\n";
    assert_eq!(unbiased_selects(unbiased), vec![2]);
    assert_eq!(unbiased_selects("tokio::select!{ a = x() => {} }"), vec![1]);
    assert_eq!(
        unbiased_selects("x;\ntokio::select!(\n a = x() => {}\n)"),
        vec![2]
    );
    let biased = "tokio::select! {\n    // why\n    biased;\n    a = x() => {}\n}\n";
    assert!(unbiased_selects(biased).is_empty());
    assert!(
        unbiased_selects("tokio::select! {\n    biased; // why\n    a = x() => {}\n}").is_empty()
    );
    assert!(unbiased_selects("// every tokio::select! { here\nlet a = 1;").is_empty());
    assert!(unbiased_selects("let a = 1; // a select! {\nlet b = 2;").is_empty());
}
