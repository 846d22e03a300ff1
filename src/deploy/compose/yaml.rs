//! The compose file as a tree of nodes with their lines, from saphyr-parser's events.
//!
//! The tree is built here rather than by a YAML crate's own loader because the deploy needs what
//! those loaders lack: a cap on alias expansion (a "billion laughs" file must be refused, not
//! expanded), `<<` merge keys (YAML 1.1's, which compose files use with `x-` anchors), refused
//! duplicate keys, and the YAML 1.2 core schema decided per scalar so that `22:22` and `yes`
//! stay strings.

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

use super::error::{ComposeError, Result};

/// At most this many nodes may come from aliases in one file (every use of an alias counts the
/// nodes it stands for). Real compose files reuse a few small anchors; a bomb needs millions.
pub const MAX_ALIAS_NODES: usize = 10_000;
/// At most this many bytes of scalar text may come from aliases in one file: a few aliases of a
/// large scalar must not multiply it past the size a deploy body may have.
pub const MAX_ALIAS_BYTES: usize = 1 << 20;
/// Nesting deeper than this is refused: compose files need fewer than ten levels, and the walks
/// over the tree are recursive.
pub const MAX_DEPTH: usize = 64;

/// What a scalar is under the YAML 1.2 core schema, decided from how it was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Int,
    Float,
    Str,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// The text as written (quotes and escapes resolved) and its kind.
    Scalar(String, Kind),
    Seq(Vec<Node>),
    /// In file order, merged (`<<`) entries after the explicit ones; keys are unique.
    Map(Vec<(Key, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// 1-based line where the node starts.
    pub line: usize,
    pub value: Value,
    /// The text came through interpolation: it may hold a value of the deploy's env, which an
    /// error must never show (`read::shown`).
    pub interpolated: bool,
}

impl Node {
    /// Nodes in this subtree, itself included.
    fn count(&self) -> usize {
        match &self.value {
            Value::Scalar(..) => 1,
            Value::Seq(items) => 1 + items.iter().map(Node::count).sum::<usize>(),
            Value::Map(entries) => 1 + entries.iter().map(|(_, v)| v.count()).sum::<usize>(),
        }
    }

    /// Bytes of scalar text (keys included) in this subtree.
    fn bytes(&self) -> usize {
        match &self.value {
            Value::Scalar(text, _) => text.len(),
            Value::Seq(items) => items.iter().map(Node::bytes).sum(),
            Value::Map(entries) => entries.iter().map(|(k, v)| k.name.len() + v.bytes()).sum(),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Scalar(_, Kind::Null))
    }
}

/// The YAML 1.2 core schema's resolution of a plain scalar (10.3.2 of the spec).
pub fn resolve_plain(text: &str) -> Kind {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => return Kind::Bool,
        ".nan" | ".NaN" | ".NAN" => return Kind::Float,
        _ => {}
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") {
        return Kind::Float;
    }
    let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    if digits(unsigned, 10)
        || text.strip_prefix("0o").is_some_and(|s| digits(s, 8))
        || text.strip_prefix("0x").is_some_and(|s| digits(s, 16))
    {
        return Kind::Int;
    }
    // [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (int.is_empty() && digits(frac, 10))
                || (digits(int, 10) && (frac.is_empty() || digits(frac, 10)))
        }
        None => digits(mantissa, 10),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e), 10));
    if mantissa_ok && exponent_ok {
        Kind::Float
    } else {
        Kind::Str
    }
}

/// The kind an explicit core-schema tag gives (`!!str 123` is a string); other tags are refused
/// (compose's own `!reset` and `!override` only make sense when merging several files).
fn tagged_kind(tag: &Tag, text: &str, line: usize) -> Result<Kind> {
    if tag.is_yaml_core_schema() {
        match tag.suffix.as_str() {
            "str" => return Ok(Kind::Str),
            "null" | "bool" | "int" | "float" => return Ok(resolve_plain(text)),
            _ => {}
        }
    }
    Err(ComposeError::new(
        "",
        line,
        format!("the YAML tag `{tag}` is not supported"),
    ))
}

fn check_collection_tag(tag: Option<&Tag>, line: usize) -> Result<()> {
    match tag {
        Some(tag) if !(tag.is_yaml_core_schema() && matches!(&*tag.suffix, "map" | "seq")) => Err(
            ComposeError::new("", line, format!("the YAML tag `{tag}` is not supported")),
        ),
        _ => Ok(()),
    }
}

enum Frame {
    Seq {
        line: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        line: usize,
        anchor: usize,
        entries: Vec<(Key, Node)>,
        key: Option<Key>,
    },
}

struct Loader {
    stack: Vec<Frame>,
    /// Sorted by anchor id (the parser numbers anchors in order, so each lands at the end), a
    /// later definition of an id replacing the earlier one. A sorted list, not a `HashMap`: the
    /// map's code would be in the binary for this alone.
    anchors: Vec<(usize, Node)>,
    alias_nodes: usize,
    alias_bytes: usize,
    documents: usize,
    root: Option<Node>,
}

fn line_of(span: &Span) -> usize {
    span.start.line()
}

/// Parses one YAML document into its tree; an empty document is `None`.
pub fn parse(text: &str) -> Result<Option<Node>> {
    let mut loader = Loader {
        stack: Vec::new(),
        anchors: Vec::new(),
        alias_nodes: 0,
        alias_bytes: 0,
        documents: 0,
        root: None,
    };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|error| {
            ComposeError::new(
                "",
                error.marker().line(),
                format!("not valid YAML: {}", error.info()),
            )
        })?;
        loader.event(event, line_of(&span))?;
    }
    Ok(loader.root)
}

impl Loader {
    fn event(&mut self, event: Event<'_>, line: usize) -> Result<()> {
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(ComposeError::new(
                        "",
                        line,
                        "a compose file is one YAML document; this is a second one (after `---`)",
                    ));
                }
                self.anchors.clear();
            }
            Event::Scalar(text, style, anchor, tag) => {
                let kind = match (&tag, style) {
                    (Some(tag), _) => tagged_kind(tag, &text, line)?,
                    (None, ScalarStyle::Plain) => resolve_plain(&text),
                    (None, _) => Kind::Str,
                };
                let node = Node {
                    line,
                    value: Value::Scalar(text.into_owned(), kind),
                    interpolated: false,
                };
                self.complete(node, anchor)?;
            }
            Event::SequenceStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), line)?;
                self.push(Frame::Seq {
                    line,
                    anchor,
                    items: Vec::new(),
                })?;
            }
            Event::MappingStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), line)?;
                self.push(Frame::Map {
                    line,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                })?;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq {
                        line,
                        anchor,
                        items,
                    }) => (
                        Node {
                            line,
                            value: Value::Seq(items),
                            interpolated: false,
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        line,
                        anchor,
                        entries,
                        ..
                    }) => (merge(line, entries)?, anchor),
                    None => return Ok(()),
                };
                self.complete(node, anchor)?;
            }
            Event::Alias(id) => {
                let Ok(index) = self.anchors.binary_search_by_key(&id, |(known, _)| *known) else {
                    return Err(ComposeError::new("", line, "an alias names no anchor"));
                };
                let node = &self.anchors[index].1;
                self.alias_nodes += node.count();
                self.alias_bytes += node.bytes();
                if self.alias_nodes > MAX_ALIAS_NODES || self.alias_bytes > MAX_ALIAS_BYTES {
                    return Err(ComposeError::new(
                        "",
                        line,
                        format!(
                            "aliases expand to more than {MAX_ALIAS_NODES} nodes or \
                             {} KiB: refused (an alias bomb?)",
                            MAX_ALIAS_BYTES / 1024
                        ),
                    ));
                }
                let node = node.clone();
                self.complete(node, 0)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
        Ok(())
    }

    fn push(&mut self, frame: Frame) -> Result<()> {
        if self.stack.len() >= MAX_DEPTH {
            let line = match &frame {
                Frame::Seq { line, .. } | Frame::Map { line, .. } => *line,
            };
            return Err(ComposeError::new(
                "",
                line,
                format!("nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.stack.push(frame);
        Ok(())
    }

    /// A finished node goes into its parent (as a key, a value or an item) or is the root.
    fn complete(&mut self, node: Node, anchor: usize) -> Result<()> {
        if anchor != 0 {
            let node = node.clone();
            match self
                .anchors
                .binary_search_by_key(&anchor, |(known, _)| *known)
            {
                Ok(index) => self.anchors[index].1 = node,
                Err(index) => self.anchors.insert(index, (anchor, node)),
            }
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                Some(key) => {
                    if let Some((first, _)) = entries.iter().find(|(k, _)| k.name == key.name) {
                        return Err(ComposeError::new(
                            "",
                            key.line,
                            format!(
                                "the key `{}` is already defined on line {}",
                                key.name, first.line
                            ),
                        ));
                    }
                    entries.push((key, node));
                }
                None => match node.value {
                    Value::Scalar(name, _) => {
                        *key = Some(Key {
                            name,
                            line: node.line,
                        })
                    }
                    _ => {
                        return Err(ComposeError::new(
                            "",
                            node.line,
                            "a mapping key must be a scalar",
                        ));
                    }
                },
            },
        }
        Ok(())
    }
}

/// Applies `<<` merge keys: the explicit keys win, then the merged mappings in their order.
fn merge(line: usize, entries: Vec<(Key, Node)>) -> Result<Node> {
    let mut explicit = Vec::with_capacity(entries.len());
    let mut sources = Vec::new();
    for (key, value) in entries {
        if key.name == "<<" {
            sources.push((key.line, value));
        } else {
            explicit.push((key, value));
        }
    }
    for (key_line, source) in sources {
        let maps = match source.value {
            Value::Map(entries) => vec![entries],
            Value::Seq(items) => items
                .into_iter()
                .map(|item| match item.value {
                    Value::Map(entries) => Ok(entries),
                    _ => Err(()),
                })
                .collect::<std::result::Result<_, _>>()
                .map_err(|()| merge_error(key_line))?,
            _ => return Err(merge_error(key_line)),
        };
        for (key, value) in maps.into_iter().flatten() {
            if !explicit.iter().any(|(k, _)| k.name == key.name) {
                explicit.push((key, value));
            }
        }
    }
    Ok(Node {
        line,
        value: Value::Map(explicit),
        interpolated: false,
    })
}

fn merge_error(line: usize) -> ComposeError {
    ComposeError::new(
        "",
        line,
        "`<<` merges a mapping or a list of mappings (usually aliases)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(node: &Node) -> (&str, Kind) {
        match &node.value {
            Value::Scalar(text, kind) => (text, *kind),
            other => panic!("not a scalar: {other:?}"),
        }
    }

    fn get<'a>(node: &'a Node, key: &str) -> &'a Node {
        match &node.value {
            Value::Map(entries) => &entries.iter().find(|(k, _)| k.name == key).unwrap().1,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn core_schema_keeps_yaml_1_1_booleans_and_sexagesimals_as_strings() {
        let root = parse(
            "a: 22:22\nb: yes\nc: on\nd: true\ne: 0o17\nf: 1.5e3\ng: ~\nh: '1'\ni: 012\nj: 1_000\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(scalar(get(&root, "a")), ("22:22", Kind::Str));
        assert_eq!(scalar(get(&root, "b")), ("yes", Kind::Str));
        assert_eq!(scalar(get(&root, "c")), ("on", Kind::Str));
        assert_eq!(scalar(get(&root, "d")), ("true", Kind::Bool));
        assert_eq!(scalar(get(&root, "e")), ("0o17", Kind::Int));
        assert_eq!(scalar(get(&root, "f")), ("1.5e3", Kind::Float));
        assert_eq!(scalar(get(&root, "g")).1, Kind::Null);
        assert_eq!(scalar(get(&root, "h")), ("1", Kind::Str));
        assert_eq!(scalar(get(&root, "i")), ("012", Kind::Int));
        assert_eq!(scalar(get(&root, "j")), ("1_000", Kind::Str));
    }

    #[test]
    fn plain_scalar_resolution() {
        for (text, kind) in [
            ("", Kind::Null),
            ("NULL", Kind::Null),
            ("nULL", Kind::Str),
            ("False", Kind::Bool),
            ("-12", Kind::Int),
            ("0x1F", Kind::Int),
            ("0x", Kind::Str),
            (".5", Kind::Float),
            ("5.", Kind::Float),
            ("-.inf", Kind::Float),
            (".", Kind::Str),
            ("1e", Kind::Str),
            ("1.2.3", Kind::Str),
            ("8080:80", Kind::Str),
        ] {
            assert_eq!(resolve_plain(text), kind, "{text:?}");
        }
    }

    #[test]
    fn lines_are_one_based_and_follow_the_node() {
        let root = parse("# comment\nservices:\n  db:\n    image: x\n")
            .unwrap()
            .unwrap();
        let db = get(get(&root, "services"), "db");
        assert_eq!(get(db, "image").line, 4);
        let Value::Map(entries) = &db.value else {
            panic!()
        };
        assert_eq!(entries[0].0.line, 4);
    }

    #[test]
    fn merge_keys_explicit_keys_win_and_earlier_sources_win() {
        let yaml =
            "a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc:\n  <<: [*a, *b]\n  x: 0\nd:\n  <<: *b\n";
        let root = parse(yaml).unwrap().unwrap();
        let c = get(&root, "c");
        assert_eq!(scalar(get(c, "x")).0, "0");
        assert_eq!(scalar(get(c, "y")).0, "1");
        assert_eq!(scalar(get(c, "z")).0, "2");
        assert_eq!(scalar(get(get(&root, "d"), "y")).0, "2");
        let Value::Map(entries) = &c.value else {
            panic!()
        };
        assert!(entries.iter().all(|(k, _)| k.name != "<<"));
    }

    #[test]
    fn merge_of_a_scalar_is_refused_with_its_line() {
        let error = parse("a:\n  <<: 3\n").unwrap_err();
        assert_eq!(error.line, 2);
        assert!(error.message.contains("`<<`"), "{error}");
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut yaml = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut previous = 'a';
        for name in 'b'..='i' {
            yaml.push_str(&format!(
                "{name}: &{name} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}]\n"
            ));
            previous = name;
        }
        let error = parse(&yaml).unwrap_err();
        assert!(error.message.contains("alias bomb"), "{error}");
        assert!(error.line >= 3, "{error}");
    }

    #[test]
    fn alias_of_a_huge_scalar_is_refused_by_size() {
        let big = "y".repeat(300_000);
        let yaml = format!("a: &a {big}\nb: [*a, *a, *a, *a]\n");
        assert!(parse(&yaml).unwrap_err().message.contains("alias bomb"));
    }

    #[test]
    fn small_aliases_are_fine() {
        let root = parse("x-env: &env {A: 1}\ns:\n  e: *env\n")
            .unwrap()
            .unwrap();
        assert_eq!(scalar(get(get(get(&root, "s"), "e"), "A")).0, "1");
    }

    #[test]
    fn duplicate_keys_and_deep_nesting_and_second_documents_are_refused() {
        let error = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!((error.line, error.message.contains("line 1")), (3, true));
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
        assert_eq!(parse("a: 1\n---\nb: 2\n").unwrap_err().line, 2);
        assert!(
            parse("a: [1, 2\n")
                .unwrap_err()
                .message
                .starts_with("not valid YAML")
        );
    }

    #[test]
    fn tags_only_from_the_core_schema() {
        let root = parse("a: !!str 12\n").unwrap().unwrap();
        assert_eq!(scalar(get(&root, "a")), ("12", Kind::Str));
        assert!(
            parse("a: !reset []\n")
                .unwrap_err()
                .message
                .contains("!reset")
        );
    }
}
