//! [`storage::Records`] in a KV bucket (`P_records`), replicated like the queue: a record is
//! `namespace/key` with every `.` written `=` (a name never holds `/` or `=`), so each record is
//! one bucket key of one subject token, and no two names meet. A create is the bucket's own
//! (a publish expecting the key's last revision to be none, or a delete), so exactly one of
//! several nodes creating one key at once wins.
//!
//! Records that are needed for a while only ([`Records::create_expiring`]: whomp's idempotency
//! claims and event answers) carry their own TTL (`Nats-TTL`, nats-server 2.11): the bucket's
//! stream allows it ([`open_bucket`]), and the server removes each once its time is up, leaving
//! nothing behind. A delete removes the key's messages from the stream likewise (no delete
//! marker), so that a record created again after it gets its TTL too.

use std::time::Duration;

use async_nats::jetstream::{kv, Context};
use bytes::Bytes;
use futures_util::TryStreamExt;
use storage::{check_name, RecordError, Records, Unavailable};

use crate::{failed, NatsError, Options};

/// The records store over NATS KV.
#[derive(Clone)]
pub struct JetRecords {
    kv: kv::Store,
}

fn bucket_key(namespace: &str, key: &str) -> Result<String, RecordError> {
    let (ns, key) = (check_name(namespace)?, check_name(key)?);
    Ok(format!(
        "{}/{}",
        ns.replace('.', "="),
        key.replace('.', "=")
    ))
}

fn unavailable(what: String, e: impl std::fmt::Display) -> RecordError {
    RecordError::Unavailable(Unavailable::new(failed(what, e)))
}

impl JetRecords {
    pub(crate) async fn open(js: &Context, options: &Options) -> Result<JetRecords, NatsError> {
        Ok(JetRecords {
            kv: open_bucket(js, options).await?,
        })
    }
}

/// Opens (or makes) the bucket `P_records` with its stream allowing per-message TTLs
/// (`allow_msg_ttl`, which the server never turns off again, so the bucket is not re-declared
/// on every start as the others are: that would ask to turn it off), and its replicas as
/// configured.
async fn open_bucket(js: &Context, options: &Options) -> Result<kv::Store, NatsError> {
    let bucket = format!("{}_records", options.prefix);
    let what = || format!("bucket {bucket}");
    let store = match js.get_key_value(&bucket).await {
        Ok(store) => store,
        Err(_) => {
            let made = js
                .create_key_value(kv::Config {
                    bucket: bucket.clone(),
                    history: 1,
                    num_replicas: options.replicas,
                    ..Default::default()
                })
                .await;
            match made {
                Ok(store) => store,
                // Made by another node at the same moment, or the cluster is unavailable.
                Err(e) => js
                    .get_key_value(&bucket)
                    .await
                    .map_err(|_| failed(what(), e))?,
            }
        }
    };
    let mut stream = js
        .get_stream(&store.stream_name)
        .await
        .map_err(|e| failed(what(), e))?;
    let mut config = stream
        .info()
        .await
        .map_err(|e| failed(what(), e))?
        .config
        .clone();
    if !config.allow_message_ttl || config.num_replicas != options.replicas {
        config.allow_message_ttl = true;
        config.num_replicas = options.replicas;
        js.update_stream(config)
            .await
            .map_err(|e| failed(what(), e))?;
    }
    Ok(store)
}

impl Records for JetRecords {
    async fn put(&self, namespace: &str, key: &str, value: Vec<u8>) -> Result<(), RecordError> {
        let k = bucket_key(namespace, key)?;
        self.kv
            .put(&k, Bytes::from(value))
            .await
            .map(|_| ())
            .map_err(|e| unavailable(format!("record {k}"), e))
    }

    async fn create(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<bool, RecordError> {
        let k = bucket_key(namespace, key)?;
        match self.kv.create(&k, Bytes::from(value)).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(unavailable(format!("record {k}"), e)),
        }
    }

    async fn create_expiring(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, RecordError> {
        let k = bucket_key(namespace, key)?;
        let ttl = ttl.max(Duration::from_secs(1));
        match self.kv.create_with_ttl(&k, Bytes::from(value), ttl).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(unavailable(format!("record {k}"), e)),
        }
    }

    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, RecordError> {
        let k = bucket_key(namespace, key)?;
        self.kv
            .get(&k)
            .await
            .map(|v| v.map(|b| b.to_vec()))
            .map_err(|e| unavailable(format!("record {k}"), e))
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<bool, RecordError> {
        let k = bucket_key(namespace, key)?;
        if self.get(namespace, key).await?.is_none() {
            return Ok(false);
        }
        // The key's messages go from the stream: no purge marker is left, which a create
        // would have to replace (and async-nats replaces one without the TTL).
        self.kv
            .stream
            .purge()
            .filter(format!("{}{k}", self.kv.prefix))
            .await
            .map(|_| true)
            .map_err(|e| unavailable(format!("record {k}"), e))
    }

    async fn list(&self, namespace: &str) -> Result<Vec<(String, Vec<u8>)>, RecordError> {
        let prefix = format!("{}/", check_name(namespace)?.replace('.', "="));
        let what = || format!("records of {namespace}");
        let keys: Vec<String> = match self.kv.keys().await {
            Ok(keys) => keys
                .try_collect()
                .await
                .map_err(|e| unavailable(what(), e))?,
            Err(e) => return Err(unavailable(what(), e)),
        };
        let mut found = Vec::new();
        for k in keys.iter().filter(|k| k.starts_with(&prefix)) {
            let value = self.kv.get(k).await.map_err(|e| unavailable(what(), e))?;
            if let Some(value) = value {
                found.push((k[prefix.len()..].replace('=', "."), value.to_vec()));
            }
        }
        found.sort();
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use harness::Nats;

    use super::*;
    use crate::{Auth, JetStream};

    async fn open(nats: &Nats) -> (JetStream, Options) {
        let options = Options {
            servers: nats.urls(),
            replicas: 1,
            prefix: format!("t{}", ulid::Ulid::new()),
            auth: Auth::None,
            ca_file: None,
            ack_wait: Duration::from_secs(30),
            max_message_bytes: 1 << 20,
            timeout: Duration::from_secs(2),
        };
        (JetStream::open(&options).await.unwrap(), options)
    }

    /// Waits until `ns/key` is gone, failing after 30 s.
    async fn gone(r: &JetRecords, key: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while r.get("ns", key).await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "{key} never expired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expiring_record_goes_after_its_ttl_also_when_created_again_after_a_delete() {
        let Some(nats) = Nats::single() else { return };
        let (s, options) = open(&nats).await;
        let r = s.records(&options).await.unwrap();
        let ttl = Duration::from_secs(1);
        assert!(r
            .create_expiring("ns", "a", b"1".to_vec(), ttl)
            .await
            .unwrap());
        assert!(!r
            .create_expiring("ns", "a", b"2".to_vec(), ttl)
            .await
            .unwrap());
        r.put("ns", "kept", b"k".to_vec()).await.unwrap();
        gone(&r, "a").await;
        assert!(r
            .create_expiring("ns", "a", b"3".to_vec(), ttl)
            .await
            .unwrap());
        assert!(r.delete("ns", "a").await.unwrap());
        assert!(r
            .create_expiring("ns", "a", b"4".to_vec(), ttl)
            .await
            .unwrap());
        gone(&r, "a").await;
        assert_eq!(r.get("ns", "kept").await.unwrap(), Some(b"k".to_vec()));
        // A second opening of the bucket (another node, a restart) keeps its TTLs allowed.
        let again = s.records(&options).await.unwrap();
        assert!(again
            .create_expiring("ns", "b", b"1".to_vec(), ttl)
            .await
            .unwrap());
    }
}
