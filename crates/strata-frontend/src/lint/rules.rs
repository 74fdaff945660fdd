//! The rule table: BuildKit 0.25's Dockerfile checks, with the names,
//! descriptions and documentation URLs its frontend reports
//! (moby/buildkit `frontend/dockerfile/linter/ruleset.go`), so editors and
//! CI tooling that key on them read strata's results the same way.

/// One check.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    pub name: &'static str,
    pub description: &'static str,
    /// Empty for InvalidBaseImagePlatform, which has no page.
    pub url: &'static str,
    /// Runs only when named in `experimental=` (or `experimental=all`).
    pub experimental: bool,
}

macro_rules! rules {
    ($($id:ident: $name:literal, $desc:literal, $url:literal, $exp:literal;)*) => {
        $(pub const $id: Rule = Rule { name: $name, description: $desc, url: $url, experimental: $exp };)*
        /// Every rule, in the reference's declaration order.
        pub const ALL: &[&Rule] = &[$(&$id),*];
    };
}

rules! {
    STAGE_NAME_CASING: "StageNameCasing", "Stage names should be lowercase",
        "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/", false;
    FROM_AS_CASING: "FromAsCasing", "The 'as' keyword should match the case of the 'from' keyword",
        "https://docs.docker.com/go/dockerfile/rule/from-as-casing/", false;
    NO_EMPTY_CONTINUATION: "NoEmptyContinuation", "Empty continuation lines will become errors in a future release",
        "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/", false;
    CONSISTENT_INSTRUCTION_CASING: "ConsistentInstructionCasing", "All commands within the Dockerfile should use the same casing (either upper or lower)",
        "https://docs.docker.com/go/dockerfile/rule/consistent-instruction-casing/", false;
    DUPLICATE_STAGE_NAME: "DuplicateStageName", "Stage names should be unique",
        "https://docs.docker.com/go/dockerfile/rule/duplicate-stage-name/", false;
    RESERVED_STAGE_NAME: "ReservedStageName", "Reserved words should not be used as stage names",
        "https://docs.docker.com/go/dockerfile/rule/reserved-stage-name/", false;
    JSON_ARGS_RECOMMENDED: "JSONArgsRecommended", "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
        "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/", false;
    MAINTAINER_DEPRECATED: "MaintainerDeprecated", "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
        "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/", false;
    UNDEFINED_ARG_IN_FROM: "UndefinedArgInFrom", "FROM command must use declared ARGs",
        "https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/", false;
    WORKDIR_RELATIVE_PATH: "WorkdirRelativePath", "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes",
        "https://docs.docker.com/go/dockerfile/rule/workdir-relative-path/", false;
    UNDEFINED_VAR: "UndefinedVar", "Variables should be defined before their use",
        "https://docs.docker.com/go/dockerfile/rule/undefined-var/", false;
    MULTIPLE_INSTRUCTIONS_DISALLOWED: "MultipleInstructionsDisallowed", "Multiple instructions of the same type should not be used in the same stage",
        "https://docs.docker.com/go/dockerfile/rule/multiple-instructions-disallowed/", false;
    LEGACY_KEY_VALUE_FORMAT: "LegacyKeyValueFormat", "Legacy key/value format with whitespace separator should not be used",
        "https://docs.docker.com/go/dockerfile/rule/legacy-key-value-format/", false;
    INVALID_BASE_IMAGE_PLATFORM: "InvalidBaseImagePlatform", "Base image platform does not match expected target platform",
        "", false;
    REDUNDANT_TARGET_PLATFORM: "RedundantTargetPlatform", "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
        "https://docs.docker.com/go/dockerfile/rule/redundant-target-platform/", false;
    SECRETS_USED_IN_ARG_OR_ENV: "SecretsUsedInArgOrEnv", "Sensitive data should not be used in the ARG or ENV commands",
        "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/", false;
    INVALID_DEFAULT_ARG_IN_FROM: "InvalidDefaultArgInFrom", "Default value for global ARG results in an empty or invalid base image name",
        "https://docs.docker.com/go/dockerfile/rule/invalid-default-arg-in-from/", false;
    FROM_PLATFORM_FLAG_CONST_DISALLOWED: "FromPlatformFlagConstDisallowed", "FROM --platform flag should not use a constant value",
        "https://docs.docker.com/go/dockerfile/rule/from-platform-flag-const-disallowed/", false;
    COPY_IGNORED_FILE: "CopyIgnoredFile", "Attempting to Copy file that is excluded by .dockerignore",
        "https://docs.docker.com/go/dockerfile/rule/copy-ignored-file/", true;
    INVALID_DEFINITION_DESCRIPTION: "InvalidDefinitionDescription", "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment.",
        "https://docs.docker.com/go/dockerfile/rule/invalid-definition-description/", true;
    EXPOSE_PROTO_CASING: "ExposeProtoCasing", "Protocol in EXPOSE instruction should be lowercase",
        "https://docs.docker.com/go/dockerfile/rule/expose-proto-casing/", false;
    EXPOSE_INVALID_FORMAT: "ExposeInvalidFormat", "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release",
        "https://docs.docker.com/go/dockerfile/rule/expose-invalid-format/", false;
}

/// The rule called `name`, if there is one.
pub fn by_name(name: &str) -> Option<&'static Rule> {
    ALL.iter().copied().find(|r| r.name == name)
}
