//! Just enough of ELF to find a section's bytes and map a virtual address
//! to file bytes (Go's `debug/elf` as `debug/buildinfo` uses it): the
//! header, the section headers with their names, the loaded segments.
//! Every offset is checked against the file; a malformed file is `None`.

/// A parsed ELF file, borrowing its bytes.
pub(crate) struct Elf<'a> {
    data: &'a [u8],
    pub(crate) big_endian: bool,
    sections: Vec<Section>,
    /// `PT_LOAD` segments: (vaddr, file offset, file size).
    segments: Vec<(u64, u64, u64)>,
}

struct Section {
    name: String,
    kind: u32,
    addr: u64,
    offset: u64,
    size: u64,
}

const SHT_NOBITS: u32 = 8;
const PT_LOAD: u32 = 1;

impl<'a> Elf<'a> {
    pub(crate) fn parse(data: &'a [u8]) -> Option<Self> {
        if data.get(..4)? != b"\x7fELF" {
            return None;
        }
        // ELFCLASS32 or ELFCLASS64.
        let wide = match data.get(4)? {
            1 => false,
            2 => true,
            _ => return None,
        };
        let big_endian = match data.get(5)? {
            1 => false,
            2 => true,
            _ => return None,
        };
        let mut elf = Elf {
            data,
            big_endian,
            sections: Vec::new(),
            segments: Vec::new(),
        };
        let (phoff, shoff) = if wide {
            (elf.uint(0x20, 8)?, elf.uint(0x28, 8)?)
        } else {
            (elf.uint(0x1c, 4)?, elf.uint(0x20, 4)?)
        };
        let at = if wide { 0x36 } else { 0x2a };
        let phentsize = elf.uint(at, 2)?;
        let phnum = elf.uint(at + 2, 2)?;
        let shentsize = elf.uint(at + 4, 2)?;
        let shnum = elf.uint(at + 6, 2)?;
        let shstrndx = elf.uint(at + 8, 2)?;
        for i in 0..phnum {
            let base = usize::try_from(phoff.checked_add(i * phentsize)?).ok()?;
            if elf.uint(base, 4)? != PT_LOAD as u64 {
                continue;
            }
            let seg = if wide {
                (
                    elf.uint(base.checked_add(16)?, 8)?,
                    elf.uint(base.checked_add(8)?, 8)?,
                    elf.uint(base.checked_add(32)?, 8)?,
                )
            } else {
                (
                    elf.uint(base.checked_add(8)?, 4)?,
                    elf.uint(base.checked_add(4)?, 4)?,
                    elf.uint(base.checked_add(16)?, 4)?,
                )
            };
            elf.segments.push(seg);
        }
        let mut raw = Vec::new();
        for i in 0..shnum {
            let base = usize::try_from(shoff.checked_add(i * shentsize)?).ok()?;
            let name = elf.uint(base, 4)?;
            let kind = elf.uint(base.checked_add(4)?, 4)? as u32;
            let (addr, offset, size) = if wide {
                (
                    elf.uint(base.checked_add(16)?, 8)?,
                    elf.uint(base.checked_add(24)?, 8)?,
                    elf.uint(base.checked_add(32)?, 8)?,
                )
            } else {
                (
                    elf.uint(base.checked_add(12)?, 4)?,
                    elf.uint(base.checked_add(16)?, 4)?,
                    elf.uint(base.checked_add(20)?, 4)?,
                )
            };
            raw.push((name, kind, addr, offset, size));
        }
        let names = raw
            .get(usize::try_from(shstrndx).ok()?)
            .and_then(|&(_, _, _, off, size)| elf.bytes(off, size));
        for (name, kind, addr, offset, size) in raw {
            let name = names
                .and_then(|n| n.get(usize::try_from(name).ok()?..))
                .map(|n| {
                    let end = n.iter().position(|&b| b == 0).unwrap_or(n.len());
                    String::from_utf8_lossy(&n[..end]).into_owned()
                })
                .unwrap_or_default();
            elf.sections.push(Section {
                name,
                kind,
                addr,
                offset,
                size,
            });
        }
        Some(elf)
    }

    /// An unsigned integer of `len` bytes at `at`, in the file's byte order.
    pub(crate) fn uint(&self, at: usize, len: usize) -> Option<u64> {
        let b = self.data.get(at..at.checked_add(len)?)?;
        Some(self.decode(b))
    }

    /// `b` (up to 8 bytes) as an unsigned integer in the file's byte order.
    pub(crate) fn decode(&self, b: &[u8]) -> u64 {
        let fold = |acc: u64, x: &u8| (acc << 8) | u64::from(*x);
        if self.big_endian {
            b.iter().fold(0, fold)
        } else {
            b.iter().rev().fold(0, fold)
        }
    }

    fn bytes(&self, offset: u64, size: u64) -> Option<&'a [u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        self.data.get(start..end)
    }

    /// The file bytes of the section `name` (none for one that occupies
    /// no file space).
    pub(crate) fn section(&self, name: &str) -> Option<&'a [u8]> {
        let s = self.sections.iter().find(|s| s.name == name)?;
        if s.kind == SHT_NOBITS {
            return None;
        }
        self.bytes(s.offset, s.size)
    }

    /// The virtual address of the section `name`.
    pub(crate) fn section_addr(&self, name: &str) -> Option<u64> {
        self.sections
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.addr)
    }

    /// `len` bytes at virtual address `addr`, from the loaded segment that
    /// holds them.
    pub(crate) fn read_at(&self, addr: u64, len: u64) -> Option<&'a [u8]> {
        let &(vaddr, offset, _) = self.segments.iter().find(|(v, _, size)| {
            *v <= addr
                && addr
                    .checked_add(len)
                    .is_some_and(|e| e <= v.saturating_add(*size))
        })?;
        self.bytes(offset.checked_add(addr - vaddr)?, len)
    }

    /// The first writable loaded segment's start, where Go's linker puts
    /// the build info when there is no `.go.buildinfo` section name.
    pub(crate) fn data_start(&self) -> Option<u64> {
        self.section_addr(".go.buildinfo")
            .or_else(|| self.section_addr(".data"))
    }

    /// Bytes from virtual address `addr` up to `max` of them (or the end of
    /// its segment).
    pub(crate) fn read_from(&self, addr: u64, max: u64) -> Option<&'a [u8]> {
        let &(vaddr, offset, filesz) = self
            .segments
            .iter()
            .find(|(v, _, size)| *v <= addr && addr < v.saturating_add(*size))?;
        let start = offset.checked_add(addr - vaddr)?;
        // A segment claiming more than the file holds is cut at its end.
        let in_file = (self.data.len() as u64).checked_sub(start)?;
        let len = vaddr
            .saturating_add(filesz)
            .saturating_sub(addr)
            .min(max)
            .min(in_file);
        self.bytes(start, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_binary() {
        // The test binary itself is an ELF file on Linux.
        let me = std::env::current_exe().expect("test binary");
        let data = std::fs::read(&me).expect("read test binary");
        let elf = Elf::parse(&data).expect("an ELF file");
        assert_eq!(elf.big_endian, cfg!(target_endian = "big"));
        let text = elf.section(".text").expect(".text");
        assert!(!text.is_empty());
        let addr = elf.section_addr(".text").expect(".text address");
        assert_eq!(elf.read_at(addr, 16), Some(&text[..16]));
        assert!(Elf::parse(b"\x7fELF").is_none());
        assert!(Elf::parse(b"#!/bin/sh\n").is_none());
    }
}
