//! The operator docs against what they describe, so that they cannot silently fall behind: every
//! key of the shipped configs is documented, every metric and alert has its entry, every runbook
//! link of the alert rules lands on a heading, and every relative link points at a file.

use std::collections::BTreeSet;

use crate::support::{exported_metrics, read, repo};

/// The keys of a shipped config, including the ones only shown commented out (`# tls:`), but
/// not the words of the header comment.
fn config_keys(path: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let text = read(path);
    let body = text
        .lines()
        .skip_while(|line| line.starts_with('#') || line.trim().is_empty());
    for line in body {
        let line = line.trim_start().trim_start_matches('#').trim_start();
        let line = line.strip_prefix("- ").unwrap_or(line);
        let Some((key, _)) = line.split_once(':') else {
            continue;
        };
        if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            keys.insert(key.to_owned());
        }
    }
    keys
}

#[test]
fn every_config_key_is_documented() {
    let doc = read("docs/configure.md");
    for path in ["config/whimp.yaml", "config/whomp.yaml"] {
        let keys = config_keys(path);
        assert!(keys.len() > 20, "only {} keys found in {path}", keys.len());
        for key in keys {
            assert!(
                doc.contains(&format!("`{key}`"))
                    || doc.contains(&format!("`{key}."))
                    || doc.contains(&format!(".{key}`")),
                "docs/configure.md does not document `{key}` of {path}"
            );
        }
    }
}

#[test]
fn every_metric_is_documented() {
    let doc = read("docs/operate.md");
    for metric in exported_metrics() {
        if ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| metric.ends_with(s))
        {
            continue;
        }
        assert!(
            doc.contains(&format!("`{metric}`")),
            "docs/operate.md does not document {metric}"
        );
    }
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces turned into `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown file's headings.
fn anchors(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

#[test]
fn every_alert_runbook_lands_on_a_heading() {
    let operate = read("docs/operate.md");
    let headings = anchors(&operate);
    let rules = read("deploy/prometheus/whimp-whomp.rules.yml");
    let mut alert = None;
    let mut checked = 0;
    for line in rules.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            alert = Some(name.to_owned());
            assert!(
                operate.contains(name),
                "docs/operate.md does not mention the alert {name}"
            );
        }
        if let Some(link) = line.strip_prefix("runbook: ") {
            let name = alert.clone().unwrap_or_default();
            let target = link
                .strip_prefix("docs/operate.md#")
                .unwrap_or_else(|| panic!("{name}: runbook {link} is not in docs/operate.md"));
            assert!(
                headings.contains(target),
                "{name}: runbook anchor #{target} is not a heading of docs/operate.md"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} runbooks found");
}

#[test]
fn relative_links_resolve() {
    let mut files: Vec<String> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| format!("docs/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|name| name.ends_with(".md"))
        .collect();
    files.push("deploy/README.md".to_owned());
    for file in files {
        let text = read(&file);
        let dir = std::path::Path::new(&file).parent().unwrap();
        for link in text.split("](").skip(1) {
            let Some(end) = link.find(')') else { continue };
            let link = &link[..end];
            if link.starts_with("http") || link.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = link.split_once('#').unwrap_or((link, ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                dir.join(path).to_string_lossy().into_owned()
            };
            let full = repo().join(&target);
            assert!(full.exists(), "{file}: link {link} points at nothing");
            if !fragment.is_empty() {
                let text = read(&target);
                assert!(
                    anchors(&text).contains(fragment),
                    "{file}: link {link}: no heading #{fragment} in {target}"
                );
            }
        }
    }
}

#[test]
fn anchors_follow_github() {
    assert_eq!(anchor(" WhimpDown / WhompDown"), "whimpdown--whompdown");
    assert_eq!(anchor("Spool layout"), "spool-layout");
    assert_eq!(anchor("2-3 on FreeBSD"), "2-3-on-freebsd");
}
