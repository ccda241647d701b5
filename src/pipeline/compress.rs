//! A chunk's zstd frame, and the chunks not worth compressing.
//!
//! Most bytes of a media library (photos, clips, archives) are compressed already:
//! zstd at level 3 spends a tenth of a first backup's CPU on them and then stores
//! them raw anyway. Before compressing a chunk of at least [`PROBE_FROM`] bytes,
//! [`Compressor`] compresses up to [`PROBES`] samples of [`PROBE_LEN`] bytes spread
//! over it (the whole chunk when it is shorter than a sample: a thumbnail, say) at
//! level 1; when they do not shrink by [`MIN_SAVING_PERCENT`] %, the chunk goes
//! into a zstd frame of raw blocks, which is what zstd itself makes of such bytes
//! (RFC 8878: a frame header with the content size, then blocks of at most 128 KiB
//! stored as they are). Every reader decompresses both kinds of frame alike: nothing
//! in the repository's format changes. The raw frame is given as pieces (its headers
//! and slices of the chunk), so the chunk is copied once, by the sealer, into its
//! pack.

use std::io;

/// The smallest chunk that is sampled; smaller ones are compressed whole (it costs
/// next to nothing).
pub const PROBE_FROM: usize = 1024;
/// At most this many samples are compressed (one per [`PROBE_LEN`] bytes of the
/// chunk), spread from its start to its end.
pub const PROBES: usize = 4;
/// The length of a sample.
pub const PROBE_LEN: usize = 4096;
/// How much the samples must shrink for the chunk to be compressed.
pub const MIN_SAVING_PERCENT: usize = 3;

/// zstd's frame magic number (RFC 8878, 3.1.1).
const MAGIC: [u8; 4] = 0xFD2F_B528u32.to_le_bytes();
/// The largest block (RFC 8878, 3.1.1.2.3: `Block_Maximum_Size`).
const BLOCK_MAX: usize = 128 * 1024;

/// One sealer's compression contexts and buffers, kept for the whole backup.
pub struct Compressor {
    zstd: zstd::bulk::Compressor<'static>,
    probe: zstd::bulk::Compressor<'static>,
    /// The compressed frame, or the raw frame's headers.
    frame: Vec<u8>,
    scratch: Vec<u8>,
}

impl Compressor {
    pub fn new(level: i32) -> io::Result<Compressor> {
        Ok(Compressor {
            zstd: zstd::bulk::Compressor::new(level)?,
            probe: zstd::bulk::Compressor::new(1)?,
            frame: Vec::new(),
            scratch: Vec::with_capacity(zstd::zstd_safe::compress_bound(PROBE_LEN)),
        })
    }

    /// The zstd frame of `data`, as pieces to be written one after the other.
    pub fn frame<'a>(&'a mut self, data: &'a [u8]) -> io::Result<Vec<&'a [u8]>> {
        if self.worth_compressing(data)? {
            self.frame.clear();
            self.frame
                .reserve(zstd::zstd_safe::compress_bound(data.len()));
            self.zstd.compress_to_buffer(data, &mut self.frame)?;
            return Ok(vec![&self.frame[..]]);
        }
        raw_frame(data, &mut self.frame)?;
        // The frame header and the first block's header, then each block's bytes
        // followed by the next block's header.
        let mut parts = Vec::with_capacity(2 * data.len().div_ceil(BLOCK_MAX) + 1);
        let (mut head, mut at) = (12, 0);
        parts.push(&self.frame[..head]);
        for block in data.chunks(BLOCK_MAX) {
            parts.push(block);
            at += block.len();
            if at < data.len() {
                parts.push(&self.frame[head..head + 3]);
                head += 3;
            }
        }
        Ok(parts)
    }

    /// Whether zstd shrinks samples of `data` enough (always, below [`PROBE_FROM`]).
    fn worth_compressing(&mut self, data: &[u8]) -> io::Result<bool> {
        if data.len() < PROBE_FROM {
            return Ok(true);
        }
        let len = PROBE_LEN.min(data.len());
        let count = (data.len() / PROBE_LEN).clamp(1, PROBES);
        let step = (data.len() - len) / (count - 1).max(1);
        let mut packed = 0;
        for i in 0..count {
            let sample = &data[i * step..i * step + len];
            packed += self.probe.compress_to_buffer(sample, &mut self.scratch)?;
        }
        Ok(packed * 100 < count * len * (100 - MIN_SAVING_PERCENT))
    }
}

/// The headers of a zstd frame holding `data` in raw blocks: the frame header (single
/// segment, a 4-byte content size, no checksum) and each block's 3-byte header, in
/// order, into `out`.
fn raw_frame(data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let size = u32::try_from(data.len())
        .map_err(|_| io::Error::other("a chunk of 4 GiB or more cannot be framed"))?;
    out.clear();
    out.extend_from_slice(&MAGIC);
    // Frame_Header_Descriptor: Frame_Content_Size_flag 2 (4 bytes), Single_Segment_flag.
    out.push(0b1010_0000);
    out.extend_from_slice(&size.to_le_bytes());
    let blocks = data.len().div_ceil(BLOCK_MAX).max(1);
    for b in 0..blocks {
        let len = (data.len() - b * BLOCK_MAX).min(BLOCK_MAX) as u32;
        let last = u32::from(b + 1 == blocks);
        // Last_Block (bit 0), Block_Type 0 (raw, bits 1–2), Block_Size (bits 3–23).
        out.extend_from_slice(&(last | len << 3).to_le_bytes()[..3]);
    }
    Ok(())
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::pseudo_random as random;

    fn text(len: usize) -> Vec<u8> {
        let words = ["backup ", "restore ", "snapshot ", "policy ", "retention\n"];
        let mut out = Vec::with_capacity(len);
        let mut i = 0usize;
        while out.len() < len {
            out.extend_from_slice(words[(i * 7 + i / 3) % words.len()].as_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    /// The frame's pieces joined, and what zstd's own decoders make of them.
    fn round_trip(c: &mut Compressor, data: &[u8]) -> Vec<u8> {
        let frame = c.frame(data).expect("framed").concat();
        let bulk = zstd::bulk::decompress(&frame, data.len()).expect("bulk decoder");
        assert_eq!(bulk, data, "{} bytes", data.len());
        let streamed = zstd::decode_all(&frame[..]).expect("stream decoder");
        assert_eq!(streamed, data, "{} bytes", data.len());
        frame
    }

    #[test]
    fn incompressible_chunks_are_stored_in_raw_blocks_that_zstd_decodes() {
        let mut c = Compressor::new(3).expect("zstd");
        let block = BLOCK_MAX;
        for len in [
            PROBE_FROM,
            PROBE_LEN - 1,
            PROBE_LEN + 1,
            3 * PROBE_LEN,
            64 * 1024,
            block - 1,
            block,
            block + 1,
            3 * block,
            1_000_003,
            4 << 20,
        ] {
            let data = random(len, len as u64);
            let frame = round_trip(&mut c, &data);
            // 9 bytes of frame header and 3 per block: nothing was compressed.
            assert_eq!(frame.len(), 9 + len + 3 * len.div_ceil(block), "{len}");
        }
    }

    #[test]
    fn compressible_chunks_large_and_small_are_compressed() {
        let mut c = Compressor::new(3).expect("zstd");
        for len in [100, PROBE_FROM - 1, PROBE_FROM, 3000, 20_000, 1_000_000] {
            let data = text(len);
            let frame = round_trip(&mut c, &data);
            // A raw frame would be longer than the chunk.
            assert!(frame.len() < len, "{len} → {}", frame.len());
            assert!(
                len < PROBE_FROM || frame.len() * 2 < len,
                "{len} → {}",
                frame.len()
            );
        }
    }

    #[test]
    fn a_chunk_with_one_compressible_sample_in_four_is_compressed_whole() {
        let mut c = Compressor::new(3).expect("zstd");
        // Random bytes but for the last quarter: the last sample shrinks, and the
        // four together by more than 3 %.
        let len = 1 << 20;
        let mut data = random(len * 3 / 4, 11);
        data.extend(text(len / 4));
        let frame = round_trip(&mut c, &data);
        assert!(frame.len() < len * 3 / 4 + len / 16, "{}", frame.len());
    }
}
