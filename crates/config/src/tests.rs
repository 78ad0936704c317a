//! Tests of the whole crate through its public functions: the shipped configs and DESIGN's
//! examples load, an unknown key anywhere is refused at its line, and each class of problem gives
//! the exact `file:line:column: message` an operator will see.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{parse_whimp, parse_whomp, whimp, whomp, ConfigError, Facility, LogLevel};

const FILE: &str = "cfg/test.yaml";

const SHIPPED_WHIMP: &str = include_str!("../../../config/whimp.yaml");
const SHIPPED_WHOMP: &str = include_str!("../../../config/whomp.yaml");

/// DESIGN.md's whimp example, verbatim.
const DESIGN_WHIMP: &str = r#"listen:
  - addr: 127.0.0.1:8080                 # plain HTTP (e.g. behind a load balancer)
  - addr: 0.0.0.0:8443
    tls: { cert: tls/fullchain.pem, key: tls/privkey.pem }
admin: { addr: 127.0.0.1:9101 }          # /metrics /healthz /readyz
spool: { dir: ../var/whimp, fsync: true }
log: { level: info, syslog: false, facility: daemon }
limits: { max_body_bytes: 10485760, header_timeout: 10s, max_connections: 10000 }
retry: { initial: 1s, max_interval: 1h, max_age: 24h, give_up_on: [410] }
routes:
  - path: /paypal/01FD5BKAC5EEJ6HA8KPXT5QV4Y
    name: paypal                         # default: the path's first segment; used in metrics/logs
    methods: [POST]                      # default: any
    allow_from: [64.4.240.0/21]          # default: anyone
    response: { status: 200 }            # what the provider is told once the request is stored
    backends:                            # each gets its own copy (fan-out)
      - url: http://10.0.3.7:8000/hooks/paypal
        timeout: 10s
    retry: { max_age: 72h }              # per-route override
"#;

/// DESIGN.md's whomp example, verbatim.
const DESIGN_WHOMP: &str = r#"listen:
  - addr: 127.0.0.1:8090                 # submissions from internal services
auth: { tokens: [] }                     # bearer tokens; empty = no auth (loopback default)
admin: { addr: 127.0.0.1:9102 }
spool: { dir: ../var/whomp, fsync: true }
log: { level: info, syslog: false, facility: daemon }
limits: { max_body_bytes: 10485760, max_in_flight_per_host: 8 }
retry: { initial: 1s, max_interval: 1h, max_age: 24h, give_up_on: [410] }
delivery: { connect_timeout: 5s, timeout: 30s, user_agent: whomp }
preflight:
  allow_http: false                      # https only unless true
  methods: [POST]                        # allowed methods
  ports: [443, 8443]                     # allowed ports (plus 80 when allow_http)
  reject_hosts: ["*.internal", "metadata.google.internal"]
  reject_cidrs: [203.0.113.0/24]         # added to the built-in special-purpose ranges
  allow_cidrs: []                        # explicit exceptions to the built-in ranges (e.g. 127.0.0.1/32 in tests)
dns:
  servers: []                            # default: the system resolver config
  static: { hooks.example.com: [93.184.216.34] }   # fixed answers, like curl --resolve
signing:
  keys: { partner-a: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }
"#;

/// A smallest valid route, to which tests add the keys they exercise.
const ROUTE: &str = "routes:
  - path: /a/1
    backends:
      - url: http://127.0.0.1:8000/a
";

/// The one assertion of error tests: `text` is refused with exactly `expected`.
fn check<T: std::fmt::Debug>(
    parse: fn(&str, &Path) -> Result<T, ConfigError>,
    text: &str,
    expected: &str,
) {
    match parse(text, Path::new(FILE)) {
        Ok(config) => panic!("expected {expected:?}, got {config:#?}"),
        Err(err) => assert_eq!(err.to_string(), expected, "for:\n{text}"),
    }
}

fn whimp_ok(text: &str) -> whimp::Config {
    parse_whimp(text, Path::new(FILE)).unwrap_or_else(|err| panic!("{err}\nfor:\n{text}"))
}

fn whomp_ok(text: &str) -> whomp::Config {
    parse_whomp(text, Path::new(FILE)).unwrap_or_else(|err| panic!("{err}\nfor:\n{text}"))
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../config")
        .join(name)
}

#[test]
fn shipped_whimp_config_loads() {
    let path = shipped("whimp.yaml");
    let config = crate::load_whimp(&path).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(config.listen.len(), 1);
    assert_eq!(config.listen[0].addr, addr("127.0.0.1:8080"));
    assert_eq!(config.listen[0].tls, None);
    assert_eq!(config.admin.addr, addr("127.0.0.1:9101"));
    assert_eq!(
        config.spool.dir,
        std::path::absolute(shipped("../var/whimp")).unwrap()
    );
    assert!(config.spool.fsync);
    assert_eq!(config.limits, whimp::Limits::default());
    assert_eq!(config.delivery, whimp::Delivery::default());
    assert_eq!(config.retry, retry::Policy::default());
    assert_eq!(config.routes.len(), 1);
    let route = &config.routes[0];
    assert_eq!(route.path, "/demo/01JDEMO0000000000000000000");
    assert_eq!(route.name, "demo");
    assert_eq!(route.methods, Some(vec![http::Method::POST]));
    assert_eq!(route.response, whimp::RouteResponse::default());
    assert_eq!(route.backends.len(), 1);
    assert_eq!(route.backends[0].url, "http://127.0.0.1:8000/hooks/demo");
    assert_eq!(route.backends[0].timeout, Duration::from_secs(10));
}

#[test]
fn shipped_whomp_config_loads() {
    let config = crate::load_whomp(&shipped("whomp.yaml")).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(config.listen[0].addr, addr("127.0.0.1:8090"));
    assert_eq!(config.admin.addr, addr("127.0.0.1:9102"));
    assert_eq!(
        config.spool.dir,
        std::path::absolute(shipped("../var/whomp")).unwrap()
    );
    assert!(!config.preflight.allow_http);
    assert_eq!(config.preflight, netguard::Rules::default());
    assert_eq!(config.delivery, whomp::Delivery::default());
    assert_eq!(config.limits, whomp::Limits::default());
    assert_eq!(config.auth, whomp::Auth::default());
    assert_eq!(config.dns, whomp::Dns::default());
    assert_eq!(config.signing, whomp::Signing::default());
}

#[test]
fn design_whimp_example_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    std::fs::write(dir.path().join("tls/fullchain.pem"), "").unwrap();
    std::fs::write(dir.path().join("tls/privkey.pem"), "").unwrap();
    let path = dir.path().join("whimp.yaml");
    std::fs::write(&path, DESIGN_WHIMP).unwrap();

    let config = crate::load_whimp(&path).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(config.listen.len(), 2);
    let tls = config.listen[1].tls.as_ref().unwrap();
    assert_eq!(tls.cert, dir.path().join("tls/fullchain.pem"));
    assert_eq!(tls.key, dir.path().join("tls/privkey.pem"));
    assert_eq!(config.spool.dir, dir.path().join("../var/whimp"));
    assert_eq!(config.log.level, LogLevel::Info);
    assert_eq!(config.log.facility, Facility::Daemon);
    assert_eq!(config.limits.body_timeout, Duration::from_secs(30));
    let route = &config.routes[0];
    assert_eq!(route.name, "paypal");
    assert_eq!(
        route.allow_from,
        Some(vec!["64.4.240.0/21".parse().unwrap()])
    );
    // The override changes max_age only; the rest comes from the global policy.
    assert_eq!(route.retry.max_age(), Duration::from_secs(72 * 3600));
    assert_eq!(route.retry.initial(), config.retry.initial());
    assert_eq!(config.retry.max_age(), Duration::from_secs(24 * 3600));
}

#[test]
fn design_whomp_example_loads() {
    let config = whomp_ok(DESIGN_WHOMP);
    assert_eq!(
        config.preflight.reject_hosts,
        ["*.internal", "metadata.google.internal"]
    );
    assert_eq!(
        config.preflight.reject_cidrs,
        ["203.0.113.0/24".parse::<ipnet::IpNet>().unwrap()]
    );
    assert_eq!(
        config.dns.r#static["hooks.example.com"],
        ["93.184.216.34".parse::<std::net::IpAddr>().unwrap()]
    );
    let key = &config.signing.keys["partner-a"];
    assert_eq!(key.expose().len(), 24);
    assert_eq!(key.expose()[..3], [0x31, 0xf2, 0x90]);
}

#[test]
fn an_unknown_key_in_any_mapping_is_refused_at_its_line() {
    type Parse = fn(&str, &Path) -> Result<(), ConfigError>;
    let cases: [(&str, Parse); 4] = [
        (SHIPPED_WHIMP, |t, p| parse_whimp(t, p).map(drop)),
        (SHIPPED_WHOMP, |t, p| parse_whomp(t, p).map(drop)),
        (DESIGN_WHIMP, |t, p| parse_whimp(t, p).map(drop)),
        (DESIGN_WHOMP, |t, p| parse_whomp(t, p).map(drop)),
    ];
    for (text, parse) in cases {
        let variants = unknown_key_variants(text);
        assert!(variants.len() >= 10, "too few variants: {}", variants.len());
        for (variant, line, column) in variants {
            let err = match parse(&variant, Path::new(FILE)) {
                Ok(()) => panic!("unknown key accepted in:\n{variant}"),
                Err(err) => err.to_string(),
            };
            let expected = format!("{FILE}:{line}:{column}: unknown field `zz_unknown`, expected ");
            assert!(
                err.starts_with(&expected) && !err.contains('\n'),
                "got {err:?}, want {expected:?}... in:\n{variant}"
            );
        }
    }
}

/// Copies of `text` with an unknown key `zz_unknown` added to one mapping each (block mappings,
/// sequence items and flow mappings), with the line and column where it was added. Mappings with
/// free-form keys (`dns.static`, `signing.keys`) are left alone: any key is valid there.
fn unknown_key_variants(text: &str) -> Vec<(String, usize, usize)> {
    const FREE_FORM: [&str; 2] = ["static", "keys"];
    let lines: Vec<&str> = text.lines().collect();
    let with_line = |i: usize, replacement: String| {
        let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        out[i] = replacement;
        out.join("\n") + "\n"
    };
    let key_of = |code: &str| -> Option<String> {
        let (key, _) = code.split_once(':')?;
        let plain = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        plain.then(|| key.to_owned())
    };
    let mut variants = Vec::new();
    // The enclosing block keys, by indentation, to tell free-form mappings.
    let mut parents: Vec<(usize, String)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = match line.find(" #") {
            Some(comment) => &line[..comment],
            None => line,
        };
        let indent = code.len() - code.trim_start().len();
        let rest = code.trim_start();
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        parents.retain(|(parent_indent, _)| *parent_indent < indent);
        let in_free_form = parents
            .last()
            .is_some_and(|(_, key)| FREE_FORM.contains(&key.as_str()));
        let pad = " ".repeat(indent);
        if let Some(item) = rest.strip_prefix("- ") {
            if key_of(item).is_some() {
                let replacement = format!("{pad}- zz_unknown: 1\n{pad}  {item}");
                variants.push((with_line(i, replacement), i + 1, indent + 3));
            }
        } else if let Some(key) = key_of(rest) {
            if !in_free_form {
                let replacement = format!("{pad}zz_unknown: 1\n{line}");
                variants.push((with_line(i, replacement), i + 1, indent + 1));
            }
            parents.push((indent, key));
        }
        for (brace, _) in code.match_indices('{') {
            let before = code[..brace].trim_end().trim_end_matches(':');
            let key = before.rsplit([' ', '{', ',']).next().unwrap_or_default();
            if FREE_FORM.contains(&key) {
                continue;
            }
            let at = brace + 1 + usize::from(code[brace + 1..].starts_with(' '));
            let separator = if code[at..].starts_with('}') {
                ""
            } else {
                ", "
            };
            let replacement = format!("{}zz_unknown: 1{separator}{}", &line[..at], &line[at..]);
            variants.push((with_line(i, replacement), i + 1, at + 1));
        }
    }
    variants
}

#[test]
fn every_section_may_be_left_out() {
    let whimp = whimp_ok("");
    assert_eq!(whimp.listen[0].addr, addr("127.0.0.1:8080"));
    assert_eq!(whimp.admin.addr, addr("127.0.0.1:9101"));
    assert_eq!(whimp.spool.dir, PathBuf::from("/var/spool/whimp"));
    assert_eq!(whimp.spool.retention, Duration::from_secs(7 * 86_400));
    assert!(whimp.routes.is_empty());
    let whomp = whomp_ok("# nothing but a comment\n");
    assert_eq!(whomp.listen[0].addr, addr("127.0.0.1:8090"));
    assert_eq!(whomp.admin.addr, addr("127.0.0.1:9102"));
    assert_eq!(whomp.spool.dir, PathBuf::from("/var/spool/whomp"));
    assert_eq!(whomp.preflight.ports, [443, 8443]);
}

#[test]
fn route_defaults_are_filled_in() {
    let config = whimp_ok(ROUTE);
    let route = &config.routes[0];
    assert_eq!(route.name, "a");
    assert_eq!(route.methods, None);
    assert_eq!(route.allow_from, None);
    assert_eq!(route.response.status, 200);
    assert_eq!(route.retry, retry::Policy::default());
}

#[test]
fn route_retry_is_merged_over_the_global_policy() {
    let text = format!(
        "retry: {{ initial: 2s, max_attempts: 5, give_up_on: [404, 410] }}\n{ROUTE}    \
         retry: {{ max_interval: 10m, give_up_on: [] }}\n"
    );
    let config = whimp_ok(&text);
    let retry = &config.routes[0].retry;
    assert_eq!(retry.initial(), Duration::from_secs(2));
    assert_eq!(retry.max_interval(), Duration::from_secs(600));
    assert_eq!(retry.max_age(), Duration::from_secs(86_400));
    assert_eq!(retry.max_attempts(), Some(5));
    assert!(retry.give_up_on().is_empty());
    assert_eq!(config.retry.give_up_on(), [404, 410]);
}

#[test]
fn relative_paths_are_resolved_against_the_config_dir() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("etc");
    std::fs::create_dir_all(conf.join("tls")).unwrap();
    for file in ["tls/cert.pem", "tls/key.pem", "ca.pem"] {
        std::fs::write(conf.join(file), "").unwrap();
    }
    let absolute_ca = conf.join("ca.pem");
    let text = format!(
        "listen:\n  - addr: 127.0.0.1:0\n    tls: {{ cert: tls/cert.pem, key: ./tls/key.pem }}\n\
         spool: {{ dir: ../var/whomp }}\ndelivery: {{ ca_file: {} }}\n",
        absolute_ca.display()
    );
    let path = conf.join("whomp.yaml");
    std::fs::write(&path, text).unwrap();

    let config = crate::load_whomp(&path).unwrap_or_else(|err| panic!("{err}"));
    let tls = config.listen[0].tls.as_ref().unwrap();
    assert_eq!(tls.cert, conf.join("tls/cert.pem"));
    assert_eq!(tls.key, conf.join("./tls/key.pem"));
    assert_eq!(config.spool.dir, conf.join("../var/whomp"));
    assert_eq!(config.delivery.ca_file, Some(absolute_ca));
}

#[test]
fn an_unreadable_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.yaml");
    let err = crate::load_whimp(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: cannot read: No such file or directory (os error 2)",
            path.display()
        )
    );
    assert_eq!(err.path, path);
}

#[test]
fn a_missing_tls_file_is_reported_with_its_resolved_path() {
    let dir = config_dir_absolute();
    check(
        parse_whimp,
        "listen:\n  - addr: 127.0.0.1:8443\n    tls:\n      cert: no/cert.pem\n      key: no/key.pem\n",
        &format!(
            "{FILE}:4:13: tls cert {dir}/no/cert.pem cannot be read: No such file or directory \
             (os error 2)\n\
             {FILE}:5:12: tls key {dir}/no/key.pem cannot be read: No such file or directory \
             (os error 2)"
        ),
    );
}

fn config_dir_absolute() -> String {
    std::path::absolute(Path::new(FILE).parent().unwrap())
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn a_bad_duration_is_reported_at_its_value() {
    check(
        parse_whimp,
        "limits:\n  header_timeout: 10 s\n",
        &format!(
            "{FILE}:2:19: invalid duration \"10 s\": expected a number and a unit (ms, s, m, h, \
             d), e.g. \"30s\""
        ),
    );
    check(
        parse_whomp,
        "delivery: { timeout: 30 }\n",
        &format!(
            "{FILE}:1:22: invalid duration \"30\": a unit is required (ms, s, m, h, d), e.g. \
             \"30s\""
        ),
    );
}

#[test]
fn a_bad_address_is_reported_at_its_value() {
    check(
        parse_whimp,
        "admin:\n  addr: localhost:9101\n",
        &format!(
            "{FILE}:2:9: invalid address \"localhost:9101\": expected IP:port, e.g. \
             \"127.0.0.1:8080\" or \"[::1]:8080\""
        ),
    );
    check(
        parse_whomp,
        "listen:\n  - addr: 0.0.0.0\n",
        &format!("{FILE}:2:11: invalid address \"0.0.0.0\": missing port, e.g. \"0.0.0.0:8080\""),
    );
}

#[test]
fn a_bad_cidr_is_reported_at_its_value() {
    check(
        parse_whimp,
        &format!("{ROUTE}    allow_from: [192.0.2.0/24, 10.0.0.0/33]\n"),
        &format!(
            "{FILE}:5:32: invalid CIDR \"10.0.0.0/33\": expected an address range such as \
             \"10.0.0.0/8\" or \"2001:db8::/32\""
        ),
    );
    check(
        parse_whomp,
        "preflight:\n  reject_cidrs: [10.1.2.3/8]\n",
        &format!(
            "{FILE}:2:18: invalid CIDR \"10.1.2.3/8\": host bits are set, did you mean \
             \"10.0.0.0/8\"?"
        ),
    );
}

#[test]
fn a_bad_url_is_reported_at_its_value() {
    check(
        parse_whimp,
        "routes:\n  - path: /a\n    backends:\n      - url: http://exa mple/\n",
        &format!("{FILE}:4:14: invalid URL: invalid uri character"),
    );
    check(
        parse_whimp,
        "routes:\n  - path: /a\n    backends:\n      - url: /hooks/a\n      - url: ftp://h/\n",
        &format!(
            "{FILE}:4:14: backend URL must be absolute http or https, e.g. \
             \"http://10.0.3.7:8000/hooks\"\n\
             {FILE}:5:14: backend URL scheme \"ftp\" must be http or https, e.g. \
             \"http://10.0.3.7:8000/hooks\""
        ),
    );
}

#[test]
fn a_backend_url_with_credentials_is_refused_without_quoting_them() {
    check(
        parse_whimp,
        "routes:\n  - path: /a\n    backends:\n      - url: https://hook:s3cret@10.0.0.1/in\n",
        &format!(
            "{FILE}:4:14: backend URL must not carry credentials (user:password@): URLs are \
             shown in logs and records; let the backend trust whimp by its address instead"
        ),
    );
}

#[test]
fn a_bad_method_is_reported_at_its_value() {
    check(
        parse_whimp,
        &format!("{ROUTE}    methods: [POST, put]\n"),
        &format!(
            "{FILE}:5:21: invalid method \"put\": methods are case-sensitive, did you mean \"PUT\"?"
        ),
    );
    check(
        parse_whomp,
        "preflight: { methods: [\"PO ST\"] }\n",
        &format!("{FILE}:1:24: invalid method \"PO ST\": expected a method name such as \"POST\""),
    );
}

#[test]
fn a_wrong_type_is_reported_at_its_value() {
    check(
        parse_whimp,
        "limits:\n  max_body_bytes: ten\n",
        &format!("{FILE}:2:19: invalid number \"ten\": expected a whole number of at least 1"),
    );
    check(
        parse_whomp,
        "spool: { fsync: yes }\n",
        &format!("{FILE}:1:17: invalid boolean \"yes\": expected true or false"),
    );
    check(
        parse_whomp,
        "listen: 127.0.0.1:8090\n",
        &format!("{FILE}:1:9: invalid type: string, expected a sequence"),
    );
    check(
        parse_whomp,
        "limits: 5\n",
        &format!("{FILE}:1:9: invalid type: integer `5`, expected a `limits` mapping"),
    );
    check(
        parse_whimp,
        "- 1\n",
        &format!("{FILE}:1:1: invalid type: sequence, expected a whimp configuration mapping"),
    );
}

#[test]
fn unknown_and_missing_keys_are_named() {
    check(
        parse_whimp,
        "listen:\n  - adress: 127.0.0.1:80\n",
        &format!("{FILE}:2:5: unknown field `adress`, expected `addr` or `tls`"),
    );
    check(
        parse_whimp,
        "routes:\n  - name: x\n    backends: []\n",
        &format!("{FILE}:2:5: missing field `path`"),
    );
    check(
        parse_whomp,
        "log: { level: verbose }\n",
        &format!(
            "{FILE}:1:15: unknown variant `verbose`, expected one of `error`, `warn`, `info`, \
             `debug`, `trace`"
        ),
    );
}

#[test]
fn a_line_break_quoted_from_the_file_stays_on_one_line() {
    // Found by the config_load fuzz target: a key with a line break in it was quoted verbatim,
    // splitting the problem over two lines.
    check(
        parse_whimp,
        "\"lis\\nten\": []\n",
        &format!(
            "{FILE}:1:1: unknown field `lis\\nten`, expected one of `listen`, `admin`, `spool`, \
             `queue`, `log`, `limits`, `retry`, `delivery`, `routes`"
        ),
    );
    check(
        parse_whomp,
        "{lis\n\nten: 1}\n",
        &format!(
            "{FILE}:1:2: unknown field `lis\\nten`, expected one of `listen`, `auth`, `admin`, \
             `spool`, `queue`, `log`, `limits`, `retry`, `delivery`, `preflight`, `dns`, \
             `signing`, `events`"
        ),
    );
}

#[test]
fn a_repeated_key_is_reported_at_the_repeat() {
    check(
        parse_whimp,
        "retry:\n  initial: 1s\nlog: {}\nretry: {}\n",
        &format!("{FILE}:4:1: duplicate field `retry`"),
    );
    check(
        parse_whimp,
        &format!("{ROUTE}    name: a\n    name: b\n"),
        &format!("{FILE}:6:5: duplicate field `name`"),
    );
    check(
        parse_whomp,
        "dns:\n  static:\n    a.example: [192.0.2.1]\n    a.example: [192.0.2.2]\n",
        &format!("{FILE}:4:5: duplicate key `a.example`"),
    );
}

#[test]
fn a_yaml_syntax_error_is_located() {
    check(
        parse_whimp,
        "listen:\n  - addr: 127.0.0.1:80\n   tls: {}\n",
        &format!(
            "{FILE}:3:4: did not find expected '-' indicator, while parsing a block collection at \
             line 2 column 3"
        ),
    );
    check(
        parse_whimp,
        "log:\n\tlevel: info\n",
        &format!(
            "{FILE}:2:1: found character that cannot start any token, while scanning for the next \
             token"
        ),
    );
}

#[test]
fn a_duplicate_route_path_is_reported_at_the_repeat() {
    let text = format!("{ROUTE}{}", ROUTE.replace("routes:\n", ""));
    check(
        parse_whimp,
        &text,
        &format!("{FILE}:5:11: duplicate route path, first defined at line 2"),
    );
}

#[test]
fn a_route_without_backends_is_refused() {
    check(
        parse_whimp,
        "routes:\n  - path: /a/1\n  - path: /b/1\n    backends: []\n",
        &format!(
            "{FILE}:2:5: route has no backends: list at least one under `backends`\n\
             {FILE}:4:15: route has no backends: list at least one under `backends`"
        ),
    );
}

#[test]
fn a_bad_status_is_refused() {
    check(
        parse_whimp,
        &format!("{ROUTE}    response: {{ status: 1000 }}\n"),
        &format!("{FILE}:5:25: invalid number 1000: expected a whole number from 200 to 599"),
    );
    check(
        parse_whimp,
        &format!("{ROUTE}    response:\n      status: 70000\n"),
        &format!("{FILE}:6:15: invalid number 70000: expected a whole number from 200 to 599"),
    );
}

#[test]
fn a_bad_signing_key_is_refused_without_showing_it() {
    check(
        parse_whomp,
        "signing:\n  keys:\n    good: whsec_c2VjcmV0\n    plain: s3cr3t\n    bad64: whsec_***\n",
        &format!(
            "{FILE}:4:12: signing key \"plain\" must be \"whsec_\" followed by base64, e.g. \
             \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
             {FILE}:5:12: signing key \"bad64\" must be \"whsec_\" followed by base64, e.g. \
             \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\""
        ),
    );
}

#[test]
fn secrets_written_in_the_wrong_shape_are_not_quoted() {
    check(
        parse_whomp,
        "auth:\n  tokens: s3cret\n",
        &format!("{FILE}:2:11: invalid type: string, expected a list of tokens"),
    );
    check(
        parse_whomp,
        "signing:\n  keys: whsec_c2VjcmV0\n",
        &format!("{FILE}:2:9: invalid type: string, expected a mapping"),
    );
    check(
        parse_whomp,
        "signing:\n  keys: { a: [whsec_c2VjcmV0] }\n",
        &format!("{FILE}:2:14: invalid type: sequence, expected a string"),
    );
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let config =
        whomp_ok("auth: { tokens: [tok-123456] }\nsigning: { keys: { k: \"whsec_c2VjcmV0\" } }\n");
    assert!(config.auth.tokens[0].matches(b"tok-123456"));
    assert_eq!(config.signing.keys["k"].expose(), b"secret");
    let debug = format!("{config:?}");
    assert!(!debug.contains("tok-123456"), "{debug}");
    assert!(!debug.contains("115, 101, 99"), "{debug}");
    assert!(debug.contains("\"***\""), "{debug}");
}

#[test]
fn several_problems_are_reported_together_in_file_order() {
    let text = "\
listen: []
retry:
  initial: 2h
  give_up_on: [200]
limits: { max_connections: 0 }
routes:
  - path: a/1
    methods: []
    backends:
      - url: http://127.0.0.1:8000/a
        timeout: 0s
  - path: /
    backends:
      - url: http://127.0.0.1:8000/b
    retry: { max_attempts: 0 }
  - path: /x/1
    response: { status: 99, content_type: \"a\\nb\" }
    backends:
      - url: http://127.0.0.1:8000/c
    retry: { max_interval: 1s }
";
    check(
        parse_whimp,
        text,
        &format!(
            "{FILE}:1:9: listen is empty: at least one listener is required
{FILE}:3:12: retry initial 2h is greater than max_interval 1h
{FILE}:4:16: invalid number 200: expected a whole number from 300 to 599
{FILE}:5:28: invalid number 0: expected a whole number of at least 1
{FILE}:7:11: route path must start with \"/\"
{FILE}:8:14: methods is empty, so every request would be refused: leave it out to allow any method
{FILE}:11:18: timeout must be greater than zero
{FILE}:12:11: route path does not start with a usable name (letters, digits, \"_\", \"-\", \".\"): set `name`
{FILE}:15:28: invalid number 0: expected a whole number from 1 to 4294967295
{FILE}:17:25: invalid number 99: expected a whole number from 200 to 599
{FILE}:17:43: content_type \"a\\nb\" is not a valid header value
{FILE}:20:28: retry initial 2h is greater than max_interval 1s"
        ),
    );
}

#[test]
fn every_bad_value_is_reported_together() {
    let text = "\
limits:
  header_timeout: 10 s
routes:
  - path: /a/1
    allow_from: [10.0.0.0/33, 192.0.2.0/24]
    methods: [post allow_from]
    backends:
      - url: ftp://10.0.0.1/in
      - url: \"http://[::1\"
  - path: /b/1
    backends:
      - { url: http://10.0.0.1/in, timeout: soon }
    retry: { initial: 1 }
listen:
  - addr: 127.0.0.1
  - addr: 127.0.0.1:0
";
    check(
        parse_whimp,
        text,
        &format!(
            "{FILE}:2:19: invalid duration \"10 s\": expected a number and a unit (ms, s, m, h, d), e.g. \"30s\"
{FILE}:5:18: invalid CIDR \"10.0.0.0/33\": expected an address range such as \"10.0.0.0/8\" or \"2001:db8::/32\"
{FILE}:6:15: invalid method \"post allow_from\": expected a method name such as \"POST\"
{FILE}:8:14: backend URL scheme \"ftp\" must be http or https, e.g. \"http://10.0.3.7:8000/hooks\"
{FILE}:9:14: invalid URL: invalid authority
{FILE}:12:45: invalid duration \"soon\": expected a number and a unit (ms, s, m, h, d), e.g. \"30s\"
{FILE}:13:23: invalid duration \"1\": a unit is required (ms, s, m, h, d), e.g. \"1s\"
{FILE}:15:11: invalid address \"127.0.0.1\": missing port, e.g. \"127.0.0.1:8080\""
        ),
    );
}

#[test]
fn a_spool_dir_that_cannot_be_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    check(
        parse_whimp,
        &format!("spool: {{ dir: {} }}\n", file.display()),
        &format!(
            "{FILE}:1:15: spool dir {} exists and is not a directory",
            file.display()
        ),
    );
    check(
        parse_whomp,
        &format!("spool:\n  dir: {}/spool\n", file.display()),
        &format!(
            "{FILE}:2:8: spool dir {0}/spool cannot be created: {0} is not a directory",
            file.display()
        ),
    );
    whimp_ok(&format!(
        "spool: {{ dir: {}/not/yet }}\n",
        dir.path().display()
    ));
}

#[test]
fn whomp_problems_are_reported_together() {
    let text = "\
auth: { tokens: [\"has space\", \"\"] }
delivery: { user_agent: \"\", concurrency: 0 }
preflight:
  methods: []
  ports: [443, 0]
  reject_hosts: [\"*.internal\", \"bad host\", \"Metadata.Google.Internal.\"]
dns:
  static:
    ok.example: []
    \"not a host\": [192.0.2.1]
signing:
  keys: { \"a b\": \"whsec_c2VjcmV0\" }
";
    check(
        parse_whomp,
        text,
        &format!(
            "{FILE}:1:18: token must be non-empty visible ASCII (no spaces), as an Authorization header carries it
{FILE}:1:31: token must be non-empty visible ASCII (no spaces), as an Authorization header carries it
{FILE}:2:25: user_agent \"\" is not a valid, non-empty header value
{FILE}:2:42: invalid number 0: expected a whole number of at least 1
{FILE}:4:12: methods is empty, so every message would be refused
{FILE}:5:16: invalid number 0: expected a whole number from 1 to 65535
{FILE}:6:32: invalid host pattern \"bad host\": expected a host name such as \"metadata.google.internal\" or a suffix such as \"*.internal\"
{FILE}:9:17: static host \"ok.example\" has no addresses
{FILE}:10:5: invalid host name \"not a host\": expected e.g. \"hooks.example.com\"
{FILE}:12:11: signing key name \"a b\" must be non-empty visible ASCII (no spaces), as the Whomp-Signing-Key header carries it"
        ),
    );
}

#[test]
fn two_sockets_on_one_address_are_refused() {
    check(
        parse_whimp,
        "listen:\n  - addr: 127.0.0.1:9000\n  - addr: 127.0.0.1:9000\nadmin: { addr: 127.0.0.1:9000 }\n",
        &format!(
            "{FILE}:3:11: address 127.0.0.1:9000 is already used at line 2\n\
             {FILE}:4:16: address 127.0.0.1:9000 is already used at line 2"
        ),
    );
    check(
        parse_whomp,
        "listen:\n  - addr: 127.0.0.1:9102\n",
        &format!(
            "{FILE}:2:11: address 127.0.0.1:9102 is already used by the default admin address"
        ),
    );
    check(
        parse_whimp,
        "listen:\n  - addr: 0.0.0.0:9000\n  - addr: 127.0.0.1:9000\n  - addr: 127.0.0.1:9001\n",
        &format!("{FILE}:3:11: address 127.0.0.1:9000 overlaps 0.0.0.0:9000, used at line 2"),
    );
    // Port 0 asks for any free port, so tests may use it everywhere.
    whimp_ok(
        "listen:\n  - addr: 127.0.0.1:0\n  - addr: 127.0.0.1:0\nadmin: { addr: 127.0.0.1:0 }\n",
    );
}

#[test]
fn whomp_values_are_normalised() {
    let config = whomp_ok(
        "preflight:\n  reject_hosts: [\"*.Example.COM.\", Host.Example]\n  methods: [POST, PUT]\n\
         dns:\n  servers: [192.0.2.53, \"[2001:db8::53]:5353\"]\n  static: { HOOKS.example.com.: [\"2001:db8::1\", 192.0.2.1] }\n",
    );
    assert_eq!(
        config.preflight.reject_hosts,
        ["*.example.com", "host.example"]
    );
    assert_eq!(config.preflight.methods, ["POST", "PUT"]);
    assert_eq!(
        config.dns.servers,
        [addr("192.0.2.53:53"), addr("[2001:db8::53]:5353")]
    );
    assert_eq!(config.dns.r#static["hooks.example.com"].len(), 2);
}

#[test]
fn whomp_refuses_internal_names_by_default() {
    let config = whomp_ok("");
    assert_eq!(
        config.preflight.reject_hosts,
        vec!["*.internal", "*.local", "*.home.arpa"]
    );
    let replaced = whomp_ok("preflight:\n  reject_hosts: []\n");
    assert!(
        replaced.preflight.reject_hosts.is_empty(),
        "a list in the config replaces the default"
    );
}

#[test]
fn whomp_nat64_prefixes_and_url_limit() {
    let config = whomp_ok("");
    assert!(config.preflight.nat64_prefixes.is_empty());
    assert_eq!(config.preflight.max_url_bytes, 8192);
    let config = whomp_ok(
        "preflight:\n  nat64_prefixes: [\"64:ff9b::/96\", \"2001:db8:64::/48\"]\n  max_url_bytes: 2048\n",
    );
    assert_eq!(config.preflight.nat64_prefixes.len(), 2);
    assert_eq!(config.preflight.max_url_bytes, 2048);
    check(
        parse_whomp,
        "preflight:\n  nat64_prefixes: [\"64:ff9b::/95\", 10.0.0.0/8]\n  max_url_bytes: 0\n",
        &format!(
            "{FILE}:2:20: nat64 prefix 64:ff9b::/95 must be an IPv6 prefix of length 32, 40, 48, \
             56, 64 or 96 (RFC 6052), such as \"64:ff9b::/96\"\n\
             {FILE}:2:36: nat64 prefix 10.0.0.0/8 must be an IPv6 prefix of length 32, 40, 48, \
             56, 64 or 96 (RFC 6052), such as \"64:ff9b::/96\"\n\
             {FILE}:3:18: invalid number 0: expected a whole number of at least 1"
        ),
    );
}

#[test]
fn retry_problems_are_reported_at_the_keys_written() {
    // The route writes only `initial`: the global section's problems are not told twice.
    let text = format!(
        "retry: {{ max_interval: 0s, max_age: 0s }}\n{ROUTE}    retry: {{ initial: 0s }}\n"
    );
    check(
        parse_whimp,
        &text,
        &format!(
            "{FILE}:1:24: max_interval must be greater than zero\n\
             {FILE}:1:24: retry initial 1s is greater than max_interval 0ms\n\
             {FILE}:1:37: max_age must be greater than zero\n\
             {FILE}:6:23: initial must be greater than zero"
        ),
    );
}

#[test]
fn a_list_problem_is_reported_at_its_own_value_after_a_bad_one() {
    // The second prefix is the wrong one; the first does not parse, and must not shift the place
    // of the second's problem onto itself.
    check(
        parse_whomp,
        "preflight:\n  nat64_prefixes: [nonsense, \"64:ff9b::/95\"]\n",
        &format!(
            "{FILE}:2:20: invalid CIDR \"nonsense\": expected an address range such as \
             \"10.0.0.0/8\" or \"2001:db8::/32\"\n\
             {FILE}:2:30: nat64 prefix 64:ff9b::/95 must be an IPv6 prefix of length 32, 40, 48, \
             56, 64 or 96 (RFC 6052), such as \"64:ff9b::/96\""
        ),
    );
}

#[test]
fn numbers_and_booleans_are_reported_with_the_other_bad_values() {
    let text = "\
limits:
  header_timeout: 10 s
  max_body_bytes: ten
spool: { fsync: maybe }
retry: { max_attempts: -1 }
log: { level: verbose, facility: local9 }
routes:
  - path: /a/1
    allow_from: [10.0.0.0/33]
    backends:
      - url: ftp://10.0.0.1/in
";
    check(
        parse_whimp,
        text,
        &format!(
            "{FILE}:2:19: invalid duration \"10 s\": expected a number and a unit (ms, s, m, h, d), e.g. \"30s\"
{FILE}:3:19: invalid number \"ten\": expected a whole number of at least 1
{FILE}:4:17: invalid boolean \"maybe\": expected true or false
{FILE}:5:24: invalid number -1: expected a whole number from 1 to 4294967295
{FILE}:6:15: unknown variant `verbose`, expected one of `error`, `warn`, `info`, `debug`, `trace`
{FILE}:6:34: unknown variant `local9`, expected one of `daemon`, `user`, `local0`, `local1`, `local2`, `local3`, `local4`, `local5`, `local6`, `local7`
{FILE}:9:18: invalid CIDR \"10.0.0.0/33\": expected an address range such as \"10.0.0.0/8\" or \"2001:db8::/32\"
{FILE}:11:14: backend URL scheme \"ftp\" must be http or https, e.g. \"http://10.0.3.7:8000/hooks\""
        ),
    );
}

#[test]
fn numbers_out_of_range_are_reported_each_at_its_value() {
    check(
        parse_whomp,
        "\
limits: { max_body_bytes: 0, max_in_flight_per_host: 1.5 }
log: { syslog: yes }
preflight:
  allow_http: 1
  ports: [443, 0, 70000]
  max_url_bytes: [8192]
",
        &format!(
            "{FILE}:1:27: invalid number 0: expected a whole number of at least 1
{FILE}:1:54: invalid number 1.5: expected a whole number of at least 1
{FILE}:2:16: invalid boolean \"yes\": expected true or false
{FILE}:4:15: invalid boolean 1: expected true or false
{FILE}:5:16: invalid number 0: expected a whole number from 1 to 65535
{FILE}:5:19: invalid number 70000: expected a whole number from 1 to 65535
{FILE}:6:18: invalid type: sequence, expected a whole number of at least 1"
        ),
    );
}

#[test]
fn a_url_in_a_config_error_never_shows_credentials_path_or_query() {
    let text = "\
routes:
  - path: /a/1
    backends:
      - url: \"https://hook:hunter2@exa mple/hunter2?key=hunter2\"
      - url: \"ftp://10.0.0.1/hunter2?key=hunter2\"
      - url: \"/hooks/hunter2?key=hunter2\"
      - url: \"https://hook:hunter2@10.0.0.1/in\"
      - url: \"http://[::1/hunter2\"
";
    check(
        parse_whimp,
        text,
        &format!(
            "{FILE}:4:14: invalid URL: invalid uri character
{FILE}:5:14: backend URL scheme \"ftp\" must be http or https, e.g. \"http://10.0.3.7:8000/hooks\"
{FILE}:6:14: backend URL must be absolute http or https, e.g. \"http://10.0.3.7:8000/hooks\"
{FILE}:7:14: backend URL must not carry credentials (user:password@): URLs are shown in logs and records; let the backend trust whimp by its address instead
{FILE}:8:14: invalid URL: invalid authority"
        ),
    );
    // A URL written where a backend mapping belongs is not quoted either.
    check(
        parse_whimp,
        "routes:\n  - path: /b/1\n    backends: [\"https://hook:hunter2@10.0.0.1/in?key=hunter2\"]\n",
        &format!("{FILE}:3:16: invalid type: string, expected a backend mapping with `url`"),
    );
}
#[test]
fn quoted_numbers_and_booleans_are_read() {
    let config = whomp_ok("limits: { max_body_bytes: \"10\" }\nlog: { syslog: \"true\" }\n");
    assert_eq!(config.limits.max_body_bytes, 10);
    assert!(config.log.syslog);
    check(
        parse_whomp,
        "limits: { max_body_bytes: 1e3, max_in_flight_per_host: 99999999999999999999 }\n",
        &format!(
            "{FILE}:1:27: invalid number 1000.0: expected a whole number of at least 1\n\
             {FILE}:1:56: invalid number 99999999999999999999: expected a whole number of at least 1"
        ),
    );
}

#[test]
fn the_queue_defaults_to_the_maildir() {
    let whimp = whimp_ok("");
    assert_eq!(whimp.queue.backend, crate::Backend::Maildir);
    assert_eq!(
        whimp.queue.servers,
        vec!["nats://127.0.0.1:4222".to_owned()]
    );
    assert_eq!(
        (whimp.queue.replicas, whimp.queue.stream.as_str()),
        (1, "whimp")
    );
    assert_eq!(
        (whimp.queue.ack_wait, whimp.queue.timeout),
        (Duration::from_secs(300), Duration::from_secs(5))
    );
    assert_eq!(whomp_ok("").queue.stream, "whomp");
}

#[test]
fn a_jetstream_queue_is_read_with_its_credentials_kept_secret() {
    let text = "queue:
  backend: jetstream
  servers: [\"nats://10.0.0.1:4222\", \"tls://10.0.0.2:4222\", \"nats://10.0.0.3\"]
  stream: shop-eu_1
  user: whimp
  password: s3cret-pass
  ack_wait: 2m
  timeout: 3s
";
    let queue = whimp_ok(text).queue;
    assert_eq!(queue.backend, crate::Backend::Jetstream);
    assert_eq!(queue.servers.len(), 3);
    assert_eq!(queue.replicas, 3, "default: the servers listed, at most 3");
    assert_eq!(queue.stream, "shop-eu_1");
    assert_eq!(queue.user.as_deref(), Some("whimp"));
    assert_eq!(
        queue.password.as_ref().map(|p| p.expose().as_str()),
        Some("s3cret-pass")
    );
    assert_eq!(queue.ack_wait, Duration::from_secs(120));
    assert!(!format!("{queue:?}").contains("s3cret"));
    let queue = whomp_ok("queue: { backend: jetstream, replicas: 1, token: t0k }\n").queue;
    assert_eq!(
        (queue.replicas, queue.token.map(|t| t.expose().clone())),
        (1, Some("t0k".into()))
    );
}

#[test]
fn queue_problems_are_reported_at_their_values() {
    check(
        parse_whimp,
        "queue:\n  backend: kafka\n",
        &format!("{FILE}:2:12: unknown variant `kafka`, expected `maildir` or `jetstream`"),
    );
    check(
        parse_whomp,
        "queue:\n  servers: [\"http://10.0.0.1:4222\", \"nats://u:s3cret@10.0.0.2\"]\n  replicas: 7\n",
        &format!(
            "{FILE}:2:13: server URL scheme must be nats:// or tls://\n\
             {FILE}:2:37: server URL must not carry credentials (user:password@ or token@): use \
             queue.token, or queue.user and queue.password\n\
             {FILE}:3:13: invalid number 7: expected a whole number from 1 to 5"
        ),
    );
    check(
        parse_whimp,
        "queue:\n  servers: []\n  stream: a.b\n  token: t\n  user: u\n",
        &format!(
            "{FILE}:2:12: servers is empty: name at least one NATS server\n\
             {FILE}:3:11: stream \"a.b\" must be 1 to 32 of A-Z a-z 0-9 - _\n\
             {FILE}:4:10: token and user/password are exclusive: the servers expect one or the other\n\
             {FILE}:5:9: user is set without password"
        ),
    );
}

#[test]
fn whomp_events_section_has_defaults_and_checks_its_keys() {
    let config = whomp_ok("");
    assert_eq!(config.events.notify_url, None);
    assert_eq!(config.events.failing_after, Duration::from_secs(3600));
    assert_eq!(
        config.events.disable_after,
        Duration::from_secs(5 * 24 * 3600)
    );
    let config = whomp_ok(
        "signing: { keys: { ops: \"whsec_c2VjcmV0\" } }\nevents: { notify_url: \"https://ops.example.com/hooks\", signing_key: ops, failing_after: 30s, disable_after: 2h }\n",
    );
    assert_eq!(
        config.events.notify_url.as_deref(),
        Some("https://ops.example.com/hooks")
    );
    assert_eq!(config.events.signing_key.as_deref(), Some("ops"));
    assert_eq!(config.events.failing_after, Duration::from_secs(30));
    assert_eq!(config.events.disable_after, Duration::from_secs(7200));
    check(
        parse_whomp,
        "events:\n  signing_key: nope\n",
        &format!("{FILE}:2:16: signing_key \"nope\" is not one of signing.keys"),
    );
    check(
        parse_whomp,
        "events:\n  notify_url: \"ftp://x\"\n",
        &format!("{FILE}:2:15: notify_url is not a usable URL: scheme \"ftp\" is not allowed (only http and https)"),
    );
    check(
        parse_whomp,
        "events:\n  disable_after: 0s\n",
        &format!("{FILE}:2:18: disable_after must be greater than zero"),
    );
}
