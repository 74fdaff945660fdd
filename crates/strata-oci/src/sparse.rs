//! Writing file contents so that runs of zeros become holes, as `cp
//! --sparse=auto` and GNU tar's extraction do: a 2 GB sparse file (a disk
//! image, a database preallocation) unpacked into a snapshot stays a few
//! blocks on disk instead of 2 GB. The bytes read back are the same.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// Holes are made in whole blocks of this size (the usual filesystem block).
const BLOCK: usize = 4096;

/// Copies `r` into `f` (a new, empty file), seeking over all-zero blocks
/// instead of writing them; returns the number of bytes copied.
pub fn copy_sparse(r: &mut impl Read, f: &mut File) -> io::Result<u64> {
    let mut buf = vec![0u8; 32 * BLOCK];
    let mut total: u64 = 0;
    let mut holes = false;
    loop {
        let n = read_full(r, &mut buf)?;
        if n == 0 {
            break;
        }
        let mut start = 0;
        while start < n {
            let end = (start + BLOCK).min(n);
            let zero = buf[start..end].iter().all(|&b| b == 0);
            // Extend the run of blocks of the same kind.
            let mut run_end = end;
            while run_end < n {
                let next = (run_end + BLOCK).min(n);
                if buf[run_end..next].iter().all(|&b| b == 0) != zero {
                    break;
                }
                run_end = next;
            }
            if zero {
                f.seek(SeekFrom::Current((run_end - start) as i64))?;
                holes = true;
            } else {
                f.write_all(&buf[start..run_end])?;
            }
            start = run_end;
        }
        total += n as u64;
    }
    if holes {
        // A file that ends in a hole: the length comes from here.
        f.set_len(total)?;
    }
    Ok(total)
}

/// Reads until `buf` is full or the input ends.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zeros_become_holes_and_the_bytes_stay_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 8 << 20];
        data[100] = 1;
        data[5 << 20] = 2;
        data.extend_from_slice(b"tail");
        data.extend(std::iter::repeat_n(0u8, 3 << 20));
        let path = dir.path().join("f");
        let mut f = File::create_new(&path).unwrap();
        let n = copy_sparse(&mut &data[..], &mut f).unwrap();
        drop(f);
        assert_eq!(n, data.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(m.len(), data.len() as u64);
        // Three data blocks, not 11 MiB (where holes are supported at all).
        assert!(
            m.blocks() * 512 < 1 << 20,
            "{} bytes allocated",
            m.blocks() * 512
        );
    }

    #[test]
    fn a_file_without_zeros_is_copied_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8 + 1).collect();
        let path = dir.path().join("f");
        let mut f = File::create_new(&path).unwrap();
        copy_sparse(&mut &data[..], &mut f).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
}
