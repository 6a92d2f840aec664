//! The bytes of attachments held in memory at once, over every message being
//! sent: at most `--max-attachment-memory-mib`, the messages of one namespace
//! at most half. Before each file is read, room for the largest object the
//! apiserver returns is taken; after it, only what the file holds stays
//! taken, until the message's send ends. A message that finds no room looks
//! again shortly, writing nothing; one whose files could never fit in its
//! namespace's half fails, naming the flag. So messages with large files,
//! however many a tenant creates, cannot grow the controller past its memory
//! limit and take every other namespace's sends down with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Room taken before a file is read: a Secret or ConfigMap is at most 1.5 MiB
/// in etcd, and reading one holds its JSON text and its decoded bytes at once.
pub const READ_ROOM: u64 = 4 * 1024 * 1024;

/// Why no room was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoom {
    /// Other messages hold it now: look again shortly.
    Busy,
    /// The namespace's half could never hold this much: the message cannot
    /// be sent with this controller's setting.
    Never {
        /// The namespace's share, in bytes.
        share: u64,
    },
}

/// What is held now, in all and by namespace.
#[derive(Default)]
struct Held {
    total: u64,
    namespaces: HashMap<String, u64>,
}

/// The attachment memory of a controller.
pub struct AttachmentMemory {
    total: u64,
    per_namespace: u64,
    held: Mutex<Held>,
}

impl AttachmentMemory {
    /// `total` bytes for every message at once (at least room for a
    /// namespace to read a file while it holds as much again).
    pub fn new(total: u64) -> Arc<Self> {
        let total = total.max(4 * READ_ROOM);
        Arc::new(Self {
            total,
            per_namespace: total / 2,
            held: Mutex::new(Held::default()),
        })
    }

    /// Nothing taken yet, for a message of `namespace`.
    pub fn account(self: &Arc<Self>, namespace: &str) -> Taken {
        Taken {
            memory: self.clone(),
            namespace: namespace.to_string(),
            bytes: 0,
        }
    }

    /// Takes `bytes` more for `namespace`, or says why not.
    fn grow(&self, namespace: &str, already: u64, bytes: u64) -> Result<(), NoRoom> {
        if already.saturating_add(bytes) > self.per_namespace {
            return Err(NoRoom::Never {
                share: self.per_namespace,
            });
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let in_namespace = held.namespaces.get(namespace).copied().unwrap_or(0);
        if held.total.saturating_add(bytes) > self.total
            || in_namespace.saturating_add(bytes) > self.per_namespace
        {
            return Err(NoRoom::Busy);
        }
        held.total += bytes;
        *held.namespaces.entry(namespace.to_string()).or_default() += bytes;
        Ok(())
    }

    /// Counts `bytes` more for `namespace`, room or not.
    fn add(&self, namespace: &str, bytes: u64) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.total = held.total.saturating_add(bytes);
        let in_namespace = held.namespaces.entry(namespace.to_string()).or_default();
        *in_namespace = in_namespace.saturating_add(bytes);
    }

    /// Gives `bytes` of `namespace` back.
    fn shrink(&self, namespace: &str, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.total = held.total.saturating_sub(bytes);
        if let Some(in_namespace) = held.namespaces.get_mut(namespace) {
            *in_namespace = in_namespace.saturating_sub(bytes);
            if *in_namespace == 0 {
                held.namespaces.remove(namespace);
            }
        }
    }

    /// Bytes held now, in all.
    pub fn held(&self) -> u64 {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

/// What one message holds, given back when dropped.
pub struct Taken {
    memory: Arc<AttachmentMemory>,
    namespace: String,
    bytes: u64,
}

impl Taken {
    /// Room for reading one more file.
    pub fn before_read(&mut self) -> Result<(), NoRoom> {
        self.memory.grow(&self.namespace, self.bytes, READ_ROOM)?;
        self.bytes += READ_ROOM;
        Ok(())
    }

    /// After the read: of the room taken for it, keep what the file holds
    /// (a file larger than the room, which etcd does not store, is counted
    /// whole: it is in memory already).
    pub fn after_read(&mut self, kept: u64) {
        if kept <= READ_ROOM {
            let spare = READ_ROOM - kept;
            self.memory.shrink(&self.namespace, spare);
            self.bytes -= spare;
        } else {
            let extra = kept - READ_ROOM;
            self.memory.add(&self.namespace, extra);
            self.bytes += extra;
        }
    }

    /// The bytes this message holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        self.memory.shrink(&self.namespace, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    /// Reads a file of `size` bytes, or says why not.
    fn read(taken: &mut Taken, size: u64) -> Result<(), NoRoom> {
        taken.before_read()?;
        taken.after_read(size);
        Ok(())
    }

    #[test]
    fn a_read_takes_room_and_keeps_only_the_file() {
        let memory = AttachmentMemory::new(32 * MIB);
        let mut taken = memory.account("team-a");
        taken.before_read().expect("room");
        assert_eq!(memory.held(), READ_ROOM);
        taken.after_read(MIB);
        assert_eq!(memory.held(), MIB);
        assert_eq!(taken.bytes(), MIB);
        drop(taken);
        assert_eq!(memory.held(), 0, "given back when the send ends");
    }

    #[test]
    fn a_namespace_holds_at_most_half_and_the_rest_is_left_to_others() {
        let memory = AttachmentMemory::new(32 * MIB);
        let mut a = memory.account("team-a");
        for _ in 0..3 {
            read(&mut a, 4 * MIB).expect("within team-a's half");
        }
        let mut second = memory.account("team-a");
        read(&mut second, 3 * MIB).expect("16 MiB is team-a's half");
        let mut third = memory.account("team-a");
        assert_eq!(read(&mut third, MIB), Err(NoRoom::Busy), "team-a is full");
        let mut b = memory.account("team-b");
        read(&mut b, 4 * MIB).expect("team-b has its own half");
        drop(second);
        read(&mut third, MIB).expect("room again once a send ended");
    }

    #[test]
    fn files_that_could_never_fit_say_so() {
        let memory = AttachmentMemory::new(32 * MIB);
        let mut taken = memory.account("team-a");
        for _ in 0..4 {
            read(&mut taken, 4 * MIB).expect("room");
        }
        assert_eq!(
            read(&mut taken, MIB),
            Err(NoRoom::Never { share: 16 * MIB }),
            "16 MiB held and a read's room pass the half"
        );
    }

    #[test]
    fn the_whole_is_shared_by_every_namespace() {
        let memory = AttachmentMemory::new(16 * MIB);
        let mut held = Vec::new();
        for namespace in ["a", "b", "c", "d"] {
            let mut taken = memory.account(namespace);
            read(&mut taken, 4 * MIB).expect("room");
            held.push(taken);
        }
        let mut e = memory.account("e");
        assert_eq!(e.before_read(), Err(NoRoom::Busy), "16 MiB are held");
        held.pop();
        read(&mut e, MIB).expect("room once one send ended");
    }

    #[test]
    fn a_file_larger_than_the_room_is_counted_whole() {
        let memory = AttachmentMemory::new(32 * MIB);
        let mut taken = memory.account("team-a");
        read(&mut taken, 6 * MIB).expect("read");
        assert_eq!(memory.held(), 6 * MIB);
        drop(taken);
        assert_eq!(memory.held(), 0);
    }
}
