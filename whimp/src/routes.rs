//! The route table: the config's routes made ready for the hot path (exact-path map, shared
//! policies, metric handles), swapped whole on reload so a request sees one consistent table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use ipnet::IpNet;
use prometheus::IntCounter;
use retry::Policy;

use crate::metrics::Metrics;

/// One route, ready to answer and forward.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub methods: Option<Vec<Method>>,
    pub allow_from: Option<Vec<IpNet>>,
    pub status: u16,
    pub body: Bytes,
    pub content_type: Option<String>,
    pub backends: Vec<Backend>,
    pub policy: Arc<Policy>,
    counters: HashMap<u16, IntCounter>,
    metrics: Metrics,
}

/// One backend of a route.
#[derive(Debug)]
pub struct Backend {
    pub url: http::Uri,
    pub timeout: std::time::Duration,
    /// `route/n` (1-based): the metrics label and the per-destination limit key.
    pub label: Arc<str>,
}

impl Route {
    /// Counts one answer with `code`.
    pub fn count(&self, code: u16) {
        match self.counters.get(&code) {
            Some(counter) => counter.inc(),
            None => self
                .metrics
                .requests
                .with_label_values(&[self.name.as_str(), code_str(code).as_str()])
                .inc(),
        }
    }

    pub fn allows_method(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
    }

    pub fn allows_source(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.allow_from
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|n| n.contains(&ip)))
    }
}

/// An IPv4-mapped IPv6 peer (dual-stack sockets) is checked as the IPv4 it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn code_str(code: u16) -> String {
    code.to_string()
}

/// All routes, by exact path and by name.
#[derive(Debug, Default)]
pub struct Table {
    by_path: HashMap<String, Arc<Route>>,
    by_name: HashMap<String, Arc<Route>>,
    unknown: Option<IntCounter>,
}

/// Why a config's routes could not be made into a table.
#[derive(Debug, thiserror::Error)]
#[error("route {route}: {reason}")]
pub struct TableError {
    pub route: String,
    pub reason: String,
}

impl Table {
    pub fn build(config: &config::whimp::Config, metrics: &Metrics) -> Result<Table, TableError> {
        let mut table = Table {
            unknown: Some(
                metrics
                    .requests
                    .with_label_values(&[telemetry::names::UNKNOWN_ROUTE, "404"]),
            ),
            ..Table::default()
        };
        for r in &config.routes {
            let fail = |reason: String| TableError {
                route: r.name.clone(),
                reason,
            };
            if r.backends.len() > usize::from(u8::MAX) {
                return Err(fail("more than 255 backends".into()));
            }
            let counters = [r.response.status, 400, 403, 405, 408, 413, 503]
                .into_iter()
                .map(|code| {
                    let counter = metrics
                        .requests
                        .with_label_values(&[r.name.as_str(), code_str(code).as_str()]);
                    (code, counter)
                })
                .collect();
            let route = Arc::new(Route {
                name: r.name.clone(),
                methods: r.methods.clone(),
                allow_from: r.allow_from.clone(),
                status: r.response.status,
                body: Bytes::from(r.response.body.clone()),
                content_type: r.response.content_type.clone(),
                backends: r
                    .backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| Backend {
                        url: b.url.clone(),
                        timeout: b.timeout,
                        label: format!("{}/{}", r.name, i + 1).into(),
                    })
                    .collect(),
                policy: Arc::new(r.retry.clone()),
                counters,
                metrics: metrics.clone(),
            });
            table.by_path.insert(r.path.clone(), route.clone());
            if table.by_name.insert(r.name.clone(), route).is_some() {
                return Err(fail("two routes have this name; names label metrics and find a stored request's route, so they must differ".into()));
            }
        }
        Ok(table)
    }

    pub fn by_path(&self, path: &str) -> Option<&Arc<Route>> {
        self.by_path.get(path)
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Route>> {
        self.by_name.get(name)
    }

    /// Counts a request for a path no route has.
    pub fn count_unknown(&self) {
        if let Some(c) = &self.unknown {
            c.inc();
        }
    }
}
