//! Finding the repository, the built binaries and the external tools, and running commands with
//! their output shown when they fail.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Reads a file of the repository, by its path from the root.
pub(crate) fn read(path: &str) -> String {
    let full = repo().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("failed to read {path}: {e}"))
}

/// A daemon binary built in the same target directory as this test (`target/debug/deps/checks-…`
/// → `target/debug/whimp`), or the path in `WHIMP_BIN` / `WHOMP_BIN`.
pub(crate) fn daemon(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_ascii_uppercase());
    let path = match std::env::var_os(&var) {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe().expect("the test binary's own path");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("the test binary lives in target/<profile>/deps");
            profile_dir.join(name)
        }
    };
    assert!(
        path.is_file(),
        "{} not found: build it first (`cargo build --bin {name}`; `cargo test --workspace` \
         does) or point {var} at it",
        path.display()
    );
    path
}

/// The demo receiver built from examples/demo_receiver.rs by this package.
pub(crate) fn demo_receiver() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_demo-receiver"))
}

/// Whether the tests run in CI, where a missing tool is a failure rather than a skip.
pub(crate) fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The external tool `name` from PATH. Missing: fails under `CI=true`, else prints SKIPPED with
/// the test's name and returns `None`.
pub(crate) fn tool(name: &str, package: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            !in_ci(),
            "{name} is not installed (Debian package {package}; .ci/setup/deploy.sh installs it)"
        );
        eprintln!("SKIPPED {test}: {name} is not installed (Debian package {package})");
    }
    found
}

/// Runs a command and returns its output, failing with everything it printed if it did not
/// exit 0.
pub(crate) fn run_ok(command: &mut Command) -> Output {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs a command and returns its output, whatever its status.
pub(crate) fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("failed to run {command:?}: {e}"))
}

/// Everything a command printed, stdout then stderr.
pub(crate) fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The metric names the daemons export: every string constant in crates/telemetry/src/names.rs
/// that starts with `whimp_` or `whomp_`, with the series names of the histograms.
pub(crate) fn exported_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    // Item by item rather than line by line: rustfmt wraps a long one after its `=`.
    for item in read("crates/telemetry/src/names.rs").split(';') {
        let Some((_, rest)) = item.split_once("pub const ") else {
            continue;
        };
        let Some((_, value)) = rest.split_once('=') else {
            continue;
        };
        let name = value.trim().trim_matches('"');
        if name.starts_with("whimp_") || name.starts_with("whomp_") {
            let gauge = name.contains("oldest") || name.contains("timestamp");
            if name.ends_with("_seconds") && !gauge {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            names.insert(name.to_owned());
        }
    }
    names
}

/// The metric names a PromQL expression refers to: identifiers outside label matchers, range
/// brackets and strings that are not function calls, keywords, or labels of a `by (...)` list.
pub(crate) fn metrics_in(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "and",
        "or",
        "unless",
        "on",
        "ignoring",
        "offset",
        "bool",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let mut names = BTreeSet::new();
    let mut chars = expr.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        let closing = match c {
            '"' => Some('"'),
            '{' => Some('}'),
            '[' => Some(']'),
            _ => None,
        };
        if let Some(closing) = closing {
            // Label matchers, ranges and strings hold no metric names.
            for (_, inner) in chars.by_ref() {
                if inner == closing {
                    break;
                }
            }
            continue;
        }
        if !(c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let mut end = start + c.len_utf8();
        while let Some(&(at, next)) = chars.peek() {
            if next.is_ascii_alphanumeric() || next == '_' || next == ':' || next == '.' {
                end = at + next.len_utf8();
                chars.next();
            } else {
                break;
            }
        }
        let word = &expr[start..end];
        let is_call = expr[end..].trim_start().starts_with('(');
        let is_name = !word.starts_with(|c: char| c.is_ascii_digit() || c == '$');
        if is_name && !is_call && !KEYWORDS.contains(&word) && !is_label_list(expr, start) {
            names.insert(word.to_owned());
        }
    }
    names
}

/// Whether the word starting at `start` sits in the label list of `by (...)`, `without (...)`,
/// `on (...)` or `ignoring (...)`.
fn is_label_list(expr: &str, start: usize) -> bool {
    let before = &expr[..start];
    let Some(open) = before.rfind('(') else {
        return false;
    };
    if before[open..].contains(')') {
        return false;
    }
    let head = before[..open].trim_end();
    ["by", "without", "on", "ignoring"]
        .iter()
        .any(|keyword| head.ends_with(keyword))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(expr: &str, expected: &[&str]) {
        let got: Vec<String> = metrics_in(expr).into_iter().collect();
        assert_eq!(got, expected, "in {expr}");
    }

    #[test]
    fn finds_metric_names_in_promql() {
        check(
            r#"sum by (job, instance) (rate(whimp_requests_total{code="503"}[5m])) > 0"#,
            &["whimp_requests_total"],
        );
        check(
            r#"histogram_quantile(0.5, sum by (le) (rate(whomp_delivery_duration_seconds_bucket{job="whomp", instance=~"$instance"}[$__rate_interval])))"#,
            &["whomp_delivery_duration_seconds_bucket"],
        );
        check(
            "up{job=\"whimp\"} == 0 and absent(up) or node_filesystem_avail_bytes / x_total",
            &["node_filesystem_avail_bytes", "up", "x_total"],
        );
        check("a - a offset 30m", &["a"]);
    }

    #[test]
    fn exported_metrics_include_histogram_series() {
        let names = exported_metrics();
        assert!(names.contains("whimp_requests_total"));
        assert!(names.contains("whomp_delivery_duration_seconds_bucket"));
        assert!(!names.contains("unknown"));
    }
}
