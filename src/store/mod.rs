//! The durable store: what must survive a crash, behind the `Store` trait.
//!
//! - `Store`: a durable group commit of writes and a prefix scan (start-up).
//!   `FjallStore` is the file-backed default (`--data DIR`; fjall was chosen
//!   by measuring, see perf/RESULTS.md), `MemStore` the in-memory one for
//!   tests, which can also be told to fail (fault tests).
//! - `record`: the stored form of a retained publication, and its key.
//! - `thread`: the `store` thread, the only one that touches the files; it
//!   group-commits whatever the workers sent while the previous commit ran
//!   and reports each acknowledged write back to its worker.
//!
//! - `mqtt`: the stored form of MQTT persistent sessions, and their keys.

pub mod mqtt;
pub mod record;
pub mod thread;

use std::collections::BTreeMap;
use std::path::Path;

/// One change to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Every key under the prefix (those written earlier in the same
    /// commit included).
    DeletePrefix {
        prefix: Vec<u8>,
    },
    /// Writes nothing: its acknowledgement says that every write sent
    /// before it on the same worker's channel is done.
    Barrier,
}

/// A store failure, said to the publisher whose write it was.
pub type StoreError = String;

/// Keys and values, in key order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

pub trait Store: Send {
    /// Applies the writes in order, as one transaction, durable on return.
    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError>;
    /// Every key and value under `prefix`, in key order.
    fn scan(&mut self, prefix: &[u8]) -> Result<Pairs, StoreError>;
}

/// The file-backed store: one fjall keyspace, one partition.
pub struct FjallStore {
    keyspace: fjall::Keyspace,
    part: fjall::PartitionHandle,
    /// `false` (`--durability batch`): commits reach the OS, not the disk.
    sync: bool,
}

impl FjallStore {
    pub fn open(dir: &Path, sync: bool) -> Result<FjallStore, StoreError> {
        let keyspace =
            fjall::Config::new(dir).open().map_err(|e| format!("cannot open the store in {}: {e}", dir.display()))?;
        let part = keyspace
            .open_partition("fennec", fjall::PartitionCreateOptions::default())
            .map_err(|e| format!("cannot open the store in {}: {e}", dir.display()))?;
        Ok(FjallStore { keyspace, part, sync })
    }
}

impl Store for FjallStore {
    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let mode = if self.sync { fjall::PersistMode::SyncAll } else { fjall::PersistMode::Buffer };
        let mut batch = self.keyspace.batch().durability(Some(mode));
        // Keys put by this batch so far: a prefix deletion covers them too
        // (a batch applies its items in order, the last one of a key wins).
        let mut put: Vec<&[u8]> = Vec::new();
        for w in writes {
            match w {
                Write::Put { key, value } => {
                    batch.insert(&self.part, key.as_slice(), value.as_slice());
                    put.push(key);
                }
                Write::Delete { key } => batch.remove(&self.part, key.as_slice()),
                Write::DeletePrefix { prefix } => {
                    for kv in self.part.prefix(prefix) {
                        let (k, _) = kv.map_err(|e| format!("store read failed: {e}"))?;
                        batch.remove(&self.part, k.to_vec());
                    }
                    for k in put.iter().filter(|k| k.starts_with(prefix)) {
                        batch.remove(&self.part, k.to_vec());
                    }
                }
                Write::Barrier => {}
            }
        }
        batch.commit().map_err(|e| format!("store write failed: {e}"))
    }

    fn scan(&mut self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        self.part
            .prefix(prefix)
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(|e| format!("store read failed: {e}")))
            .collect()
    }
}

/// An in-memory store (tests); `fail` makes every commit fail.
#[derive(Default)]
pub struct MemStore {
    pub map: BTreeMap<Vec<u8>, Vec<u8>>,
    pub fail: bool,
}

impl Store for MemStore {
    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        if self.fail {
            return Err("store write failed: the in-memory store was told to fail".into());
        }
        for w in writes {
            match w {
                Write::Put { key, value } => {
                    self.map.insert(key.clone(), value.clone());
                }
                Write::Delete { key } => {
                    self.map.remove(key);
                }
                Write::DeletePrefix { prefix } => {
                    let doomed: Vec<Vec<u8>> = self
                        .map
                        .range(prefix.clone()..)
                        .take_while(|(k, _)| k.starts_with(prefix))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in doomed {
                        self.map.remove(&k);
                    }
                }
                Write::Barrier => {}
            }
        }
        Ok(())
    }

    fn scan(&mut self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        Ok(self
            .map
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(s: &mut dyn Store) {
        let put = |k: &str, v: &str| Write::Put { key: k.into(), value: v.into() };
        s.commit(&[put("r\0a", "1"), put("r\0b", "2"), put("x\0c", "3")]).unwrap();
        s.commit(&[put("r\0a", "4"), Write::Delete { key: b"r\0b".to_vec() }]).unwrap();
        assert_eq!(s.scan(b"r\0").unwrap(), vec![(b"r\0a".to_vec(), b"4".to_vec())]);
        assert_eq!(s.scan(b"x\0").unwrap().len(), 1);
        // A prefix deletion takes what is stored and what the same commit put.
        s.commit(&[put("p\0a", "1")]).unwrap();
        s.commit(&[
            put("p\0b", "2"),
            Write::DeletePrefix { prefix: b"p\0".to_vec() },
            put("p\0c", "3"),
            Write::Barrier,
        ])
        .unwrap();
        assert_eq!(s.scan(b"p\0").unwrap(), vec![(b"p\0c".to_vec(), b"3".to_vec())]);
        assert_eq!(s.scan(b"r\0").unwrap().len(), 1, "other prefixes stay");
    }

    #[test]
    fn mem_store() {
        let mut s = MemStore::default();
        exercise(&mut s);
        s.fail = true;
        assert!(s.commit(&[Write::Delete { key: b"r\0a".to_vec() }]).is_err());
        assert_eq!(s.scan(b"r\0").unwrap().len(), 1, "a failed commit changes nothing");
    }

    #[test]
    fn fjall_store_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = FjallStore::open(dir.path(), true).unwrap();
            exercise(&mut s);
        }
        let mut s = FjallStore::open(dir.path(), true).unwrap();
        assert_eq!(s.scan(b"r\0").unwrap(), vec![(b"r\0a".to_vec(), b"4".to_vec())]);
    }
}
