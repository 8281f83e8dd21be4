//! UI tests of the macros: what compiles, and the errors of what does not.
//!
//! Every case under `tests/ui/{pass,pass_rmcp,fail}/` becomes a binary of one generated crate
//! (in `target/macros-ui/`), whose `mcp-oauth` has the features `macros` and `rmcp`, checked
//! with a single `cargo check --keep-going --message-format=json`: the dependencies are
//! checked once for all cases, not once per case. The cases under
//! `tests/ui/{pass_no_rmcp,fail_no_rmcp}/` are the binaries of a second generated crate (in
//! `target/macros-ui/no-rmcp/`, sharing the target directory), which depends on rmcp but on
//! `mcp-oauth` with its default features only, so without `rmcp`: what a user who forgot the
//! feature sees. One more `cargo check`, for all of them. (Two crates, because features
//! unify within one build.)
//!
//! A `pass` case must check without errors. A `fail` case must fail with exactly the
//! errors its `.stderr` file lists, compared as (message, line) pairs read from rustc's JSON
//! diagnostics — not the rendered text, whose decoration (gutters, notes, colours) changes
//! between compiler versions. So the test runs, and means the same, on any stable rustc from
//! the MSRV on; no toolchain pin, no skip by version.
//!
//! An error raised inside rmcp's own macros (`#[tool_router]`, `#[tool]`, …: a follow-on of
//! ours, e.g. rmcp looking for its extractor trait on `Auth` when mcp-oauth's `rmcp` feature
//! is off) is compared by its line only: its wording is rmcp's and rustc's (which shortens
//! long types differently from one version to the next), not ours. Where it stands in the
//! list is still compared, so a case shows that the error naming the fix comes first.
//!
//! The `.stderr` files keep rustc's human rendering, for reading; when a macro's message
//! changes on purpose, edit the `error: …` line (and the ` --> file:line:col` below it) or
//! regenerate the file with `MACROS_UI=overwrite cargo test --all-features --test macros_ui`
//! and review the diff.
#![cfg(feature = "macros")]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// One UI case: a file and the binary it becomes.
struct Case {
    bin: String,
    path: PathBuf,
    expect_fail: bool,
    /// Whether the generated crate's `mcp-oauth` has the `rmcp` feature.
    rmcp_feature: bool,
}

/// The case directories: (name, expect failure, with mcp-oauth's `rmcp` feature).
const DIRS: [(&str, bool, bool); 5] = [
    ("pass", false, true),
    ("pass_rmcp", false, true),
    ("fail", true, true),
    ("pass_no_rmcp", false, false),
    ("fail_no_rmcp", true, false),
];

/// An error as the comparison sees it: its message and the line of its primary span.
type Diag = (String, usize);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (dir, expect_fail, rmcp_feature) in DIRS {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("tests/ui").join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .collect();
        files.sort();
        for path in files {
            let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
            out.push(Case {
                bin: format!("{dir}_{stem}"),
                path,
                expect_fail,
                rmcp_feature,
            });
        }
    }
    assert!(
        out.iter().filter(|c| c.expect_fail).count() >= 10,
        "the fail cases went missing"
    );
    assert!(
        out.iter()
            .filter(|c| c.expect_fail && !c.rmcp_feature)
            .count()
            >= 2,
        "the fail_no_rmcp cases went missing"
    );
    out
}

/// What stands for the message of an error raised inside one of rmcp's macros.
const RMCP_ERROR: &str = "(an error raised in rmcp's macros: its wording is not compared)";

/// rmcp's attribute macros, by the last segment of their path.
const RMCP_MACROS: [&str; 5] = [
    "tool",
    "tool_router",
    "tool_handler",
    "prompt_router",
    "prompt_handler",
];

/// Whether a macro name (`tool_router`, `rmcp::tool_router`, `#[tool_router]`) is rmcp's.
fn is_rmcp_macro(name: &str) -> bool {
    let name = name.trim_start_matches("#[").trim_end_matches(']');
    RMCP_MACROS.contains(&name.rsplit("::").next().unwrap_or(name))
}

/// The errors a `.stderr` file lists: each `error: msg` / `error[E…]: msg` line with the
/// line number of the ` --> file:line:col` after it. The summary ("aborting due to…") is not
/// a diagnostic of the case and is left out. An error whose rendering says it "originates in
/// the attribute macro" of rmcp's gets [`RMCP_ERROR`] for its message.
fn expected(stderr: &str) -> Vec<Diag> {
    let lines: Vec<&str> = stderr.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix("error") else {
            continue;
        };
        let msg = match rest.strip_prefix(": ") {
            Some(m) => m,
            None => match rest.split_once("]: ") {
                Some((code, m)) if code.starts_with("[E") => m,
                _ => continue,
            },
        };
        if msg.starts_with("aborting due to") {
            continue;
        }
        let at = lines[i + 1..]
            .iter()
            .find_map(|l| l.trim_start().strip_prefix("--> "))
            .unwrap_or_else(|| panic!("no location after {line:?}"));
        let line_no = at
            .rsplit(':')
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad location {at:?}"));
        // The error's own lines: up to the next one.
        let block = lines[i + 1..]
            .iter()
            .take_while(|l| !l.starts_with("error"));
        let in_rmcp = block
            .filter_map(|l| l.split_once("originates in the attribute macro `"))
            .any(|(_, rest)| rest.split('`').next().is_some_and(is_rmcp_macro));
        let msg = if in_rmcp { RMCP_ERROR } else { msg };
        out.push((msg.to_owned(), line_no));
    }
    out
}

/// The generated crate of the cases with (or without) mcp-oauth's `rmcp` feature.
fn manifest(cases: &[&Case], rmcp_feature: bool) -> String {
    let root = root();
    let (name, features) = if rmcp_feature {
        ("mcp-oauth-macros-ui", r#"["macros", "rmcp"]"#)
    } else {
        // The default features (`macros` among them): a user who forgot `rmcp`.
        ("mcp-oauth-macros-ui-no-rmcp", "[]")
    };
    let mut m = format!(
        r#"[package]
name = "{name}"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
mcp-oauth = {{ path = {root:?}, features = {features} }}
rmcp = {{ version = "3.11", features = ["server", "macros", "schemars"] }}
axum = "0.8.9"
serde = {{ version = "1", features = ["derive"] }}
schemars = "1"
tokio = {{ version = "1", features = ["macros", "rt-multi-thread"] }}

[workspace]
"#,
        root = root.display().to_string()
    );
    for c in cases {
        let _ = write!(
            m,
            "\n[[bin]]\nname = {:?}\npath = {:?}\ntest = false\ndoc = false\n",
            c.bin,
            c.path.display().to_string()
        );
    }
    m
}

/// Runs one `cargo check` per generated crate (two in all) over every case; the errors of
/// each binary.
fn check_all(cases: &[Case]) -> BTreeMap<String, Vec<(Diag, String)>> {
    let mut by_bin = BTreeMap::new();
    for rmcp_feature in [true, false] {
        let these: Vec<&Case> = cases
            .iter()
            .filter(|c| c.rmcp_feature == rmcp_feature)
            .collect();
        by_bin.extend(check_crate(&these, rmcp_feature));
    }
    by_bin
}

/// Runs one `cargo check` over the cases of one generated crate; the errors of each binary.
fn check_crate(cases: &[&Case], rmcp_feature: bool) -> BTreeMap<String, Vec<(Diag, String)>> {
    let base = root().join("target/macros-ui");
    let dir = if rmcp_feature {
        base.clone()
    } else {
        base.join("no-rmcp")
    };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Cargo.toml"), manifest(cases, rmcp_feature)).unwrap();
    // The project's lock file: the cases build against the versions the crate is tested with.
    std::fs::copy(root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .current_dir(&dir)
        .args(["check", "--bins", "--keep-going", "--message-format=json"])
        // Its own target directory: the parent `cargo test` may hold the lock of the main
        // one, and different features would evict its artifacts. Both generated crates share
        // it, so what they have in common is checked once.
        .env("CARGO_TARGET_DIR", base.join("target"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .output()
        .expect("run cargo check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut by_bin: BTreeMap<String, Vec<(Diag, String)>> = BTreeMap::new();
    let mut checked = 0usize;
    for line in stdout.lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let bin = msg["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let is_case = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "bin"))
            && msg["package_id"]
                .as_str()
                .is_some_and(|p| p.contains("mcp-oauth-macros-ui"));
        match msg["reason"].as_str() {
            Some("compiler-artifact") if is_case => checked += 1,
            Some("compiler-message") if is_case => {
                let d = &msg["message"];
                if d["level"] != "error" {
                    continue;
                }
                let text = d["message"].as_str().unwrap_or_default().to_owned();
                if text.starts_with("aborting due to") {
                    continue;
                }
                let primary = d["spans"]
                    .as_array()
                    .and_then(|s| s.iter().find(|s| s["is_primary"] == true));
                let line_no = primary.and_then(|s| s["line_start"].as_u64()).unwrap_or(0) as usize;
                // The macros the primary span was expanded from, innermost first.
                let mut expansion = primary.map(|s| &s["expansion"]);
                let mut in_rmcp = false;
                while let Some(e) = expansion.filter(|e| e.is_object()) {
                    in_rmcp |= e["macro_decl_name"].as_str().is_some_and(is_rmcp_macro);
                    expansion = Some(&e["span"]["expansion"]);
                }
                let text = if in_rmcp { RMCP_ERROR.to_owned() } else { text };
                let rendered = d["rendered"].as_str().unwrap_or_default().to_owned();
                by_bin
                    .entry(bin)
                    .or_default()
                    .push(((text, line_no), rendered));
            }
            _ => {}
        }
    }
    let failed_bins = by_bin.len();
    assert!(
        checked + failed_bins >= cases.len(),
        "cargo check did not get to every case ({checked} checked, {failed_bins} failed, {} \
         cases):\n{}",
        cases.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    by_bin
}

#[test]
fn ui() {
    let cases = cases();
    let results = check_all(&cases);
    let overwrite = std::env::var("MACROS_UI").is_ok_and(|v| v == "overwrite");
    let mut problems = String::new();
    for case in &cases {
        let got = results.get(&case.bin).cloned().unwrap_or_default();
        let shown = case.path.strip_prefix(root()).unwrap_or(&case.path);
        if !case.expect_fail {
            if !got.is_empty() {
                let _ = writeln!(problems, "\n{} should compile, but:", shown.display());
                for (_, rendered) in &got {
                    let _ = writeln!(problems, "{rendered}");
                }
            }
            continue;
        }
        let stderr_path = case.path.with_extension("stderr");
        if overwrite {
            let mut text: String = got
                .iter()
                .map(|(_, r)| r.trim_end())
                .collect::<Vec<_>>()
                .join("\n\n");
            text.push('\n');
            std::fs::write(&stderr_path, stable_rendering(&text)).unwrap();
            continue;
        }
        let want = expected(
            &std::fs::read_to_string(&stderr_path)
                .unwrap_or_else(|e| panic!("{}: {e}", stderr_path.display())),
        );
        let have: Vec<Diag> = got.iter().map(|(d, _)| d.clone()).collect();
        if want.is_empty() {
            let _ = writeln!(
                problems,
                "\n{}: the .stderr lists no error",
                shown.display()
            );
        }
        if have != want {
            let _ = writeln!(problems, "\n{}: errors differ", shown.display());
            let _ = writeln!(problems, "  expected (message, line):");
            for d in &want {
                let _ = writeln!(problems, "    {d:?}");
            }
            let _ = writeln!(problems, "  got:");
            for ((m, l), _) in &got {
                let _ = writeln!(problems, "    {:?}", (m, l));
            }
        }
    }
    assert!(problems.is_empty(), "macro UI cases:{problems}");
}

/// A rendering with what changes from one build or machine to the next taken out: the
/// project's root, the cargo home, the names of rustc's long-type files.
fn stable_rendering(text: &str) -> String {
    let text = text.replace(&format!("{}/", root().display()), "");
    let mut out = String::new();
    for line in text.lines() {
        let line = match line.find("/registry/src/") {
            // ` --> /home/…/.cargo/registry/src/index…/rmcp-3.11.0/src/…`: from the crate on.
            Some(at) => {
                let (head, rest) = line.split_at(at);
                let after_index = rest["/registry/src/".len()..]
                    .split_once('/')
                    .map_or(rest, |(_, after)| after);
                let lead = head.rsplit_once(' ').map_or("", |(lead, _)| lead);
                format!("{lead} $CARGO_REGISTRY/{after_index}")
            }
            None => match line.find("has been written to '") {
                Some(at) => format!("{}has been written to '…'", &line[..at]),
                None => line.to_owned(),
            },
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Errors of rmcp's macros are told apart by the macro's name, however it is spelled.
#[test]
fn rmcp_macros_are_recognised() {
    for name in [
        "tool_router",
        "#[tool_router]",
        "rmcp::tool",
        "#[rmcp::tool_handler]",
    ] {
        assert!(is_rmcp_macro(name), "{name}");
    }
    for name in [
        "requires_scopes",
        "#[scoped_tools]",
        "mcp_oauth::public_tool",
        "toolbox",
    ] {
        assert!(!is_rmcp_macro(name), "{name}");
    }
}

/// The `.stderr` reader itself: codes, multi-digit lines and the summary.
#[test]
fn stderr_files_are_read_as_message_and_line() {
    let text = "error: a message: with colons\n --> tests/ui/fail/x.rs:4:48\n  |\n\n\
                error[E0277]: the trait bound\n  --> tests/ui/fail/x.rs:12:3\n\n\
                error: aborting due to 2 previous errors\n";
    assert_eq!(
        expected(text),
        vec![
            ("a message: with colons".to_owned(), 4),
            ("the trait bound".to_owned(), 12)
        ]
    );
    // An error that originates in one of rmcp's macros stands for its line only; ours keep
    // their message.
    let text = "error[E0277]: enable the feature\n --> tests/ui/x.rs:15:34\n   = note: \
                this error originates in the attribute macro `requires_scopes` (in Nightly)\n\n\
                error[E0277]: the trait bound `(Tool, fn(...))`\n   --> tests/ui/x.rs:12:1\n\
                   = note: this error originates in the attribute macro `tool_router` (in \
                Nightly builds)\n";
    assert_eq!(
        expected(text),
        vec![
            ("enable the feature".to_owned(), 15),
            (RMCP_ERROR.to_owned(), 12)
        ]
    );
}
