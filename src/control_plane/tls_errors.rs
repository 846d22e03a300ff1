//! TLS failures in an operator's words.

/// A TLS failure in an operator's words, if `error` is one.
pub fn describe(error: &ureq::Error) -> Option<String> {
    let tls_error = match error {
        ureq::Error::Rustls(error) => error,
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>()?,
        _ => return None,
    };
    Some(describe_rustls(tls_error))
}

/// A rustls failure in an operator's words, `TLS: …`.
pub fn describe_rustls(tls_error: &rustls::Error) -> String {
    use rustls::{AlertDescription, CertificateError, Error as TlsError};
    let what = match tls_error {
        TlsError::InvalidCertificate(reason) => match reason {
            CertificateError::UnknownIssuer => {
                "the control plane's certificate is not signed by a trusted CA (unknown issuer); set CA_CERT to its CA".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the control plane's certificate is not valid for the host name in CONTROL_PLANE_URL (wrong host name)".into()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the control plane's certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the control plane's certificate is not valid yet (is this node's clock right?)".into()
            }
            CertificateError::Other(other)
                if matches!(
                    other.0.downcast_ref::<webpki::Error>(),
                    Some(webpki::Error::CaUsedAsEndEntity)
                ) =>
            {
                "the control plane's certificate is a CA certificate (CA:TRUE), which TLS does not accept as a server's own; issue the control plane a server certificate signed by that CA, and put the CA in CA_CERT".into()
            }
            other => format!("the control plane's certificate was refused: {other:?}"),
        },
        TlsError::AlertReceived(AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure) => {
            format!(
                "the control plane ended the handshake ({tls_error}); a control plane that requires a client certificate does this: set CLIENT_CERT and CLIENT_KEY"
            )
        }
        other => format!("{other}"),
    };
    format!("TLS: {what}")
}
