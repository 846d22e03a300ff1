//! A published or exposed port of a service (`ports:`), short and long syntax.

use miniserde::json::Value;

use super::error::Result;
use super::json::{self, Obj};
use super::read::{self, Fields, error};
use super::yaml::{Node, Value as Yaml};

#[derive(Clone, Debug, PartialEq)]
pub struct Port {
    /// Container port.
    pub target: u16,
    /// Host port or range (`8080`, `8000-8010`); `None`: not published (or a random port).
    pub published: Option<String>,
    /// Host address to bind (`127.0.0.1`, `::1`); `None`: every address.
    pub host_ip: Option<String>,
    /// `tcp` (default), `udp` or `sctp`.
    pub protocol: String,
    /// `ingress` (default) or `host`; the same for a single engine.
    pub mode: String,
    pub name: Option<String>,
    pub app_protocol: Option<String>,
}

impl Port {
    /// The host ports this entry takes, for the clash check.
    pub fn published_range(&self) -> Option<(u16, u16)> {
        let published = self.published.as_deref()?;
        match published.split_once('-') {
            Some((low, high)) => Some((low.parse().ok()?, high.parse().ok()?)),
            None => published.parse().ok().map(|p| (p, p)),
        }
    }

    pub fn to_json(&self) -> Value {
        Obj::new()
            .set("mode", json::string(&self.mode))
            .string("host_ip", &self.host_ip)
            .set("target", json::uint(self.target.into()))
            .string("published", &self.published)
            .set("protocol", json::string(&self.protocol))
            .string("name", &self.name)
            .string("app_protocol", &self.app_protocol)
            .build()
    }
}

/// `ports:`: a list of short (`"8080:80"`, `"127.0.0.1:8080:80/udp"`, `"8000-8001:80-81"`,
/// `80`) and long entries.
pub fn parse_list(node: &Node, path: &str) -> Result<Vec<Port>> {
    let mut ports = Vec::new();
    for (i, item) in read::sequence(node, path)?.iter().enumerate() {
        let path = format!("{path}[{i}]");
        match &item.value {
            Yaml::Map(_) => ports.push(parse_long(item, &path)?),
            _ => {
                let text = read::string(item, &path)?;
                ports.extend(parse_short(&text).map_err(|why| {
                    error(
                        &path,
                        item.line,
                        format!("invalid port {}: {why}", read::shown(item, &text)),
                    )
                })?);
            }
        }
    }
    Ok(ports)
}

fn parse_long(node: &Node, path: &str) -> Result<Port> {
    let mut fields = Fields::new(node, path)?;
    let target = match fields.get("target") {
        Some((value, path)) => port_number(read::integer(value, &path)?)
            .ok_or_else(|| error(&path, value.line, "expected a port number 1-65535"))?,
        None => return Err(error(path, node.line, "a port needs `target`")),
    };
    let published = fields.read("published", read::string)?;
    if let (Some(published), Some((value, path))) = (&published, fields.get("published"))
        && parse_range(published).is_none()
    {
        return Err(error(
            &path,
            value.line,
            format!("invalid published port {}", read::shown(value, published)),
        ));
    }
    let protocol = fields
        .read("protocol", read::string)?
        .unwrap_or_else(|| "tcp".into());
    check_protocol(&protocol).map_err(|why| error(path, node.line, why))?;
    let mode = fields
        .read("mode", read::string)?
        .unwrap_or_else(|| "ingress".into());
    if mode != "ingress" && mode != "host" {
        return Err(error(
            &read::child(path, "mode"),
            node.line,
            "expected ingress or host",
        ));
    }
    let port = Port {
        target,
        published,
        host_ip: fields.read("host_ip", read::string)?,
        protocol,
        mode,
        name: fields.read("name", read::string)?,
        app_protocol: fields.read("app_protocol", read::string)?,
    };
    fields.finish(read::no_reason)?;
    Ok(port)
}

fn port_number(n: i64) -> Option<u16> {
    u16::try_from(n).ok().filter(|&p| p > 0)
}

/// `low-high` or a single port.
fn parse_range(text: &str) -> Option<(u16, u16)> {
    let number = |s: &str| s.parse::<u16>().ok().filter(|&p| p > 0 || s == "0");
    match text.split_once('-') {
        Some((low, high)) => {
            let (low, high) = (number(low)?, number(high)?);
            (low <= high).then_some((low, high))
        }
        None => number(text).map(|p| (p, p)),
    }
}

fn check_protocol(protocol: &str) -> std::result::Result<(), &'static str> {
    match protocol {
        "tcp" | "udp" | "sctp" => Ok(()),
        _ => Err("the protocol is tcp, udp or sctp"),
    }
}

/// The short syntax as docker's `nat.ParsePortSpecs` reads it: `[[ip:]host:]container[/proto]`,
/// ranges on either side (a host range for one container port lets the engine pick).
pub fn parse_short(spec: &str) -> std::result::Result<Vec<Port>, &'static str> {
    let (rest, protocol) = match spec.rsplit_once('/') {
        Some((rest, protocol)) => (rest, protocol.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    check_protocol(&protocol)?;
    // An IPv6 host address is bracketed: [::1]:8080:80.
    let (ip, rest) = match rest.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, after) = bracketed.split_once(']').ok_or("unclosed [")?;
            (
                Some(ip.to_string()),
                after.strip_prefix(':').ok_or("expected : after ]")?,
            )
        }
        None => (None, rest),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, container) = match (ip, parts.as_slice()) {
        (None, [container]) => (None, "", *container),
        (None, [host, container]) => (None, *host, *container),
        (None, [ip, host, container]) => (Some(ip.to_string()), *host, *container),
        (Some(ip), [host, container]) => (Some(ip), *host, *container),
        _ => return Err("expected [[ip:]host:]container[/protocol]"),
    };
    let ip = ip.filter(|ip| !ip.is_empty());
    let (low, high) = parse_range(container)
        .filter(|&(low, _)| low > 0)
        .ok_or("invalid container port")?;
    let host_range = match host {
        "" => None,
        host => Some(parse_range(host).ok_or("invalid host port")?),
    };
    let count = high - low;
    let mut ports = Vec::new();
    for offset in 0..=count {
        let published = match host_range {
            None => None,
            Some((host_low, host_high)) if count == 0 => Some(if host_low == host_high {
                host_low.to_string()
            } else {
                format!("{host_low}-{host_high}")
            }),
            Some((host_low, host_high)) => {
                if host_high - host_low != count {
                    return Err("the host and container ranges differ in size");
                }
                Some((host_low + offset).to_string())
            }
        };
        ports.push(Port {
            target: low + offset,
            published,
            host_ip: ip.clone(),
            protocol: protocol.clone(),
            mode: "ingress".into(),
            name: None,
            app_protocol: None,
        });
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(spec: &str) -> Vec<(u16, Option<String>, Option<String>, String)> {
        parse_short(spec)
            .unwrap()
            .into_iter()
            .map(|p| (p.target, p.published, p.host_ip, p.protocol))
            .collect()
    }

    #[test]
    fn short_syntax() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(short("80"), vec![(80, None, None, "tcp".into())]);
        assert_eq!(short("8080:80"), vec![(80, s("8080"), None, "tcp".into())]);
        assert_eq!(
            short("127.0.0.1:53:53/udp"),
            vec![(53, s("53"), s("127.0.0.1"), "udp".into())]
        );
        assert_eq!(
            short("[::1]:8080:80"),
            vec![(80, s("8080"), s("::1"), "tcp".into())]
        );
        assert_eq!(
            short("8000-8001:80-81"),
            vec![
                (80, s("8000"), None, "tcp".into()),
                (81, s("8001"), None, "tcp".into())
            ]
        );
        assert_eq!(
            short("9000-9010:80"),
            vec![(80, s("9000-9010"), None, "tcp".into())]
        );
        assert_eq!(
            short("127.0.0.1::80"),
            vec![(80, None, s("127.0.0.1"), "tcp".into())]
        );
        for bad in [
            "",
            "x",
            "0",
            "80/icmp",
            "1:2:3:4",
            "8000-8002:80-81",
            "70000:80",
            "[::1:80",
        ] {
            assert!(parse_short(bad).is_err(), "{bad}");
        }
    }
}
