//! `--load`: the built image streamed into the Docker daemon.

/// `--load`: the built image, named by its tags, streamed as a docker-archive
/// into the daemon's load API.
pub(super) fn load_into_daemon(
    store: &strata_store::Store,
    id: &strata_oci::Digest,
    tags: &[String],
    endpoint: &crate::daemon::Endpoint,
    quiet: bool,
) -> anyhow::Result<()> {
    let image = store
        .get_image(id)?
        .ok_or_else(|| anyhow::anyhow!("image {id} is not in the store"))?;
    let names = tags
        .iter()
        .map(|t| strata_store::normalize_reference(t))
        .collect::<Result<Vec<_>, _>>()?;
    let reading = store.lease_images("load", [(&image, id.to_string().as_str())])?;
    super::super::ship::ship_all(store, &reading, [&image])?;
    let chosen = [(image, names)];
    let loaded = crate::daemon::load(endpoint, |w| {
        strata_store::save_archive(store, &chosen, std::path::Path::new("<docker daemon>"), w)?;
        Ok(())
    })?;
    if !quiet {
        #[expect(clippy::print_stderr, reason = "progress output")]
        for m in &loaded.messages {
            eprintln!("loading into {endpoint}: {m}");
        }
    }
    Ok(())
}
