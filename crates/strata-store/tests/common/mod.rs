//! Helpers shared by this crate's integration tests.

/// A layer tar holding one regular file `name` (mode 644) with `content`.
pub fn tar_with(name: &str, content: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, content.as_bytes())
        .expect("append");
    b.into_inner().expect("tar")
}
