//! Leaf values whose `Deserialize` parses the text, so that serde_yaml_ng attaches the location of
//! a bad duration, address, range, method, URL, number, boolean or word (a log level) to its own
//! error, and a secret wrapper that keeps tokens and keys out of `Debug` output.
//!
//! A bad leaf must not stop the reading, or one typo would hide every later problem. While
//! [`collecting`] runs, a bad leaf is recorded and reads as `None` (each leaf type holds an
//! `Option`), and the build step skips it; `check::parse` then reads the file again once per bad
//! leaf, failing at that one, so that serde_yaml_ng reports where it is.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::value::StrDeserializer;
use serde::de::{
    self, Deserialize, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess,
    Unexpected, Visitor,
};

/// A secret (bearer token, signing key) whose `Debug` prints `***`, so that a config dumped into
/// a log line never leaks it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret value.
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The secret itself, for the one place that must use it (comparing, signing).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: AsRef<[u8]>> Secret<T> {
    /// Compares `candidate` with the secret in time that depends only on their lengths, so that
    /// a caller checking a bearer token does not leak how many leading bytes were right.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let secret = self.0.as_ref();
        if secret.len() != candidate.len() {
            return false;
        }
        secret
            .iter()
            .zip(candidate)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

// In every leaf type below, `None` is a value that did not parse, already reported.

/// A duration written as a number and a unit: `"250ms"`, `"30s"`, `"5m"`, `"24h"`, `"7d"`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DurationValue(pub(crate) Option<Duration>);

/// A listening or admin address: an IP and a port.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AddrValue(pub(crate) Option<SocketAddr>);

/// A DNS server: an IP, optionally with a port (53 when omitted).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DnsServerValue(pub(crate) Option<SocketAddr>);

/// An address range; a bare address means just that address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CidrValue(pub(crate) Option<IpNet>);

/// A single IP address in canonical notation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IpValue(pub(crate) Option<IpAddr>);

/// An HTTP method token, case-sensitive as HTTP wants it.
#[derive(Debug, Clone)]
pub(crate) struct MethodValue(pub(crate) Option<http::Method>);

/// A URL that at least parses as a URI; whether it is absolute http(s) is checked later, so that
/// several such problems can be reported together.
#[derive(Debug, Clone)]
pub(crate) struct UriValue(pub(crate) Option<http::Uri>);

/// A NATS server URL: `nats://host:port` or `tls://host:port` (port 4222 when omitted), without
/// credentials (those are `queue.token` or `queue.user`/`password`, kept out of logs).
#[derive(Debug, Clone)]
pub(crate) struct NatsUrlValue(pub(crate) Option<String>);

/// A whole number from `MIN` to `MAX` (or to the most `T` holds, if less): counts, sizes, ports,
/// statuses. Written as a plain number, quoted or not; not `1.5`, `1e3` or `10MB`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Whole<T, const MIN: u64 = 0, const MAX: u64 = { u64::MAX }>(pub(crate) Option<T>);

/// One of a fixed set of words, such as a log level: `T` is an enum whose derived `Deserialize`
/// names the words, and says which ones when another is written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Word<T>(pub(crate) Option<T>);

/// `true` or `false`, nothing else (not `yes`, `on` or `1`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flag(pub(crate) Option<bool>);

/// The bad leaves of one reading of a file.
struct Leaves {
    /// Fail at the bad leaf with this index, rather than record it.
    fail_at: Option<usize>,
    messages: Vec<String>,
}

thread_local! {
    /// Set while [`collecting`] runs; outside it (a leaf read on its own), a bad leaf fails.
    static LEAVES: RefCell<Option<Leaves>> = const { RefCell::new(None) };
}

/// Runs `read` with bad leaves recorded instead of failing (each reads as `None`), except the one
/// with index `fail_at`, which fails as it would outside; returns what `read` returned and the
/// messages of the bad leaves recorded.
pub(crate) fn collecting<T>(fail_at: Option<usize>, read: impl FnOnce() -> T) -> (T, Vec<String>) {
    let outer = LEAVES.replace(Some(Leaves {
        fail_at,
        messages: Vec::new(),
    }));
    let result = read();
    let leaves = LEAVES.replace(outer);
    (result, leaves.map(|l| l.messages).unwrap_or_default())
}

/// A leaf that did not parse: recorded as `None`, or the error that stops the reading.
fn bad_leaf<T, E: de::Error>(message: String) -> Result<Option<T>, E> {
    LEAVES.with_borrow_mut(|leaves| match leaves {
        Some(leaves) if leaves.fail_at != Some(leaves.messages.len()) => {
            leaves.messages.push(message);
            Ok(None)
        }
        _ => Err(E::custom(message)),
    })
}

/// A mapping with free-form keys (host names, key names) that refuses a repeated key instead of
/// silently keeping the last one, and keeps the file's order.
#[derive(Debug, Clone)]
pub(crate) struct UniqueMap<V>(pub(crate) Vec<(String, V)>);

impl<V> Default for UniqueMap<V> {
    fn default() -> Self {
        UniqueMap(Vec::new())
    }
}

/// A list of bearer tokens, whose type errors never quote what was written (it may be a token).
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenList(pub(crate) Vec<String>);

/// Parses a duration; the error is the whole message shown to the operator.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const GENERAL: &str = "expected a number and a unit (ms, s, m, h, d), e.g. \"30s\"";
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("invalid duration {text:?}: {GENERAL}"));
    }
    let millis_per_unit: u64 = match unit {
        "" => {
            return Err(format!(
                "invalid duration {text:?}: a unit is required (ms, s, m, h, d), e.g. \"{digits}s\""
            ))
        }
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("invalid duration {text:?}: {GENERAL}")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(millis_per_unit))
        .map(Duration::from_millis)
        .ok_or_else(|| format!("invalid duration {text:?}: too large"))
}

/// Writes a duration the way the config spells it, in the largest unit that divides it exactly.
pub(crate) fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return format!("{duration:?}");
    }
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if millis != 0 && millis % size == 0 {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = SocketAddr::from_str(text) {
        return Ok(addr);
    }
    if let Ok(ip) = IpAddr::from_str(text) {
        let example = SocketAddr::new(ip, 8080);
        return Err(format!(
            "invalid address {text:?}: missing port, e.g. \"{example}\""
        ));
    }
    Err(format!(
        "invalid address {text:?}: expected IP:port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""
    ))
}

fn parse_dns_server(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = SocketAddr::from_str(text) {
        return Ok(addr);
    }
    IpAddr::from_str(text)
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| {
            format!(
                "invalid DNS server {text:?}: expected an IP address, optionally with a port, \
                 e.g. \"192.0.2.53\" or \"[2001:db8::53]:5353\""
            )
        })
}

fn parse_cidr(text: &str) -> Result<IpNet, String> {
    if let Ok(ip) = IpAddr::from_str(text) {
        return Ok(IpNet::from(ip));
    }
    let net = IpNet::from_str(text).map_err(|_| {
        format!(
            "invalid CIDR {text:?}: expected an address range such as \"10.0.0.0/8\" or \
             \"2001:db8::/32\""
        )
    })?;
    if net.trunc() != net {
        return Err(format!(
            "invalid CIDR {text:?}: host bits are set, did you mean \"{}\"?",
            net.trunc()
        ));
    }
    Ok(net)
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    IpAddr::from_str(text).map_err(|_| {
        format!("invalid IP address {text:?}: expected e.g. \"192.0.2.10\" or \"2001:db8::10\"")
    })
}

fn parse_method(text: &str) -> Result<http::Method, String> {
    let upper = text.to_ascii_uppercase();
    // Suggest the upper-case spelling only where it is a method name itself.
    if upper != text && http::Method::from_bytes(upper.as_bytes()).is_ok() {
        return Err(format!(
            "invalid method {text:?}: methods are case-sensitive, did you mean {upper:?}?"
        ));
    }
    http::Method::from_bytes(text.as_bytes())
        .map_err(|_| format!("invalid method {text:?}: expected a method name such as \"POST\""))
}

/// Parses a URL; the error never quotes it, as it may hold a password, a token in its path or a
/// key in its query, and config errors end up in logs.
fn parse_uri(text: &str) -> Result<http::Uri, String> {
    http::Uri::from_str(text).map_err(|err| format!("invalid URL: {err}"))
}

/// Checks a NATS server URL; the message never quotes it, as it may hold a secret.
fn parse_nats_url(text: &str) -> Result<String, String> {
    let uri = http::Uri::from_str(text)
        .map_err(|_| "invalid server URL (expected nats://host:port)".to_owned())?;
    if !matches!(uri.scheme_str(), Some("nats" | "tls")) {
        return Err("server URL scheme must be nats:// or tls://".to_owned());
    }
    let Some(authority) = uri.authority() else {
        return Err("server URL has no host".to_owned());
    };
    if authority.as_str().contains('@') {
        return Err(
            "server URL must not carry credentials (user:password@ or token@): use \
                    queue.token, or queue.user and queue.password"
                .to_owned(),
        );
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("server URL must be a scheme, a host and a port only".to_owned());
    }
    Ok(text.to_owned())
}

/// A visitor for a scalar that a function turns into a value or an operator-facing message.
struct ParseVisitor<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
}

impl<T> Visitor<'_> for ParseVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Option<T>, E> {
        match (self.parse)(text) {
            Ok(value) => Ok(Some(value)),
            Err(message) => bad_leaf(message),
        }
    }
}

/// Implements `Deserialize` for a leaf newtype through a parse function.
macro_rules! parsed_leaf {
    ($name:ident, $expecting:literal, $parse:expr) => {
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer
                    .deserialize_str(ParseVisitor {
                        expecting: $expecting,
                        parse: $parse,
                    })
                    .map($name)
            }
        }
    };
}

parsed_leaf!(DurationValue, "a duration such as \"30s\"", parse_duration);
parsed_leaf!(
    AddrValue,
    "an address such as \"127.0.0.1:8080\"",
    parse_addr
);
parsed_leaf!(
    DnsServerValue,
    "an address such as \"192.0.2.53\"",
    parse_dns_server
);
parsed_leaf!(
    CidrValue,
    "an address range such as \"10.0.0.0/8\"",
    parse_cidr
);
parsed_leaf!(IpValue, "an IP address such as \"192.0.2.10\"", parse_ip);
parsed_leaf!(MethodValue, "a method name such as \"POST\"", parse_method);

parsed_leaf!(
    UriValue,
    "a URL such as \"http://10.0.3.7:8000/hooks\"",
    parse_uri
);

parsed_leaf!(
    NatsUrlValue,
    "a NATS server URL such as \"nats://10.0.0.1:4222\"",
    parse_nats_url
);

/// The integer types a [`Whole`] is read into, and the most each holds.
pub(crate) trait WholeType: TryFrom<u64> {
    const MAX: u64;
}

macro_rules! whole_type {
    ($($t:ty),*) => {
        $(impl WholeType for $t {
            const MAX: u64 = <$t>::MAX as u64;
        })*
    };
}

whole_type!(u16, u32, u64, usize);

/// A number written in the file and valid; a bad one was reported and counts as left out.
pub(crate) fn whole<T, const MIN: u64, const MAX: u64>(
    value: Option<Whole<T, MIN, MAX>>,
) -> Option<T> {
    value.and_then(|n| n.0)
}

impl<T: WholeType, const MIN: u64, const MAX: u64> Whole<T, MIN, MAX> {
    /// The largest value accepted.
    const HIGHEST: u64 = if MAX < T::MAX { MAX } else { T::MAX };

    /// What the file should hold, in words.
    fn expected() -> String {
        match (MIN, Self::HIGHEST) {
            (0, u64::MAX) => "a whole number".to_owned(),
            (min, u64::MAX) => format!("a whole number of at least {min}"),
            (min, max) => format!("a whole number from {min} to {max}"),
        }
    }

    fn bad<E: de::Error>(written: impl fmt::Display) -> Result<Option<T>, E> {
        bad_leaf(format!(
            "invalid number {written}: expected {}",
            Self::expected()
        ))
    }
}

impl<'de, T: WholeType, const MIN: u64, const MAX: u64> Deserialize<'de> for Whole<T, MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WholeVisitor<T, const MIN: u64, const MAX: u64>(PhantomData<T>);

        impl<T: WholeType, const MIN: u64, const MAX: u64> Visitor<'_> for WholeVisitor<T, MIN, MAX> {
            type Value = Option<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&Whole::<T, MIN, MAX>::expected())
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Option<T>, E> {
                match T::try_from(n) {
                    Ok(value) if (MIN..=Whole::<T, MIN, MAX>::HIGHEST).contains(&n) => {
                        Ok(Some(value))
                    }
                    _ => Whole::<T, MIN, MAX>::bad(n),
                }
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Option<T>, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Whole::<T, MIN, MAX>::bad(n),
                }
            }

            fn visit_u128<E: de::Error>(self, n: u128) -> Result<Option<T>, E> {
                Whole::<T, MIN, MAX>::bad(n)
            }

            fn visit_i128<E: de::Error>(self, n: i128) -> Result<Option<T>, E> {
                Whole::<T, MIN, MAX>::bad(n)
            }

            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Option<T>, E> {
                // Debug keeps the fraction of `1.0`, so the message shows what was written.
                Whole::<T, MIN, MAX>::bad(format_args!("{n:?}"))
            }

            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Option<T>, E> {
                Whole::<T, MIN, MAX>::bad(b)
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Option<T>, E> {
                // A number in quotes is still that number.
                match text.parse::<u64>() {
                    Ok(n) if text.bytes().all(|b| b.is_ascii_digit()) => self.visit_u64(n),
                    _ => Whole::<T, MIN, MAX>::bad(format_args!("{text:?}")),
                }
            }
        }

        deserializer
            .deserialize_any(WholeVisitor::<T, MIN, MAX>(PhantomData))
            .map(Whole)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Word<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WordVisitor<T>(PhantomData<T>);

        impl<T: DeserializeOwned> Visitor<'_> for WordVisitor<T> {
            type Value = Option<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a word")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Option<T>, E> {
                match T::deserialize(StrDeserializer::<de::value::Error>::new(text)) {
                    Ok(value) => Ok(Some(value)),
                    Err(err) => bad_leaf(err.to_string()),
                }
            }
        }

        deserializer
            .deserialize_str(WordVisitor(PhantomData))
            .map(Word)
    }
}

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FlagVisitor;

        impl FlagVisitor {
            fn bad<E: de::Error>(written: impl fmt::Display) -> Result<Option<bool>, E> {
                bad_leaf(format!("invalid boolean {written}: expected true or false"))
            }
        }

        impl Visitor<'_> for FlagVisitor {
            type Value = Option<bool>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true or false")
            }

            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Option<bool>, E> {
                Ok(Some(b))
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Option<bool>, E> {
                Self::bad(n)
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Option<bool>, E> {
                Self::bad(n)
            }

            fn visit_u128<E: de::Error>(self, n: u128) -> Result<Option<bool>, E> {
                Self::bad(n)
            }

            fn visit_i128<E: de::Error>(self, n: i128) -> Result<Option<bool>, E> {
                Self::bad(n)
            }

            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Option<bool>, E> {
                Self::bad(format_args!("{n:?}"))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Option<bool>, E> {
                // `"true"` in quotes is still true.
                match text {
                    "true" => Ok(Some(true)),
                    "false" => Ok(Some(false)),
                    _ => Self::bad(format_args!("{text:?}")),
                }
            }
        }

        deserializer.deserialize_any(FlagVisitor).map(Flag)
    }
}

/// Refuses every scalar without quoting it, for values that may be secrets (serde's own message
/// would include the value).
macro_rules! refuse_scalars_quietly {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(E::invalid_type(Unexpected::Other("boolean"), &self))
        }

        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(E::invalid_type(Unexpected::Other("integer"), &self))
        }

        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(E::invalid_type(Unexpected::Other("integer"), &self))
        }

        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(E::invalid_type(Unexpected::Other("number"), &self))
        }

        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(E::invalid_type(Unexpected::Other("string"), &self))
        }
    };
}

impl<'de> Deserialize<'de> for TokenList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;

        impl<'de> Visitor<'de> for ListVisitor {
            type Value = TokenList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of tokens")
            }

            refuse_scalars_quietly!();

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TokenList, A::Error> {
                let mut tokens = Vec::new();
                while let Some(token) = seq.next_element()? {
                    tokens.push(token);
                }
                Ok(TokenList(tokens))
            }
        }

        deserializer.deserialize_any(ListVisitor)
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = UniqueMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }

            refuse_scalars_quietly!();

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut keys: Vec<String> = Vec::new();
                let mut values = Vec::new();
                while let Some(key) = access.next_key_seed(NewKey(&keys))? {
                    values.push(access.next_value()?);
                    keys.push(key);
                }
                Ok(UniqueMap(keys.into_iter().zip(values).collect()))
            }
        }

        /// Reads a key and refuses one already seen, so that the error points at the repeat.
        struct NewKey<'a>(&'a [String]);

        impl<'de> DeserializeSeed<'de> for NewKey<'_> {
            type Value = String;

            fn deserialize<D: Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> Result<String, D::Error> {
                deserializer.deserialize_str(self)
            }
        }

        impl Visitor<'_> for NewKey<'_> {
            type Value = String;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<String, E> {
                if self.0.iter().any(|seen| seen == key) {
                    Err(E::custom(format_args!("duplicate key `{key}`")))
                } else {
                    Ok(key.to_owned())
                }
            }
        }

        deserializer.deserialize_any(MapVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_duration(text: &str, expected: Result<Duration, &str>) {
        assert_eq!(
            parse_duration(text),
            expected.map_err(str::to_owned),
            "{text}"
        );
    }

    #[test]
    fn durations_parse_with_every_unit() {
        check_duration("250ms", Ok(Duration::from_millis(250)));
        check_duration("30s", Ok(Duration::from_secs(30)));
        check_duration("5m", Ok(Duration::from_secs(300)));
        check_duration("24h", Ok(Duration::from_secs(86_400)));
        check_duration("7d", Ok(Duration::from_secs(7 * 86_400)));
        check_duration("0s", Ok(Duration::ZERO));
    }

    #[test]
    fn durations_refuse_missing_or_unknown_units() {
        check_duration(
            "10",
            Err("invalid duration \"10\": a unit is required (ms, s, m, h, d), e.g. \"10s\""),
        );
        let general = "expected a number and a unit (ms, s, m, h, d), e.g. \"30s\"";
        for text in ["10 s", "", "s", "1.5s", "-1s", "10sec", "ten"] {
            check_duration(text, Err(&format!("invalid duration {text:?}: {general}")));
        }
        check_duration(
            "99999999999999999999d",
            Err("invalid duration \"99999999999999999999d\": too large"),
        );
        check_duration(
            "999999999999999999d",
            Err("invalid duration \"999999999999999999d\": too large"),
        );
    }

    #[test]
    fn durations_format_in_their_largest_exact_unit() {
        for (millis, text) in [
            (250, "250ms"),
            (1_000, "1s"),
            (90_000, "90s"),
            (3_600_000, "1h"),
            (604_800_000, "7d"),
            (0, "0ms"),
        ] {
            assert_eq!(format_duration(Duration::from_millis(millis)), text);
        }
    }

    #[test]
    fn addresses_say_what_is_missing() {
        assert_eq!(
            parse_addr("127.0.0.1"),
            Err("invalid address \"127.0.0.1\": missing port, e.g. \"127.0.0.1:8080\"".to_owned())
        );
        assert_eq!(
            parse_addr("localhost:80"),
            Err(
                "invalid address \"localhost:80\": expected IP:port, e.g. \"127.0.0.1:8080\" or \
                 \"[::1]:8080\""
                    .to_owned()
            )
        );
        assert_eq!(parse_addr("[::1]:9").map(|a| a.port()), Ok(9));
    }

    #[test]
    fn dns_servers_default_to_port_53() {
        assert_eq!(
            parse_dns_server("192.0.2.1"),
            Ok("192.0.2.1:53".parse().unwrap())
        );
        assert_eq!(parse_dns_server("::1"), Ok("[::1]:53".parse().unwrap()));
        assert_eq!(
            parse_dns_server("127.0.0.1:5353"),
            Ok("127.0.0.1:5353".parse().unwrap())
        );
    }

    #[test]
    fn cidrs_accept_bare_addresses_and_refuse_host_bits() {
        assert_eq!(parse_cidr("10.0.0.1"), Ok("10.0.0.1/32".parse().unwrap()));
        assert_eq!(
            parse_cidr("2001:db8::/32"),
            Ok("2001:db8::/32".parse().unwrap())
        );
        assert_eq!(
            parse_cidr("10.1.2.3/8"),
            Err(
                "invalid CIDR \"10.1.2.3/8\": host bits are set, did you mean \"10.0.0.0/8\"?"
                    .to_owned()
            )
        );
        assert!(parse_cidr("127.1/8").is_err());
    }

    #[test]
    fn ips_refuse_non_canonical_spellings() {
        for text in ["127.1", "0x7f.0.0.1", "2130706433"] {
            assert!(parse_ip(text).is_err(), "{text}");
        }
    }

    #[test]
    fn methods_are_case_sensitive_tokens() {
        assert_eq!(
            parse_method("PURGE").map(|m| m.to_string()),
            Ok("PURGE".to_owned())
        );
        assert_eq!(
            parse_method("post"),
            Err(
                "invalid method \"post\": methods are case-sensitive, did you mean \"POST\"?"
                    .to_owned()
            )
        );
        assert_eq!(
            parse_method("PO ST"),
            Err("invalid method \"PO ST\": expected a method name such as \"POST\"".to_owned())
        );
    }

    #[test]
    fn secrets_hide_in_debug_and_compare_whole() {
        let secret = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{secret:?}"), "\"***\"");
        assert!(secret.matches(b"hunter2"));
        assert!(!secret.matches(b"hunter3"));
        assert!(!secret.matches(b"hunter"));
        assert_eq!(secret.expose(), "hunter2");
    }
}
