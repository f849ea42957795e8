//! The JSON Schema of driftwall's profile format, generated from the document types
//! in [`super::guardian`] with `schemars` so that it cannot drift from what the parser
//! reads. The committed copy, `policies/profile.schema.json`, is what editors use; a
//! test fails when it differs from the generated one.
//!
//! `schemars` is the de-facto crate for deriving JSON Schema from serde types: it
//! honours the serde attributes already on the types (`rename_all`, `default`,
//! `deny_unknown_fields` → `additionalProperties: false`) and takes doc comments as
//! descriptions, so the schema needs no second description of the format.
use super::guardian::ProfileDoc;

/// Where the committed schema lives, relative to the repository root.
pub const SCHEMA_PATH: &str = "policies/profile.schema.json";

/// The profile format's JSON Schema (draft 2020-12), pretty-printed, with a final newline.
pub fn profile_json_schema() -> String {
    let schema = schemars::schema_for!(ProfileDoc);
    // A `Schema` is a JSON value; printing one cannot fail.
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Run with `DRIFTWALL_BLESS=1` to rewrite the committed schema.
    #[test]
    fn the_committed_schema_is_the_generated_one() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(SCHEMA_PATH);
        let generated = profile_json_schema();
        if std::env::var_os("DRIFTWALL_BLESS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{SCHEMA_PATH} is out of date with the profile types; regenerate it with \
             `DRIFTWALL_BLESS=1 cargo test --release -p driftwall-compiler the_committed_schema` \
             and commit it"
        );
    }

    #[test]
    fn the_schema_describes_the_format() {
        let schema: serde_json::Value = serde_json::from_str(&profile_json_schema()).unwrap();
        assert_eq!(schema["title"], "driftwall Guardian profile");
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(
            schema["properties"]["apiVersion"]["const"],
            "driftwall.dev/v1alpha1"
        );
        let text = schema.to_string();
        for word in [
            "egress",
            "ingress",
            "parents",
            "users",
            "access",
            "container",
            "response",
        ] {
            assert!(text.contains(&format!("\"{word}\"")), "schema lacks {word}");
        }
    }
}
