//! The files in deploy/, checked with the tools that will read them on a real host: systemd's
//! own verifier and security analysis, promtool for the Prometheus config, rules and the rules'
//! unit tests, `sh -n` for the rc.d scripts, the PromQL of the Grafana dashboard, and
//! `nats-server -t` for the cluster mode's NATS configs.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::support::{
    daemon, exported_metrics, in_ci, metrics_in, printed, read, repo, run, run_ok, tool,
};

/// Metrics the alert rules use that the daemons do not export yet; proposed in docs/operate.md.
/// The dashboard may not use them.
const PROPOSED: &[&str] = &[];

/// Metrics from elsewhere that the rules and the dashboard may use: Prometheus' own `up`, the
/// process collector, and node_exporter's file system metrics.
const FOREIGN: &[&str] = &[
    "up",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "node_filesystem_avail_bytes",
    "node_filesystem_size_bytes",
    "node_filesystem_readonly",
];

/// A unit file with its `/usr/local/bin/<daemon>` replaced by the binary built here, because
/// `systemd-analyze verify` insists that the commands exist.
fn unit_with_built_binary(dir: &Path, name: &str) -> std::path::PathBuf {
    let text = read(&format!("deploy/systemd/{name}.service"));
    let binary = match name {
        "nats-server" => tool("nats-server", "nats-server", "units with nats-server").unwrap(),
        _ => daemon(name),
    };
    let text = text.replace(
        &format!("/usr/local/bin/{name}"),
        &binary.display().to_string(),
    );
    let path = dir.join(format!("{name}.service"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The units to verify: the daemons', and nats-server's where it is installed (CI installs it,
/// .ci/setup/nats.sh).
fn units() -> Vec<&'static str> {
    let mut units = vec!["whimp", "whomp"];
    if tool("nats-server", "nats-server", "the nats-server unit").is_some() {
        units.push("nats-server");
    }
    units
}

/// Each node's NATS config of the 3-node cluster in deploy/nats/ is valid for the server
/// (`nats-server -t`: unknown keys and parse errors fail), routes to all three nodes, and takes
/// the daemons' largest message.
#[test]
fn nats_cluster_configs_check() {
    let Some(nats) = tool("nats-server", "nats-server", "nats_cluster_configs_check") else {
        return;
    };
    let shared = read("deploy/nats/cluster.conf");
    for needed in [
        "max_payload: 16MB",
        "jetstream {",
        "store_dir: /var/lib/nats",
    ] {
        assert!(shared.contains(needed), "cluster.conf lacks {needed}");
    }
    for i in 1..=3 {
        assert!(shared.contains(&format!("nats-route://10.0.0.{i}:6222")));
        let node = repo().join(format!("deploy/nats/n{i}.conf"));
        assert!(read(&format!("deploy/nats/n{i}.conf")).contains(&format!("server_name: n{i}")));
        run_ok(Command::new(&nats).arg("-t").arg("-c").arg(&node));
    }
}

#[test]
fn systemd_units_verify_cleanly() {
    let Some(analyze) = tool("systemd-analyze", "systemd", "systemd_units_verify_cleanly") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for name in units() {
        let unit = unit_with_built_binary(dir.path(), name);
        let output = run_ok(Command::new(&analyze).arg("verify").arg(&unit));
        // systemd-analyze exits 0 on unknown keys and bad values; it only warns.
        assert_eq!(printed(&output), "", "{name}.service has warnings");
    }
}

#[test]
fn systemd_units_are_hardened() {
    let Some(analyze) = tool("systemd-analyze", "systemd", "systemd_units_are_hardened") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for name in units() {
        let unit = unit_with_built_binary(dir.path(), name);
        // systemd shows the exposure as 0.0 (locked down) .. 10.0 (unprotected) but compares
        // the threshold in tenths: 20 is 2.0. Both units score about 1.5.
        let output = run(Command::new(&analyze)
            .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
            .arg(&unit));
        assert!(
            output.status.success(),
            "{name}.service is exposed above 2.0:\n{}",
            printed(&output)
        );
    }
}

#[test]
fn systemd_units_say_what_the_design_asks() {
    for name in ["whimp", "whomp"] {
        let text = read(&format!("deploy/systemd/{name}.service"));
        let lines: BTreeSet<&str> = text.lines().map(str::trim).collect();
        let config = format!("/etc/{name}/{name}.yaml");
        for wanted in [
            format!("User={name}"),
            format!("ExecStart=/usr/local/bin/{name} --config {config}"),
            format!("ExecReload=/usr/local/bin/{name} check-config --config {config}"),
            "ExecReload=/bin/kill -HUP $MAINPID".to_owned(),
            "Restart=on-failure".to_owned(),
            "ProtectSystem=strict".to_owned(),
            format!("ReadWritePaths=/var/spool/{name}"),
            "NoNewPrivileges=yes".to_owned(),
            "PrivateTmp=yes".to_owned(),
            "ProtectHome=yes".to_owned(),
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX".to_owned(),
            "SystemCallFilter=@system-service".to_owned(),
        ] {
            assert!(
                lines.contains(wanted.as_str()),
                "{name}.service lacks {wanted}"
            );
        }
        let capabilities: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("AmbientCapabilities=") || l.starts_with("CapabilityBoundingSet=")
            })
            .collect();
        if name == "whimp" {
            assert_eq!(
                capabilities,
                [
                    "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                    "CapabilityBoundingSet=CAP_NET_BIND_SERVICE"
                ]
            );
        } else {
            assert_eq!(capabilities, ["CapabilityBoundingSet="]);
        }
    }
}

#[test]
fn sysusers_and_tmpfiles_create_users_and_directories() {
    let test = "sysusers_and_tmpfiles_create_users_and_directories";
    let (Some(sysusers), Some(tmpfiles)) = (
        tool("systemd-sysusers", "systemd", test),
        tool("systemd-tmpfiles", "systemd", test),
    ) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let conf = |name: &str| repo().join("deploy/systemd").join(name);
    let output = run_ok(
        Command::new(sysusers)
            .arg(format!("--root={}", root.path().display()))
            .arg(conf("whimp-whomp.sysusers.conf")),
    );
    assert!(
        !printed(&output).contains("ignoring"),
        "{}",
        printed(&output)
    );
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    for name in ["whimp", "whomp"] {
        assert!(
            passwd.contains(&format!(":/var/spool/{name}:/usr/sbin/nologin\n")),
            "{passwd}"
        );
    }
    // The user nats-server.service runs as (User=nats), home in its store.
    let nats = passwd.lines().find(|l| l.starts_with("nats:"));
    assert!(
        nats.is_some_and(|l| l.ends_with(":/var/lib/nats:/usr/sbin/nologin")),
        "{passwd}"
    );
    run_ok(
        Command::new(tmpfiles)
            .arg(format!("--root={}", root.path().display()))
            .arg("--create")
            .arg(conf("whimp-whomp.tmpfiles.conf")),
    );
    for dir in [
        "var/spool/whimp",
        "var/spool/whomp",
        "etc/whimp",
        "etc/whomp",
        "var/lib/nats",
        "etc/nats",
    ] {
        assert!(root.path().join(dir).is_dir(), "{dir} was not created");
    }
}

#[test]
fn prometheus_config_and_rules_check() {
    let Some(promtool) = tool(
        "promtool",
        "prometheus",
        "prometheus_config_and_rules_check",
    ) else {
        return;
    };
    let dir = repo().join("deploy/prometheus");
    let output = run_ok(
        Command::new(&promtool)
            .args(["check", "config", "prometheus.yml"])
            .current_dir(&dir),
    );
    assert!(
        printed(&output).contains("1 rule files found"),
        "{}",
        printed(&output)
    );
    run_ok(
        Command::new(&promtool)
            .args(["check", "rules", "whimp-whomp.rules.yml"])
            .current_dir(&dir),
    );
    // The rules' own unit tests: each alert fires on the series it is meant for.
    run_ok(
        Command::new(&promtool)
            .args(["test", "rules", "whimp-whomp.rules.test.yml"])
            .current_dir(&dir),
    );
}

/// The alert names of the rules file.
fn alerts() -> Vec<String> {
    read("deploy/prometheus/whimp-whomp.rules.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_alert_has_a_test_that_fires_it() {
    let tests = read("deploy/prometheus/whimp-whomp.rules.test.yml");
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    let fired: BTreeSet<&str> = lines
        .windows(3)
        .filter(|w| w[1] == "exp_alerts:" && w[2].starts_with("- exp_labels:"))
        .filter_map(|w| w[0].strip_prefix("alertname: "))
        .collect();
    let alerts = alerts();
    assert!(alerts.len() >= 10, "only {} alerts found", alerts.len());
    for alert in &alerts {
        assert!(fired.contains(alert.as_str()), "no test fires {alert}");
    }
}

/// The PromQL expressions of the rules file: the `expr:` values, including block scalars.
fn rule_exprs() -> Vec<String> {
    let text = read("deploy/prometheus/whimp-whomp.rules.yml");
    let mut exprs = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(value) = line.trim().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value == "|" {
            let indent = line.len() - line.trim_start().len();
            let mut block = String::new();
            while let Some(next) = lines.peek() {
                if next.len() - next.trim_start().len() <= indent {
                    break;
                }
                block.push_str(next.trim());
                block.push('\n');
                lines.next();
            }
            exprs.push(block);
        } else {
            exprs.push(value.to_owned());
        }
    }
    exprs
}

#[test]
fn alert_rules_query_exported_metrics() {
    let exported = exported_metrics();
    let exprs = rule_exprs();
    assert_eq!(exprs.len(), alerts().len());
    for expr in exprs {
        for metric in metrics_in(&expr) {
            assert!(
                exported.contains(&metric)
                    || PROPOSED.contains(&metric.as_str())
                    || FOREIGN.contains(&metric.as_str()),
                "alert rule queries {metric}, which crates/telemetry/src/names.rs does not \
                 define:\n{expr}"
            );
        }
    }
}

/// Every `expr` of every panel of the dashboard.
fn dashboard_exprs() -> Vec<String> {
    let text = read("deploy/grafana/whimp-whomp.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).expect("the dashboard is valid JSON");
    let panels = dashboard["panels"].as_array().expect("a panels array");
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in panels {
        let id = panel["id"].as_u64().expect("every panel has a numeric id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("a panel has targets");
        assert!(!targets.is_empty(), "panel {id} has no queries");
        for target in targets {
            let expr = target["expr"].as_str().expect("a target has an expr");
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "panel {id} does not use the datasource variable"
            );
            exprs.push(expr.to_owned());
        }
    }
    exprs
}

#[test]
fn dashboard_queries_exported_metrics() {
    let exported = exported_metrics();
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 20, "only {} queries", exprs.len());
    let mut used = BTreeSet::new();
    for expr in &exprs {
        for metric in metrics_in(expr) {
            assert!(
                exported.contains(&metric) || FOREIGN.contains(&metric.as_str()),
                "the dashboard queries {metric}, which crates/telemetry/src/names.rs does not \
                 define:\n{expr}"
            );
            used.insert(metric);
        }
    }
    // Every DESIGN metric has a panel (histograms through their series).
    for metric in &exported {
        let shown = used.contains(metric)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| used.contains(&format!("{metric}{s}")));
        assert!(
            shown || metric.ends_with("_sum") || metric.ends_with("_count"),
            "no dashboard panel shows {metric}"
        );
    }
}

#[test]
fn dashboard_queries_are_valid_promql() {
    let Some(promtool) = tool(
        "promtool",
        "prometheus",
        "dashboard_queries_are_valid_promql",
    ) else {
        return;
    };
    // promtool parses PromQL when it checks recording rules, so each query becomes one, with the
    // Grafana variables replaced by what Grafana would put there.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in dashboard_exprs().iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*");
        let quoted = serde_json::to_string(&expr).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard.rules.yml");
    std::fs::write(&path, rules).unwrap();
    run_ok(Command::new(promtool).args(["check", "rules"]).arg(&path));
}

#[test]
fn freebsd_rc_scripts_parse() {
    for name in ["whimp", "whomp"] {
        let path = repo().join("deploy/freebsd").join(name);
        run_ok(Command::new("sh").arg("-n").arg(&path));
        let text = read(&format!("deploy/freebsd/{name}"));
        for wanted in [
            format!("# PROVIDE: {name}"),
            format!("name=\"{name}\""),
            format!("rcvar=\"{name}_enable\""),
            "extra_commands=\"reload configtest\"".to_owned(),
            "run_rc_command \"$1\"".to_owned(),
        ] {
            assert!(
                text.contains(&wanted),
                "deploy/freebsd/{name} lacks {wanted}"
            );
        }
    }
}

#[test]
fn shell_scripts_parse() {
    for script in [
        "deploy/build-static.sh",
        "examples/walkthrough.sh",
        ".ci/setup/deploy.sh",
        ".ci/setup/musl.sh",
    ] {
        run_ok(Command::new("bash").arg("-n").arg(repo().join(script)));
    }
}

#[test]
fn static_build_is_possible_here() {
    // Only the cheap part: the target, the static C library and the tools are there. The build
    // itself takes minutes on a small machine; deploy/README.md shows its output.
    let output = run_ok(
        Command::new("bash")
            .arg(repo().join("deploy/build-static.sh"))
            .arg("--check-only"),
    );
    assert!(
        printed(&output).contains("this machine can build static binaries"),
        "{}",
        printed(&output)
    );
    let output = run(Command::new("bash")
        .arg(repo().join("deploy/build-static.sh"))
        .arg("--bogus"));
    assert_eq!(output.status.code(), Some(64));
    assert_eq!(
        printed(&output),
        "build-static: unknown argument --bogus (try --help)\n"
    );
}

/// The Rust target the shipped static binaries are built for.
const MUSL: &str = "x86_64-unknown-linux-musl";

#[test]
fn static_musl_binaries_build_and_run() {
    let test = "static_musl_binaries_build_and_run";
    if tool("musl-gcc", "musl-tools", test).is_none() {
        return;
    }
    let installed = run_ok(Command::new("rustup").args(["target", "list", "--installed"]));
    if !printed(&installed).lines().any(|l| l.trim() == MUSL) {
        assert!(
            !in_ci(),
            "the Rust target {MUSL} is not installed (.ci/setup/musl.sh installs it)"
        );
        eprintln!("SKIPPED {test}: the Rust target {MUSL} is not installed");
        return;
    }
    // The whole build, as an operator runs it: a release build of both binaries for musl (a few
    // minutes on two cores), then the script's own proof that each is static and runs.
    let output = run_ok(
        Command::new("bash")
            .arg(repo().join("deploy/build-static.sh"))
            .env("TARGET", MUSL),
    );
    let text = printed(&output);
    assert!(text.contains("build-static: ok"), "{text}");
    for name in ["whimp", "whomp"] {
        let binary = repo().join("target").join(MUSL).join("release").join(name);
        let file = run_ok(Command::new("file").arg("-b").arg(&binary));
        let kind = printed(&file);
        assert!(
            kind.contains("statically linked") || kind.contains("static-pie linked"),
            "{name}: {kind}"
        );
        let ldd = run(Command::new("ldd").arg(&binary));
        assert!(
            !ldd.status.success() || printed(&ldd).contains("statically linked"),
            "{name}: {}",
            printed(&ldd)
        );
        // It runs, and does real work: it reads and checks the shipped config.
        let check = run_ok(
            Command::new(&binary)
                .arg("check-config")
                .arg("--config")
                .arg(repo().join(format!("config/{name}.yaml"))),
        );
        assert!(
            printed(&check).contains(": ok ("),
            "{name}: {}",
            printed(&check)
        );
    }
}
