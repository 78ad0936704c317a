//! Changes to the event layer's documents: a change is written through [`storage::Records`]
//! (durable before it returns) and only then applied to the index, under [`super::Events`]'s
//! write lock, so what the API answered is what a restart reads back.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use storage::{RecordError, Records};

use super::{Events, LoadError};

/// Every record of `namespace`, parsed.
pub(super) async fn read_all<T: DeserializeOwned>(
    records: &impl Records,
    namespace: &'static str,
) -> Result<BTreeMap<String, T>, LoadError> {
    let all = records
        .list(namespace)
        .await
        .map_err(|error| LoadError::Read { namespace, error })?;
    all.into_iter()
        .map(|(key, bytes)| match serde_json::from_slice(&bytes) {
            Ok(doc) => Ok((key, doc)),
            Err(error) => Err(LoadError::Invalid {
                namespace,
                key,
                error,
            }),
        })
        .collect()
}

impl Events {
    /// Stores `doc` as `namespace`/`id`, durably.
    pub(super) async fn save<T: Serialize>(
        &self,
        namespace: &str,
        id: &str,
        doc: &T,
    ) -> Result<(), RecordError> {
        let bytes = serde_json::to_vec(doc).unwrap_or_default();
        self.records.put(namespace, id, bytes).await
    }

    /// Removes `namespace`/`id`, durably.
    pub(super) async fn remove(&self, namespace: &str, id: &str) -> Result<bool, RecordError> {
        self.records.delete(namespace, id).await
    }
}
