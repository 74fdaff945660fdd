//! `-o`/`--output` specs as buildx writes them, parsed into [`Output`].

use std::path::PathBuf;

use crate::annotations::{Annotations, parse_annotation_option};
use crate::api::{Output, OutputKind};
use crate::error::{Result, other};

/// Parses `type=docker,dest=app.tar` (or the shorthand `PATH`, which means
/// `type=local,dest=PATH`, and `-`, a tar to stdout), as buildx does.
pub fn parse_output(spec: &str) -> Result<Output> {
    if !spec.contains('=') {
        return Ok(if spec == "-" {
            Output {
                kind: OutputKind::Tar,
                dest: Some(PathBuf::from("-")),
                compression: None,
                force_compression: false,
                explicit_level: false,
                annotations: Annotations::default(),
            }
        } else {
            Output {
                kind: OutputKind::Local,
                dest: Some(PathBuf::from(spec)),
                compression: None,
                force_compression: false,
                explicit_level: false,
                annotations: Annotations::default(),
            }
        });
    }
    let mut kind = None;
    let mut dest = None;
    let mut tar = true;
    let mut compression: Option<strata_oci::Compression> = None;
    let mut level: Option<i64> = None;
    let mut force_compression = false;
    let mut annotations = Vec::new();
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            other(format!(
                "--output {spec:?}: expected key=value, got {part:?}"
            ))
        })?;
        match k {
            "type" => kind = Some(v.to_owned()),
            "dest" => dest = Some(PathBuf::from(v)),
            "tar" => tar = v != "false",
            "compression" => {
                compression = Some(
                    v.parse()
                        .map_err(|e| other(format!("--output {spec:?}: {e}")))?,
                );
            }
            "compression-level" => {
                level = Some(v.parse().map_err(|_| {
                    other(format!(
                        "--output {spec:?}: compression-level={v} is not a number"
                    ))
                })?);
            }
            "force-compression" => {
                force_compression = match v {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(other(format!(
                            "--output {spec:?}: force-compression={v}: expected true or false"
                        )));
                    }
                }
            }
            "name" | "oci-mediatypes" | "rewrite-timestamp" => {}
            other_key => match parse_annotation_option(other_key, v)
                .map_err(|e| other(format!("--output {spec:?}: {e}")))?
            {
                Some(a) => annotations.push(a),
                None => return Err(other(format!("--output: unknown attribute {other_key:?}"))),
            },
        }
    }
    let kind = match kind.as_deref() {
        Some("image") => OutputKind::Image,
        Some("docker") => OutputKind::Docker,
        Some("oci") => OutputKind::Oci { tar },
        Some("local") => OutputKind::Local,
        Some("tar") => OutputKind::Tar,
        Some(t) => {
            return Err(other(format!(
                "--output: unknown type {t:?} (image, docker, oci, local, tar)"
            )));
        }
        None => return Err(other(format!("--output {spec:?}: missing type="))),
    };
    if !annotations.is_empty() && matches!(kind, OutputKind::Local | OutputKind::Tar) {
        // BuildKit's local and tar exporters write no manifest to hold them.
        return Err(other(format!(
            "--output {spec:?}: annotations need an image output (type=image, registry, oci or docker)"
        )));
    }
    if kind != OutputKind::Image && dest.is_none() {
        return Err(other(format!(
            "--output {spec:?}: dest= is required for this type"
        )));
    }
    if let Some(l) = level {
        let c = compression.unwrap_or_default();
        compression = Some(
            c.with_level(l)
                .map_err(|e| other(format!("--output {spec:?}: {e}")))?,
        );
    }
    if kind == OutputKind::Docker
        && matches!(compression, Some(strata_oci::Compression::Zstd { .. }))
    {
        // docker-archive has no media types: `docker load` sniffs each
        // layer, and dockerd before 23.0 cannot decompress zstd.
        return Err(other(format!(
            "--output {spec:?}: type=docker cannot carry zstd layers (docker load before Docker 23 cannot read them); use type=oci for zstd"
        )));
    }
    Ok(Output {
        kind,
        dest,
        compression,
        force_compression,
        explicit_level: level.is_some(),
        annotations: Annotations(annotations),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn parses_buildx_output_specs() {
        let o = parse_output("type=docker,dest=app.tar").unwrap();
        assert_eq!(o.kind, OutputKind::Docker);
        assert_eq!(o.dest.as_deref(), Some(Path::new("app.tar")));
        assert_eq!(
            parse_output("type=oci,dest=d,tar=false").unwrap().kind,
            OutputKind::Oci { tar: false }
        );
        assert_eq!(parse_output("out").unwrap().kind, OutputKind::Local);
        assert_eq!(parse_output("-").unwrap().kind, OutputKind::Tar);
        assert!(parse_output("type=docker").is_err());
        assert!(parse_output("type=nope,dest=x").is_err());
        assert!(parse_output("type=tar,dest=x,bogus=1").is_err());
        assert!(parse_output("type=oci,dest=x,compression=gzip").is_ok());
        let z = parse_output("type=oci,dest=x,compression=zstd,compression-level=19").unwrap();
        assert_eq!(
            z.compression,
            Some(strata_oci::Compression::Zstd { level: 19 })
        );
        assert!(z.explicit_level);
        let plain = parse_output("type=oci,dest=x,compression=zstd").unwrap();
        assert!(!plain.explicit_level && !plain.force_compression);
        assert!(parse_output("type=oci,dest=x,compression=zstd,force-compression=1").is_err());
        assert!(parse_output("type=oci,dest=x,compression=lz4").is_err());
        assert!(parse_output("type=oci,dest=x,compression=zstd,compression-level=99").is_err());
        assert!(parse_output("type=docker,dest=x,compression=zstd").is_err());
        assert!(
            parse_output("type=docker,dest=x,compression=uncompressed,force-compression=true")
                .unwrap()
                .force_compression
        );
    }
}
