//! The lines a build ends with on the progress output: the image, its
//! digest and size, what was cached and run, how long it took.

use std::time::Instant;

/// Prints the summary of the build `result` to stderr.
pub(super) fn print_summary(
    store: &strata_store::Store,
    result: &strata_build::BuildResult,
    tags: &[String],
    progress: &mut crate::progress::Progress,
    start: Instant,
) -> anyhow::Result<()> {
    // The manifest digest is that of the image as shipped, known once
    // its layers are compressed for shipping; a build compresses
    // nothing just to print it.
    let shipped = match store.get_image(&result.image_id)? {
        Some(img) => store.shipped(&img)?.is_some(),
        None => true,
    };
    let digest = if shipped {
        result.manifest_digest.to_string()
    } else {
        "made when the image is first pushed, saved or exported (layers are compressed then)"
            .to_owned()
    };
    #[expect(clippy::print_stderr, reason = "the build summary is progress output")]
    {
        eprintln!(
            "#{} exporting\n#{} writing image {} done\n#{} naming to {}\nimage: {}\ndigest: {}\nsize: {} bytes, layers built: {}, steps cached: {}, steps run: {}\ncontext files hashed: {}\nepoch: {} ({})\ntotal: {:.1}s",
            progress.next(),
            progress.current(),
            result.image_id,
            progress.current(),
            if tags.is_empty() {
                "<none>".to_owned()
            } else {
                tags.join(", ")
            },
            result.image_id,
            digest,
            result.size,
            result.layers_built,
            result.steps_cached,
            result.steps_run,
            result.context_files_hashed,
            result.epoch,
            result.epoch_source,
            start.elapsed().as_secs_f64()
        );
    }
    if result.platforms.len() > 1 {
        #[expect(clippy::print_stderr, reason = "the build summary is progress output")]
        for (p, id, digest) in &result.platforms {
            eprintln!("platform {p}: image {id}, manifest {digest}");
        }
    }
    Ok(())
}
