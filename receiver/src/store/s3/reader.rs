//! [`ArchiveReader`] over a bucket, for `verify` and `export`: streams found by listing the
//! id-hash folders, records read one batch object at a time and listed one page (1,000 keys)
//! at a time, so memory stays bounded by one page and one object however large the archive.
//! Safe while receivers write: batch objects are immutable and only ever added after the end
//! of a stream's chain, so a reader sees every stream as a contiguous prefix of what it will be;
//! it reads each stream up to its head as first read, so its epochs and records agree.

use std::collections::HashMap;

use verbatim_core::chain::StreamId;
use verbatim_core::wire::{EpochInfo, WireRecord};

use super::layout::{AlertObject, BatchObject, Head, Layout, Repeats};
use super::{Inner, S3Client, S3StoreConfig, require_object_lock};
use crate::error::{Error, Result};
use crate::store::{Alert, ArchiveReader, StoreRules};

pub struct S3Reader {
    rt: tokio::runtime::Runtime,
    inner: Inner,
    heads: HashMap<StreamId, Head>,
}

impl S3Reader {
    /// Connects (blocking; must not be called from inside an async runtime).
    pub fn open(config: &S3StoreConfig) -> Result<S3Reader> {
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Error::io("start a runtime", e))?;
        let client = S3Client::new(&config.s3)?;
        rt.block_on(require_object_lock(&client))?;
        // Readers apply no rules; these are never consulted.
        let rules = StoreRules::new(crate::keys::AcceptedKeys::from_key_ids(std::iter::empty::<&str>()));
        let inner = Inner::new(client, config, rules);
        Ok(S3Reader { rt, inner, heads: HashMap::new() })
    }

    fn head(&mut self, id: &StreamId) -> Result<&Head> {
        if !self.heads.contains_key(id) {
            let (inner, rt) = (&self.inner, &self.rt);
            let head = rt.block_on(async {
                let o = inner
                    .client
                    .get(&inner.layout.head(id))
                    .await?
                    .ok_or_else(|| Error::Store("no such stream in the archive".into()))?;
                let mut head = Head::decode(&o.body)?;
                super::writer::follow(inner, id, &mut head).await?;
                Ok::<_, Error>(head)
            })?;
            self.heads.insert(id.clone(), head);
        }
        Ok(&self.heads[id])
    }
}

impl ArchiveReader for S3Reader {
    fn streams(&mut self) -> Result<Vec<StreamId>> {
        let (inner, rt) = (&self.inner, &self.rt);
        let mut ids = rt.block_on(async {
            let c = &inner.client;
            let mut ids = Vec::new();
            for tenant in c.list_prefixes(&inner.layout.tenants()).await? {
                for device in c.list_prefixes(&format!("{tenant}d/")).await? {
                    for stream in c.list_prefixes(&format!("{device}s/")).await? {
                        if let Some(o) = c.get(&Layout::head_in(&stream)).await? {
                            ids.push(Head::decode(&o.body)?.id());
                        }
                    }
                }
            }
            Ok::<_, Error>(ids)
        })?;
        ids.sort_by(|a, b| (&a.tenant, &a.device, &a.stream).cmp(&(&b.tenant, &b.device, &b.stream)));
        Ok(ids)
    }

    fn epochs(&mut self, id: &StreamId) -> Result<Vec<EpochInfo>> {
        Ok(self.head(id)?.epochs.iter().map(|e| e.info()).collect())
    }

    fn alerts(&mut self, id: &StreamId) -> Result<Vec<Alert>> {
        let (inner, rt) = (&self.inner, &self.rt);
        let mut alerts = rt.block_on(async {
            let c = &inner.client;
            let mut alerts = Vec::new();
            for key in c.list_all(&inner.layout.alerts(id), None).await? {
                let Some(o) = c.get(&key).await? else { continue };
                let first: AlertObject =
                    serde_json::from_slice(&o.body).map_err(|e| Error::Store(format!("an alert object is not valid: {e}")))?;
                let repeats = match c.get(&inner.layout.repeats(id, &first.kind)).await? {
                    Some(r) => serde_json::from_slice::<Repeats>(&r.body).ok(),
                    None => None,
                };
                alerts.push(Alert {
                    at_ms: first.at_ms,
                    count: 1 + repeats.as_ref().map(|r| r.repeats).unwrap_or(0),
                    last_ms: repeats.as_ref().map(|r| r.last_ms).unwrap_or(first.at_ms),
                    last_detail: repeats.map(|r| r.last_detail).unwrap_or_else(|| first.detail.clone()),
                    kind: first.kind,
                    detail: first.detail,
                });
            }
            Ok::<_, Error>(alerts)
        })?;
        alerts.sort_by_key(|a| a.at_ms);
        Ok(alerts)
    }

    fn last_received_ms(&mut self, id: &StreamId) -> Result<Option<i64>> {
        let t = self.head(id)?.received_ms;
        Ok((t > 0).then_some(t))
    }

    fn held_through(&mut self, id: &StreamId) -> Result<Option<u64>> {
        Ok(Some(self.head(id)?.seq))
    }

    fn for_each_record(&mut self, id: &StreamId, f: &mut dyn FnMut(WireRecord) -> Result<bool>) -> Result<()> {
        // Up to the head as first read: one consistent view of the stream (its epochs, its
        // records) while receivers keep adding to it.
        let through = self.head(id)?.seq;
        let (inner, rt) = (&self.inner, &self.rt);
        let prefix = inner.layout.batches(id);
        let mut next: Option<String> = None;
        loop {
            let page = rt.block_on(inner.client.list(&prefix, None, None, next.as_deref()))?;
            for key in page.keys {
                let Some(o) = rt.block_on(inner.client.get(&key))? else { continue };
                // An object that is not a batch (a version someone put over one): its sequences
                // are missing, which verify reports as a gap up to the head.
                let Ok(object) = BatchObject::decode(&o.body) else {
                    tracing::warn!("a batch object does not decode; its records are reported missing");
                    continue;
                };
                for record in object.batch.records {
                    if record.seq > through || !f(record)? {
                        return Ok(());
                    }
                }
            }
            match page.next {
                Some(n) => next = Some(n),
                None => return Ok(()),
            }
        }
    }
}
