//! Whether a RUN step for an image's platform can run on this machine:
//! natively, or through a binfmt_misc handler (qemu-user) the kernel runs
//! foreign binaries with. Nothing is registered here; strata only looks.

use std::path::Path;

use strata_oci::image::ImageConfig;

const BINFMT: &str = "/proc/sys/fs/binfmt_misc";

/// Why a RUN in an image configured as `config` cannot run here, or `None`
/// when it can (same architecture, one the CPU runs natively, or a
/// registered emulator).
pub(crate) fn missing_emulator(config: &ImageConfig) -> Option<String> {
    missing_emulator_in(config, Path::new(BINFMT))
}

fn missing_emulator_in(config: &ImageConfig, binfmt: &Path) -> Option<String> {
    let host = strata_oci::image::host_architecture();
    let arch = config.platform.architecture.as_str();
    let platform = match config.platform.variant.as_deref() {
        Some(v) if !v.is_empty() => format!("{}/{arch}/{v}", config.platform.os),
        _ => format!("{}/{arch}", config.platform.os),
    };
    if config.platform.os != "linux" {
        return Some(format!(
            "RUN for {platform}: only linux images can run steps"
        ));
    }
    if runs_natively(host, arch) {
        return None;
    }
    let Some(qemu) = qemu_name(arch) else {
        return Some(format!(
            "RUN for {platform} cannot run on this linux/{host} machine: no emulator is known for architecture {arch:?}"
        ));
    };
    let state = if !binfmt.join("status").exists() {
        format!("binfmt_misc is not mounted at {}", binfmt.display())
    } else {
        match handler(binfmt, qemu) {
            Handler::Usable => return None,
            Handler::Missing => format!(
                "no binfmt_misc emulator for {qemu} is registered (nothing named qemu-{qemu} in {})",
                binfmt.display()
            ),
            Handler::Disabled(name) => format!(
                "the binfmt_misc emulator {} is registered but disabled",
                binfmt.join(name).display()
            ),
            Handler::NoFixBinary(name) => format!(
                "the binfmt_misc emulator {} lacks the F (fix binary) flag, so it cannot be found from inside the step's root filesystem",
                binfmt.join(name).display()
            ),
        }
    };
    Some(format!(
        "RUN for {platform} cannot run on this linux/{host} machine: {state}. Register a qemu-user emulator (Debian: apt-get install qemu-user-static), or build {platform} from steps that need no RUN (FROM scratch, COPY)"
    ))
}

/// Architectures a CPU of `host` executes without help.
fn runs_natively(host: &str, arch: &str) -> bool {
    arch == host || matches!((host, arch), ("amd64", "386") | ("arm64", "arm"))
}

/// qemu-user's name for a GOARCH, as binfmt handlers are named (`qemu-aarch64`).
fn qemu_name(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "arm" => "arm",
        "386" => "i386",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "mips64le" => "mips64el",
        "mips64" => "mips64",
        "loong64" => "loongarch64",
        _ => return None,
    })
}

enum Handler {
    Usable,
    Missing,
    Disabled(String),
    NoFixBinary(String),
}

/// Looks for `qemu-<qemu>` (as binfmt-support, qemu-user-static and
/// tonistiigi/binfmt name them) among the registered handlers.
fn handler(binfmt: &Path, qemu: &str) -> Handler {
    let name = format!("qemu-{qemu}");
    let Ok(text) = std::fs::read_to_string(binfmt.join(&name)) else {
        return Handler::Missing;
    };
    if text.lines().next().map(str::trim) != Some("enabled") {
        return Handler::Disabled(name);
    }
    let fix_binary = text
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .is_some_and(|f| f.contains('F'));
    if fix_binary {
        Handler::Usable
    } else {
        Handler::NoFixBinary(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(arch: &str) -> ImageConfig {
        ImageConfig::new("linux", arch)
    }

    fn foreign() -> &'static str {
        if strata_oci::image::host_architecture() == "arm64" {
            "amd64"
        } else {
            "arm64"
        }
    }

    #[test]
    fn host_architecture_needs_nothing() {
        let none = tempfile::tempdir().unwrap();
        let host = strata_oci::image::host_architecture();
        assert_eq!(missing_emulator_in(&config(host), none.path()), None);
    }

    #[test]
    fn foreign_architecture_names_platform_and_binfmt_state() {
        let dir = tempfile::tempdir().unwrap();
        let arch = foreign();
        let qemu = qemu_name(arch).unwrap();
        // Not mounted: no status file.
        let msg = missing_emulator_in(&config(arch), dir.path()).unwrap();
        assert!(msg.contains(&format!("RUN for linux/{arch}")), "{msg}");
        assert!(msg.contains("binfmt_misc is not mounted"), "{msg}");
        // Mounted, nothing registered.
        std::fs::write(dir.path().join("status"), "enabled\n").unwrap();
        let msg = missing_emulator_in(&config(arch), dir.path()).unwrap();
        assert!(
            msg.contains(&format!("no binfmt_misc emulator for {qemu} is registered")),
            "{msg}"
        );
        // Registered without F, then disabled, then usable.
        let entry = dir.path().join(format!("qemu-{qemu}"));
        std::fs::write(&entry, "enabled\ninterpreter /usr/bin/qemu\nflags: OC\n").unwrap();
        let msg = missing_emulator_in(&config(arch), dir.path()).unwrap();
        assert!(msg.contains("F (fix binary)"), "{msg}");
        std::fs::write(&entry, "disabled\nflags: F\n").unwrap();
        let msg = missing_emulator_in(&config(arch), dir.path()).unwrap();
        assert!(msg.contains("disabled"), "{msg}");
        std::fs::write(&entry, "enabled\ninterpreter /usr/bin/qemu\nflags: POCF\n").unwrap();
        assert_eq!(missing_emulator_in(&config(arch), dir.path()), None);
    }
}
