//! The broker host's disk in the simulation: a `redb` storage backend in memory that knows
//! what has been synced, so a crash loses exactly the writes no fsync covered.
//!
//! The disk outlives the broker process: the world keeps it across `crash: broker` and
//! `restart: broker`. A crash turns the file back into its last synced bytes and starts a new
//! generation: the crashed process's handle, which its dropped tasks may still use, writes
//! nowhere. Faults: a failing fsync; a full disk (a size it cannot grow past); a torn write,
//! the power failing during the next fsync: the writes before it reach the disk, the last
//! one only half, and the process is gone.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use redb::StorageBackend;

/// The disk of one simulated host.
#[derive(Clone, Debug, Default)]
pub struct SimDisk(Arc<Mutex<Disk>>);

#[derive(Debug, Default)]
struct Disk {
    /// What the running process sees.
    current: Vec<u8>,
    /// What survives a crash.
    synced: Vec<u8>,
    /// Writes since the last sync, in order (the last one is what a torn write tears).
    unsynced: Vec<(u64, Vec<u8>)>,
    generation: u64,
    /// The next fsync fails.
    fail_sync: bool,
    /// No write fits: every write and every growth fails (a full disk).
    full: bool,
    /// The next fsync is a crash that keeps half of its last write.
    tear_next_sync: bool,
    syncs: u64,
}

impl SimDisk {
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A handle for a process that starts now.
    pub fn open(&self) -> DiskHandle {
        DiskHandle {
            disk: self.clone(),
            generation: self.lock().generation,
        }
    }

    /// The host crashed: what was not synced is gone, and the old process's handle no longer
    /// reaches the disk.
    pub fn crash(&self) {
        let mut disk = self.lock();
        // A pending fault was the old process's; the new one starts on a working disk.
        disk.fail_sync = false;
        disk.tear_next_sync = false;
        disk.current = disk.synced.clone();
        disk.unsynced.clear();
        disk.generation += 1;
    }

    pub fn set_fail_sync(&self, fail: bool) {
        self.lock().fail_sync = fail;
    }

    /// A full disk fails every write (on a full file system even an overwrite may need a
    /// new block), until it has room again.
    pub fn set_full(&self, full: bool) {
        self.lock().full = full;
    }

    pub fn tear_next_sync(&self) {
        self.lock().tear_next_sync = true;
    }

    /// Bytes of the file as the running process sees it.
    pub fn file_bytes(&self) -> u64 {
        self.lock().current.len() as u64
    }

    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }
}

fn write_at(file: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if file.len() < end {
        file.resize(end, 0);
    }
    file[offset as usize..end].copy_from_slice(data);
}

/// One process's view of a [`SimDisk`].
#[derive(Debug)]
pub struct DiskHandle {
    disk: SimDisk,
    generation: u64,
}

impl DiskHandle {
    /// The disk, if this handle's process is the current one.
    fn live(&self) -> Option<MutexGuard<'_, Disk>> {
        let disk = self.disk.lock();
        (disk.generation == self.generation).then_some(disk)
    }
}

fn gone() -> io::Error {
    io::Error::other("the process that opened this disk has crashed")
}

impl StorageBackend for DiskHandle {
    fn len(&self) -> Result<u64, io::Error> {
        let disk = self.live().ok_or_else(gone)?;
        Ok(disk.current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let disk = self.live().ok_or_else(gone)?;
        let end = offset as usize + out.len();
        if end > disk.current.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the simulated file",
            ));
        }
        out.copy_from_slice(&disk.current[offset as usize..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut disk = self.live().ok_or_else(gone)?;
        if disk.full && len > disk.current.len() as u64 {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "simulated disk full",
            ));
        }
        // Like a write, the new length survives a crash only once synced.
        disk.current.resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut disk = self.live().ok_or_else(gone)?;
        if std::mem::take(&mut disk.fail_sync) {
            // Once: the broker stops on it, and its restart finds a working disk.
            return Err(io::Error::other("simulated fsync failure"));
        }
        if std::mem::take(&mut disk.tear_next_sync) {
            // The power fails during this fsync: the earlier writes made it, the last one in
            // part, and the process is gone (its handle writes nowhere from now on).
            let mut writes = std::mem::take(&mut disk.unsynced);
            let last = writes.pop();
            for (offset, data) in &writes {
                write_at(&mut disk.synced, *offset, data);
            }
            if let Some((offset, data)) = last {
                write_at(&mut disk.synced, offset, &data[..data.len() / 2]);
            }
            disk.current = disk.synced.clone();
            disk.generation += 1;
            return Err(io::Error::other("simulated power failure during fsync"));
        }
        disk.synced = disk.current.clone();
        disk.unsynced.clear();
        disk.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut disk = self.live().ok_or_else(gone)?;
        if disk.full {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "simulated disk full",
            ));
        }
        write_at(&mut disk.current, offset, data);
        disk.unsynced.push((offset, data.to_vec()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_what_was_synced_and_only_that() {
        let disk = SimDisk::new();
        let handle = disk.open();
        handle.write(0, b"synced").unwrap();
        handle.sync_data().unwrap();
        handle.write(0, b"UNSYNC").unwrap();
        assert_eq!(StorageBackend::len(&handle).unwrap(), 6);
        disk.crash();
        let after = disk.open();
        let mut out = [0u8; 6];
        after.read(0, &mut out).unwrap();
        assert_eq!(&out, b"synced");
        // The crashed process writes nowhere.
        assert!(handle.write(0, b"zombie").is_err());
        after.read(0, &mut out).unwrap();
        assert_eq!(&out, b"synced");
    }

    #[test]
    fn a_torn_write_keeps_the_writes_before_it_and_half_of_it() {
        let disk = SimDisk::new();
        let handle = disk.open();
        handle.write(0, b"aaaaaaaa").unwrap();
        handle.sync_data().unwrap();
        handle.write(8, b"cc").unwrap();
        handle.write(0, b"bbbbbbbb").unwrap();
        disk.tear_next_sync();
        assert!(handle.sync_data().is_err());
        assert!(handle.write(0, b"zombie").is_err(), "the process is gone");
        let mut out = [0u8; 10];
        disk.open().read(0, &mut out).unwrap();
        assert_eq!(&out, b"bbbbaaaacc");
    }

    #[test]
    fn fsync_failures_and_a_full_disk_are_errors() {
        let disk = SimDisk::new();
        let handle = disk.open();
        disk.set_fail_sync(true);
        assert!(handle.sync_data().is_err());
        assert!(
            handle.sync_data().is_ok(),
            "a failed fsync is one fault, not a broken disk"
        );
        disk.set_full(true);
        let error = handle.write(0, b"anything").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        assert!(handle.set_len(5).is_err());
        disk.set_full(false);
        assert!(handle.write(0, b"room").is_ok());
    }
}
