//! Layer compression: gzip (the default, for compatibility with every
//! consumer), zstd, or none; and auto-detecting decompression for everything a
//! layer or an `ADD`ed archive can be (gzip, zstd, bzip2, xz, plain).
//!
//! Gzip is compressed in parallel the way pigz does it, so that output is
//! byte-identical whatever the core count: the input is cut into fixed 128 KiB
//! blocks, each block is raw-deflated on its own with the previous 32 KiB of
//! input as preset dictionary and ended with a sync flush (the last one with a
//! final block), and the outputs are concatenated under one gzip header and
//! trailer (CRC-32 and size of the whole input). Block boundaries depend only on
//! byte offsets, never on scheduling, so 1 or 64 threads produce the same bytes,
//! and the result is a single ordinary gzip member that plain `gunzip` decodes.
//!
//! Zstd always runs in multithreaded mode with at least one worker: zstd
//! guarantees identical output for any `nbWorkers >= 1` (but not between 0 and
//! 1), so the thread count never changes the digest.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

/// How layer blobs are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Deflate level 0-9.
    Gzip {
        level: u32,
    },
    /// Zstd level 1-22 (negative levels are zstd's fast modes).
    Zstd {
        level: i32,
    },
    Uncompressed,
}

/// Level 1 (fastest), as go-containerregistry (crane, ko, Kaniko) writes
/// layers: on this machine it is about twice as fast as level 6 for about
/// 9% more bytes on a mixed tree (docs/decisions.md). `compression-level=N`
/// on an output chooses another.
pub const DEFAULT_GZIP_LEVEL: u32 = 1;
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip {
            level: DEFAULT_GZIP_LEVEL,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompressionError {
    #[error("unknown compression {0:?}: expected gzip, zstd or uncompressed")]
    Unknown(String),
    #[error("compression-level {level} is out of range for {algo} ({range})")]
    Level {
        algo: &'static str,
        level: i64,
        range: &'static str,
    },
}

impl FromStr for Compression {
    type Err = CompressionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gzip" => Ok(Compression::Gzip {
                level: DEFAULT_GZIP_LEVEL,
            }),
            "zstd" => Ok(Compression::Zstd {
                level: DEFAULT_ZSTD_LEVEL,
            }),
            "uncompressed" => Ok(Compression::Uncompressed),
            _ => Err(CompressionError::Unknown(s.to_owned())),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Compression {
    pub fn name(&self) -> &'static str {
        match self {
            Compression::Gzip { .. } => "gzip",
            Compression::Zstd { .. } => "zstd",
            Compression::Uncompressed => "uncompressed",
        }
    }

    /// The same algorithm at `level` (`compression-level=N`), range-checked.
    pub fn with_level(self, level: i64) -> Result<Self, CompressionError> {
        match self {
            Compression::Gzip { .. } => match u32::try_from(level) {
                Ok(l) if l <= 9 => Ok(Compression::Gzip { level: l }),
                _ => Err(CompressionError::Level {
                    algo: "gzip",
                    level,
                    range: "0-9",
                }),
            },
            Compression::Zstd { .. } => match i32::try_from(level) {
                Ok(l) if (-7..=22).contains(&l) && l != 0 => Ok(Compression::Zstd { level: l }),
                _ => Err(CompressionError::Level {
                    algo: "zstd",
                    level,
                    range: "-7..-1, 1-22",
                }),
            },
            Compression::Uncompressed => Ok(self),
        }
    }

    /// The OCI layer media type.
    pub fn oci_layer_media_type(&self) -> &'static str {
        match self {
            Compression::Gzip { .. } => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd { .. } => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::Uncompressed => "application/vnd.oci.image.layer.v1.tar",
        }
    }

    /// The Docker schema2 layer media type.
    pub fn docker_layer_media_type(&self) -> &'static str {
        match self {
            Compression::Gzip { .. } => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Compression::Zstd { .. } => "application/vnd.docker.image.rootfs.diff.tar.zstd",
            Compression::Uncompressed => "application/vnd.docker.image.rootfs.diff.tar",
        }
    }

    /// The compression a layer media type names (OCI or Docker), if known.
    pub fn from_media_type(mt: &str) -> Option<Self> {
        if mt.ends_with("+gzip") || mt.ends_with(".tar.gzip") {
            Some(Compression::default())
        } else if mt.ends_with("+zstd") || mt.ends_with(".tar.zstd") {
            Some(Compression::Zstd {
                level: DEFAULT_ZSTD_LEVEL,
            })
        } else if mt.ends_with(".tar") || mt.ends_with(".v1.tar") {
            Some(Compression::Uncompressed)
        } else {
            None
        }
    }

    /// Wraps `out` in an encoder using `threads` workers (0 = all cores).
    pub fn encoder<W: Write>(&self, out: W, threads: usize) -> io::Result<Encoder<W>> {
        let threads = effective_threads(threads);
        Ok(match *self {
            Compression::Gzip { level } => {
                Encoder::Gzip(ParallelGzEncoder::new(out, level, threads)?)
            }
            Compression::Zstd { level } => {
                let mut z = zstd::stream::Encoder::new(out, level)?;
                // Always >= 1 worker: zstd's output is identical for any
                // nbWorkers >= 1, but single-threaded mode (0) differs.
                z.multithread(u32::try_from(threads.max(1)).unwrap_or(1))?;
                Encoder::Zstd(z)
            }
            Compression::Uncompressed => Encoder::Plain(out),
        })
    }
}

fn effective_threads(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    }
}

/// A streaming compressor for one of the [`Compression`]s; call
/// [`Encoder::finish`] to write the trailer and get the writer back.
pub enum Encoder<W: Write> {
    Gzip(ParallelGzEncoder<W>),
    Zstd(zstd::stream::Encoder<'static, W>),
    Plain(W),
}

impl<W: Write> Encoder<W> {
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(g) => g.finish(),
            Encoder::Zstd(z) => z.finish(),
            Encoder::Plain(mut w) => {
                w.flush()?;
                Ok(w)
            }
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(g) => g.write(buf),
            Encoder::Zstd(z) => z.write(buf),
            Encoder::Plain(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(g) => g.flush(),
            Encoder::Zstd(z) => z.flush(),
            Encoder::Plain(w) => w.flush(),
        }
    }
}

/// Input block size: fixed, so output does not depend on the thread count.
pub const GZIP_BLOCK: usize = 128 * 1024;
const DICT: usize = 32 * 1024;
/// Blocks gathered before a parallel round.
const BLOCKS_PER_ROUND: usize = 32;

/// pigz-style parallel gzip (see the module docs).
pub struct ParallelGzEncoder<W: Write> {
    out: W,
    level: u32,
    pool: Option<rayon::ThreadPool>,
    /// Input not yet compressed; starts with up to DICT bytes of dictionary
    /// (`dict_len`) carried over from the previous round.
    pending: Vec<u8>,
    dict_len: usize,
    crc: crc32fast::Hasher,
    total: u64,
    header_written: bool,
}

impl<W: Write> ParallelGzEncoder<W> {
    /// `threads` workers (1 = compress on the calling thread).
    pub fn new(out: W, level: u32, threads: usize) -> io::Result<Self> {
        let pool = if threads > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .map_err(io::Error::other)?,
            )
        } else {
            None
        };
        Ok(Self {
            out,
            level: level.min(9),
            pool,
            pending: Vec::with_capacity(GZIP_BLOCK * BLOCKS_PER_ROUND + DICT),
            dict_len: 0,
            crc: crc32fast::Hasher::new(),
            total: 0,
            header_written: false,
        })
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            // No name, mtime 0, OS "unknown": nothing host- or time-dependent.
            let xfl = match self.level {
                9 => 2,
                1 => 4,
                _ => 0,
            };
            self.out
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
            self.header_written = true;
        }
        Ok(())
    }

    /// Compresses all complete blocks in `pending` (and the tail when `last`).
    fn compress_round(&mut self, last: bool) -> io::Result<()> {
        self.write_header()?;
        let data_len = self.pending.len() - self.dict_len;
        let full = data_len / GZIP_BLOCK;
        let nblocks = if last {
            full + usize::from(!data_len.is_multiple_of(GZIP_BLOCK) || data_len == 0)
        } else {
            full
        };
        if nblocks == 0 {
            return Ok(());
        }
        let level = self.level;
        let dict_len = self.dict_len;
        let pending = &self.pending;
        let job = |i: usize| -> io::Result<Vec<u8>> {
            let start = dict_len + i * GZIP_BLOCK;
            let end = (start + GZIP_BLOCK).min(pending.len());
            let dict = &pending[start.saturating_sub(DICT)..start];
            let final_block = last && i + 1 == nblocks;
            deflate_block(&pending[start..end], dict, level, final_block)
        };
        let outputs: Vec<io::Result<Vec<u8>>> = match &self.pool {
            Some(pool) => pool.install(|| {
                use rayon::prelude::*;
                (0..nblocks).into_par_iter().map(job).collect()
            }),
            None => (0..nblocks).map(job).collect(),
        };
        for o in outputs {
            self.out.write_all(&o?)?;
        }
        let consumed_end = (dict_len + nblocks * GZIP_BLOCK).min(self.pending.len());
        self.crc.update(&self.pending[dict_len..consumed_end]);
        self.total += (consumed_end - dict_len) as u64;
        let keep_from = consumed_end.saturating_sub(DICT);
        self.pending.drain(..keep_from);
        self.dict_len = consumed_end - keep_from;
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.compress_round(true)?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        // ISIZE is the input size modulo 2^32 (RFC 1952).
        self.out
            .write_all(&((self.total & 0xffff_ffff) as u32).to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn deflate_block(input: &[u8], dict: &[u8], level: u32, final_block: bool) -> io::Result<Vec<u8>> {
    use flate2::{Compress, FlushCompress, Status};
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if final_block {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(input.len() + input.len() / 8 + 1024);
    loop {
        let consumed = usize::try_from(c.total_in()).map_err(io::Error::other)?;
        let status = c
            .compress_vec(&input[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done_input = usize::try_from(c.total_in()).map_err(io::Error::other)? == input.len();
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => break,
            Status::Ok | Status::BufError if done_input && room_left && !final_block => break,
            _ => out.reserve(out.capacity().max(4096)),
        }
    }
    Ok(out)
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let cap = self.dict_len + GZIP_BLOCK * BLOCKS_PER_ROUND;
        let take = buf.len().min(cap - self.pending.len());
        self.pending.extend_from_slice(&buf[..take]);
        if self.pending.len() == cap {
            self.compress_round(false)?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing mid-stream would change block boundaries (and so the
        // bytes); data is emitted only at round boundaries and on finish.
        self.out.flush()
    }
}

/// The format a stream's first bytes announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Gzip,
    Zstd,
    Bzip2,
    Xz,
    /// Anything else: read as is (a plain tar, or not an archive at all).
    Plain,
}

pub fn detect(prefix: &[u8]) -> Detected {
    if prefix.starts_with(&[0x1f, 0x8b]) {
        Detected::Gzip
    } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Detected::Zstd
    } else if prefix.starts_with(b"BZh") {
        Detected::Bzip2
    } else if prefix.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Detected::Xz
    } else {
        Detected::Plain
    }
}

/// Wraps `r` in the decompressor its magic bytes call for, and says which.
pub fn decompress<'a>(mut r: impl Read + 'a) -> io::Result<(Detected, Box<dyn Read + 'a>)> {
    let mut prefix = [0u8; 6];
    let mut n = 0;
    while n < prefix.len() {
        match r.read(&mut prefix[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let kind = detect(&prefix[..n]);
    let chained = io::Cursor::new(prefix[..n].to_vec()).chain(r);
    let reader: Box<dyn Read + 'a> = match kind {
        Detected::Gzip => Box::new(flate2::read::MultiGzDecoder::new(chained)),
        Detected::Zstd => Box::new(zstd::stream::Decoder::new(chained)?),
        Detected::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(chained)),
        Detected::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(chained)),
        Detected::Plain => Box::new(chained),
    };
    Ok((kind, reader))
}

/// Re-encodes a layer blob (gzip, zstd or plain, detected) as `to`, in one
/// pass: returns (diffID of the tar, digest and size of what was written).
pub fn recompress(
    input: impl Read,
    to: Compression,
    threads: usize,
    out: impl Write,
) -> io::Result<(crate::Digest, crate::Digest, u64)> {
    let (_, r) = decompress(input)?;
    let mut tar = crate::DigestingReader::new(r);
    let mut enc = to.encoder(crate::DigestingWriter::new(out), threads)?;
    io::copy(&mut tar, &mut enc)?;
    let (_, diff_id, _) = tar.finish();
    let (_, digest, size) = enc.finish()?.finish();
    Ok((diff_id, digest, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        // Mixed content: compressible text with pseudo-random runs.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|i| {
                if (i / 5000) % 3 == 0 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                } else {
                    b"the quick brown fox jumps over the lazy dog\n"[i % 44]
                }
            })
            .collect()
    }

    fn compress(c: Compression, data: &[u8], threads: usize) -> Vec<u8> {
        let mut e = c.encoder(Vec::new(), threads).unwrap();
        // Odd write sizes exercise the buffering.
        for chunk in data.chunks(77_777) {
            e.write_all(chunk).unwrap();
        }
        e.finish().unwrap()
    }

    #[test]
    fn gzip_round_trips_and_is_thread_count_independent() {
        for len in [0, 1, GZIP_BLOCK, GZIP_BLOCK + 1, 9 * 1024 * 1024 + 12345] {
            let data = sample(len);
            let one = compress(Compression::default(), &data, 1);
            let four = compress(Compression::default(), &data, 4);
            assert_eq!(one, four, "len {len}");
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&one[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "len {len}");
        }
    }

    #[test]
    fn gzip_decodes_with_system_gunzip() {
        let data = sample(3 * 1024 * 1024 + 5);
        let gz = compress(Compression::Gzip { level: 9 }, &data, 2);
        let Ok(mut child) = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            return;
        };
        let mut stdin = child.stdin.take().unwrap();
        let t = std::thread::spawn(move || stdin.write_all(&gz));
        let out = child.wait_with_output().unwrap();
        t.join().unwrap().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
    }

    #[test]
    fn zstd_is_thread_count_independent() {
        let data = sample(5 * 1024 * 1024);
        let c = Compression::Zstd { level: 3 };
        let one = compress(c, &data, 1);
        let three = compress(c, &data, 3);
        assert_eq!(one, three);
        assert_eq!(zstd::decode_all(&one[..]).unwrap(), data);
    }

    #[test]
    fn detects_and_decompresses_every_format() {
        let data = sample(100_000);
        let gz = compress(Compression::default(), &data, 1);
        let zs = compress(Compression::Zstd { level: 1 }, &data, 1);
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&data).unwrap();
        let bz = bz.finish().unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&data).unwrap();
        let xz = xz.finish().unwrap();
        for (buf, kind) in [
            (gz, Detected::Gzip),
            (zs, Detected::Zstd),
            (bz, Detected::Bzip2),
            (xz, Detected::Xz),
            (data.clone(), Detected::Plain),
        ] {
            let (k, mut r) = decompress(&buf[..]).unwrap();
            assert_eq!(k, kind);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn parses_names_and_levels() {
        assert_eq!(
            "zstd".parse::<Compression>().unwrap(),
            Compression::Zstd { level: 3 }
        );
        assert!("lz4".parse::<Compression>().is_err());
        assert_eq!(
            Compression::default().with_level(9).unwrap(),
            Compression::Gzip { level: 9 }
        );
        assert!(Compression::default().with_level(10).is_err());
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd { level: 3 })
        );
    }
}
