//! The settings SIGHUP may change while whomp runs (pre-flight rules, DNS, bearer tokens,
//! signing keys, retry policy, the HTTP client), built whole from a config and swapped whole,
//! so that a submission or an attempt sees one consistent set.
//!
//! It also holds the one piece that makes "connect only to a checked address" true: the HTTP
//! client's DNS resolver ([`CheckedAddrs`]) never looks anything up. Before an attempt, the
//! courier resolves and checks the host through the [`netguard::Guard`] and leases the answer
//! here for the length of the attempt; the client connects to what the lease says, and to
//! nothing at all for a host without a lease.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use config::Secret;
use netguard::{Guard, Resolver};

/// Everything reloadable.
#[derive(Debug)]
pub struct Live {
    pub guard: Guard,
    pub client: reqwest::Client,
    pub checked: Arc<CheckedAddrs>,
    /// Accepted bearer tokens; empty means no authentication.
    pub tokens: Vec<Secret<String>>,
    pub keys: BTreeMap<String, Secret<Vec<u8>>>,
    pub policy: Arc<retry::Policy>,
    /// Time allowed for one attempt.
    pub timeout: Duration,
}

/// Why a config cannot become the live settings (at start: exit 64; on reload: refused). The
/// rules and the policy come from config already checked; what is left is what only building
/// them tells.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("dns: {0}")]
    Resolver(#[from] netguard::ResolverConfigError),
    #[error("delivery: {0}")]
    Client(String),
}

impl Live {
    pub fn build(config: &config::whomp::Config) -> Result<Live, LiveError> {
        let fixed: HashMap<String, Vec<IpAddr>> = config
            .dns
            .r#static
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let resolver = if config.dns.servers.is_empty() {
            Resolver::system(fixed)?
        } else {
            Resolver::new(config.dns.servers.clone(), fixed)
        };
        let checked = Arc::new(CheckedAddrs::default());
        let tls =
            delivery::client_tls(config.delivery.ca_file.as_deref()).map_err(LiveError::Client)?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(checked.clone())
            .connect_timeout(config.delivery.connect_timeout)
            .timeout(config.delivery.timeout)
            .pool_max_idle_per_host(config.limits.max_in_flight_per_host.max(1))
            .user_agent(config.delivery.user_agent.clone())
            .build()
            .map_err(|e| LiveError::Client(format!("cannot build the HTTP client: {e}")))?;
        Ok(Live {
            guard: Guard::new(config.preflight.clone(), resolver),
            client,
            checked,
            tokens: config.auth.tokens.clone(),
            keys: config.signing.keys.clone(),
            policy: Arc::new(config.retry.clone()),
            timeout: config.delivery.timeout,
        })
    }

    /// Whether an `Authorization` header value carries an accepted token (or none is needed).
    /// Every token is compared, each in constant time.
    pub fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        if self.tokens.is_empty() {
            return true;
        }
        let Some(value) = authorization else {
            return false;
        };
        let token = match value.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => {
                value.get(7..).unwrap_or_default()
            }
            _ => return false,
        };
        self.tokens
            .iter()
            .fold(false, |found, t| t.matches(token) | found)
    }
}

/// Addresses checked by pre-flight for the attempts in flight, by host name: the only answers
/// the HTTP client's resolver gives.
#[derive(Debug, Default)]
pub struct CheckedAddrs {
    leases: Mutex<HashMap<String, (Vec<IpAddr>, usize)>>,
}

/// Keeps a host's checked addresses available to the client until dropped.
#[derive(Debug)]
pub struct Lease {
    owner: Arc<CheckedAddrs>,
    host: String,
}

impl CheckedAddrs {
    /// Makes `addrs` (all checked) the answer for `host` while the lease lives. Concurrent
    /// attempts to one host share the entry; the newest checked answer wins, and every answer
    /// it may hold was checked.
    pub fn lease(self: &Arc<Self>, host: &str, addrs: Vec<IpAddr>) -> Lease {
        let mut leases = self.lock();
        let entry = leases.entry(host.to_owned()).or_insert((Vec::new(), 0));
        entry.0 = addrs;
        entry.1 += 1;
        Lease {
            owner: self.clone(),
            host: host.to_owned(),
        }
    }

    /// The leased addresses of `host`, if an attempt to it is in flight.
    pub fn get(&self, host: &str) -> Option<Vec<IpAddr>> {
        self.lock().get(host).map(|(addrs, _)| addrs.clone())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (Vec<IpAddr>, usize)>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut leases = self.owner.lock();
        if let Some(entry) = leases.get_mut(&self.host) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                leases.remove(&self.host);
            }
        }
    }
}

impl reqwest::dns::Resolve for CheckedAddrs {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host).to_owned();
        let answer = self.get(&host);
        Box::pin(async move {
            match answer {
                // Port 0: the client puts the URL's port in.
                Some(addrs) if !addrs.is_empty() => {
                    let addrs: Vec<SocketAddr> =
                        addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect();
                    Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
                }
                _ => Err(format!(
                    "no checked addresses for {host}; whomp connects only to addresses pre-flight checked"
                )
                .into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve as _;

    fn config(text: &str) -> config::whomp::Config {
        config::parse_whomp(text, std::path::Path::new("/tmp/whomp.yaml")).unwrap()
    }

    #[tokio::test]
    async fn the_resolver_answers_only_leased_hosts() {
        let checked = Arc::new(CheckedAddrs::default());
        let name = |s: &str| s.parse::<reqwest::dns::Name>().unwrap();
        let err = match checked.resolve(name("hooks.example.com")).await {
            Ok(_) => panic!("nothing is leased"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            err,
            "no checked addresses for hooks.example.com; whomp connects only to addresses pre-flight checked"
        );
        let ip: IpAddr = "93.184.216.34".parse().unwrap();
        let first = checked.lease("hooks.example.com", vec![ip]);
        let second = checked.lease("hooks.example.com", vec![ip]);
        let got: Vec<SocketAddr> = checked
            .resolve(name("HOOKS.example.com."))
            .await
            .ok()
            .unwrap()
            .collect();
        assert_eq!(got, [SocketAddr::new(ip, 0)]);
        drop(first);
        assert!(checked.get("hooks.example.com").is_some());
        drop(second);
        assert!(checked.get("hooks.example.com").is_none());
    }

    #[test]
    fn bearer_tokens() {
        let open = Live::build(&config("dns: { servers: [127.0.0.1] }\n")).unwrap();
        assert!(open.authorized(None));
        let live = Live::build(&config(
            "auth: { tokens: [s3cret, other] }\ndns: { servers: [127.0.0.1] }\n",
        ))
        .unwrap();
        assert!(live.authorized(Some(b"Bearer s3cret")));
        assert!(live.authorized(Some(b"bearer other")));
        assert!(!live.authorized(Some(b"Bearer s3cre")));
        assert!(!live.authorized(Some(b"Basic s3cret")));
        assert!(!live.authorized(Some(b"Bearer")));
        assert!(!live.authorized(None));
    }
}
