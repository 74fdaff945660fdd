//! Which checks run and whether they fail the build: the `# check=`
//! directive, or the `BUILDKIT_DOCKERFILE_CHECK` build arg that replaces it
//! (moby/buildkit `linter.ParseLintOptions` and `dockerui` config).

use super::rules::Rule;

/// `skip=RULE,...|all; experimental=RULE,...|all; error=BOOL`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    pub skip_all: bool,
    pub skip: Vec<String>,
    pub experimental_all: bool,
    pub experimental: Vec<String>,
    /// Any warning fails the build (`error=true`).
    pub error: bool,
}

impl CheckConfig {
    /// Parses the directive's value. Like the reference, at most three
    /// `;`-separated parts are read (a fourth stays in the third's value)
    /// and unknown rule names are accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let mut config = CheckConfig::default();
        if text.is_empty() {
            return Ok(config);
        }
        for part in text.splitn(3, ';') {
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!("invalid check option {part:?}"));
            };
            let value = value.trim();
            let list = || value.split(',').map(|r| r.trim().to_owned()).collect();
            match key.trim() {
                "skip" if value == "all" => config.skip_all = true,
                "skip" => config.skip = list(),
                "experimental" if value == "all" => config.experimental_all = true,
                "experimental" => config.experimental = list(),
                "error" => {
                    config.error = parse_go_bool(value).ok_or_else(|| {
                        format!(
                            "failed to parse check option {part:?}: strconv.ParseBool: parsing {value:?}: invalid syntax"
                        )
                    })?;
                }
                other => return Err(format!("invalid check option {other:?}")),
            }
        }
        Ok(config)
    }

    /// Whether `rule` runs: an experimental rule only when enabled (and
    /// then `skip` does not apply to it), any other unless skipped.
    pub fn enabled(&self, rule: &Rule) -> bool {
        if rule.experimental {
            self.experimental_all || self.experimental.iter().any(|r| r == rule.name)
        } else {
            !self.skip_all && !self.skip.iter().any(|r| r == rule.name)
        }
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::rules;
    use super::*;

    #[test]
    fn parses_the_three_options() {
        let c = CheckConfig::parse("skip=JSONArgsRecommended, StageNameCasing;error=true").unwrap();
        assert_eq!(c.skip, vec!["JSONArgsRecommended", "StageNameCasing"]);
        assert!(c.error);
        assert!(!c.enabled(&rules::JSON_ARGS_RECOMMENDED));
        assert!(c.enabled(&rules::UNDEFINED_VAR));
        assert!(!c.enabled(&rules::COPY_IGNORED_FILE));
        let c = CheckConfig::parse("skip=all;experimental=all").unwrap();
        assert!(!c.enabled(&rules::UNDEFINED_VAR));
        assert!(c.enabled(&rules::COPY_IGNORED_FILE));
    }

    #[test]
    fn refuses_bad_options() {
        assert!(CheckConfig::parse("skip").is_err());
        assert!(CheckConfig::parse("nope=1").is_err());
        assert!(CheckConfig::parse("error=maybe").is_err());
        assert_eq!(CheckConfig::parse("  ").unwrap(), CheckConfig::default());
    }
}
