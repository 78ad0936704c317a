//! Small durable records in the spool directory: [`storage::Records`] for the event layer's
//! webhook targets, filters and subscriptions (issue 13, `whomp::events`).
//!
//! A record is one file, `records/<namespace>/<key>`. A put writes `.<key>.tmp` beside it,
//! flushes it, renames it over the record and flushes the folder, so a SIGKILL or a power cut
//! leaves the old value or the new one, never a mix; a delete unlinks and flushes the folder.
//! Records are few, small and changed rarely: they are always flushed, whatever `spool.fsync`
//! says, and a whole namespace is read to list it. Record names cannot start with `.`, so a
//! temporary file is never taken for a record (and a leftover one is overwritten by the next put).
//! A create writes its own temporary file (`.<key>.<ulid>.tmp`) the same way and links it to the
//! record's name, which fails if the name exists: of two creates at once, one link wins.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use storage::{check_name, RecordError, Records, Unavailable};

use crate::{Folder, DIR_MODE, FILE_MODE};

/// The records kept in a spool directory; from [`crate::Spool::records`], under its lock.
#[derive(Debug, Clone)]
pub struct DirRecords {
    root: PathBuf,
}

impl DirRecords {
    pub(crate) fn new(spool: &Path) -> DirRecords {
        DirRecords {
            root: spool.join(Folder::Records.name()),
        }
    }

    fn folder(&self, namespace: &str) -> Result<PathBuf, RecordError> {
        Ok(self.root.join(check_name(namespace)?))
    }
}

impl Records for DirRecords {
    async fn put(&self, namespace: &str, key: &str, value: Vec<u8>) -> Result<(), RecordError> {
        let folder = self.folder(namespace)?;
        let key = check_name(key)?.to_owned();
        let root = self.root.clone();
        blocking(move || put(&root, &folder, &key, &value)).await
    }

    async fn create(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<bool, RecordError> {
        let folder = self.folder(namespace)?;
        let key = check_name(key)?.to_owned();
        let root = self.root.clone();
        blocking(move || create(&root, &folder, &key, &value)).await
    }

    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, RecordError> {
        let path = self.folder(namespace)?.join(check_name(key)?);
        blocking(move || match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(named(e, "read", &path)),
        })
        .await
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<bool, RecordError> {
        let folder = self.folder(namespace)?;
        let path = folder.join(check_name(key)?);
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&folder)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(named(e, "remove", &path)),
        })
        .await
    }

    async fn list(&self, namespace: &str) -> Result<Vec<(String, Vec<u8>)>, RecordError> {
        let folder = self.folder(namespace)?;
        blocking(move || {
            let entries = match fs::read_dir(&folder) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(named(e, "list", &folder)),
            };
            let mut records = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| named(e, "list", &folder))?;
                let Ok(key) = entry.file_name().into_string() else {
                    continue;
                };
                if check_name(&key).is_err() {
                    continue; // a temporary file, or something dropped in by hand
                }
                match fs::read(entry.path()) {
                    Ok(bytes) => records.push((key, bytes)),
                    // Deleted since it was listed.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(named(e, "read", &entry.path())),
                }
            }
            records.sort();
            Ok(records)
        })
        .await
    }
}

fn put(root: &Path, folder: &Path, key: &str, value: &[u8]) -> io::Result<()> {
    let tmp = folder.join(format!(".{key}.tmp"));
    write_tmp(root, folder, &tmp, value)?;
    let path = folder.join(key);
    fs::rename(&tmp, &path).map_err(|e| named(e, "rename", &path))?;
    sync_dir(folder)
}

/// Links a flushed temporary file to the record's name, which fails if it exists.
fn create(root: &Path, folder: &Path, key: &str, value: &[u8]) -> io::Result<bool> {
    let tmp = folder.join(format!(".{key}.{}.tmp", ulid::Ulid::new()));
    write_tmp(root, folder, &tmp, value)?;
    let path = folder.join(key);
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(folder)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(named(e, "link", &path)),
    }
}

/// Writes and flushes `value` to `tmp` in `folder`, making the folder first if need be.
fn write_tmp(root: &Path, folder: &Path, tmp: &Path, value: &[u8]) -> io::Result<()> {
    if !folder.exists() {
        for dir in [root, folder] {
            fs::create_dir_all(dir).map_err(|e| named(e, "create", dir))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
                .map_err(|e| named(e, "create", dir))?;
        }
        // The new folder's entry in `records/`, and that in the spool directory, must last.
        sync_dir(root)?;
        if let Some(spool) = root.parent() {
            sync_dir(spool)?;
        }
    }
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(tmp)?;
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
        file.write_all(value)?;
        rustix::fs::fdatasync(&file)?;
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(tmp);
        named(e, "write", tmp)
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| rustix::fs::fsync(&d).map_err(io::Error::from))
        .map_err(|e| named(e, "fsync", dir))
}

/// An I/O error that names the step and the file: `failed to fsync records/targets: ...`.
fn named(e: io::Error, step: &str, path: &Path) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("failed to {step} {}: {e}", path.display()),
    )
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, RecordError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| Unavailable::new(e).into()),
        Err(e) => Err(Unavailable::new(io::Error::other(e.to_string())).into()),
    }
}
