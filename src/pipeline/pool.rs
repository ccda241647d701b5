//! Pack buffers kept for the next pack, on both sides of the pipeline.
//!
//! A pack is 16 MiB. Freed and allocated again on other threads, such buffers stay
//! resident in glibc's per-thread arenas: a restore kept up to twice the packs in use
//! (288 MiB at the peak of a media restore), a backup went over 256 MiB on a busy
//! machine. A [`Pool`] keeps up to as many buffers as can be in use at once, so a run
//! allocates its pack buffers once and never hands one back to the allocator while it
//! goes on; a [`Pooled`] buffer returns to its pool when its last holder lets go
//! (wrapped in `Bytes::from_owner`, when the storage layer has written it).

use std::sync::{Arc, Mutex};

/// Spare buffers, at most `keep` of them.
#[derive(Debug)]
pub struct Pool {
    spares: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl Pool {
    pub fn new(keep: usize) -> Arc<Pool> {
        Arc::new(Pool {
            spares: Mutex::new(Vec::new()),
            keep,
        })
    }

    /// An empty buffer: a spare one (with its capacity) when there is one.
    pub fn take(&self) -> Vec<u8> {
        let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        let mut bytes = spares.pop().unwrap_or_default();
        bytes.clear();
        bytes
    }

    /// Keeps `bytes` for a later [`Pool::take`], unless `keep` are kept already.
    pub fn give(&self, bytes: Vec<u8>) {
        let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        if spares.len() < self.keep {
            spares.push(bytes);
        }
    }

    /// How many spare buffers are kept now.
    pub fn spares(&self) -> usize {
        self.spares.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Bytes whose buffer goes back to its pool when dropped.
#[derive(Debug)]
pub struct Pooled {
    bytes: Vec<u8>,
    pool: Arc<Pool>,
}

impl Pooled {
    pub fn new(bytes: Vec<u8>, pool: Arc<Pool>) -> Pooled {
        Pooled { bytes, pool }
    }
}

impl std::ops::Deref for Pooled {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_taken_again_with_its_capacity_up_to_the_bound() {
        let pool = Pool::new(2);
        let buffers: Vec<Pooled> = (0..3)
            .map(|_| {
                let mut b = pool.take();
                b.extend_from_slice(&[7; 1000]);
                Pooled::new(b, pool.clone())
            })
            .collect();
        let held = bytes::Bytes::from_owner(Pooled::new(vec![1, 2, 3], pool.clone()));
        drop(buffers);
        assert_eq!(pool.spares(), 2, "the third is freed");
        let again = pool.take();
        assert!(again.is_empty() && again.capacity() >= 1000);
        // Bytes made from a pooled buffer give it back when the last clone goes.
        pool.give(again);
        let _ = pool.take();
        let clone = held.clone();
        drop(held);
        assert_eq!(pool.spares(), 1);
        assert_eq!(&clone[..], &[1, 2, 3]);
        drop(clone);
        assert_eq!(pool.spares(), 2);
    }
}
