//! Rules of the code base that a compiler or clippy cannot check, checked on the sources.
//!
//! - Every `tokio::select!` starts with `biased;`: unbiased, tokio polls the ready branches in
//!   a random order, and a simulated run must replay the same way from the same seed
//!   (docs/design.md, "Determinism rules").
//! - A session's and a connection's state changes only through their own methods: no other
//!   file of the core assigns to their fields (their invariants hold in one place). Reading
//!   is allowed; the fields that carry a count or a bound are private anyway.

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

/// Every line of `files` that `rule` flags, as `path:line`.
fn offences(files: &[PathBuf], rule: fn(&str) -> Vec<usize>) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(file).unwrap();
        for line in rule(&source) {
            found.push(format!("{}:{line}", file.display()));
        }
    }
    found
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
    // This file's own examples are strings, not code.
    files.retain(|f| !f.ends_with("tests/house_rules.rs"));
    let offences = offences(&files, unbiased_selects);
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

/// The fields of `Session` (core/session.rs) and `Connection` (core/connection.rs) that other
/// files of the core may read but not write.
const GUARDED_FIELDS: &[&str] = &[
    // Session
    "client_id",
    "login",
    "conn",
    "params",
    // Connection
    "state",
    "version",
    "keep_alive",
    "last_activity",
    "will",
    "connect_expiry_was_zero",
    "problem_information",
    "packet_bytes_max",
    "auth_method",
    "auth",
    "origin",
    "password_valid",
];

/// Methods that change what they are called on (a field written through them).
const MUTATING_CALLS: &[&str] = &[
    "as_mut",
    "take",
    "insert",
    "push",
    "push_back",
    "push_front",
    "pop",
    "pop_front",
    "pop_back",
    "remove",
    "clear",
    "retain",
    "get_mut",
    "iter_mut",
    "extend",
    "replace",
    "get_or_insert",
    "get_or_insert_with",
    "drain",
    "append",
    "truncate",
];

/// Lines (1-based) that write a guarded field of something other than `self`:
/// `x.field = …` (and `op=`), `x.field.part = …`, `&mut x.field`, `x.field.take()` and the
/// other calls in [`MUTATING_CALLS`]; `x` may be a name or an expression (`…get_mut(id)?`).
fn guarded_writes(source: &str) -> Vec<usize> {
    let mut found = Vec::new();
    for (index, line) in source.lines().enumerate() {
        // The scan knows names, not types: a field of the same name on another type (a
        // `Connect` packet's `will`) is marked as such on its line.
        if line.contains("house-rules: another type") {
            continue;
        }
        let code = code_of(line);
        for field in GUARDED_FIELDS {
            let needle = format!(".{field}");
            for (at, _) in code.match_indices(&needle) {
                let before = &code[..at];
                let owner: String = before
                    .chars()
                    .rev()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let expression = owner.is_empty() && before.ends_with([')', ']', '?']);
                if (owner.is_empty() && !expression) || owner == "fles" {
                    continue; // `self.field` (reversed), or not a field access
                }
                let after = &code[at + needle.len()..];
                if after.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
                    continue; // a longer name (`.state_x`)
                }
                let borrowed = before
                    .trim_end_matches(|c: char| c.is_alphanumeric() || "_.()?[]".contains(c))
                    .ends_with("&mut ");
                if borrowed || writes_after(after) {
                    found.push(index + 1);
                }
            }
        }
    }
    found
}

/// Whether what follows `x.field` writes it: an assignment (to it or a part of it) or a
/// mutating call on it or a part of it.
fn writes_after(mut rest: &str) -> bool {
    loop {
        rest = rest.trim_start();
        if let Some(after_dot) = rest.strip_prefix('.') {
            let name: String = after_dot
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let call = after_dot[name.len()..].trim_start().starts_with('(');
            if call {
                return MUTATING_CALLS.contains(&name.as_str());
            }
            rest = &after_dot[name.len()..];
            continue;
        }
        let assigns = rest.starts_with('=') && !rest.starts_with("==") && !rest.starts_with("=>");
        let compound = ["+=", "-=", "*=", "/=", "|=", "&=", "^=", "%=", "<<=", ">>="]
            .iter()
            .any(|op| rest.starts_with(op));
        return assigns || compound;
    }
}

#[test]
fn session_and_connection_fields_are_written_only_by_their_own_files() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("broker/src/core");
    let mut files = Vec::new();
    rust_files(&core, &mut files);
    files.retain(|f| {
        let name = f.file_name().unwrap().to_str().unwrap();
        // The owners, and the tests (which set up states directly).
        !matches!(name, "session.rs" | "connection.rs" | "tests.rs")
            && !f.to_string_lossy().contains("/tests/")
    });
    assert!(files.len() > 10, "found only {} core files", files.len());
    let offences = offences(&files, guarded_writes);
    assert!(
        offences.is_empty(),
        "a Session or Connection field written outside its own file: {offences:#?}"
    );
}

/// The checker itself: it must flag writes through any binding and pass reads, comparisons
/// and `self`'s own fields.
#[test]
fn the_field_rule_catches_a_write() {
    assert_eq!(guarded_writes("    session.conn = None;"), vec![1]);
    assert_eq!(guarded_writes("x;\n    c.login.user = None;"), vec![2]);
    assert_eq!(guarded_writes("    connection.keep_alive += d;"), vec![1]);
    assert!(guarded_writes("    self.state = 1;").is_empty());
    assert!(guarded_writes("    if connection.version == v {").is_empty());
    assert!(guarded_writes("    let v = connection.version; // c.state = x").is_empty());
    assert!(guarded_writes("    match c.state { X => 1 }").is_empty());
    assert!(guarded_writes("    c.states = 1;").is_empty());
    assert_eq!(guarded_writes("    let a = c.auth.as_mut();"), vec![1]);
    assert_eq!(
        guarded_writes("    std::mem::replace(&mut c.state, s);"),
        vec![1]
    );
    assert_eq!(
        guarded_writes("    conns.get_mut(&id).unwrap().state = s;"),
        vec![1]
    );
    assert_eq!(guarded_writes("    c.flags |= 1; c.version |= 1;"), vec![1]);
    assert_eq!(guarded_writes("    s.login.user.take();"), vec![1]);
    assert!(guarded_writes("    let u = s.login.user.as_ref();").is_empty());
    assert!(guarded_writes("    if c.auth.is_some() {").is_empty());
    assert!(guarded_writes("    p.will.take(); // house-rules: another type").is_empty());
}
