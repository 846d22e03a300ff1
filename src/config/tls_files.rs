//! HTTPS trust and client identity, read from PEM files once at start-up so that a bad file is a
//! configuration error (exit 2) and not a failure at every heartbeat.
//!
//! Without `CA_CERT` the agent trusts Mozilla's roots, compiled in (a `FROM scratch` image has no
//! CA bundle). With it, the file's certificates *replace* those roots: a control plane behind a
//! private CA is then trusted through that CA alone, and a public CA cannot stand in for it. To
//! trust both, put both in the file.
//!
//! Each file is read whole, so each is bounded: at most [`MAX_PEM_BYTES`], and only a regular
//! file (a symbolic link to one, as Kubernetes mounts secrets, is one). `/dev/zero`, a FIFO or a
//! disk image named by mistake is a configuration error, not an agent that fills its memory or
//! waits at start-up for a writer that never comes.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

/// What the agent trusts and who it is, for HTTPS.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    /// Replacement roots from `CA_CERT`; `None` means Mozilla's.
    roots: Option<Arc<Vec<Certificate<'static>>>>,
    /// Chain and key from `CLIENT_CERT` and `CLIENT_KEY`, for mutual TLS.
    client: Option<ClientCert>,
}

impl TlsFiles {
    /// Reads the files named by the settings. Each error says what is wrong with which file.
    pub fn load(
        ca_cert: Option<&Path>,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<TlsFiles, (Setting, String)> {
        let roots = match ca_cert {
            None => None,
            Some(path) => {
                let certificates = certificates(path).map_err(|e| (Setting::CaCert, e))?;
                Some(Arc::new(certificates))
            }
        };
        let client = match (client_cert, client_key) {
            (None, None) => None,
            (Some(_), None) => {
                return Err((Setting::ClientKey, "is required with CLIENT_CERT".into()));
            }
            (None, Some(_)) => {
                return Err((Setting::ClientCert, "is required with CLIENT_KEY".into()));
            }
            (Some(cert), Some(key)) => {
                let chain = certificates(cert).map_err(|e| (Setting::ClientCert, e))?;
                let key = private_key(key).map_err(|e| (Setting::ClientKey, e))?;
                Some(ClientCert::new_with_certs(&chain, key))
            }
        };
        Ok(TlsFiles { roots, client })
    }

    pub fn has_client_cert(&self) -> bool {
        self.client.is_some()
    }

    /// The certificates of `CA_CERT`, which replace Mozilla's roots; `None` means Mozilla's.
    pub fn ca_certificates(&self) -> Option<&[Certificate<'static>]> {
        self.roots.as_deref().map(Vec::as_slice)
    }

    /// The chain and key of `CLIENT_CERT` and `CLIENT_KEY`, for mutual TLS.
    pub fn client_cert(&self) -> Option<&ClientCert> {
        self.client.as_ref()
    }

    pub fn ureq_config(&self) -> TlsConfig {
        TlsConfig::builder()
            .root_certs(match &self.roots {
                Some(roots) => RootCerts::Specific(roots.clone()),
                None => RootCerts::WebPki,
            })
            .client_cert(self.client.clone())
            .build()
    }
}

/// The setting a file came from, for the error line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    CaCert,
    ClientCert,
    ClientKey,
}

/// The most a PEM file named by a setting may hold: Mozilla's whole root bundle is about 250 KiB,
/// a certificate chain or a key a few KiB.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

fn read(path: &Path) -> Result<Vec<u8>, String> {
    let cannot_read = |error: std::io::Error| format!("cannot read it: {error}");
    // The type is checked before opening: opening a device can have effects of its own (a
    // watchdog starts counting), and opening a FIFO waits for a writer.
    regular_and_small(&std::fs::metadata(path).map_err(cannot_read)?)?;
    // Non-blocking and without becoming a controlling terminal, should the path be swapped for
    // something else in between; the open file's own type is what counts.
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(cannot_read)?;
    regular_and_small(&file.metadata().map_err(cannot_read)?)?;
    let mut bytes = Vec::new();
    // One byte past the limit tells a file that grew while it was read.
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Refuses anything but a regular file of at most `MAX_PEM_BYTES`, saying what it is instead.
fn regular_and_small(metadata: &std::fs::Metadata) -> Result<(), String> {
    let kind = metadata.file_type();
    let what = if kind.is_file() {
        if metadata.len() > MAX_PEM_BYTES {
            return Err(too_large());
        }
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    };
    Err(format!("is {what}, not a regular file of PEM text"))
}

fn too_large() -> String {
    format!(
        "is larger than {} MiB, which no PEM file of certificates or keys is: is it the right file?",
        MAX_PEM_BYTES >> 20
    )
}

fn certificates(path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let pem = read(path)?;
    let mut certificates = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(certificate)) => certificates.push(certificate),
            Ok(_) => {}
            Err(error) => return Err(format!("is not valid PEM: {error}")),
        }
    }
    if certificates.is_empty() {
        return Err("has no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certificates)
}

fn private_key(path: &Path) -> Result<PrivateKey<'static>, String> {
    let pem = read(path)?;
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::PrivateKey(key)) => return Ok(key),
            Ok(_) => {}
            Err(error) => return Err(format!("is not valid PEM: {error}")),
        }
    }
    Err("has no PEM private key (PKCS#8, PKCS#1 or SEC1)".into())
}
