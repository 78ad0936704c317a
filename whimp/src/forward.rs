//! Forwarding: a stored request becomes one request per backend of its route.
//!
//! The backend is looked up by route name in the *current* table at every attempt, so a
//! backend that moves is followed after a reload. What goes out: the same method and body
//! byte for byte, the original header fields minus hop-by-hop ones, `Host`, framing and
//! whimp's own metadata, plus `X-Forwarded-For/-Proto/-Host` (whimp is the edge: values sent
//! by the outside are replaced, not trusted), `Whimp-Original-Url` and `Whimp-Id`.

use std::sync::Arc;

use daemon::Current;
use delivery::{Finished, Reach, Ready, Refused, Request, Sent};
use http::{HeaderName, HeaderValue, Method};
use spool::{Attempt, Key};
use telemetry::names;

use crate::metrics::Metrics;
use crate::routes::Table;
use crate::stored;

/// whimp's side of the delivery loop.
pub struct Forwarder {
    pub routes: Arc<Current<Table>>,
    pub client: reqwest::Client,
    pub metrics: Metrics,
    /// The global policy, for messages whose route is gone.
    pub fallback: Arc<retry::Policy>,
}

impl delivery::Courier for Forwarder {
    type Payload = Request;

    fn prepare(&self, key: Key, file: Vec<u8>) -> Result<Ready<Request>, Refused> {
        let refuse = |error: String, permanent: bool| Refused {
            target: String::new(),
            error,
            permanent,
            policy: Some(self.fallback.clone()),
        };
        let stored = stored::decode(file).map_err(|e| refuse(e.to_string(), true))?;
        let route_name = &stored.meta.route;
        let table = self.routes.get();
        let route = table.by_name(route_name).ok_or_else(|| {
            refuse(
                format!("route {route_name:?} is no longer configured"),
                false,
            )
        })?;
        let index = usize::from(key.copy().saturating_sub(1));
        let backend = route.backends.get(index).ok_or_else(|| Refused {
            target: String::new(),
            error: format!("route {route_name:?} no longer has backend {}", index + 1),
            permanent: false,
            policy: Some(route.policy.clone()),
        })?;

        let query = stored.target.split_once('?').map(|(_, q)| q);
        let url = with_query(&backend.url, query);
        let method = Method::from_bytes(stored.method.as_bytes()).map_err(|_| {
            refuse(
                format!("stored method {:?} is not valid", stored.method),
                true,
            )
        })?;

        // Forwarding headers from the outside are replaced, not trusted.
        let mut headers = delivery::header_map(httpmsg::end_to_end(&stored.headers, |n| {
            n.starts_with("x-forwarded-") || n == "forwarded" || stored::is_meta(n)
        }));
        let original_host = stored
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.clone());
        let meta = stored.meta;
        let remote_ip = meta
            .remote_addr
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.ip().to_string());
        let added = [
            ("x-forwarded-for", remote_ip.map(String::into_bytes)),
            ("x-forwarded-proto", meta.proto.map(String::into_bytes)),
            ("x-forwarded-host", original_host),
            (
                "whimp-original-url",
                meta.original_url.map(String::into_bytes),
            ),
            ("whimp-id", Some(key.id().to_string().into_bytes())),
        ];
        for (name, value) in added {
            if let Some(v) = value.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
        Ok(Ready {
            destination: backend.label.clone(),
            policy: route.policy.clone(),
            payload: Request {
                method,
                url,
                headers,
                body: stored.body,
                timeout: backend.timeout,
            },
        })
    }

    async fn send(&self, request: Request) -> Result<Sent, Refused> {
        Ok(delivery::send(&self.client, request).await)
    }

    fn observe(&self, _key: Key, reach: Reach<'_>, attempt: &Attempt, outcome: &Finished) {
        let label = match outcome {
            Finished::Delivered => names::OUTCOME_DELIVERED,
            Finished::Retry { .. } if attempt.status.is_some() => names::OUTCOME_RETRY,
            Finished::Retry { .. } => names::OUTCOME_ERROR,
            Finished::Dead { .. } => names::OUTCOME_DEAD,
        };
        self.metrics
            .forward_attempts
            .with_label_values(&[reach.destination().unwrap_or("none"), label])
            .inc();
        if reach != Reach::Unprepared {
            self.metrics
                .forward_duration
                .observe(attempt.duration_ms as f64 / 1000.0);
        }
        if matches!(outcome, Finished::Dead { .. }) {
            self.metrics.dead_letters.inc();
        }
    }
}

/// The backend URL with the original query appended (after the backend's own, if it has one).
fn with_query(url: &http::Uri, query: Option<&str>) -> String {
    let base = url.to_string();
    match query.filter(|q| !q.is_empty()) {
        None => base,
        Some(q) if url.query().is_some() => format!("{base}&{q}"),
        Some(q) => format!("{base}?{q}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_kept() {
        let u: http::Uri = "http://10.0.0.1:8000/hooks/paypal".parse().unwrap();
        assert_eq!(
            with_query(&u, Some("a=1&b=2")),
            "http://10.0.0.1:8000/hooks/paypal?a=1&b=2"
        );
        assert_eq!(with_query(&u, None), "http://10.0.0.1:8000/hooks/paypal");
        assert_eq!(
            with_query(&u, Some("")),
            "http://10.0.0.1:8000/hooks/paypal"
        );
        let q: http::Uri = "http://10.0.0.1/h?key=k".parse().unwrap();
        assert_eq!(with_query(&q, Some("a=1")), "http://10.0.0.1/h?key=k&a=1");
    }
}
