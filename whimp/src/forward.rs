//! Forwarding: a stored request becomes one request per backend of its route.
//!
//! The backend is looked up by route name in the *current* table at every attempt, so a
//! backend that moves is followed after a reload. What goes out: the same method and body
//! byte for byte, the original header fields minus hop-by-hop ones, `Host`, framing and
//! whimp's own metadata, plus `X-Forwarded-For/-Proto/-Host` (whimp is the edge: values sent
//! by the outside are replaced, not trusted), `Whimp-Original-Url` and `Whimp-Id`.

use std::sync::Arc;

use bytes::Bytes;
use delivery::{Finished, Ready, Refused, Request, Sent};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use spool::{Attempt, Claim};
use telemetry::names;

use crate::ingress::meta;
use crate::metrics::Metrics;
use crate::routes::Current;

/// Spool files are re-read with limits at least as generous as anything hyper accepted.
const HEAD_LIMITS: httpmsg::Limits = httpmsg::Limits {
    max_header_bytes: 1024 * 1024,
    max_headers: 1000,
    max_body_bytes: usize::MAX,
};

/// whimp's side of the delivery loop.
pub struct Forwarder {
    pub routes: Arc<Current>,
    pub client: reqwest::Client,
    pub metrics: Metrics,
    /// The global policy, for messages whose route is gone.
    pub fallback: Arc<retry::Policy>,
}

impl delivery::Courier for Forwarder {
    type Payload = Request;

    fn prepare(&self, claim: &Claim, file: Vec<u8>) -> Result<Ready<Request>, Refused> {
        let refuse = |error: String, permanent: bool| Refused {
            target: String::new(),
            error,
            permanent,
            policy: Some(self.fallback.clone()),
        };
        let (head, body_at) = httpmsg::parse_head_with(&file, &HEAD_LIMITS)
            .map_err(|e| refuse(format!("stored file is not a readable request: {e}"), true))?;
        let route_name = header_text(&head.headers, meta::ROUTE)
            .ok_or_else(|| refuse("stored file has no Whimp-Route".into(), true))?;
        let table = self.routes.get();
        let route = table.by_name(&route_name).ok_or_else(|| {
            refuse(
                format!("route {route_name:?} is no longer configured"),
                false,
            )
        })?;
        let index = usize::from(claim.key.copy().saturating_sub(1));
        let backend = route.backends.get(index).ok_or_else(|| Refused {
            target: String::new(),
            error: format!("route {route_name:?} no longer has backend {}", index + 1),
            permanent: false,
            policy: Some(route.policy.clone()),
        })?;

        let query = head.target.split_once('?').map(|(_, q)| q);
        let url = with_query(&backend.url, query);
        let method = Method::from_bytes(head.method.as_bytes()).map_err(|_| {
            refuse(
                format!("stored method {:?} is not valid", head.method),
                true,
            )
        })?;

        let mut headers = HeaderMap::with_capacity(head.headers.len() + 5);
        let hop = httpmsg::connection_tokens(head.headers.iter());
        let mut original_host = None;
        for (name, value) in &head.headers {
            let lower = name.to_ascii_lowercase();
            if lower == "host" {
                original_host = Some(value.clone());
                continue;
            }
            if httpmsg::is_hop_by_hop(&lower)
                || hop.contains(&lower)
                || lower == "content-length"
                || lower.starts_with(meta::PREFIX)
                || lower.starts_with("x-forwarded-")
                || lower == "forwarded"
            {
                continue;
            }
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                headers.append(n, v);
            }
        }
        let remote_ip = header_text(&head.headers, meta::REMOTE_ADDR)
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.ip().to_string());
        let added = [
            ("x-forwarded-for", remote_ip.map(String::into_bytes)),
            (
                "x-forwarded-proto",
                header_text(&head.headers, meta::PROTO).map(String::into_bytes),
            ),
            ("x-forwarded-host", original_host),
            (
                "whimp-original-url",
                header_text(&head.headers, meta::ORIGINAL_URL).map(String::into_bytes),
            ),
            ("whimp-id", Some(claim.key.id().to_string().into_bytes())),
        ];
        for (name, value) in added {
            if let Some(v) = value.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
        let mut file = file;
        let body = Bytes::from(file.split_off(body_at.min(file.len())));
        Ok(Ready {
            destination: backend.label.clone(),
            policy: route.policy.clone(),
            payload: Request {
                method,
                url,
                headers,
                body,
                timeout: backend.timeout,
            },
        })
    }

    async fn send(&self, request: Request) -> Sent {
        delivery::send(&self.client, request).await
    }

    fn observe(&self, destination: &str, attempt: &Attempt, outcome: &Finished) {
        let label = match outcome {
            Finished::Delivered => names::OUTCOME_DELIVERED,
            Finished::Retry { .. } if attempt.status.is_some() => names::OUTCOME_RETRY,
            Finished::Retry { .. } => names::OUTCOME_ERROR,
            Finished::Dead { .. } => names::OUTCOME_DEAD,
        };
        let backend = if destination.is_empty() {
            "none"
        } else {
            destination
        };
        self.metrics
            .forward_attempts
            .with_label_values(&[backend, label])
            .inc();
        if !destination.is_empty() {
            self.metrics
                .forward_duration
                .observe(attempt.duration_ms as f64 / 1000.0);
        }
        if matches!(outcome, Finished::Dead { .. }) {
            self.metrics.dead_letters.inc();
        }
    }
}

fn header_text(headers: &[(String, Vec<u8>)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
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
