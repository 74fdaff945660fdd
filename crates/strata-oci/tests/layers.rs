//! Layer writer and applier: round trips, whiteouts, hostile tars,
//! reproducibility and thread-count independence.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use strata_oci::apply::{DeleteWhiteouts, apply_layer};
use strata_oci::compress::{self, Compression};
use strata_oci::layer::{LayerOptions, changes_for_tree, write_layer};
use strata_oci::{Change, Digest};

fn build_tree(root: &Path, mtime: i64) {
    std::fs::create_dir_all(root.join("etc/deep")).unwrap();
    std::fs::write(root.join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
    std::fs::write(root.join("etc/deep/big"), vec![7u8; 300_000]).unwrap();
    std::fs::set_permissions(
        root.join("etc/hosts"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let long = "d".repeat(120);
    std::fs::create_dir_all(root.join(&long)).unwrap();
    std::fs::write(root.join(&long).join("f".repeat(150)), b"long name").unwrap();
    symlink("/etc/hosts", root.join("hosts-link")).unwrap();
    std::fs::hard_link(root.join("etc/hosts"), root.join("hosts-hard")).unwrap();
    xattr::set(root.join("etc/hosts"), "user.test", b"value").ok();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let t = filetime(mtime);
    for e in walkdir::WalkDir::new(root).contents_first(true) {
        let e = e.unwrap();
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            e.path(),
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
}

fn filetime(s: i64) -> nix::sys::time::TimeSpec {
    nix::sys::time::TimeSpec::new(s, 0)
}

fn layer(
    root: &Path,
    changes: &[Change],
    opts: &LayerOptions,
) -> (strata_oci::layer::LayerInfo, Vec<u8>) {
    let mut out = Vec::new();
    let info = write_layer(root, changes, opts, &mut out).unwrap();
    (info, out)
}

fn untar(blob: &[u8]) -> Vec<u8> {
    let (_, mut r) = compress::decompress(blob).unwrap();
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    v
}

fn entry_names(tar_bytes: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(tar_bytes);
    ar.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn layer_round_trips_through_apply() {
    let src = tempfile::tempdir().unwrap();
    build_tree(src.path(), 1_000);
    let changes = changes_for_tree(src.path()).unwrap();
    let (info, blob) = layer(src.path(), &changes, &LayerOptions::default());
    assert_eq!(info.digest, Digest::of(&blob));
    assert_eq!(info.size, blob.len() as u64);
    let tar_bytes = untar(&blob);
    assert_eq!(info.diff_id, Digest::of(&tar_bytes));
    let names = entry_names(&tar_bytes);
    let mut sorted = names.clone();
    sorted.sort_by(|a, b| Path::new(a).cmp(Path::new(b)));
    assert_eq!(names, sorted, "entries sorted, parents first");
    assert!(
        names.iter().any(|n| n.len() > 200),
        "long name kept via PAX"
    );

    let dst = tempfile::tempdir().unwrap();
    let stats = apply_layer(&tar_bytes[..], dst.path(), &mut DeleteWhiteouts).unwrap();
    assert!(stats.entries >= 9);
    for rel in ["etc/hosts", "etc/deep/big", "hosts-hard"] {
        assert_eq!(
            std::fs::read(src.path().join(rel)).unwrap(),
            std::fs::read(dst.path().join(rel)).unwrap()
        );
    }
    let a = std::fs::metadata(dst.path().join("etc/hosts")).unwrap();
    let b = std::fs::metadata(dst.path().join("hosts-hard")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link kept");
    assert_eq!(a.mode() & 0o7777, 0o640);
    assert_eq!(a.mtime(), 1_000);
    assert_eq!(
        std::fs::read_link(dst.path().join("hosts-link")).unwrap(),
        Path::new("/etc/hosts")
    );
    assert!(
        std::fs::symlink_metadata(dst.path().join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo_like()
    );
    if xattr::get(src.path().join("etc/hosts"), "user.test")
        .ok()
        .flatten()
        .is_some()
    {
        assert_eq!(
            xattr::get(dst.path().join("etc/hosts"), "user.test")
                .unwrap()
                .as_deref(),
            Some(&b"value"[..])
        );
    }
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for std::fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

#[test]
fn whiteouts_and_opaque_dirs_apply() {
    let lower = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(lower.path().join("dir/old")).unwrap();
    std::fs::write(lower.path().join("dir/old/x"), b"x").unwrap();
    std::fs::write(lower.path().join("gone"), b"bye").unwrap();
    std::fs::write(lower.path().join("kept"), b"kept").unwrap();
    let (_, l1) = layer(
        lower.path(),
        &changes_for_tree(lower.path()).unwrap(),
        &LayerOptions::default(),
    );

    let upper = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(upper.path().join("dir")).unwrap();
    std::fs::write(upper.path().join("dir/new"), b"new").unwrap();
    let changes = [
        Change::delete("gone"),
        Change::opaque_dir("dir"),
        Change::upsert("dir/new"),
    ];
    let (_, l2) = layer(upper.path(), &changes, &LayerOptions::default());
    let names = entry_names(&untar(&l2));
    assert_eq!(names, ["dir/", "dir/.wh..wh..opq", "dir/new", ".wh.gone"]);

    let dst = tempfile::tempdir().unwrap();
    apply_layer(&untar(&l1)[..], dst.path(), &mut DeleteWhiteouts).unwrap();
    assert!(dst.path().join("gone").exists());
    apply_layer(&untar(&l2)[..], dst.path(), &mut DeleteWhiteouts).unwrap();
    assert!(!dst.path().join("gone").exists());
    assert!(!dst.path().join("dir/old").exists());
    assert!(dst.path().join("dir/new").exists());
    assert!(dst.path().join("kept").exists());
}

#[test]
fn reproducible_across_paths_mtimes_and_threads() {
    let epoch = 1_700_000_000;
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    build_tree(a.path(), epoch + 10);
    build_tree(b.path(), epoch + 99_999);
    // Large enough that gzip and zstd use several blocks.
    std::fs::write(
        a.path().join("blob"),
        (0..6_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::copy(a.path().join("blob"), b.path().join("blob")).unwrap();
    for c in [
        Compression::default(),
        Compression::Zstd { level: 3 },
        Compression::Uncompressed,
    ] {
        let o1 = LayerOptions {
            compression: c,
            epoch: Some(epoch),
            threads: 1,
            owners: None,
        };
        let o4 = LayerOptions {
            compression: c,
            epoch: Some(epoch),
            threads: 4,
            owners: None,
        };
        let (ia, ba) = layer(a.path(), &changes_for_tree(a.path()).unwrap(), &o1);
        let (ib, bb) = layer(b.path(), &changes_for_tree(b.path()).unwrap(), &o4);
        assert_eq!(ia, ib, "{c}");
        assert_eq!(ba, bb, "{c}");
    }
}

type RawEntry<'a> = (&'a str, tar::EntryType, Option<&'a str>, &'a [u8]);

fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        // Bypass the tar crate's own path checks: write raw names.
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn hostile_tar_writes_nothing_outside() {
    use tar::EntryType::{Link, Regular, Symlink};
    let base = tempfile::tempdir().unwrap();
    let outside = base.path().join("OUTSIDE");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"s").unwrap();
    let dest = base.path().join("a/b/dest");
    std::fs::create_dir_all(&dest).unwrap();
    let before = snapshot(base.path(), &dest);

    let through = raw_tar(&[
        ("evil", Symlink, Some("/../../../../OUTSIDE"), b""),
        ("evil/x", Regular, None, b"through symlink"),
        ("rel", Symlink, Some("../../../OUTSIDE"), b""),
        ("rel/y", Regular, None, b"through relative symlink"),
    ]);
    apply_layer(&through[..], &dest, &mut DeleteWhiteouts).unwrap();
    assert_eq!(
        std::fs::read(dest.join("OUTSIDE/x")).unwrap(),
        b"through symlink"
    );
    assert_eq!(
        std::fs::read(dest.join("OUTSIDE/y")).unwrap(),
        b"through relative symlink"
    );

    let abs = raw_tar(&[("/abs-file", Regular, None, b"abs")]);
    apply_layer(&abs[..], &dest, &mut DeleteWhiteouts).unwrap();
    assert_eq!(std::fs::read(dest.join("abs-file")).unwrap(), b"abs");

    let dotdot = raw_tar(&[("../../escape", Regular, None, b"escape")]);
    assert!(apply_layer(&dotdot[..], &dest, &mut DeleteWhiteouts).is_err());
    let hard = raw_tar(&[("hl", Link, Some("../../OUTSIDE/secret"), b"")]);
    assert!(apply_layer(&hard[..], &dest, &mut DeleteWhiteouts).is_err());
    // A hard link "through" a symlink resolves inside dest, never to the host file.
    let hard2 = raw_tar(&[("hl2", Link, Some("evil/secret"), b"")]);
    assert!(apply_layer(&hard2[..], &dest, &mut DeleteWhiteouts).is_err());
    let wh = raw_tar(&[("evil/.wh.secret", Regular, None, b"")]);
    apply_layer(&wh[..], &dest, &mut DeleteWhiteouts).unwrap();

    assert_eq!(
        snapshot(base.path(), &dest),
        before,
        "nothing outside dest changed"
    );
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"s");
}

fn snapshot(base: &Path, skip: &Path) -> Vec<(String, u64)> {
    walkdir::WalkDir::new(base)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !e.path().starts_with(skip))
        .map(|e| {
            let e = e.unwrap();
            (e.path().display().to_string(), e.metadata().unwrap().len())
        })
        .collect()
}

#[test]
fn ownership_devices_and_capabilities_survive_as_root() {
    if !strata_testutil::require_root("ownership_devices_and_capabilities_survive_as_root") {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("ping");
    std::fs::write(&f, b"binary").unwrap();
    std::os::unix::fs::chown(&f, Some(1234), Some(5678)).unwrap();
    // A large id needs a PAX record.
    let big = src.path().join("big-owner");
    std::fs::write(&big, b"x").unwrap();
    std::os::unix::fs::chown(&big, Some(3_000_000), Some(3_000_001)).unwrap();
    // cap_net_raw+ep, VFS_CAP_REVISION_2.
    let cap = [
        1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let cap_ok = xattr::set(&f, "security.capability", &cap).is_ok();
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    mknod(
        &src.path().join("null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .unwrap();
    let (_, blob) = layer(
        src.path(),
        &changes_for_tree(src.path()).unwrap(),
        &LayerOptions::default(),
    );
    let dst = tempfile::tempdir().unwrap();
    let stats = apply_layer(&untar(&blob)[..], dst.path(), &mut DeleteWhiteouts).unwrap();
    assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
    let m = std::fs::metadata(dst.path().join("ping")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    let m = std::fs::metadata(dst.path().join("big-owner")).unwrap();
    assert_eq!((m.uid(), m.gid()), (3_000_000, 3_000_001));
    let n = std::fs::symlink_metadata(dst.path().join("null")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &n.file_type()
    ));
    assert_eq!(n.rdev(), makedev(1, 3));
    if cap_ok {
        assert_eq!(
            xattr::get(dst.path().join("ping"), "security.capability")
                .unwrap()
                .as_deref(),
            Some(&cap[..])
        );
    }
}

#[test]
fn deleting_a_directory_and_its_contents_writes_one_whiteout() {
    let upper = tempfile::tempdir().unwrap();
    let changes = [
        Change::delete("a"),
        Change::delete("a/b"),
        Change::delete("a/b/c"),
    ];
    let (_, blob) = layer(upper.path(), &changes, &LayerOptions::default());
    assert_eq!(entry_names(&untar(&blob)), [".wh.a"]);
}

/// A GNU tar FIFO (`tar --format=gnu` leaves its device fields all NUL) and a
/// character device whose fields are base-256: read as Go's archive/tar
/// reads them. The tar crate alone refuses the FIFO ("numeric field was not
/// a number").
#[test]
fn gnu_tar_fifo_with_nul_device_fields_applies() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Fifo);
    h.set_mode(0o644);
    h.set_size(0);
    h.set_path("ff").unwrap();
    h.as_mut_bytes()[329..345].fill(0);
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
    let mut bad = tar::Header::new_gnu();
    bad.set_entry_type(tar::EntryType::Fifo);
    bad.set_size(0);
    bad.set_path("bad").unwrap();
    bad.as_mut_bytes()[329..337].copy_from_slice(b"12x4567\0");
    bad.set_cksum();
    let good = b.into_inner().unwrap();

    let dst = tempfile::tempdir().unwrap();
    apply_layer(&good[..], dst.path(), &mut DeleteWhiteouts).unwrap();
    let m = std::fs::symlink_metadata(dst.path().join("ff")).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(m.file_type().is_fifo());

    let mut b = tar::Builder::new(Vec::new());
    b.append(&bad, std::io::empty()).unwrap();
    let bad_tar = b.into_inner().unwrap();
    let err = apply_layer(&bad_tar[..], dst.path(), &mut DeleteWhiteouts).unwrap_err();
    assert!(err.to_string().contains("\"bad\""), "{err}");
}

/// A hard link's own header decides the shared inode's mode and mtime (and
/// owner, as root), as Docker's untar does: the last header written wins.
#[test]
fn hard_link_header_sets_the_inode_metadata() {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, mode, mtime, data) in [
        ("secret", tar::EntryType::Regular, 0o600, 100, &b"s"[..]),
        ("hard", tar::EntryType::Link, 0o644, 200, &b""[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_size(data.len() as u64);
        if kind == tar::EntryType::Link {
            h.set_link_name("secret").unwrap();
        }
        b.append_data(&mut h, name, data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let dest = tempfile::tempdir().unwrap();
    apply_layer(&tar[..], dest.path(), &mut DeleteWhiteouts).unwrap();
    let m = std::fs::metadata(dest.path().join("secret")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o644);
    assert_eq!(m.mtime(), 200);
    assert_eq!(
        m.ino(),
        std::fs::metadata(dest.path().join("hard")).unwrap().ino()
    );
}
