//! `cargo xtask bench` (layers): layer creation throughput on a generated
//! ~500 MB mixed tree, through strata-oci's own writer (tar + sha256 only,
//! then gzip and zstd), next to `tar | pigz` and `tar | zstd -T0` on the same
//! tree. Results are MB/s of tree content (uncompressed bytes).
//!
//! Call as `bench_layers::run(&mut std::io::stdout(), &Options::default())`.
//! The tree is generated from a fixed seed (so runs are comparable) in a
//! scratch directory under the system temp dir, removed afterwards.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use strata_oci::compress::Compression;
use strata_oci::layer::{LayerOptions, changes_for_tree, write_layer};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Approximate tree size in bytes.
    pub size: u64,
    /// Where to build the tree (a fresh directory is made inside).
    pub scratch: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            size: 500 * 1024 * 1024,
            scratch: std::env::temp_dir(),
        }
    }
}

/// Builds the tree, runs every measurement, writes a table to `out`.
pub fn run(out: &mut dyn Write, opts: &Options) -> Result<()> {
    let dir = opts
        .scratch
        .join(format!("strata-bench-layers-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = measure(out, &dir, opts.size);
    let cleanup =
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()));
    result.and(cleanup)
}

fn measure(out: &mut dyn Write, dir: &Path, size: u64) -> Result<()> {
    let (files, bytes) = generate(dir, size)?;
    let mb = bytes as f64 / 1e6;
    writeln!(
        out,
        "layer bench: {files} files, {mb:.0} MB, {} cores",
        cores()
    )?;
    // Warm the page cache so the first measurement is not a disk benchmark.
    shell(dir, "tar -cf - . > /dev/null")?;
    let changes = changes_for_tree(dir)?;
    let cases = [
        (
            "strata tar+sha256 (uncompressed)",
            Compression::Uncompressed,
        ),
        ("strata gzip -6 (parallel)", Compression::Gzip { level: 6 }),
        (
            "strata gzip -1 (parallel, the default)",
            Compression::Gzip { level: 1 },
        ),
        ("strata zstd -3 (all cores)", Compression::Zstd { level: 3 }),
    ];
    writeln!(out, "{:<36} {:>10} {:>12}", "case", "MB/s", "output MB")?;
    for (name, compression) in cases {
        let lo = LayerOptions {
            compression,
            epoch: Some(0),
            threads: 0,
            owners: None,
        };
        let t = Instant::now();
        let info = write_layer(dir, &changes, &lo, std::io::sink())?;
        let secs = t.elapsed().as_secs_f64();
        writeln!(
            out,
            "{name:<36} {:>10.1} {:>12.1}",
            mb / secs,
            info.size as f64 / 1e6
        )?;
    }
    for (name, cmd) in [
        ("tar -cf - . | pigz", "tar -cf - . | pigz | wc -c"),
        ("tar -cf - . | pigz -1", "tar -cf - . | pigz -1 | wc -c"),
        (
            "tar -cf - . | zstd -T0",
            "tar -cf - . | zstd -T0 -3 -c | wc -c",
        ),
    ] {
        let t = Instant::now();
        match shell(dir, cmd) {
            Ok(size) => {
                let secs = t.elapsed().as_secs_f64();
                let size: f64 = size.trim().parse().unwrap_or(0.0);
                writeln!(out, "{name:<36} {:>10.1} {:>12.1}", mb / secs, size / 1e6)?;
            }
            Err(e) => writeln!(out, "{name:<36} {:>10} ({e})", "n/a")?,
        }
    }
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn shell(dir: &Path, cmd: &str) -> Result<String> {
    let o = Command::new("bash")
        .args(["-o", "pipefail", "-c", cmd])
        .current_dir(dir)
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {cmd}"))?;
    if !o.status.success() {
        bail!(
            "{cmd} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Seeded xorshift: same tree every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Writes the mixed tree: ~40% of the bytes in many small files (0.5-16 KiB,
/// text-like, compressible) across nested directories, the rest in a few large
/// files alternating random (incompressible) and repetitive content.
/// Returns (file count, total bytes).
fn generate(dir: &Path, size: u64) -> Result<(u64, u64)> {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let words: &[&[u8]] = &[
        b"layer ", b"image ", b"strata ", b"build ", b"cache ", b"docker ", b"\n", b"0123 ",
    ];
    let small_budget = size * 4 / 10;
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut buf = Vec::new();
    while bytes < small_budget {
        let d = dir.join(format!(
            "src/d{:03}/e{:02}",
            files % 200,
            (files / 200) % 20
        ));
        if files % 4000 < 1 || !d.exists() {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let len = 512 + (rng.next() % (16 * 1024)) as usize;
        buf.clear();
        while buf.len() < len {
            buf.extend_from_slice(words[(rng.next() % words.len() as u64) as usize]);
        }
        let p = d.join(format!("f{files}.txt"));
        std::fs::write(&p, &buf).with_context(|| format!("writing {}", p.display()))?;
        files += 1;
        bytes += buf.len() as u64;
    }
    std::fs::create_dir_all(dir.join("large")).context("creating large/")?;
    let mut i = 0;
    let chunk = 4 * 1024 * 1024;
    let mut block = vec![0u8; chunk];
    while bytes < size {
        let p = dir.join(format!("large/blob{i}.bin"));
        let mut f =
            std::fs::File::create(&p).with_context(|| format!("creating {}", p.display()))?;
        let target = (32 * 1024 * 1024).min(size - bytes);
        let mut written = 0;
        while written < target {
            if i % 2 == 0 {
                rng.fill(&mut block);
            } else {
                let pattern = rng.next().to_le_bytes();
                for (j, b) in block.iter_mut().enumerate() {
                    *b = pattern[j % 8] ^ ((j / 4096) as u8);
                }
            }
            let n = (target - written).min(chunk as u64) as usize;
            f.write_all(&block[..n])
                .with_context(|| format!("writing {}", p.display()))?;
            written += n as u64;
        }
        bytes += written;
        files += 1;
        i += 1;
    }
    Ok((files, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bench_runs_and_reports_every_case() {
        let mut out = Vec::new();
        let opts = Options {
            size: 3 * 1024 * 1024,
            ..Options::default()
        };
        run(&mut out, &opts).unwrap();
        let text = String::from_utf8(out).unwrap();
        for case in ["tar+sha256", "gzip", "zstd -3", "pigz", "zstd -T0"] {
            assert!(text.contains(case), "{case} missing:\n{text}");
        }
    }
}
