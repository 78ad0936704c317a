//! The whole pre-flight: the static checks, then the addresses the host resolves to, every one.
//!
//! One bad address refuses the target, because whomp cannot know which address the network will
//! pick, and a name that resolves to a public and a private address is how DNS-based attacks
//! start. whomp calls [`Guard::preflight`] at submission; before each delivery attempt it runs
//! [`Rules::check_request`] on the stored message again and then [`Guard::resolve_checked`], and
//! connects only to the addresses that call returned: an attacker who changes the DNS answer
//! between the check and the connection (DNS rebinding) gains nothing.

use std::net::{IpAddr, SocketAddr};

use crate::target::{Host, Target};
use crate::{Rejection, Resolver, Rule, Rules};

/// The rules and the resolver whose answers they judge.
#[derive(Debug, Clone)]
pub struct Guard {
    /// What is allowed.
    pub rules: Rules,
    /// Where addresses come from.
    pub resolver: Resolver,
}

/// A target that passed the pre-flight and the addresses it may be reached at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The normalised target.
    pub target: Target,
    /// Every address checked; connect to these and nothing else.
    pub addrs: Vec<IpAddr>,
}

impl Verdict {
    /// The checked addresses with the target's port: what to hand the HTTP client to connect to.
    pub fn socket_addrs(&self) -> Vec<SocketAddr> {
        self.addrs
            .iter()
            .map(|&ip| SocketAddr::new(ip, self.target.port))
            .collect()
    }
}

impl Guard {
    /// A guard applying `rules` to what `resolver` answers.
    pub fn new(rules: Rules, resolver: Resolver) -> Self {
        Guard { rules, resolver }
    }

    /// The whole pre-flight of a message: [`Rules::check_request`], then the host's addresses
    /// (a literal address skips DNS), each of which must pass [`Rules::check_addr`].
    pub async fn preflight(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, Vec<u8>)],
    ) -> Result<Verdict, Rejection> {
        let target = self.rules.check_request(method, url, headers)?;
        let addrs = self.resolve(&target).await?;
        Ok(Verdict { target, addrs })
    }

    /// Re-checks a target against the current rules (scheme, port, host) and resolves it afresh,
    /// checking every address; whomp calls this before each attempt and connects only to the
    /// addresses returned.
    pub async fn resolve_checked(&self, target: &Target) -> Result<Vec<IpAddr>, Rejection> {
        self.rules.check_target(target)?;
        self.resolve(target).await
    }

    async fn resolve(&self, target: &Target) -> Result<Vec<IpAddr>, Rejection> {
        let name = match &target.host {
            Host::Ip(ip) => return Ok(vec![*ip]),
            Host::Name(name) => name,
        };
        let addrs = self.resolver.lookup(name).await?;
        for &addr in &addrs {
            if let Some(denial) = self.rules.deny(addr) {
                return Err(Rejection::new(
                    Rule::Address,
                    format!(
                        "host {name} resolves to {}, {}",
                        denial.subject(),
                        denial.range()
                    ),
                ));
            }
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::parse_target;
    use crate::testing::DnsServer;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn checks_every_address_every_time() {
        let dns = DnsServer::start(HashMap::from([(
            "hooks.example.com".to_string(),
            vec![ip("93.184.216.34")],
        )]))
        .await
        .unwrap();
        let guard = Guard::new(
            Rules::default(),
            Resolver::new(vec![dns.addr()], HashMap::new()),
        );
        let verdict = guard
            .preflight("POST", "https://HOOKS.example.com/in", &[])
            .await
            .unwrap();
        assert_eq!(verdict.target.url(), "https://hooks.example.com/in");
        assert_eq!(verdict.addrs, [ip("93.184.216.34")]);

        // The name now rebinds to a public and a private address: the next attempt is refused.
        dns.set(
            "hooks.example.com",
            vec![ip("93.184.216.34"), ip("::ffff:10.1.2.3")],
        );
        let rejection = guard.resolve_checked(&verdict.target).await.unwrap_err();
        assert_eq!(rejection.rule, Rule::Address);
        assert_eq!(
            rejection.message,
            "host hooks.example.com resolves to ::ffff:10.1.2.3 (ipv4-mapped, embeds 10.1.2.3), \
             inside rejected range 10.0.0.0/8 (private)"
        );
        assert_eq!(dns.queries(), 4);
    }

    #[tokio::test]
    async fn cached_answers_are_checked_at_every_attempt() {
        let dns = DnsServer::start(HashMap::from([(
            "hooks.example.com".to_string(),
            vec![ip("93.184.216.34")],
        )]))
        .await
        .unwrap();
        dns.set_ttl(300);
        let mut guard = Guard::new(
            Rules::default(),
            Resolver::new(vec![dns.addr()], HashMap::new()),
        );
        let verdict = guard
            .preflight("POST", "https://hooks.example.com/in", &[])
            .await
            .unwrap();
        // Within the TTL a rebinding is not seen: the attempt gets the address checked before,
        // which is the only one the client may connect to.
        dns.set("hooks.example.com", vec![ip("10.1.2.3")]);
        assert_eq!(
            guard.resolve_checked(&verdict.target).await.unwrap(),
            [ip("93.184.216.34")]
        );
        // The cached address is judged by the rules of the moment, at every attempt.
        guard.rules.reject_cidrs = vec!["93.184.216.0/24".parse().unwrap()];
        let rejection = guard.resolve_checked(&verdict.target).await.unwrap_err();
        assert_eq!(rejection.rule, Rule::Address);
        assert!(
            rejection
                .message
                .starts_with("host hooks.example.com resolves to 93.184.216.34"),
            "{}",
            rejection.message
        );
        assert_eq!(dns.queries(), 2, "one A and one AAAA query, then the cache");
    }

    #[tokio::test]
    async fn literal_addresses_skip_dns_and_rules_are_rechecked() {
        let mut guard = Guard::new(Rules::default(), Resolver::new(Vec::new(), HashMap::new()));
        let verdict = guard
            .preflight("POST", "https://93.184.216.34:8443/", &[])
            .await
            .unwrap();
        assert_eq!(verdict.addrs, [ip("93.184.216.34")]);
        assert_eq!(
            verdict.socket_addrs(),
            [SocketAddr::new(ip("93.184.216.34"), 8443)]
        );
        guard.rules.ports = vec![443];
        let rejection = guard.resolve_checked(&verdict.target).await.unwrap_err();
        assert_eq!(rejection.message, "port 8443 is not allowed (allowed: 443)");
        let target = parse_target("https://[fe80::1]/").unwrap();
        let rejection = guard.resolve_checked(&target).await.unwrap_err();
        assert_eq!(
            rejection.message,
            "address fe80::1 is inside rejected range fe80::/10 (link-local)"
        );
    }
}
