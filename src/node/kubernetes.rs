//! `capabilities.k8s`: whether the node is a Kubernetes node, and which version where a file
//! says it without credentials. Read at registration and at each re-detection.
//!
//! A node is a Kubernetes node when its root (HOST_ROOT) holds a kubelet's files
//! (`/var/lib/kubelet/config.yaml`, `/etc/kubernetes/kubelet.conf`) or k3s's
//! (`/etc/rancher/k3s`, `/var/lib/rancher/k3s/agent`), or when the agent runs in a pod (the
//! `KUBERNETES_SERVICE_HOST` variable, or a mounted service account). The version needs the
//! API server, and so credentials, except on a kubeadm control-plane node, whose
//! `/etc/kubernetes/manifests/kube-apiserver.yaml` names the API server's image and its tag;
//! elsewhere it is null. k3s keeps its version in its binary only.

use std::path::Path;

use super::read_text;

/// A static pod manifest is a few KiB.
const MANIFEST_LIMIT: usize = 64 * 1024;

/// `{"available", "version", "distribution"}`: `distribution` is `k3s` or `kubernetes` when
/// known, null otherwise (a pod that cannot see its node's files).
#[derive(miniserde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Kubernetes {
    pub available: bool,
    pub version: Option<String>,
    pub distribution: Option<String>,
}

pub fn detect(root: &Path, in_pod: bool) -> Kubernetes {
    let exists = |path: &str| root.join(path).exists();
    let distribution = if exists("etc/rancher/k3s") || exists("var/lib/rancher/k3s/agent") {
        Some("k3s")
    } else if exists("var/lib/kubelet/config.yaml") || exists("etc/kubernetes/kubelet.conf") {
        Some("kubernetes")
    } else {
        None
    };
    let mut buffer = Vec::new();
    let version = read_text(
        &root.join("etc/kubernetes/manifests/kube-apiserver.yaml"),
        &mut buffer,
        MANIFEST_LIMIT,
    )
    .ok()
    .and_then(api_server_version);
    Kubernetes {
        available: distribution.is_some() || in_pod,
        version,
        distribution: distribution.map(str::to_string),
    }
}

/// Whether this process runs in a Kubernetes pod: the variables the kubelet sets in every
/// container, or a service account mounted where the kubelet mounts it.
pub fn in_pod() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|value| !value.is_empty())
        || Path::new("/var/run/secrets/kubernetes.io/serviceaccount").exists()
}

/// The tag of the `image: …/kube-apiserver:v1.29.1` line of a static pod manifest, if it is a
/// version (`v` and digits and dots, an optional `-suffix` or `+build` of safe characters).
pub fn api_server_version(manifest: &str) -> Option<String> {
    manifest.lines().find_map(|line| {
        let image = line
            .trim()
            .strip_prefix("image:")?
            .trim()
            .trim_matches(['"', '\'']);
        let (name, tag) = image.rsplit_once(':')?;
        if !name.ends_with("kube-apiserver") {
            return None;
        }
        let digits = tag.strip_prefix('v')?;
        let core = digits.split(['-', '+']).next()?;
        let safe = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'_');
        (core.split('.').count() >= 2
            && core
                .split('.')
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            && tag.len() <= 64
            && tag.bytes().all(safe))
        .then(|| tag.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_servers_image_tag_is_the_version() {
        let manifest = "spec:\n  containers:\n  - command:\n    - kube-apiserver\n    image: registry.k8s.io/kube-apiserver:v1.29.1\n";
        assert_eq!(api_server_version(manifest).as_deref(), Some("v1.29.1"));
        assert_eq!(
            api_server_version("    image: \"k8s.gcr.io/kube-apiserver:v1.22.3-eks+1\"").as_deref(),
            Some("v1.22.3-eks+1")
        );
        for other in [
            "image: registry.k8s.io/etcd:3.5.10-0",
            "image: registry.k8s.io/kube-apiserver:latest",
            "image: registry.k8s.io/kube-apiserver@sha256:abc",
            "image: kube-apiserver:v1.2.3\u{1b}[31m",
        ] {
            assert_eq!(api_server_version(other), None, "{other}");
        }
    }
}
