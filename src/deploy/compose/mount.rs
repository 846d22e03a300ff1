//! A service's `volumes:` entry: a named (or anonymous) volume, an absolute host path, or a
//! tmpfs. Relative host paths are refused: there is no project directory on the node.

use miniserde::json::Value;

use super::error::Result;
use super::json::{self, Obj};
use super::read::{self, Fields, error};
use super::units;
use super::yaml::{Node, Value as Yaml};

#[derive(Clone, Debug, PartialEq)]
pub enum MountKind {
    /// `source` is a key of the top-level `volumes` (`None`: an anonymous volume).
    Volume {
        nocopy: bool,
        subpath: Option<String>,
    },
    /// `source` is an absolute path on the node.
    Bind {
        propagation: Option<String>,
        selinux: Option<String>,
        /// Create the host path when missing (short syntax always does, as compose does).
        create_host_path: bool,
    },
    Tmpfs {
        size: Option<u64>,
        mode: Option<u32>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Mount {
    pub kind: MountKind,
    pub source: Option<String>,
    /// Absolute path in the container, cleaned as compose cleans it.
    pub target: String,
    pub read_only: bool,
    /// Line of the entry, for errors found later (an undefined volume).
    pub line: usize,
}

impl Mount {
    pub fn to_json(&self) -> Value {
        let (kind, extra) = match &self.kind {
            MountKind::Volume { nocopy, subpath } => (
                "volume",
                (
                    "volume",
                    Obj::new()
                        .flag("nocopy", *nocopy)
                        .string("subpath", subpath)
                        .build(),
                ),
            ),
            MountKind::Bind {
                propagation,
                selinux,
                create_host_path,
            } => (
                "bind",
                (
                    "bind",
                    Obj::new()
                        .string("propagation", propagation)
                        .string("selinux", selinux)
                        .flag("create_host_path", *create_host_path)
                        .build(),
                ),
            ),
            MountKind::Tmpfs { size, mode } => (
                "tmpfs",
                (
                    "tmpfs",
                    Obj::new()
                        .some("size", size.map(json::uint))
                        .some("mode", mode.map(|m| json::uint(m.into())))
                        .build(),
                ),
            ),
        };
        Obj::new()
            .set("type", json::string(kind))
            .string("source", &self.source)
            .set("target", json::string(&self.target))
            .flag("read_only", self.read_only)
            .set(extra.0, extra.1)
            .build()
    }
}

pub fn parse_list(node: &Node, path: &str) -> Result<Vec<Mount>> {
    read::sequence(node, path)?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("{path}[{i}]");
            match &item.value {
                Yaml::Map(_) => parse_long(item, &path),
                _ => {
                    let spec = read::string(item, &path)?;
                    parse_short(&spec, item.line, &path).map_err(|mut error| {
                        if item.interpolated {
                            // The message quotes parts of the spec, which holds an env value.
                            error.message = format!(
                                "invalid volume {}: expected an absolute host path or a volume name, \
                                 then an absolute target, then ro/rw",
                                read::shown(item, &spec)
                            );
                        }
                        error
                    })
                }
            }
        })
        .collect()
}

const RELATIVE: &str = "relative host paths are not supported: there is no project directory on \
                        the node; use a named volume, an absolute path or `configs` with `content`";

/// Whether compose takes a source as a host path rather than a volume name.
fn is_path(source: &str) -> bool {
    source.starts_with(['.', '/', '~'])
}

fn check_host_path(source: &str, path: &str, line: usize) -> Result<()> {
    if source.starts_with('/') {
        Ok(())
    } else {
        Err(error(path, line, format!("{source:?}: {RELATIVE}")))
    }
}

fn check_target(target: &str, path: &str, line: usize) -> Result<String> {
    if !target.starts_with('/') {
        return Err(error(
            path,
            line,
            format!("the target {target:?} must be an absolute path"),
        ));
    }
    Ok(clean(target))
}

/// Go's `path.Clean` for absolute paths: no `//`, `.` or `..` parts, no trailing `/`.
fn clean(target: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `src:dst[:options]`, `dst` (anonymous volume), as compose-go's `ParseVolume` reads them.
fn parse_short(spec: &str, line: usize, path: &str) -> Result<Mount> {
    let parts: Vec<&str> = spec.split(':').collect();
    if parts.iter().any(|p| p.is_empty()) || parts.len() > 3 {
        return Err(error(
            path,
            line,
            format!("invalid volume {spec:?}: expected source:target[:mode]"),
        ));
    }
    let (source, target, options) = match parts.as_slice() {
        [target] => (None, *target, ""),
        [source, target] => (Some(*source), *target, ""),
        [source, target, options] => (Some(*source), *target, *options),
        _ => unreachable!(),
    };
    let target = check_target(target, path, line)?;
    let mut read_only = false;
    let (mut nocopy, mut propagation, mut selinux) = (false, None, None);
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "nocopy" => nocopy = true,
            "z" | "Z" => selinux = Some(option.to_string()),
            "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => {
                propagation = Some(option.to_string())
            }
            _ => {
                return Err(error(
                    path,
                    line,
                    format!("unknown volume option {option:?}"),
                ));
            }
        }
    }
    let kind = match source {
        Some(source) if is_path(source) => {
            check_host_path(source, path, line)?;
            MountKind::Bind {
                propagation,
                selinux,
                create_host_path: true,
            }
        }
        _ => MountKind::Volume {
            nocopy,
            subpath: None,
        },
    };
    Ok(Mount {
        kind,
        source: source.map(str::to_string),
        target,
        read_only,
        line,
    })
}

fn parse_long(node: &Node, path: &str) -> Result<Mount> {
    let mut fields = Fields::new(node, path)?;
    let kind = fields.read("type", read::string)?;
    let source = fields.read("source", read::string)?;
    let target = match fields.get("target") {
        Some((value, path)) => check_target(&read::string(value, &path)?, &path, value.line)?,
        None => return Err(error(path, node.line, "a volume needs `target`")),
    };
    let read_only = fields.read("read_only", read::boolean)?.unwrap_or(false);
    fields.get("consistency"); // macOS only; compose ignores it on Linux too.
    let kind = match kind.as_deref() {
        Some("volume") => {
            let (nocopy, subpath) = match fields.get("volume") {
                Some((value, path)) => {
                    let mut volume = Fields::new(value, &path)?;
                    let nocopy = volume.read("nocopy", read::boolean)?.unwrap_or(false);
                    let subpath = volume.read("subpath", read::string)?;
                    volume.finish(read::no_reason)?;
                    (nocopy, subpath)
                }
                None => (false, None),
            };
            MountKind::Volume { nocopy, subpath }
        }
        Some("bind") => {
            let Some(source) = &source else {
                return Err(error(path, node.line, "a bind mount needs `source`"));
            };
            check_host_path(source, &read::child(path, "source"), node.line)?;
            let (mut propagation, mut selinux, mut create) = (None, None, true);
            if let Some((value, path)) = fields.get("bind") {
                let mut bind = Fields::new(value, &path)?;
                propagation = bind.read("propagation", read::string)?;
                selinux = bind.read("selinux", read::string)?;
                create = bind
                    .read("create_host_path", read::boolean)?
                    .unwrap_or(true);
                bind.finish(read::no_reason)?;
            }
            MountKind::Bind {
                propagation,
                selinux,
                create_host_path: create,
            }
        }
        Some("tmpfs") => {
            let (mut size, mut mode) = (None, None);
            if let Some((value, path)) = fields.get("tmpfs") {
                let mut tmpfs = Fields::new(value, &path)?;
                if let Some((value, path)) = tmpfs.get("size") {
                    let text = read::string(value, &path)?;
                    size = Some(
                        units::parse_bytes(&text)
                            .ok_or_else(|| error(&path, value.line, "expected a byte size"))?,
                    );
                }
                if let Some((value, path)) = tmpfs.get("mode") {
                    mode = Some(
                        u32::try_from(read::unsigned(value, &path)?)
                            .map_err(|_| error(&path, value.line, "expected a file mode"))?,
                    );
                }
                tmpfs.finish(read::no_reason)?;
            }
            MountKind::Tmpfs { size, mode }
        }
        Some(other) => {
            return Err(error(
                &read::child(path, "type"),
                node.line,
                format!("volume type {other:?} is not supported (volume, bind or tmpfs)"),
            ));
        }
        None => {
            return Err(error(
                path,
                node.line,
                "a volume needs `type` (volume, bind or tmpfs)",
            ));
        }
    };
    fields.finish(read::no_reason)?;
    Ok(Mount {
        kind,
        source,
        target,
        read_only,
        line: node.line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_syntax() {
        let m = parse_short("data:/var/lib/postgresql/data/", 3, "p").unwrap();
        assert_eq!(
            m.kind,
            MountKind::Volume {
                nocopy: false,
                subpath: None
            }
        );
        assert_eq!(
            (m.source.as_deref(), m.target.as_str()),
            (Some("data"), "/var/lib/postgresql/data")
        );
        let m = parse_short("/var/run/docker.sock:/var/run/docker.sock:ro", 3, "p").unwrap();
        assert!(matches!(
            m.kind,
            MountKind::Bind {
                create_host_path: true,
                ..
            }
        ));
        assert!(m.read_only);
        let m = parse_short("/cache", 3, "p").unwrap();
        assert_eq!((m.source, m.target.as_str()), (None, "/cache"));
        assert_eq!(clean("/a/./b/../c//"), "/a/c");
    }

    #[test]
    fn relative_and_home_paths_are_refused_with_key_and_line() {
        for spec in ["./prometheus:/etc/prometheus", "../x:/x", "~/x:/x"] {
            let error = parse_short(spec, 9, "services.p.volumes[0]").unwrap_err();
            assert_eq!(error.line, 9);
            assert!(
                error
                    .to_string()
                    .starts_with("services.p.volumes[0] (line 9): "),
                "{error}"
            );
            assert!(error.message.contains("no project directory"), "{error}");
        }
        assert!(
            parse_short("data:relative", 1, "p")
                .unwrap_err()
                .message
                .contains("absolute")
        );
        assert!(parse_short("a:/b:bogus", 1, "p").is_err());
    }
}
