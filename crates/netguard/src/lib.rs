//! netguard decides whether whomp may send a message to the URL an internal service handed it.
//!
//! whomp sits inside the network and sends what it is told to send, so without a guard any
//! internal service (or anyone who can make one misbehave) could use it to reach the loopback
//! interface, the cloud metadata endpoint or a private backend: server-side request forgery.
//! This crate is the whole pre-flight: a strict URL parser that normalises what attackers like to
//! misspell ([`parse_target`]), the operator's [`Rules`] on top of a built-in list of every
//! special-purpose address range, a caching resolver ([`Resolver`], hickory's) that does not depend
//! on the C library, and the [`Guard`] that resolves a host and checks *every* address it gets,
//! cached or not. whomp connects only to addresses a [`Guard`] returned, so a second lookup cannot
//! change the answer.
//!
//! The resolver and the guard are the `resolver` feature; without it the crate is the rules and
//! the URL parser, so that the config crate builds checked [`Rules`] without a DNS client.
//!
//! Everything here refuses with a [`Rejection`]: the [`Rule`] that refused (a metrics label) and
//! a message for the human who owns the hook.

#[cfg(feature = "resolver")]
mod guard;
mod ranges;
#[cfg(feature = "resolver")]
mod resolver;
mod rules;
mod target;
#[cfg(feature = "testing")]
pub mod testing;

#[cfg(feature = "resolver")]
pub use guard::{Guard, Verdict};
#[cfg(feature = "resolver")]
pub use resolver::{Resolver, ResolverConfigError, DEFAULT_TIMEOUT};
pub use rules::{InvalidRules, Problem, Rules, DEFAULT_MAX_URL_BYTES};
pub use target::{parse_target, Host, Scheme, Target};

/// Why a target was refused: the rule that refused it and a message saying what to change.
///
/// whomp answers a submission refused this way with `422` and the message, and counts it in
/// `whomp_preflight_rejections_total{rule}` with [`Rule::as_str`]. At a delivery attempt, a
/// refusal by [`Rules::check_request`] means the message became forbidden (the rules changed)
/// and should be dead-lettered; one by [`Guard::resolve_checked`]'s lookup (a DNS failure, or an
/// answer in a refused range) is a failed attempt to retry, since DNS may change back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    /// The rule that refused the target.
    pub rule: Rule,
    /// What is wrong, for a human; it never contains raw control characters from the input.
    pub message: String,
}

impl Rejection {
    pub(crate) fn new(rule: Rule, message: impl Into<String>) -> Self {
        Rejection {
            rule,
            message: message.into(),
        }
    }
}

/// The closed set of reasons to refuse a target, used as a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The scheme is not `https` (or `http` when allowed).
    Scheme,
    /// The method is not in the allowed list or is not a valid HTTP token.
    Method,
    /// The port is out of range, not a number, or not in the allowed list.
    Port,
    /// The host name is in a reject list (configured or built-in).
    Host,
    /// A literal or resolved address is inside a rejected range.
    Address,
    /// The URL is malformed or uses a form this guard refuses (fragment, backslash, ...).
    Url,
    /// The URL carries credentials.
    Userinfo,
    /// A header field is malformed or the `Host` header disagrees with the URL.
    Header,
    /// The host could not be resolved: it does not exist, has no addresses, or DNS failed.
    Dns,
}

impl Rule {
    /// Every rule, in declaration order, for code that must pre-register metric labels.
    pub const ALL: [Rule; 9] = [
        Rule::Scheme,
        Rule::Method,
        Rule::Port,
        Rule::Host,
        Rule::Address,
        Rule::Url,
        Rule::Userinfo,
        Rule::Header,
        Rule::Dns,
    ];

    /// The rule's name as a metrics label value and in `tests/targets.txt`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Rule::Scheme => "scheme",
            Rule::Method => "method",
            Rule::Port => "port",
            Rule::Host => "host",
            Rule::Address => "address",
            Rule::Url => "url",
            Rule::Userinfo => "userinfo",
            Rule::Header => "header",
            Rule::Dns => "dns",
        }
    }

    /// The rule named `name` (as [`Rule::as_str`] spells it), if any.
    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|rule| rule.as_str() == name)
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Quotes untrusted text for a message: escaped like a Rust string and cut at 100 characters,
/// so that no message carries a CR, LF or an unbounded copy of the input.
pub(crate) fn quoted(text: &str) -> String {
    const MAX: usize = 100;
    let mut out = String::from("\"");
    for (count, c) in text.chars().enumerate() {
        if count == MAX {
            out.push_str("...");
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_round_trip() {
        for rule in Rule::ALL {
            assert_eq!(Rule::from_name(rule.as_str()), Some(rule));
        }
        assert_eq!(Rule::from_name("nope"), None);
    }

    #[test]
    fn quoted_escapes_and_truncates() {
        assert_eq!(quoted("a\r\nb"), r#""a\r\nb""#);
        let long = "x".repeat(150);
        assert_eq!(quoted(&long), format!("\"{}...\"", "x".repeat(100)));
    }
}
