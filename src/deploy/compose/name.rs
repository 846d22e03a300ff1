//! Names on the engine: the compose project name from the deployment id, and the names compose
//! gives containers.

use super::hash;

/// The project name of a deployment: compose's `NormalizeProjectName` (lower case, only
/// `[a-z0-9_-]`, no leading `_` or `-`), and when that changed the id, `-` and 8 hex digits of
/// the id's SHA-256, so that two ids never share a project (`Deploy.1` and `deploy1` would).
pub fn project_name(deployment_id: &str) -> String {
    let normalized: String = deployment_id
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    let normalized = normalized.trim_start_matches(['_', '-']);
    if normalized == deployment_id {
        return normalized.to_string();
    }
    let short = hash::hex(&hash::sha256(deployment_id.as_bytes())[..4]);
    if normalized.is_empty() {
        short
    } else {
        format!("{normalized}-{short}")
    }
}

/// `<project>-<service>-<n>`, compose v2's container name (n from 1).
pub fn container_name(project: &str, service: &str, number: u64) -> String {
    format!("{project}-{service}-{number}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn valid_ids_are_kept() {
        assert_eq!(project_name("deploy-123"), "deploy-123");
        assert_eq!(project_name("a_b-9"), "a_b-9");
    }

    #[test]
    fn changed_ids_get_a_hash_and_never_collide() {
        let a = project_name("Deploy.1");
        let b = project_name("deploy1");
        assert_eq!(b, "deploy1");
        assert!(
            a.starts_with("deploy1-") && a.len() == "deploy1-".len() + 8,
            "{a}"
        );
        assert_ne!(a, b);
        assert_ne!(project_name("DEPLOY1"), project_name("Deploy1"));
        let leading = project_name("-x");
        assert!(leading.starts_with("x-"), "{leading}");
        let empty = project_name("..");
        assert_eq!(empty.len(), 8);
        assert!(empty.chars().all(|c| c.is_ascii_hexdigit()));
        // Fixed: it names the containers of running deployments across agent versions.
        assert_eq!(
            project_name("Deploy 42"),
            format!("deploy42-{}", &hex_sha("Deploy 42")[..8])
        );
    }

    fn hex_sha(text: &str) -> String {
        Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn sha256_is_sha2s_digest_in_every_build() {
        for text in ["", "abc", "Deploy 42", &"x".repeat(1000)] {
            assert_eq!(hash::hex(&hash::sha256(text.as_bytes())), hex_sha(text));
        }
    }

    #[test]
    fn container_names() {
        assert_eq!(container_name("p", "db", 1), "p-db-1");
    }
}
