//! [`storage::Records`] in a KV bucket (`P_records`), replicated like the queue: a record is
//! `namespace/key` with every `.` written `=` (a name never holds `/` or `=`), so each record is
//! one bucket key of one subject token, and no two names meet. A create is the bucket's own
//! (a publish expecting the key's last revision to be none, or a delete), so exactly one of
//! several nodes creating one key at once wins.

use async_nats::jetstream::{kv, Context};
use bytes::Bytes;
use futures_util::TryStreamExt;
use storage::{check_name, RecordError, Records, Unavailable};

use crate::{bucket, failed, NatsError, Options};

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
            kv: bucket(js, options, "records").await?,
        })
    }
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
        self.kv
            .purge(&k)
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
