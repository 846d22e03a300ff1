//! Telling a Kubernetes manifest from a compose file, so that a template rendered for Kubernetes
//! is refused with a sentence that says so, rather than with a compose error about `apiVersion`.

/// Whether `text` looks like a Kubernetes manifest: `apiVersion` and `kind` at the top level and
/// no `services` (YAML or JSON).
pub fn is_manifest(text: &str) -> bool {
    let mut api_version = false;
    let mut kind = false;
    for line in text.lines() {
        // Top-level keys only: no indentation; `---` separates documents.
        let key = line.split(':').next().unwrap_or_default();
        match key.trim_matches('"') {
            "apiVersion" => api_version = true,
            "kind" => kind = true,
            "services" => return false,
            _ => {}
        }
    }
    let json = text.trim_start().starts_with('{')
        && text.contains("\"apiVersion\"")
        && text.contains("\"kind\"")
        && !text.contains("\"services\"");
    (api_version && kind) || json
}

pub const REFUSAL: &str = "this is a Kubernetes manifest (apiVersion and kind, no services): Kubernetes manifests are not supported yet; deploy a Docker Compose file";

#[cfg(test)]
mod tests {
    use super::is_manifest;

    #[test]
    fn manifests_and_compose_files() {
        assert!(is_manifest(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n"
        ));
        assert!(is_manifest(
            "---\napiVersion: v1\nkind: Service\n---\napiVersion: apps/v1\nkind: Deployment\n"
        ));
        assert!(is_manifest(r#"{"apiVersion": "v1", "kind": "Pod"}"#));
        assert!(!is_manifest("services:\n  db:\n    image: postgres:16\n"));
        // Indented keys are a service's, not the file's.
        assert!(!is_manifest(
            "x-meta:\n  apiVersion: 1\n  kind: db\nservices:\n  db:\n    image: x\n"
        ));
        assert!(!is_manifest("kind: x\nservices: {}\n"));
    }
}
