//! The fast parse's own TOML tree: `toml_parser`'s lexer and event parser drive a builder
//! that keeps only what the table format can use, in one flat vector of nodes, and a serde
//! deserializer reads the model from it.
//!
//! Why not `toml`'s own tree (`toml::de::DeTable::parse`): it lexes the whole text into a
//! token vector, parses that into an event vector of the same length and only then builds
//! a tree of `IndexMap`s (one per inline table): at 1,000 partitions three structures of
//! several MB each, walked one after the other, and tens of thousands of allocations whose
//! heap the allocator hands back to the system after every check and takes again (page
//! faults) at the next; their cost grew faster than the table (docs/benchmarks.md,
//! "Validator: the fast parse's own tree"). Here the text is lexed a piece at a time into
//! one small token buffer, events go straight into the builder, and the nodes live in one
//! vector that refers to the text by byte ranges.
//!
//! The builder refuses (returns `None` for) everything the table format never accepts
//! after parsing — floats, date-times, negative integers, integers beyond 64 bits, dotted
//! keys — and every TOML construct it does not model (a header whose parent no header or
//! array of tables defined, a table defined twice, duplicate keys, keys with escapes, a
//! text of 4 GiB or more, a parse error): the caller then asks the reference parse, which
//! says what is wrong. It never accepts what TOML refuses.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{self, IntoDeserializer, Visitor};
use toml_parser::decoder::{Encoding, ScalarKind};
use toml_parser::parser::{EventReceiver, RecursionGuard, ValidateWhitespace};
use toml_parser::{ErrorSink, ParseError, Source, Span};

/// How deep arrays and inline tables may nest (as in `toml`).
const DEPTH_LIMIT: u32 = 80;

/// The text is lexed and parsed in pieces of about this many bytes, each cut before a line
/// that starts with `[` (a table header), so the token buffer stays small.
pub const PIECE_BYTES: usize = 32 << 10;

/// No node: the end of a list of children.
const NONE: u32 = u32::MAX;

/// A parsed document: node 0 is the root table.
#[derive(Debug, Default)]
pub struct Tree {
    nodes: Vec<Node>,
    /// Strings with escapes, decoded.
    owned: Vec<String>,
}

/// One value, with the key it has in its table (array elements have none).
#[derive(Clone, Copy, Debug)]
struct Node {
    /// The decoded key's bytes in the text (keys with escapes are refused).
    key: (u32, u32),
    /// The key as written (quotes included).
    key_span: (u32, u32),
    /// The value as written; for a table with a header, from the header to the end of the
    /// last value written under it, as toml_edit spans it.
    span: (u32, u32),
    kind: NodeKind,
    /// The next child of the same table or array.
    next: u32,
}

#[derive(Clone, Copy, Debug)]
enum NodeKind {
    /// A string without escapes: its bytes in the text.
    String(u32, u32),
    /// A string with escapes: its position in [`Tree::owned`].
    OwnedString(u32),
    /// Only non-negative integers that fit in an `i64` (the format has no other).
    Integer(i64),
    Bool(bool),
    /// `of_tables` when the elements are `[[header]]` tables.
    Array {
        children: Children,
        of_tables: bool,
    },
    /// `inline` when written `{ … }` rather than under a `[header]`.
    Table {
        children: Children,
        inline: bool,
    },
}

/// A list of children, in the order they were written.
#[derive(Clone, Copy, Debug)]
struct Children {
    first: u32,
    last: u32,
    len: u32,
}

impl Children {
    const EMPTY: Children = Children {
        first: NONE,
        last: NONE,
        len: 0,
    };
}

/// A value of a parsed tree, for reading it.
#[derive(Clone, Copy)]
pub struct Value<'t, 'i> {
    tree: &'t Tree,
    text: &'i str,
    index: u32,
}

/// What a [`Value`] is.
pub enum Kind<'t, 'i> {
    String(&'t str),
    Integer(i64),
    Bool(bool),
    /// An array (of tables when written as `[[header]]` tables).
    Array(Entries<'t, 'i>),
    /// A table; `inline` when written `{ … }`.
    Table {
        entries: Entries<'t, 'i>,
        inline: bool,
    },
}

impl<'t, 'i: 't> Value<'t, 'i> {
    fn node(&self) -> &'t Node {
        &self.tree.nodes[self.index as usize]
    }

    /// The value's bytes in the text (a header table's: see [`Node::span`]).
    pub fn span(&self) -> Range<usize> {
        let (start, end) = self.node().span;
        start as usize..end as usize
    }

    /// The key this value has in its table.
    pub fn key(&self) -> &'i str {
        let (start, end) = self.node().key;
        &self.text[start as usize..end as usize]
    }

    pub fn kind(&self) -> Kind<'t, 'i> {
        match self.node().kind {
            NodeKind::String(start, end) => Kind::String(&self.text[start as usize..end as usize]),
            NodeKind::OwnedString(index) => Kind::String(&self.tree.owned[index as usize]),
            NodeKind::Integer(value) => Kind::Integer(value),
            NodeKind::Bool(value) => Kind::Bool(value),
            NodeKind::Array { children, .. } => Kind::Array(self.entries(children)),
            NodeKind::Table { children, inline } => Kind::Table {
                entries: self.entries(children),
                inline,
            },
        }
    }

    fn entries(&self, children: Children) -> Entries<'t, 'i> {
        Entries {
            tree: self.tree,
            text: self.text,
            next: children.first,
            left: children.len,
        }
    }

    /// The entry of a table with this key.
    pub fn get(&self, key: &str) -> Option<Value<'t, 'i>> {
        match self.kind() {
            Kind::Table { mut entries, .. } => entries.find(|entry| entry.key() == key),
            _ => None,
        }
    }
}

/// The entries of a table or the elements of an array, in the order they were written.
#[derive(Clone, Copy)]
pub struct Entries<'t, 'i> {
    tree: &'t Tree,
    text: &'i str,
    next: u32,
    left: u32,
}

impl<'t, 'i> Iterator for Entries<'t, 'i> {
    type Item = Value<'t, 'i>;

    fn next(&mut self) -> Option<Value<'t, 'i>> {
        if self.next == NONE {
            return None;
        }
        let value = Value {
            tree: self.tree,
            text: self.text,
            index: self.next,
        };
        self.next = self.tree.nodes[self.next as usize].next;
        self.left -= 1;
        Some(value)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

impl ExactSizeIterator for Entries<'_, '_> {}

impl Tree {
    /// The root table of this tree, parsed from `text`.
    pub fn root<'t, 'i>(&'t self, text: &'i str) -> Value<'t, 'i> {
        Value {
            tree: self,
            text,
            index: 0,
        }
    }

    /// Parses `text` into this (empty) tree, lexing it in pieces of about `piece_bytes`
    /// bytes (tests cut at every header with 1). `None` if it is not TOML or uses anything
    /// the builder refuses (see the module comment).
    pub fn parse(&mut self, text: &str, piece_bytes: usize) -> Option<()> {
        u32::try_from(text.len()).ok()?;
        self.nodes.clear();
        self.owned.clear();
        self.nodes.push(Node {
            key: (0, 0),
            key_span: (0, 0),
            span: (0, 0),
            kind: NodeKind::Table {
                children: Children::EMPTY,
                inline: false,
            },
            next: NONE,
        });
        let mut builder = Builder {
            tree: self,
            text,
            offset: 0,
            failed: false,
            table: 0,
            header: None,
            frames: Vec::new(),
            pending_key: None,
            big_tables: Vec::new(),
        };
        let mut tokens = Vec::new();
        let mut start = 0;
        loop {
            let end = piece_end(text, start, piece_bytes);
            // A byte-order mark is only allowed at the very start, where the lexer skips it.
            let source = Source::new(&text[start..end]);
            tokens.clear();
            tokens.extend(source.lex());
            builder.offset = start as u32;
            let mut failed = false;
            let mut errors = |_: ParseError| failed = true;
            {
                let mut guarded = RecursionGuard::new(&mut builder, DEPTH_LIMIT);
                let mut receiver = ValidateWhitespace::new(&mut guarded, source);
                toml_parser::parser::parse_document(&tokens, &mut receiver, &mut errors);
            }
            // A piece must end outside every value: a cut inside a multi-line string or
            // array leaves it open, and the piece's parse reports that.
            if failed
                || builder.failed
                || builder.pending_key.is_some()
                || !builder.frames.is_empty()
                || builder.header.is_some()
            {
                return None;
            }
            if end >= text.len() {
                break;
            }
            start = end;
        }
        let big_tables = std::mem::take(&mut builder.big_tables);
        big_tables
            .into_iter()
            .all(|table| !self.has_duplicate_keys(table, text))
            .then_some(())
    }

    fn children(&self, index: u32) -> Option<Children> {
        match self.nodes[index as usize].kind {
            NodeKind::Table { children, .. } | NodeKind::Array { children, .. } => Some(children),
            _ => None,
        }
    }

    /// Whether two entries of the table at `index` have the same key (for tables too large
    /// to check at each insertion).
    fn has_duplicate_keys(&self, index: u32, text: &str) -> bool {
        let table = Value {
            tree: self,
            text,
            index,
        };
        let children = self.children(index).unwrap_or(Children::EMPTY);
        let mut keys: Vec<&str> = table.entries(children).map(|entry| entry.key()).collect();
        keys.sort_unstable();
        keys.windows(2).any(|pair| pair[0] == pair[1])
    }
}

/// Where the piece that starts at `start` ends: after the first newline that is followed
/// by `[`, at least `piece_bytes` bytes after `start`; or at the end of the text.
fn piece_end(text: &str, start: usize, piece_bytes: usize) -> usize {
    // From the byte before, so that a header right at `start + piece_bytes` is found.
    let mut from = start.saturating_add(piece_bytes.max(1)) - 1;
    if from >= text.len() {
        return text.len();
    }
    while !text.is_char_boundary(from) {
        from += 1;
    }
    text[from..]
        .find("\n[")
        .map_or(text.len(), |newline| from + newline + 1)
}

/// Tables with more entries than this are checked for duplicate keys once, at the end.
const CHECK_AT_INSERTION: u32 = 16;

/// An open array or inline table (its node is already in the tree).
struct Frame {
    node: u32,
    /// The key of the entry being read, for an inline table.
    key: Option<((u32, u32), (u32, u32))>,
    inline_table: bool,
}

/// An open `[header]` or `[[header]]`.
struct Header {
    start: u32,
    array: bool,
    keys: Vec<((u32, u32), (u32, u32))>,
}

/// The event receiver that builds the tree.
struct Builder<'a> {
    tree: &'a mut Tree,
    text: &'a str,
    /// Where the piece being parsed starts in `text` (event spans are relative to it).
    offset: u32,
    failed: bool,
    /// The table that `key = value` lines go into (a header's table, or the root).
    table: u32,
    header: Option<Header>,
    frames: Vec<Frame>,
    /// The key of the `key = value` being read at the header level: decoded, as written.
    pending_key: Option<((u32, u32), (u32, u32))>,
    /// Tables to check for duplicate keys at the end.
    big_tables: Vec<u32>,
}

impl Builder<'_> {
    fn span(&self, span: Span) -> (u32, u32) {
        (
            span.start() as u32 + self.offset,
            span.end() as u32 + self.offset,
        )
    }

    fn raw(&self, span: (u32, u32), encoding: Option<Encoding>) -> toml_parser::Raw<'_> {
        let (start, end) = (span.0 as usize, span.1 as usize);
        toml_parser::Raw::new_unchecked(
            &self.text[start..end],
            encoding,
            Span::new_unchecked(start, end),
        )
    }

    /// Where `part` lies in the text, if it is a slice of the text (an empty string is the
    /// empty range at 0, wherever the decoder took it from).
    fn range_in_text(&self, part: &str) -> Option<(u32, u32)> {
        if part.is_empty() {
            return Some((0, 0));
        }
        let start = (part.as_ptr() as usize).checked_sub(self.text.as_ptr() as usize)?;
        let end = start.checked_add(part.len())?;
        (end <= self.text.len()).then_some((start as u32, end as u32))
    }

    fn key_text(&self, key: (u32, u32)) -> &str {
        &self.text[key.0 as usize..key.1 as usize]
    }

    /// Appends a new node to the table or array `parent`; `None` for a duplicate key.
    fn append(&mut self, parent: u32, node: Node) -> Option<u32> {
        let index = self.tree.nodes.len() as u32;
        let children = self.tree.children(parent)?;
        if matches!(
            self.tree.nodes[parent as usize].kind,
            NodeKind::Table { .. }
        ) {
            if children.len < CHECK_AT_INSERTION {
                let key = self.key_text(node.key);
                let mut next = children.first;
                while next != NONE {
                    let sibling = self.tree.nodes[next as usize];
                    if self.key_text(sibling.key) == key {
                        return None;
                    }
                    next = sibling.next;
                }
            } else if children.len == CHECK_AT_INSERTION {
                self.big_tables.push(parent);
            }
        }
        self.tree.nodes.push(node);
        if children.last != NONE {
            self.tree.nodes[children.last as usize].next = index;
        }
        let updated = Children {
            first: if children.first == NONE {
                index
            } else {
                children.first
            },
            last: index,
            len: children.len + 1,
        };
        match &mut self.tree.nodes[parent as usize].kind {
            NodeKind::Table { children, .. } | NodeKind::Array { children, .. } => {
                *children = updated;
            }
            _ => return None,
        }
        Some(index)
    }

    /// Puts a new value where the parse is: into the open array or inline table, or under
    /// the pending key into the header's table. Returns its node.
    fn attach(&mut self, span: (u32, u32), kind: NodeKind) -> Option<u32> {
        let mut node = Node {
            key: (0, 0),
            key_span: (0, 0),
            span,
            kind,
            next: NONE,
        };
        let parent = match self.frames.last_mut() {
            Some(frame) if !frame.inline_table => frame.node,
            Some(frame) => {
                (node.key, node.key_span) = frame.key.take()?;
                frame.node
            }
            None => {
                (node.key, node.key_span) = self.pending_key.take()?;
                self.table
            }
        };
        self.append(parent, node)
    }

    /// A value at the header level is complete: toml_edit spans a header's table to the end
    /// of the last value written under the header (the diagnostics point there).
    fn extend_header_span(&mut self, end: u32) {
        if self.table != 0 {
            let span = &mut self.tree.nodes[self.table as usize].span;
            span.1 = span.1.max(end);
        }
    }

    fn scalar_kind(&mut self, span: (u32, u32), encoding: Option<Encoding>) -> Option<NodeKind> {
        let raw = self.raw(span, encoding);
        let mut decoded = Cow::Borrowed("");
        let mut failed = false;
        let kind = raw.decode_scalar(&mut decoded, &mut |_: ParseError| failed = true);
        if failed {
            return None;
        }
        match kind {
            ScalarKind::String => match decoded {
                Cow::Borrowed(text) if self.range_in_text(text).is_some() => {
                    let (start, end) = self.range_in_text(text)?;
                    Some(NodeKind::String(start, end))
                }
                decoded => {
                    self.tree.owned.push(decoded.into_owned());
                    Some(NodeKind::OwnedString(self.tree.owned.len() as u32 - 1))
                }
            },
            ScalarKind::Boolean(value) => Some(NodeKind::Bool(value)),
            ScalarKind::Integer(radix) => i64::from_str_radix(&decoded, radix.value())
                .ok()
                .filter(|&value| value >= 0)
                .map(NodeKind::Integer),
            // No key of the format takes a float or a date-time.
            ScalarKind::Float | ScalarKind::DateTime => None,
        }
    }

    /// The child of table `table` with this key.
    fn child(&self, table: u32, key: &str) -> Option<u32> {
        let children = match self.tree.nodes[table as usize].kind {
            NodeKind::Table { children, .. } => children,
            _ => return None,
        };
        let mut next = children.first;
        while next != NONE {
            let node = &self.tree.nodes[next as usize];
            if self.key_text(node.key) == key {
                return Some(next);
            }
            next = node.next;
        }
        None
    }

    /// The table a header may put keys or tables into through `node`: a header-made table,
    /// or the last element of an array of tables. Inline tables cannot be extended.
    fn header_parent(&self, node: u32) -> Option<u32> {
        match self.tree.nodes[node as usize].kind {
            NodeKind::Table { inline: false, .. } => Some(node),
            NodeKind::Array {
                children,
                of_tables: true,
            } if children.last != NONE => Some(children.last),
            _ => None,
        }
    }

    /// Closes a `[header]` or `[[header]]`: finds or makes its table and makes it the one
    /// `key = value` lines go into.
    fn close_header(&mut self, close: Span) -> Option<()> {
        let header = self.header.take()?;
        let span = (header.start, self.span(close).1);
        let (&(last_key, last_span), parents) = header.keys.split_last()?;
        let mut table = 0;
        for &(key, _) in parents {
            let node = self.child(table, self.key_text(key))?;
            table = self.header_parent(node)?;
        }
        let new_table = |key, key_span| Node {
            key,
            key_span,
            span,
            kind: NodeKind::Table {
                children: Children::EMPTY,
                inline: false,
            },
            next: NONE,
        };
        self.table = match self.child(table, self.key_text(last_key)) {
            Some(array) if header.array => match self.tree.nodes[array as usize].kind {
                NodeKind::Array {
                    of_tables: true, ..
                } => self.append(array, new_table((0, 0), (0, 0)))?,
                _ => return None,
            },
            // A table defined twice, or a header for a key that holds a value.
            Some(_) => return None,
            None if header.array => {
                let array = self.append(
                    table,
                    Node {
                        key: last_key,
                        key_span: last_span,
                        span,
                        kind: NodeKind::Array {
                            children: Children::EMPTY,
                            of_tables: true,
                        },
                        next: NONE,
                    },
                )?;
                self.append(array, new_table((0, 0), (0, 0)))?
            }
            None => self.append(table, new_table(last_key, last_span))?,
        };
        Some(())
    }

    fn open_header(&mut self, span: Span, array: bool) {
        if self.pending_key.is_some() || !self.frames.is_empty() || self.header.is_some() {
            self.failed = true;
        }
        self.header = Some(Header {
            start: self.span(span).0,
            array,
            keys: Vec::new(),
        });
    }

    fn open(&mut self, span: Span, kind: NodeKind) {
        let start = self.span(span).0;
        match self.attach((start, start), kind) {
            Some(node) => self.frames.push(Frame {
                node,
                key: None,
                inline_table: matches!(kind, NodeKind::Table { .. }),
            }),
            None => self.failed = true,
        }
    }

    fn close(&mut self, span: Span, inline_table: bool) {
        let end = self.span(span).1;
        match self.frames.pop() {
            Some(frame) if frame.inline_table == inline_table && frame.key.is_none() => {
                self.tree.nodes[frame.node as usize].span.1 = end;
                if self.frames.is_empty() {
                    self.extend_header_span(end);
                }
            }
            _ => self.failed = true,
        }
    }
}

impl EventReceiver for Builder<'_> {
    fn std_table_open(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        self.open_header(span, false);
    }
    fn std_table_close(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        if self.close_header(span).is_none() {
            self.failed = true;
        }
    }
    fn array_table_open(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        self.open_header(span, true);
    }
    fn array_table_close(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        if self.close_header(span).is_none() {
            self.failed = true;
        }
    }
    fn inline_table_open(&mut self, span: Span, _error: &mut dyn ErrorSink) -> bool {
        let kind = NodeKind::Table {
            children: Children::EMPTY,
            inline: true,
        };
        self.open(span, kind);
        true
    }
    fn inline_table_close(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        self.close(span, true);
    }
    fn array_open(&mut self, span: Span, _error: &mut dyn ErrorSink) -> bool {
        let kind = NodeKind::Array {
            children: Children::EMPTY,
            of_tables: false,
        };
        self.open(span, kind);
        true
    }
    fn array_close(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        self.close(span, false);
    }
    fn simple_key(&mut self, span: Span, encoding: Option<Encoding>, _error: &mut dyn ErrorSink) {
        let key_span = self.span(span);
        let raw = self.raw(key_span, encoding);
        let mut decoded = Cow::Borrowed("");
        let mut failed = false;
        raw.decode_key(&mut decoded, &mut |_: ParseError| failed = true);
        // Keys with escapes are not worth a second string store: the reference parse
        // takes them.
        let key = match decoded {
            Cow::Borrowed(key) if !failed => self.range_in_text(key),
            _ => None,
        };
        let Some(key) = key else {
            self.failed = true;
            return;
        };
        if let Some(header) = &mut self.header {
            header.keys.push((key, key_span));
            return;
        }
        let slot = match self.frames.last_mut() {
            Some(frame) if frame.inline_table => &mut frame.key,
            Some(_) => {
                self.failed = true;
                return;
            }
            None => &mut self.pending_key,
        };
        // A second key before the value: a dotted key, which the format never uses.
        if slot.is_some() {
            self.failed = true;
        }
        *slot = Some((key, key_span));
    }
    fn key_sep(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        // Dotted keys outside headers make tables the format does not accept that way.
        if self.header.is_none() {
            self.failed = true;
        }
    }
    fn scalar(&mut self, span: Span, encoding: Option<Encoding>, _error: &mut dyn ErrorSink) {
        let span = self.span(span);
        let attached = self
            .scalar_kind(span, encoding)
            .and_then(|kind| self.attach(span, kind));
        if attached.is_none() {
            self.failed = true;
        } else if self.frames.is_empty() {
            self.extend_header_span(span.1);
        }
    }
    fn error(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        self.failed = true;
    }
}

/// Why the model could not be read from the tree (the caller only needs to know that it
/// could not: the reference parse says why).
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Error(message.to_string())
    }
}

/// Deserializes `T` from the root table of `tree`, parsed from `text`.
pub fn deserialize<'i, T: de::Deserialize<'i>>(tree: &Tree, text: &'i str) -> Result<T, Error> {
    T::deserialize(ValueDeserializer(tree.root(text)))
}

/// A value as a serde deserializer: it visits what `toml`'s deserializer visits for the
/// same value (a string with escapes as a `&str` where `toml` gives a `String`: the same
/// to every type of the model), and supports `toml::Spanned` (the model's `Located`).
struct ValueDeserializer<'t, 'i>(Value<'t, 'i>);

impl<'de> de::Deserializer<'de> for ValueDeserializer<'_, 'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let value = self.0;
        match value.node().kind {
            NodeKind::String(start, end) => {
                visitor.visit_borrowed_str(&value.text[start as usize..end as usize])
            }
            NodeKind::OwnedString(index) => visitor.visit_str(&value.tree.owned[index as usize]),
            NodeKind::Integer(integer) => visitor.visit_i64(integer),
            NodeKind::Bool(boolean) => visitor.visit_bool(boolean),
            NodeKind::Array { children, .. } => {
                let mut sequence =
                    de::value::SeqDeserializer::new(value.entries(children).map(ValueDeserializer));
                let result = visitor.visit_seq(&mut sequence)?;
                sequence.end()?;
                Ok(result)
            }
            NodeKind::Table { children, .. } => visitor.visit_map(TableAccess {
                entries: value.entries(children),
                value: None,
            }),
        }
    }

    // `None` is a missing key, so a present one is always `Some`.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        if serde_spanned::de::is_spanned(name) {
            let span = self.0.span();
            return visitor.visit_map(serde_spanned::de::SpannedDeserializer::new(self, span));
        }
        self.deserialize_any(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0.node().kind {
            NodeKind::String(start, end) => {
                visitor.visit_enum((&self.0.text[start as usize..end as usize]).into_deserializer())
            }
            NodeKind::OwnedString(index) => visitor.visit_enum(
                self.0.tree.owned[index as usize]
                    .as_str()
                    .into_deserializer(),
            ),
            _ => Err(de::Error::custom("wanted a string")),
        }
    }

    serde::forward_to_deserialize_any! {
        bool u8 u16 u32 u64 i8 i16 i32 i64 i128 u128 f32 f64 char str string seq
        bytes byte_buf map unit ignored_any unit_struct tuple_struct tuple identifier
    }
}

impl<'t, 'de> IntoDeserializer<'de, Error> for ValueDeserializer<'t, 'de> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

/// A key as a serde deserializer (with its span, for `Located` keys).
struct KeyDeserializer<'i> {
    key: &'i str,
    span: Range<usize>,
}

impl<'de> de::Deserializer<'de> for KeyDeserializer<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str(self.key)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        if serde_spanned::de::is_spanned(name) {
            let span = self.span.clone();
            return visitor.visit_map(serde_spanned::de::SpannedDeserializer::new(self, span));
        }
        self.deserialize_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool u8 u16 u32 u64 i8 i16 i32 i64 i128 u128 f32 f64 char str string seq
        bytes byte_buf map unit ignored_any unit_struct tuple_struct tuple identifier
        option newtype_struct enum
    }
}

impl<'de> IntoDeserializer<'de, Error> for KeyDeserializer<'de> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

/// A table's entries as a serde map.
struct TableAccess<'t, 'i> {
    entries: Entries<'t, 'i>,
    value: Option<Value<'t, 'i>>,
}

impl<'de> de::MapAccess<'de> for TableAccess<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(entry);
        let (start, end) = entry.node().key_span;
        seed.deserialize(KeyDeserializer {
            key: entry.key(),
            span: start as usize..end as usize,
        })
        .map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(ValueDeserializer(value)),
            None => Err(de::Error::custom("a value without a key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree of `text` as `path = value span` lines (array elements by position), or
    /// `None` where the builder refuses it.
    fn flat(text: &str, piece_bytes: usize) -> Option<Vec<String>> {
        fn walk(value: Value<'_, '_>, path: &str, lines: &mut Vec<String>) {
            let span = value.span();
            match value.kind() {
                Kind::String(text) => lines.push(format!("{path} = {text:?} {span:?}")),
                Kind::Integer(integer) => lines.push(format!("{path} = {integer} {span:?}")),
                Kind::Bool(boolean) => lines.push(format!("{path} = {boolean} {span:?}")),
                Kind::Array(elements) => {
                    lines.push(format!("{path} = array {span:?}"));
                    for (number, element) in elements.enumerate() {
                        walk(element, &format!("{path}[{number}]"), lines);
                    }
                }
                Kind::Table { entries, inline } => {
                    lines.push(format!("{path} = table inline={inline} {span:?}"));
                    for entry in entries {
                        walk(entry, &format!("{path}.{}", entry.key()), lines);
                    }
                }
            }
        }
        let mut tree = Tree::default();
        tree.parse(text, piece_bytes)?;
        let mut lines = Vec::new();
        walk(tree.root(text), "", &mut lines);
        Some(lines)
    }

    #[test]
    fn reads_strings_keys_and_headers() {
        let text = "a = \"\"\n\"\" = 'x'\nb = \"\\u0041\"\n[t]\nc = [1, {d = true}]\n[[u]]\n[[u]]\ne = 0x10\n";
        let lines = flat(text, 1 << 20).expect("accepted");
        assert_eq!(
            lines,
            [
                " = table inline=false 0..0",
                ".a = \"\" 4..6",
                ". = \"x\" 12..15",
                ".b = \"A\" 20..28",
                ".t = table inline=false 29..52",
                ".t.c = array 37..52",
                ".t.c[0] = 1 38..39",
                ".t.c[1] = table inline=true 41..51",
                ".t.c[1].d = true 46..50",
                ".u = array 53..58",
                ".u[0] = table inline=false 53..58",
                ".u[1] = table inline=false 59..73",
                ".u[1].e = 16 69..73",
            ]
        );
        // Cut before every header: the same tree.
        assert_eq!(flat(text, 1), Some(lines));
    }

    #[test]
    fn refuses_what_it_does_not_model() {
        for text in [
            "a = 1.5",
            "a = 1979-05-27",
            "a = -1",
            "a = 99999999999999999999",
            "a.b = 1",
            "a = { b.c = 1 }",
            "[a.b]\nc = 1",
            "[a]\n[a]",
            "a = 1\na = 2",
            "a = {}\n[a.b]",
            "a = [{}]\n[[a]]",
            "\"\\u0061\" = 1",
            "a = ",
            "[a",
        ] {
            assert_eq!(flat(text, 1 << 20), None, "{text:?}");
        }
        // Large tables are checked for duplicates at the end.
        let many: String = (0..40).map(|key| format!("k{key} = 1\n")).collect();
        assert!(flat(&many, 1 << 20).is_some());
        assert_eq!(flat(&format!("{many}k7 = 2\n"), 1 << 20), None);
    }
}
