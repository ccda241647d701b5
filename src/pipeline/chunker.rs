//! The content-defined chunker: FastCDC (2020, normalisation level 1) with the
//! repository's bounds and seed, cutting exactly where fastcdc's `StreamCDC` cuts, so
//! chunks of earlier snapshots are found again.
//!
//! `StreamCDC` keeps a buffer of the largest chunk (4 MiB), allocated and zeroed for
//! every stream, and after each cut moves what is left of it to its front: about
//! 3 MiB moved for every 1 MiB chunk, and the chunk copied out once more. This chunker
//! keeps one buffer of [`BUFFER`] bytes for all the streams of a backup, cuts chunk
//! after chunk where they lie, and moves only the uncut tail (less than one chunk)
//! when it reads on; each chunk is handed out as a slice of the buffer.

use std::borrow::Cow;
use std::io::{self, Read};

use fastcdc::v2020::{Normalization, cut_gear, get_gear_with_seed, select_masks};

use crate::repo::format::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN};

/// The buffer: the largest chunk twice, so a refill reads at least a chunk's worth.
pub const BUFFER: usize = 2 * CHUNK_MAX as usize;

/// Cuts streams into chunks with one reused buffer.
#[derive(Debug)]
pub struct Chunker {
    buffer: Vec<u8>,
    mask_s: u64,
    mask_l: u64,
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
}

impl Chunker {
    /// A chunker whose cut points depend on `seed` (the repository key's).
    pub fn new(seed: u64) -> Chunker {
        let (mask_s, mask_l) = select_masks(CHUNK_AVG as usize, Normalization::Level1);
        let (gear, gear_ls) = get_gear_with_seed(seed);
        Chunker {
            buffer: Vec::new(),
            mask_s,
            mask_l,
            gear,
            gear_ls,
        }
    }

    /// Reads `reader` to its end and calls `each` with every chunk, in order. An
    /// empty stream has no chunk; one shorter than the smallest chunk is one chunk.
    pub fn chunks(
        &mut self,
        reader: &mut dyn Read,
        mut each: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.buffer.len() < BUFFER {
            self.buffer.resize(BUFFER, 0);
        }
        let (max, mut start, mut end, mut eof) = (CHUNK_MAX as usize, 0, 0, false);
        loop {
            if end - start < max && !eof {
                // Keep the uncut tail and read on behind it.
                self.buffer.copy_within(start..end, 0);
                (start, end) = (0, end - start);
                while end < BUFFER && !eof {
                    match reader.read(&mut self.buffer[end..]) {
                        Ok(0) => eof = true,
                        Ok(n) => end += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            if start == end {
                return Ok(());
            }
            let (_, len) = cut_gear(
                &self.buffer[start..end],
                CHUNK_MIN as usize,
                CHUNK_AVG as usize,
                max,
                self.mask_s,
                self.mask_l,
                self.mask_s << 1,
                self.mask_l << 1,
                &self.gear,
                &self.gear_ls,
            );
            each(&self.buffer[start..start + len])?;
            start += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use fastcdc::v2020::StreamCDC;

    use super::*;
    use crate::pipeline::pseudo_random as data;

    /// A reader that gives at most `step` bytes per read, as a pipe or a socket may.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(self.1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn chunks_are_cut_where_fastcdcs_stream_chunker_cuts_them_for_any_read_size() {
        let seed = 0x5EED_1234_ABCD;
        let mut chunker = Chunker::new(seed);
        let sizes = [
            0,
            1,
            CHUNK_MIN as usize - 1,
            CHUNK_MIN as usize,
            CHUNK_MAX as usize,
            BUFFER + 12_345,
            2 * BUFFER + 7,
        ];
        for (n, &size) in sizes.iter().enumerate() {
            let bytes = data(size, n as u64 + 1);
            let expected: Vec<Vec<u8>> = if size < CHUNK_MIN as usize {
                // StreamCDC needs a stream of at least the smallest chunk.
                (size > 0).then(|| bytes.clone()).into_iter().collect()
            } else {
                StreamCDC::with_level_and_seed(
                    &bytes[..],
                    CHUNK_MIN as usize,
                    CHUNK_AVG as usize,
                    CHUNK_MAX as usize,
                    Normalization::Level1,
                    seed,
                )
                .map(|c| c.expect("chunk").data)
                .collect()
            };
            for step in [usize::MAX, 100_000, 4096] {
                let mut got = Vec::new();
                chunker
                    .chunks(&mut Trickle(&bytes, step), |c| {
                        got.push(c.to_vec());
                        Ok(())
                    })
                    .expect("chunked");
                assert_eq!(got.len(), expected.len(), "{size} bytes, reads of {step}");
                assert!(got == expected, "{size} bytes, reads of {step}");
            }
        }
    }

    #[test]
    fn a_read_error_ends_the_stream_with_that_error() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let err = Chunker::new(1)
            .chunks(&mut Broken, |_| Ok(()))
            .expect_err("fails");
        assert_eq!(err.to_string(), "disk on fire");
    }
}
