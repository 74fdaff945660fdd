//! Applies arbitrary bytes as a layer tar. Invariants: never panics, and
//! nothing appears outside the destination, whatever the tar says (the
//! destination sits in an otherwise empty directory that must stay so).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_oci::apply::{DeleteWhiteouts, apply_layer};

fuzz_target!(|data: &[u8]| {
    let Ok(base) = tempfile::tempdir() else { return };
    let dest = base.path().join("a/b/dest");
    if std::fs::create_dir_all(&dest).is_err() {
        return;
    }
    let _ = apply_layer(data, &dest, &mut DeleteWhiteouts);
    let outside: Vec<_> = walk(base.path()).into_iter().filter(|p| !p.starts_with(&dest)).collect();
    let expected = [base.path().join("a"), base.path().join("a/b")];
    assert!(outside.iter().all(|p| expected.contains(p)), "wrote outside dest: {outside:?}");
});

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            out.push(path.clone());
            if is_dir {
                out.extend(walk(&path));
            }
        }
    }
    out
}
