//! The three documents of the event layer (the shapes of seed 002: a target holds the URL, a
//! filter the event types, a subscription binds one of each) and the checks of what a caller
//! sends, each problem naming its field. Pure: no I/O, so every rule is unit-tested here.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The most secrets a target holds at once (a rotation needs two).
pub const MAX_SECRETS: usize = 5;
/// The most extra header fields a target adds.
pub const MAX_HEADERS: usize = 32;
/// The most event types a filter lists.
pub const MAX_EVENTS: usize = 256;
/// The longest event type, description or header value.
pub const MAX_TEXT: usize = 1024;

/// Where a subscription's events go.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub id: String,
    /// Normalised by pre-flight when created or changed.
    pub url: String,
    #[serde(default)]
    pub description: String,
    /// Standard Webhooks secrets (`whsec_...`); every one signs, so a receiver holding any of
    /// them verifies. Never shown by the API after the answer to the POST that made them.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Extra header fields sent with every delivery, in order.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Paused (`POST .../pause`): its deliveries are held, not attempted, until resumed.
    #[serde(default)]
    pub paused: bool,
    /// Where failure notifications about this target go (pre-flighted like `url`); none: the
    /// config's `events.notify_url`.
    #[serde(default)]
    pub notify_url: Option<String>,
    /// Disabled after failing every attempt for `events.disable_after` (or by a PATCH): its
    /// subscriptions fan out nothing new; `PATCH {"disabled": false}` enables it again.
    #[serde(default)]
    pub disabled: bool,
    /// When its current run of failed attempts began (ms since the epoch); none: its last
    /// attempt succeeded (or it has had none).
    #[serde(default)]
    pub failing_since_ms: Option<u64>,
    /// Whether `target.failing` was sent for the current run of failures.
    #[serde(default)]
    pub failing_notified: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// Which event types a subscription wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    pub id: String,
    /// Exact dotted names (`core.orders.created.v1`) or `prefix.*` wildcards.
    pub events: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// One target bound to one filter; only active ones receive events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: String,
    pub target_id: String,
    pub filter_id: String,
    pub active: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// A field the caller got wrong: `400` (or `422` when it names something that does not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub error: String,
}

impl Invalid {
    pub fn new(field: &str, error: impl Into<String>) -> Invalid {
        Invalid {
            field: field.to_owned(),
            error: error.into(),
        }
    }
}

impl Target {
    /// The JSON the API shows: everything but the secrets, which are counted.
    pub fn shown(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("secrets");
            o.remove("failingSinceMs");
            o.remove("failingNotified");
            o.insert("secretCount".into(), self.secrets.len().into());
            o.insert(
                "failingSince".into(),
                self.failing_since_ms
                    .map_or(Value::Null, |ms| telemetry::rfc3339(ms).into()),
            );
            o.insert(
                "headers".into(),
                Value::Object(
                    self.headers
                        .iter()
                        .map(|(n, v)| (n.clone(), Value::from(v.as_str())))
                        .collect(),
                ),
            );
        }
        v
    }

    /// The secrets' keys, decoded (checked when stored).
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.secrets
            .iter()
            .filter_map(|s| decode_secret(s))
            .collect()
    }

    /// Applies the fields of `body` other than `url` and `notifyUrl` (which pre-flight judges)
    /// to `self`. `"disabled": false` also forgets the target's failures.
    pub fn apply(&mut self, body: &Map<String, Value>) -> Result<(), Invalid> {
        only(
            body,
            &[
                "url",
                "description",
                "secrets",
                "headers",
                "notifyUrl",
                "disabled",
            ],
        )?;
        if let Some(v) = body.get("disabled") {
            self.disabled = v
                .as_bool()
                .ok_or_else(|| Invalid::new("disabled", "must be true or false"))?;
            if !self.disabled {
                self.failing_since_ms = None;
                self.failing_notified = false;
            }
        }
        if let Some(v) = body.get("description") {
            let text = v
                .as_str()
                .ok_or_else(|| Invalid::new("description", "must be a string"))?;
            if text.len() > MAX_TEXT {
                return Err(Invalid::new(
                    "description",
                    format!("longer than {MAX_TEXT} bytes"),
                ));
            }
            self.description = text.to_owned();
        }
        if let Some(v) = body.get("secrets") {
            self.secrets = secrets(v)?;
        }
        if let Some(v) = body.get("headers") {
            self.headers = headers(v)?;
        }
        Ok(())
    }
}

impl Filter {
    pub fn apply(&mut self, body: &Map<String, Value>) -> Result<(), Invalid> {
        only(body, &["events"])?;
        if let Some(v) = body.get("events") {
            let list = v
                .as_array()
                .filter(|l| !l.is_empty() && l.len() <= MAX_EVENTS)
                .ok_or_else(|| {
                    Invalid::new(
                        "events",
                        format!("must be a list of 1 to {MAX_EVENTS} event types"),
                    )
                })?;
            let mut events = Vec::with_capacity(list.len());
            for (i, e) in list.iter().enumerate() {
                let field = format!("events[{i}]");
                let name = e
                    .as_str()
                    .ok_or_else(|| Invalid::new(&field, "must be a string"))?;
                check_pattern(name).map_err(|e| Invalid::new(&field, e))?;
                events.push(name.to_owned());
            }
            self.events = events;
        }
        Ok(())
    }
}

/// Refuses fields other than `known`.
pub fn only(body: &Map<String, Value>, known: &[&str]) -> Result<(), Invalid> {
    match body.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(Invalid::new(
            k,
            format!("unknown field; known: {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// An event type: dotted segments of `A-Z a-z 0-9 _ -` (`core.orders.created.v1`).
pub fn check_type(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TEXT
        && name.split('.').all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        let shown: String = name.chars().take(100).collect();
        Err(format!(
            "{shown:?} is not an event type (dotted names of A-Z a-z 0-9 _ -, e.g. core.orders.created.v1)"
        ))
    }
}

/// A filter's entry: an event type, or `prefix.*`.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    match pattern.strip_suffix(".*") {
        Some(prefix) => check_type(prefix),
        None => check_type(pattern),
    }
    .map_err(|_| {
        let shown: String = pattern.chars().take(100).collect();
        format!(
            "{shown:?} is not an event type or a prefix.* wildcard (dotted names of A-Z a-z 0-9 _ -)"
        )
    })
}

/// Whether filter entry `pattern` matches event type `name`: exactly, or `a.b.*` every type
/// under `a.b.` (not `a.b` itself).
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.len() > prefix.len() && name.starts_with(prefix),
        None => pattern == name,
    }
}

/// The secret key of a `whsec_` string.
pub fn decode_secret(text: &str) -> Option<Vec<u8>> {
    text.strip_prefix("whsec_")
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b))
                .ok()
        })
        .filter(|k| !k.is_empty())
}

/// A fresh secret of 24 random bytes, for a target created without one.
pub fn new_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn secrets(v: &Value) -> Result<Vec<String>, Invalid> {
    let list = v
        .as_array()
        .filter(|l| !l.is_empty() && l.len() <= MAX_SECRETS)
        .ok_or_else(|| {
            Invalid::new(
                "secrets",
                format!("must be a list of 1 to {MAX_SECRETS} whsec_ secrets"),
            )
        })?;
    list.iter()
        .enumerate()
        .map(|(i, s)| match s.as_str() {
            Some(text) if decode_secret(text).is_some() => Ok(text.to_owned()),
            // The message never quotes the secret.
            _ => Err(Invalid::new(
                &format!("secrets[{i}]"),
                "must be \"whsec_\" followed by base64",
            )),
        })
        .collect()
}

/// Header names whomp writes or that belong to the connection, not to a target.
fn reserved(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("webhook-")
        || n.starts_with("whomp-")
        || httpmsg::is_hop_by_hop(&n)
        || matches!(n.as_str(), "host" | "content-length" | "content-type")
}

fn headers(v: &Value) -> Result<Vec<(String, String)>, Invalid> {
    let map = v
        .as_object()
        .filter(|m| m.len() <= MAX_HEADERS)
        .ok_or_else(|| {
            Invalid::new(
                "headers",
                format!("must be an object of at most {MAX_HEADERS} name: value strings"),
            )
        })?;
    map.iter()
        .map(|(name, value)| {
            let field = format!("headers.{}", name.chars().take(100).collect::<String>());
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(Invalid::new(&field, "is not a header field name"));
            }
            if reserved(name) {
                return Err(Invalid::new(&field, "is set by whomp, not by a target"));
            }
            let value = value
                .as_str()
                .filter(|t| t.len() <= MAX_TEXT && http::HeaderValue::from_str(t).is_ok())
                .ok_or_else(|| {
                    Invalid::new(&field, "must be a header value (visible text, no CR or LF)")
                })?;
            Ok((name.clone(), value.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn patterns_match_exact_names_and_prefixes() {
        assert!(matches("core.orders.created.v1", "core.orders.created.v1"));
        assert!(!matches("core.orders.created.v1", "core.orders.created.v2"));
        assert!(matches("core.orders.*", "core.orders.created.v1"));
        assert!(matches("core.*", "core.orders"));
        assert!(!matches("core.orders.*", "core.orders"));
        assert!(!matches("core.orders.*", "core.ordersx.created"));
        assert!(check_pattern("core.orders.*").is_ok());
        assert!(check_pattern("core.*.created").is_err());
        assert!(check_pattern("*").is_err());
        assert!(check_type("core.orders.*").is_err());
        assert!(check_type("a..b").is_err());
        assert_eq!(
            check_type("a b").unwrap_err(),
            "\"a b\" is not an event type (dotted names of A-Z a-z 0-9 _ -, e.g. core.orders.created.v1)"
        );
    }

    #[test]
    fn target_fields_are_checked_by_name() {
        let mut t = Target {
            id: "t".into(),
            url: "https://a.example/".into(),
            description: String::new(),
            secrets: vec![],
            ..Default::default()
        };
        let check = |t: &mut Target, v: Value| t.apply(&obj(v)).map_err(|e| e.field);
        assert_eq!(
            check(&mut t, json!({"secrets": ["nope"]})),
            Err("secrets[0]".into())
        );
        assert_eq!(check(&mut t, json!({"secrets": []})), Err("secrets".into()));
        assert_eq!(
            check(&mut t, json!({"headers": {"Webhook-Id": "x"}})),
            Err("headers.Webhook-Id".into())
        );
        assert_eq!(
            check(&mut t, json!({"headers": {"X-A": "a\r\nb"}})),
            Err("headers.X-A".into())
        );
        assert_eq!(check(&mut t, json!({"colour": 1})), Err("colour".into()));
        let both = json!({"secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", new_secret()],
                          "headers": {"X-Tenant": "7"}, "description": "shop"});
        assert_eq!(check(&mut t, both), Ok(()));
        assert_eq!(t.keys().len(), 2);
        assert_eq!(t.shown()["secretCount"], 2);
        assert_eq!(t.shown()["headers"]["X-Tenant"], "7");
        assert!(
            t.shown().get("secrets").is_none(),
            "secrets are never shown"
        );
    }

    #[test]
    fn filter_events_are_checked_by_index() {
        let mut f = Filter {
            id: "f".into(),
            events: vec![],
            created_at: String::new(),
            updated_at: String::new(),
        };
        let err = f
            .apply(&obj(json!({"events": ["a.b", "a b"]})))
            .unwrap_err();
        assert_eq!(err.field, "events[1]");
        assert_eq!(
            f.apply(&obj(json!({"events": []}))).unwrap_err().field,
            "events"
        );
        f.apply(&obj(json!({"events": ["a.b", "c.*"]}))).unwrap();
        assert_eq!(f.events, ["a.b", "c.*"]);
    }
}
