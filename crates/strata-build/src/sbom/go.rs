//! Go binaries' embedded build info (syft's `golang` binary cataloger,
//! which reads it as Go's `debug/buildinfo` does): a 32-byte header starting
//! `\xff Go buildinf:` at a 16-byte boundary of the data segment, then
//! either (flag bit 2, Go 1.18+) the Go version and the module info as
//! varint-prefixed strings, or (older) two pointers to Go string headers
//! holding them. The module info is `go version -m`'s lines (`path`,
//! `mod`, `dep`, `=>` replacements, `build` settings) between 16-byte
//! sentinels.

use super::Package;
use super::elf::Elf;
use super::purl::Purl;

const MAGIC: &[u8] = b"\xff Go buildinf:";
const ALIGN: usize = 16;

/// What a binary's build info says.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct BuildInfo {
    /// `go1.19.8`.
    pub(crate) go_version: String,
    /// The main package's import path (`command-line-arguments` for
    /// `go build file.go`).
    pub(crate) path: String,
    /// The main module (path, version), if built in one.
    pub(crate) main: Option<(String, String)>,
    /// Dependencies (path, version), replacements applied.
    pub(crate) deps: Vec<(String, String)>,
    /// `build` settings (`vcs.revision`, `-ldflags`...).
    pub(crate) settings: Vec<(String, String)>,
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut x = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        x |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((x, i + 1));
        }
    }
    None
}

fn varint_string(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, n) = uvarint(b)?;
    let end = n.checked_add(usize::try_from(len).ok()?)?;
    Some((b.get(n..end)?, b.get(end..)?))
}

/// The Go version and raw module info of an ELF file, if it is a Go
/// binary with build info.
pub(crate) fn raw_build_info(data: &[u8]) -> Option<(String, String)> {
    let elf = Elf::parse(data)?;
    let start = elf.data_start()?;
    let region = elf.read_from(start, 64 << 20)?;
    decode(region, &elf)
}

/// The build info in `region` (the data segment from where Go's linker
/// puts it); the old format's pointers are read through `elf`.
fn decode(region: &[u8], elf: &Elf<'_>) -> Option<(String, String)> {
    let at = (0..region.len().saturating_sub(32))
        .step_by(ALIGN)
        .find(|&i| region[i..].starts_with(MAGIC))?;
    let header = region.get(at..at + 32)?;
    let ptr_size = usize::from(header[14]);
    let flags = header[15];
    let (version, modinfo) = if flags & 2 != 0 {
        let (v, rest) = varint_string(region.get(at + 32..)?)?;
        let (m, _) = varint_string(rest)?;
        (v.to_vec(), m.to_vec())
    } else {
        if ptr_size != 4 && ptr_size != 8 {
            return None;
        }
        // The header's byte order flag, not the file's, says how its
        // pointers are written (`debug/buildinfo`).
        let big_endian = flags & 1 != 0;
        let read_ptr = |b: &[u8]| -> Option<u64> {
            let b = b.get(..ptr_size)?;
            let fold = |acc: u64, x: &u8| (acc << 8) | u64::from(*x);
            Some(if big_endian {
                b.iter().fold(0, fold)
            } else {
                b.iter().rev().fold(0, fold)
            })
        };
        // A pointer to a Go string header (data pointer, length).
        let string_at = |addr: u64| -> Option<Vec<u8>> {
            let hdr = elf.read_at(addr, 2 * ptr_size as u64)?;
            let (data, len) = (read_ptr(hdr)?, read_ptr(&hdr[ptr_size..])?);
            if len > 1 << 20 {
                return None;
            }
            elf.read_at(data, len).map(<[u8]>::to_vec)
        };
        let v = string_at(read_ptr(&header[16..])?)?;
        let m = string_at(read_ptr(&header[16 + ptr_size..])?)?;
        (v, m)
    };
    // The sentinels around the module info.
    let modinfo = if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        modinfo[16..modinfo.len() - 16].to_vec()
    } else {
        Vec::new()
    };
    Some((
        String::from_utf8_lossy(&version).into_owned(),
        String::from_utf8_lossy(&modinfo).into_owned(),
    ))
}

/// `debug.ParseBuildInfo`'s reading of the module info lines.
pub(crate) fn parse(go_version: String, modinfo: &str) -> BuildInfo {
    let mut info = BuildInfo {
        go_version,
        ..BuildInfo::default()
    };
    // Which list the last `mod`/`dep` went to, for a following `=>`.
    let mut last_is_main = false;
    for line in modinfo.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["path", p, ..] => info.path = (*p).to_owned(),
            ["mod", p, v, ..] => {
                info.main = Some(((*p).to_owned(), (*v).to_owned()));
                last_is_main = true;
            }
            ["dep", p, v, ..] => {
                info.deps.push(((*p).to_owned(), (*v).to_owned()));
                last_is_main = false;
            }
            ["=>", p, rest @ ..] => {
                let v = rest.first().copied().unwrap_or_default().to_owned();
                let target = if last_is_main {
                    info.main.as_mut()
                } else {
                    info.deps.last_mut()
                };
                if let Some(m) = target {
                    *m = ((*p).to_owned(), v);
                }
            }
            ["build", kv] => {
                if let Some((k, v)) = kv.split_once('=') {
                    info.settings.push((k.to_owned(), v.to_owned()));
                }
            }
            _ => {}
        }
    }
    info
}

fn module(path: &str, version: &str, found_in: &str) -> Package {
    let (namespace, name) = path.rsplit_once('/').unwrap_or(("", path));
    Package {
        name: path.to_owned(),
        version: version.to_owned(),
        purl: Purl {
            kind: "golang",
            namespace,
            name,
            version,
            qualifiers: Vec::new(),
        }
        .to_string(),
        license: None,
        kind: "go-module",
        found_in: found_in.to_owned(),
        source_info: "acquired package info from go module information",
    }
}

/// The packages of a Go binary, as syft lists them: the main module (a
/// `(devel)` version made a pseudo-version from the VCS settings when
/// they are there), each dependency, and the standard library as
/// `stdlib` at the toolchain's version.
pub(crate) fn packages(data: &[u8], found_in: &str) -> Vec<Package> {
    match raw_build_info(data) {
        Some((version, modinfo)) => packages_of(&parse(version, &modinfo), found_in),
        None => Vec::new(),
    }
}

fn packages_of(info: &BuildInfo, found_in: &str) -> Vec<Package> {
    let mut out = Vec::new();
    if let Some((path, version)) = &info.main {
        let setting = |k: &str| {
            info.settings
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let version = match (
            version.as_str(),
            setting("vcs.revision"),
            setting("vcs.time"),
        ) {
            ("(devel)", Some(rev), Some(time)) if rev.len() >= 12 => {
                let stamp: String = time.chars().filter(char::is_ascii_digit).take(14).collect();
                format!("v0.0.0-{stamp}-{}", &rev[..12])
            }
            (v, _, _) => v.to_owned(),
        };
        out.push(module(path, &version, found_in));
    }
    for (path, version) in &info.deps {
        out.push(module(path, version, found_in));
    }
    if let Some(v) = info.go_version.strip_prefix("go") {
        let mut p = module("stdlib", v, found_in);
        p.version = info.go_version.clone();
        p.license = Some("BSD-3-Clause".into());
        out.push(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's build of docker-credential-pass (golang-docker-credential-
    /// helpers): built with `go build` on a file list, so no module, only
    /// the toolchain.
    #[test]
    fn reads_debians_docker_credential_pass() {
        let path = "/usr/bin/docker-credential-pass";
        let Ok(data) = std::fs::read(path) else {
            strata_testutil::skip(
                "reads_debians_docker_credential_pass",
                "/usr/bin/docker-credential-pass is not installed (golang-docker-credential-helpers)",
            );
            return;
        };
        let (version, modinfo) = raw_build_info(&data).expect("Go build info");
        assert!(version.starts_with("go1."), "{version}");
        let info = parse(version.clone(), &modinfo);
        assert_eq!(info.path, "command-line-arguments");
        assert!(info.main.is_none());
        assert!(
            info.settings
                .iter()
                .any(|(k, v)| k == "GOOS" && v == "linux")
        );
        let pkgs = packages(&data, "/usr/bin/docker-credential-pass");
        assert_eq!(pkgs.len(), 1);
        assert_eq!(pkgs[0].name, "stdlib");
        assert_eq!(pkgs[0].version, version);
        assert_eq!(pkgs[0].purl, format!("pkg:golang/stdlib@{}", &version[2..]));
    }

    /// A minimal little-endian ELF64 file: one `PT_LOAD` segment mapping
    /// the whole file at `BASE`, and the section headers `sections`
    /// (name, file offset, size) with their name table.
    fn elf64(mut body: Vec<u8>, sections: &[(&str, usize, usize)]) -> Vec<u8> {
        const BASE: u64 = 0x40_0000;
        let mut names = vec![0u8];
        let mut name_at = Vec::new();
        for (n, _, _) in sections {
            name_at.push(names.len());
            names.extend_from_slice(n.as_bytes());
            names.push(0);
        }
        let names_off = body.len();
        body.extend_from_slice(&names);
        let shoff = body.len();
        let sh = |out: &mut Vec<u8>, name: usize, kind: u32, off: usize, size: usize| {
            out.extend_from_slice(&(name as u32).to_le_bytes());
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&0u64.to_le_bytes());
            out.extend_from_slice(&(BASE + off as u64).to_le_bytes());
            out.extend_from_slice(&(off as u64).to_le_bytes());
            out.extend_from_slice(&(size as u64).to_le_bytes());
            out.extend_from_slice(&[0u8; 24]);
        };
        sh(&mut body, 0, 0, 0, 0);
        for (i, (_, off, size)) in sections.iter().enumerate() {
            sh(&mut body, name_at[i], 1, *off, *size);
        }
        sh(&mut body, 0, 3, names_off, names.len());
        let phoff = body.len();
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(&6u32.to_le_bytes());
        body.extend_from_slice(&0u64.to_le_bytes());
        body.extend_from_slice(&BASE.to_le_bytes());
        body.extend_from_slice(&BASE.to_le_bytes());
        let total = (phoff + 56) as u64;
        body.extend_from_slice(&total.to_le_bytes());
        body.extend_from_slice(&total.to_le_bytes());
        body.extend_from_slice(&0x1000u64.to_le_bytes());
        let header = &mut body[..64];
        header[..4].copy_from_slice(b"\x7fELF");
        header[4] = 2;
        header[5] = 1;
        header[0x20..0x28].copy_from_slice(&(phoff as u64).to_le_bytes());
        header[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        header[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        header[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        header[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        let shnum = sections.len() as u16 + 2;
        header[0x3c..0x3e].copy_from_slice(&shnum.to_le_bytes());
        header[0x3e..0x40].copy_from_slice(&(shnum - 1).to_le_bytes());
        body
    }

    /// A module build (`go build -mod=vendor`, Go 1.19, a vendored
    /// dependency): its real `.go.buildinfo` section, in the 1.18+ inline
    /// format, placed in an ELF file.
    #[test]
    fn reads_a_module_build() {
        let section: &[u8] = include_bytes!("../../../../testdata/sbom/go-module.buildinfo");
        let mut body = vec![0u8; 64];
        let at = 64;
        body.extend_from_slice(section);
        let data = elf64(body, &[(".go.buildinfo", at, section.len())]);
        let (version, modinfo) = raw_build_info(&data).expect("Go build info");
        assert!(version.starts_with("go1."), "{version}");
        let info = parse(version, &modinfo);
        assert_eq!(
            info.main,
            Some(("example.com/sbomsample".to_owned(), "(devel)".to_owned()))
        );
        assert_eq!(
            info.deps,
            [("example.com/greet".to_owned(), "v1.2.3".to_owned())]
        );
        let purls: Vec<String> = packages(&data, "/app")
            .into_iter()
            .map(|p| p.purl)
            .collect();
        assert_eq!(purls[1], "pkg:golang/example.com/greet@v1.2.3");
        assert_eq!(purls[0], "pkg:golang/example.com/sbomsample@%28devel%29");
    }

    /// The format before Go 1.18: the header points at Go string headers
    /// (pointer, length) that point at the version and module info.
    #[test]
    fn reads_the_old_pointer_format() {
        const BASE: u64 = 0x40_0000;
        let modinfo = format!(
            "{}path\texample.com/old\nmod\texample.com/old\tv1.0.0\th1:x=\ndep\tgithub.com/pkg/errors\tv0.9.1\th1:y=\n{}",
            "0123456789abcdef", "fedcba9876543210"
        );
        let version = "go1.16.15";
        let mut body = vec![0u8; 64];
        // Strings, then their headers, then the build info header.
        let v_at = body.len();
        body.extend_from_slice(version.as_bytes());
        let m_at = body.len();
        body.extend_from_slice(modinfo.as_bytes());
        while !body.len().is_multiple_of(16) {
            body.push(0);
        }
        let hdr_at = body.len();
        for (at, len) in [(v_at, version.len()), (m_at, modinfo.len())] {
            body.extend_from_slice(&(BASE + at as u64).to_le_bytes());
            body.extend_from_slice(&(len as u64).to_le_bytes());
        }
        let info_at = body.len();
        body.extend_from_slice(MAGIC);
        body.extend_from_slice(&[8, 0]);
        body.extend_from_slice(&(BASE + hdr_at as u64).to_le_bytes());
        body.extend_from_slice(&(BASE + hdr_at as u64 + 16).to_le_bytes());
        let data = elf64(body, &[(".go.buildinfo", info_at, 32)]);
        let (v, m) = raw_build_info(&data).expect("old-format build info");
        assert_eq!(v, version);
        let info = parse(v, &m);
        assert_eq!(
            info.main,
            Some(("example.com/old".to_owned(), "v1.0.0".to_owned()))
        );
        let purls: Vec<String> = packages(&data, "/old")
            .into_iter()
            .map(|p| p.purl)
            .collect();
        assert_eq!(
            purls,
            [
                "pkg:golang/example.com/old@v1.0.0",
                "pkg:golang/github.com/pkg/errors@v0.9.1",
                "pkg:golang/stdlib@1.16.15",
            ]
        );
    }

    #[test]
    fn replacements_and_sentinels() {
        let info = parse(
            "go1.21.0".into(),
            "path\texample.com/app\nmod\texample.com/app\t(devel)\t\ndep\tgolang.org/x/sys\tv0.1.0\th1:x=\n=>\tgithub.com/fork/sys\tv0.2.0\th1:y=\nbuild\tvcs.revision=0123456789abcdef\nbuild\tvcs.time=2024-03-01T10:20:30Z\n",
        );
        assert_eq!(
            info.deps,
            [("github.com/fork/sys".to_owned(), "v0.2.0".to_owned())]
        );
        assert_eq!(info.settings.len(), 2);
        let pkgs = packages_of(&info, "/app");
        assert_eq!(
            pkgs[0].purl,
            "pkg:golang/example.com/app@v0.0.0-20240301102030-0123456789ab"
        );
        assert_eq!(pkgs[1].purl, "pkg:golang/github.com/fork/sys@v0.2.0");
        assert_eq!(pkgs[2].purl, "pkg:golang/stdlib@1.21.0");
        assert!(raw_build_info(b"\x7fELF not really").is_none());
    }
}
