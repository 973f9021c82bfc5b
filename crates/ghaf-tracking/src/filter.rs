//! Parser for MLflow's search filter and `order_by` grammar.
//!
//! A filter is clauses joined by `AND` (case-insensitive); `OR` and parentheses are rejected,
//! as MLflow 3.17 rejects them. A clause is `identifier comparator value`, where an
//! identifier is `prefix.key` and a key with special characters is quoted in backticks or
//! double quotes. [`parse_clauses`] reads the grammar; [`RunFilter::parse`] and the
//! registry and experiment resolvers then check which identifiers and comparators each
//! search accepts.

use std::fmt;

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparator {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Like,
    ILike,
    In,
    NotIn,
    IsNull,
    IsNotNull,
}

impl Comparator {
    pub fn as_str(self) -> &'static str {
        match self {
            Comparator::Eq => "=",
            Comparator::Ne => "!=",
            Comparator::Gt => ">",
            Comparator::Ge => ">=",
            Comparator::Lt => "<",
            Comparator::Le => "<=",
            Comparator::Like => "LIKE",
            Comparator::ILike => "ILIKE",
            Comparator::In => "IN",
            Comparator::NotIn => "NOT IN",
            Comparator::IsNull => "IS NULL",
            Comparator::IsNotNull => "IS NOT NULL",
        }
    }

    /// Returns the SQL operator of a plain comparison, or `None` for the others.
    pub fn sql_comparison(self) -> Option<&'static str> {
        match self {
            Comparator::Eq => Some("="),
            Comparator::Ne => Some("<>"),
            Comparator::Gt => Some(">"),
            Comparator::Ge => Some(">="),
            Comparator::Lt => Some("<"),
            Comparator::Le => Some("<="),
            _ => None,
        }
    }

    fn is_ordering(self) -> bool {
        self.sql_comparison().is_some()
    }

    fn is_string_match(self) -> bool {
        matches!(
            self,
            Comparator::Eq | Comparator::Ne | Comparator::Like | Comparator::ILike
        )
    }
}

impl fmt::Display for Comparator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value on the right of a comparator.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Number(f64),
    String(String),
    List(Vec<String>),
    /// The right side of `IS NULL` and `IS NOT NULL`.
    Null,
}

/// An identifier as written: the prefix before the first dot (if any) and the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identifier {
    pub prefix: Option<String>,
    pub key: String,
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.prefix {
            Some(prefix) => write!(f, "{prefix}.{}", self.key),
            None => f.write_str(&self.key),
        }
    }
}

/// One parsed clause, before the search decides what the identifier means.
#[derive(Clone, Debug, PartialEq)]
pub struct RawClause {
    pub identifier: Identifier,
    pub comparator: Comparator,
    pub value: Literal,
}

/// Error of an invalid filter or `order_by` entry. The message names the offending text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

fn error<T>(message: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError(message.into()))
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    /// A bare word: an identifier part or a keyword.
    Word(String),
    /// An identifier with a quoted key, such as ``metrics.`a b` ``.
    QuotedIdentifier(String, String),
    Str(String),
    Number(f64),
    Op(&'static str),
    Comma,
    Open,
    Close,
}

fn tokenize(input: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        match c {
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            '\'' | '"' | '`' => {
                let (text, next) = read_quoted(&chars, i)?;
                tokens.push(Token::Str(text));
                i = next;
            }
            '=' => {
                tokens.push(Token::Op("="));
                i += 1;
            }
            '!' | '<' | '>' => {
                let next = chars.get(i + 1).copied();
                let op = match (c, next) {
                    ('!', Some('=')) => "!=",
                    ('<', Some('>')) => "!=",
                    ('<', Some('=')) => "<=",
                    ('>', Some('=')) => ">=",
                    ('<', _) => "<",
                    ('>', _) => ">",
                    _ => return error(format!("invalid operator at position {i}: expected '!='")),
                };
                i += if op.len() == 2 || (c == '<' && next == Some('>')) {
                    2
                } else {
                    1
                };
                tokens.push(Token::Op(op));
            }
            _ if c.is_ascii_digit()
                || (c == '-' || c == '+' || c == '.') && starts_number(&chars, i) =>
            {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || chars[i] == '.'
                        || ((chars[i] == '-' || chars[i] == '+')
                            && matches!(chars[i - 1], 'e' | 'E')))
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let number = text
                    .parse::<f64>()
                    .or_else(|_| error(format!("invalid number {text:?}")))?;
                tokens.push(Token::Number(number));
            }
            _ if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if word.ends_with('.') && i < chars.len() && matches!(chars[i], '`' | '"') {
                    let (key, next) = read_quoted(&chars, i)?;
                    i = next;
                    let prefix = word.trim_end_matches('.').to_owned();
                    tokens.push(Token::QuotedIdentifier(prefix, key));
                } else {
                    tokens.push(Token::Word(word));
                }
            }
            _ => return error(format!("unexpected character {c:?} at position {i}")),
        }
    }
    Ok(tokens)
}

fn starts_number(chars: &[char], i: usize) -> bool {
    let rest = &chars[i + 1..];
    match rest.first() {
        Some(d) if d.is_ascii_digit() => true,
        Some('.') => rest.get(1).is_some_and(char::is_ascii_digit),
        _ => false,
    }
}

/// Reads a string quoted with `chars[start]`; a doubled quote or a backslash escapes it.
fn read_quoted(chars: &[char], start: usize) -> Result<(String, usize), FilterError> {
    let quote = chars[start];
    let mut text = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && i + 1 < chars.len() {
            text.push(chars[i + 1]);
            i += 2;
            continue;
        }
        if c == quote {
            if chars.get(i + 1) == Some(&quote) {
                text.push(quote);
                i += 2;
                continue;
            }
            return Ok((text, i + 1));
        }
        text.push(c);
        i += 1;
    }
    error(format!(
        "unterminated quoted text starting at position {start}"
    ))
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.position).cloned();
        self.position += 1;
        token
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword))
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<(), FilterError> {
        if self.peek_keyword(keyword) {
            self.position += 1;
            Ok(())
        } else {
            error(format!("expected {keyword} after IS/NOT"))
        }
    }

    fn identifier(&mut self) -> Result<Identifier, FilterError> {
        match self.next() {
            Some(Token::QuotedIdentifier(prefix, key)) => Ok(Identifier {
                prefix: Some(prefix),
                key,
            }),
            Some(Token::Word(word)) => {
                if ["and", "or", "not"]
                    .iter()
                    .any(|k| word.eq_ignore_ascii_case(k))
                {
                    return error(format!("expected an identifier, found {word:?}"));
                }
                Ok(match word.split_once('.') {
                    Some((prefix, key)) if !key.is_empty() => Identifier {
                        prefix: Some(prefix.to_owned()),
                        key: key.to_owned(),
                    },
                    _ => Identifier {
                        prefix: None,
                        key: word,
                    },
                })
            }
            // A quoted identifier without prefix, such as `"run name"` in attribute position.
            Some(Token::Str(text)) => Ok(Identifier {
                prefix: None,
                key: text,
            }),
            Some(Token::Open) | Some(Token::Close) => {
                error("invalid clause(s): parentheses are not supported; join clauses with AND")
            }
            Some(other) => error(format!("expected an identifier, found {other:?}")),
            None => error("expected an identifier at the end of the filter"),
        }
    }

    fn comparator(&mut self) -> Result<Comparator, FilterError> {
        match self.next() {
            Some(Token::Op(op)) => Ok(match op {
                "=" => Comparator::Eq,
                "!=" => Comparator::Ne,
                ">" => Comparator::Gt,
                ">=" => Comparator::Ge,
                "<" => Comparator::Lt,
                _ => Comparator::Le,
            }),
            Some(Token::Word(word)) => match word.to_ascii_uppercase().as_str() {
                "LIKE" => Ok(Comparator::Like),
                "ILIKE" => Ok(Comparator::ILike),
                "IN" => Ok(Comparator::In),
                "NOT" => {
                    if self.peek_keyword("IN") {
                        self.position += 1;
                        Ok(Comparator::NotIn)
                    } else {
                        error("expected IN after NOT")
                    }
                }
                "IS" => {
                    if self.peek_keyword("NOT") {
                        self.position += 1;
                        self.expect_keyword("NULL")?;
                        Ok(Comparator::IsNotNull)
                    } else {
                        self.expect_keyword("NULL")?;
                        Ok(Comparator::IsNull)
                    }
                }
                _ => error(format!("invalid comparator {word:?}")),
            },
            Some(other) => error(format!("expected a comparator, found {other:?}")),
            None => error("expected a comparator at the end of the filter"),
        }
    }

    fn value(&mut self, comparator: Comparator) -> Result<Literal, FilterError> {
        if matches!(comparator, Comparator::IsNull | Comparator::IsNotNull) {
            return Ok(Literal::Null);
        }
        match self.next() {
            Some(Token::Number(n)) => Ok(Literal::Number(n)),
            Some(Token::Str(s)) => Ok(Literal::String(s)),
            Some(Token::Open) => {
                let mut items = Vec::new();
                loop {
                    match self.next() {
                        Some(Token::Str(s)) => items.push(s),
                        Some(Token::Number(n)) => items.push(n.to_string()),
                        Some(Token::Close) if items.is_empty() => {
                            return error("an IN list must not be empty");
                        }
                        other => {
                            return error(format!(
                                "expected a quoted value in the list, found {other:?}"
                            ));
                        }
                    }
                    match self.next() {
                        Some(Token::Comma) => continue,
                        Some(Token::Close) => break,
                        other => {
                            return error(format!(
                                "expected ',' or ')' in the list, found {other:?}"
                            ));
                        }
                    }
                }
                Ok(Literal::List(items))
            }
            Some(other) => error(format!(
                "expected a number, a quoted string or a list after {comparator}, found {other:?}"
            )),
            None => error(format!("expected a value after {comparator}")),
        }
    }
}

/// Parses a filter into clauses. An empty or blank filter has no clauses.
pub fn parse_clauses(input: &str) -> Result<Vec<RawClause>, FilterError> {
    let tokens = tokenize(input)?;
    let mut parser = Parser {
        tokens,
        position: 0,
    };
    let mut clauses = Vec::new();
    if parser.peek().is_none() {
        return Ok(clauses);
    }
    loop {
        let identifier = parser.identifier()?;
        let comparator = parser.comparator()?;
        let value = parser.value(comparator)?;
        if matches!(comparator, Comparator::In | Comparator::NotIn)
            != matches!(value, Literal::List(_))
        {
            return error(format!(
                "{comparator} on {identifier} needs {}",
                if matches!(value, Literal::List(_)) {
                    "IN or NOT IN for a list"
                } else {
                    "a parenthesised list of quoted values"
                }
            ));
        }
        clauses.push(RawClause {
            identifier,
            comparator,
            value,
        });
        match parser.next() {
            None => return Ok(clauses),
            Some(Token::Word(word)) if word.eq_ignore_ascii_case("and") => {}
            Some(Token::Word(word)) if word.eq_ignore_ascii_case("or") => {
                return error("invalid clause(s): OR is not supported; join clauses with AND");
            }
            Some(other) => return error(format!("expected AND between clauses, found {other:?}")),
        }
    }
}

/// A run attribute usable in filters and `order_by`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunAttribute {
    RunId,
    RunName,
    Status,
    StartTime,
    EndTime,
    UserId,
    ArtifactUri,
}

impl RunAttribute {
    fn parse(key: &str) -> Option<Self> {
        Some(match key.to_ascii_lowercase().as_str() {
            "run_id" => RunAttribute::RunId,
            "run_name" | "run name" => RunAttribute::RunName,
            "status" => RunAttribute::Status,
            "start_time" | "created" => RunAttribute::StartTime,
            "end_time" => RunAttribute::EndTime,
            "user_id" => RunAttribute::UserId,
            "artifact_uri" => RunAttribute::ArtifactUri,
            _ => return None,
        })
    }

    /// Returns the column in `tracking_runs`.
    pub fn column(self) -> &'static str {
        match self {
            RunAttribute::RunId => "run_id",
            RunAttribute::RunName => "run_name",
            RunAttribute::Status => "status",
            RunAttribute::StartTime => "start_time",
            RunAttribute::EndTime => "end_time",
            RunAttribute::UserId => "user_id",
            RunAttribute::ArtifactUri => "artifact_uri",
        }
    }

    pub fn is_numeric(self) -> bool {
        matches!(self, RunAttribute::StartTime | RunAttribute::EndTime)
    }
}

/// Meaning of a run-search identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunField {
    Metric(String),
    Param(String),
    Tag(String),
    Attribute(RunAttribute),
}

fn run_field(identifier: &Identifier) -> Result<RunField, FilterError> {
    let key = identifier.key.clone();
    let Some(prefix) = identifier.prefix.as_deref() else {
        return error(format!(
            "invalid identifier {:?}: write it as metrics.<key>, params.<key>, tags.<key> or \
             attributes.<name>",
            identifier.key
        ));
    };
    match prefix.to_ascii_lowercase().as_str() {
        "metric" | "metrics" => Ok(RunField::Metric(key)),
        "param" | "params" | "parameter" | "parameters" => Ok(RunField::Param(key)),
        "tag" | "tags" => Ok(RunField::Tag(key)),
        "attribute" | "attributes" | "attr" | "run" => RunAttribute::parse(&key)
            .map(RunField::Attribute)
            .ok_or_else(|| {
                FilterError(format!(
                    "invalid attribute {key:?}: use run_id, run_name, status, start_time, \
                     end_time, user_id or artifact_uri"
                ))
            }),
        "dataset" | "datasets" => error(format!(
            "dataset filters ({identifier}) are not supported: Ghaf does not record run inputs"
        )),
        _ => error(format!(
            "invalid identifier prefix {prefix:?} in {identifier}: use metrics, params, tags or \
             attributes"
        )),
    }
}

/// One checked clause of a run search.
#[derive(Clone, Debug, PartialEq)]
pub struct RunClause {
    pub field: RunField,
    pub comparator: Comparator,
    pub value: Literal,
}

/// A checked run-search filter: every clause must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunFilter {
    pub clauses: Vec<RunClause>,
}

impl RunFilter {
    /// Parses and checks a run filter against MLflow's rules for each kind of identifier.
    pub fn parse(input: &str) -> Result<Self, FilterError> {
        let mut clauses = Vec::new();
        for raw in parse_clauses(input)? {
            let field = run_field(&raw.identifier)?;
            check_run_clause(&field, &raw)?;
            clauses.push(RunClause {
                field,
                comparator: raw.comparator,
                value: raw.value,
            });
        }
        Ok(Self { clauses })
    }
}

fn check_run_clause(field: &RunField, raw: &RawClause) -> Result<(), FilterError> {
    let op = raw.comparator;
    let id = &raw.identifier;
    let ok = match field {
        RunField::Metric(_) => op.is_ordering() && matches!(raw.value, Literal::Number(_)),
        RunField::Param(_) | RunField::Tag(_) => {
            (op.is_string_match() && matches!(raw.value, Literal::String(_)))
                || matches!(op, Comparator::IsNull | Comparator::IsNotNull)
        }
        RunField::Attribute(attribute) if attribute.is_numeric() => {
            op.is_ordering() && matches!(raw.value, Literal::Number(_))
        }
        RunField::Attribute(RunAttribute::RunId) => {
            (op.is_string_match() && matches!(raw.value, Literal::String(_)))
                || matches!(op, Comparator::In | Comparator::NotIn)
        }
        RunField::Attribute(_) => op.is_string_match() && matches!(raw.value, Literal::String(_)),
    };
    if ok {
        return Ok(());
    }
    let expected = match field {
        RunField::Metric(_) => "metrics take =, !=, >, >=, < or <= and a number",
        RunField::Param(_) | RunField::Tag(_) => {
            "params and tags take =, !=, LIKE or ILIKE and a quoted string, or IS [NOT] NULL"
        }
        RunField::Attribute(a) if a.is_numeric() => {
            "numeric attributes take =, !=, >, >=, < or <= and a number"
        }
        RunField::Attribute(RunAttribute::RunId) => {
            "run_id takes =, !=, LIKE, ILIKE and a quoted string, or IN/NOT IN and a list"
        }
        RunField::Attribute(_) => "string attributes take =, !=, LIKE or ILIKE and a quoted string",
    };
    error(format!("invalid clause on {id} with {op}: {expected}"))
}

/// One `order_by` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderBy<F> {
    pub field: F,
    pub ascending: bool,
}

/// Splits `"<identifier> [ASC|DESC]"`; the identifier may contain quoted parts.
fn split_order(entry: &str) -> Result<(Identifier, bool), FilterError> {
    let tokens = tokenize(entry)?;
    let (ascending, rest) = match tokens.split_last() {
        Some((Token::Word(word), rest)) if word.eq_ignore_ascii_case("asc") && !rest.is_empty() => {
            (true, rest.to_vec())
        }
        Some((Token::Word(word), rest))
            if word.eq_ignore_ascii_case("desc") && !rest.is_empty() =>
        {
            (false, rest.to_vec())
        }
        _ => (true, tokens),
    };
    let mut parser = Parser {
        tokens: rest,
        position: 0,
    };
    let identifier = parser.identifier()?;
    if parser.peek().is_some() {
        return error(format!(
            "invalid order_by entry {entry:?}: write <identifier> [ASC|DESC]"
        ));
    }
    Ok((identifier, ascending))
}

/// Parses a run-search `order_by` entry such as `metrics.acc DESC`.
pub fn parse_run_order(entry: &str) -> Result<OrderBy<RunField>, FilterError> {
    let (identifier, ascending) = split_order(entry)?;
    Ok(OrderBy {
        field: run_field(&identifier)?,
        ascending,
    })
}

/// Meaning of a registry-search identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryField {
    Name,
    /// Model versions only.
    Version,
    RunId,
    Source,
    Tag(String),
}

/// One checked clause of a registry search.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryClause {
    pub field: RegistryField,
    pub comparator: Comparator,
    pub value: Literal,
}

/// Parses a filter of registered models (`versions = false`: `name`, `tags.*`) or of model
/// versions (`versions = true`: also `version_number`, `run_id`, `source_path`).
pub fn parse_registry_filter(
    input: &str,
    versions: bool,
) -> Result<Vec<RegistryClause>, FilterError> {
    let mut clauses = Vec::new();
    for raw in parse_clauses(input)? {
        let field = registry_field(&raw.identifier, versions)?;
        let op = raw.comparator;
        let ok = match &field {
            RegistryField::Version => op.is_ordering() && matches!(raw.value, Literal::Number(_)),
            RegistryField::RunId => {
                (op.is_string_match() && matches!(raw.value, Literal::String(_)))
                    || matches!(op, Comparator::In | Comparator::NotIn)
            }
            _ => op.is_string_match() && matches!(raw.value, Literal::String(_)),
        };
        if !ok {
            return error(format!(
                "invalid clause on {} with {op}: names, sources and tags take =, !=, LIKE or \
                 ILIKE and a quoted string; version_number takes a number",
                raw.identifier
            ));
        }
        clauses.push(RegistryClause {
            field,
            comparator: op,
            value: raw.value,
        });
    }
    Ok(clauses)
}

fn registry_field(identifier: &Identifier, versions: bool) -> Result<RegistryField, FilterError> {
    let key = identifier.key.as_str();
    let prefix = identifier.prefix.as_deref().map(str::to_ascii_lowercase);
    match (prefix.as_deref(), key) {
        (Some("tag" | "tags"), _) => Ok(RegistryField::Tag(key.to_owned())),
        (None | Some("attribute" | "attributes"), "name") => Ok(RegistryField::Name),
        (None | Some("attribute" | "attributes"), "version_number") if versions => {
            Ok(RegistryField::Version)
        }
        (None | Some("attribute" | "attributes"), "run_id") if versions => Ok(RegistryField::RunId),
        (None | Some("attribute" | "attributes"), "source_path") if versions => {
            Ok(RegistryField::Source)
        }
        _ => error(format!(
            "invalid identifier {identifier}: use name{} or tags.<key>",
            if versions {
                ", version_number, run_id, source_path"
            } else {
                ""
            }
        )),
    }
}

/// Parses a registry `order_by` entry (`name`, `version_number`, `creation_timestamp`,
/// `last_updated_timestamp`) into its column.
pub fn parse_registry_order(entry: &str) -> Result<OrderBy<&'static str>, FilterError> {
    let (identifier, ascending) = split_order(entry)?;
    let column = match identifier.key.as_str() {
        "name" => "name",
        "version_number" => "version",
        "creation_timestamp" => "creation_time",
        "last_updated_timestamp" | "timestamp" => "last_updated_time",
        other => {
            return error(format!(
                "invalid order_by key {other:?}: use name, version_number, creation_timestamp or \
                 last_updated_timestamp"
            ));
        }
    };
    Ok(OrderBy {
        field: column,
        ascending,
    })
}

/// Meaning of an experiment-search identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExperimentField {
    Name,
    CreationTime,
    LastUpdateTime,
    Tag(String),
}

/// One checked clause of an experiment search.
#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentClause {
    pub field: ExperimentField,
    pub comparator: Comparator,
    pub value: Literal,
}

fn experiment_field(identifier: &Identifier) -> Result<ExperimentField, FilterError> {
    let prefix = identifier.prefix.as_deref().map(str::to_ascii_lowercase);
    match (prefix.as_deref(), identifier.key.as_str()) {
        (Some("tag" | "tags"), key) => Ok(ExperimentField::Tag(key.to_owned())),
        (None | Some("attribute" | "attributes"), "name") => Ok(ExperimentField::Name),
        (None | Some("attribute" | "attributes"), "creation_time") => {
            Ok(ExperimentField::CreationTime)
        }
        (None | Some("attribute" | "attributes"), "last_update_time") => {
            Ok(ExperimentField::LastUpdateTime)
        }
        _ => error(format!(
            "invalid identifier {identifier}: use name, creation_time, last_update_time or \
             tags.<key>"
        )),
    }
}

/// Parses an experiment-search filter.
pub fn parse_experiment_filter(input: &str) -> Result<Vec<ExperimentClause>, FilterError> {
    let mut clauses = Vec::new();
    for raw in parse_clauses(input)? {
        let field = experiment_field(&raw.identifier)?;
        let op = raw.comparator;
        let ok = match field {
            ExperimentField::CreationTime | ExperimentField::LastUpdateTime => {
                op.is_ordering() && matches!(raw.value, Literal::Number(_))
            }
            _ => op.is_string_match() && matches!(raw.value, Literal::String(_)),
        };
        if !ok {
            return error(format!(
                "invalid clause on {} with {op}: names and tags take =, !=, LIKE or ILIKE and a \
                 quoted string; times take a comparison and a number",
                raw.identifier
            ));
        }
        clauses.push(ExperimentClause {
            field,
            comparator: op,
            value: raw.value,
        });
    }
    Ok(clauses)
}

/// Parses an experiment `order_by` entry into its column.
pub fn parse_experiment_order(entry: &str) -> Result<OrderBy<&'static str>, FilterError> {
    let (identifier, ascending) = split_order(entry)?;
    let column = match identifier.key.as_str() {
        "name" => "name",
        "experiment_id" => "experiment_id",
        "creation_time" => "creation_time",
        "last_update_time" => "last_update_time",
        other => {
            return error(format!(
                "invalid order_by key {other:?}: use name, experiment_id, creation_time or \
                 last_update_time"
            ));
        }
    };
    Ok(OrderBy {
        field: column,
        ascending,
    })
}

/// Converts a SQL `LIKE` pattern to a SQLite `GLOB` pattern, which is case-sensitive as
/// MLflow's `LIKE` is. `%` becomes `*`, `_` becomes `?`, and GLOB's own special characters
/// are matched literally through one-character classes.
pub fn like_to_glob(pattern: &str) -> String {
    let mut glob = String::with_capacity(pattern.len() + 4);
    for c in pattern.chars() {
        match c {
            '%' => glob.push('*'),
            '_' => glob.push('?'),
            '*' => glob.push_str("[*]"),
            '?' => glob.push_str("[?]"),
            '[' => glob.push_str("[[]"),
            _ => glob.push(c),
        }
    }
    glob
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn clause(field: RunField, comparator: Comparator, value: Literal) -> RunClause {
        RunClause {
            field,
            comparator,
            value,
        }
    }

    #[test]
    fn run_filter_parses_each_kind() {
        let filter = RunFilter::parse(
            "metrics.acc > 0.5 and params.model = 'rf' AND tags.`team name` LIKE 'fr%' \
             and attributes.status != \"FAILED\" and attr.start_time >= 1700000000000 \
             and run.run_id IN ('a', 'b') and tag.x IS NOT NULL",
        )
        .unwrap();
        assert_eq!(
            filter.clauses,
            vec![
                clause(
                    RunField::Metric("acc".into()),
                    Comparator::Gt,
                    Literal::Number(0.5)
                ),
                clause(
                    RunField::Param("model".into()),
                    Comparator::Eq,
                    Literal::String("rf".into())
                ),
                clause(
                    RunField::Tag("team name".into()),
                    Comparator::Like,
                    Literal::String("fr%".into())
                ),
                clause(
                    RunField::Attribute(RunAttribute::Status),
                    Comparator::Ne,
                    Literal::String("FAILED".into())
                ),
                clause(
                    RunField::Attribute(RunAttribute::StartTime),
                    Comparator::Ge,
                    Literal::Number(1.7e12)
                ),
                clause(
                    RunField::Attribute(RunAttribute::RunId),
                    Comparator::In,
                    Literal::List(vec!["a".into(), "b".into()])
                ),
                clause(
                    RunField::Tag("x".into()),
                    Comparator::IsNotNull,
                    Literal::Null
                ),
            ]
        );
    }

    #[test]
    fn empty_filter_has_no_clauses() {
        assert!(RunFilter::parse("").unwrap().clauses.is_empty());
        assert!(RunFilter::parse("   ").unwrap().clauses.is_empty());
    }

    #[test]
    fn run_filter_rejects_invalid_input() {
        for bad in [
            "metrics.acc > 0.5 OR params.a = 'b'",
            "(metrics.acc > 0.5)",
            "acc > 0.5",
            "metrics.acc LIKE 'x'",
            "metrics.acc > 'x'",
            "params.a > 'b'",
            "attributes.status IN ('a')",
            "attributes.bogus = 'a'",
            "datasets.name = 'a'",
            "params.a = 'unterminated",
            "metrics.acc >",
            "metrics.acc > 1 params.b = 'c'",
            "params.a = 'b' AND",
            "run.run_id IN ()",
            "run.run_id = ('a')",
        ] {
            assert!(RunFilter::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn order_by_parses_direction_and_quotes() {
        let order = parse_run_order("metrics.`val loss` DESC").unwrap();
        assert_eq!(order.field, RunField::Metric("val loss".into()));
        assert!(!order.ascending);
        let order = parse_run_order("attributes.start_time").unwrap();
        assert_eq!(order.field, RunField::Attribute(RunAttribute::StartTime));
        assert!(order.ascending);
        assert!(parse_run_order("metrics.a DESC extra").is_err());
    }

    #[test]
    fn registry_filter_accepts_version_keys_only_for_versions() {
        let clauses = parse_registry_filter("name = 'm' and version_number >= 2", true).unwrap();
        assert_eq!(clauses[1].field, RegistryField::Version);
        assert!(parse_registry_filter("version_number >= 2", false).is_err());
        assert!(parse_registry_filter("name LIKE 'fraud%'", false).is_ok());
    }

    #[test]
    fn like_to_glob_escapes_glob_characters() {
        assert_eq!(like_to_glob("a%b_c*?["), "a*b?c[*][?][[]");
    }

    fn key() -> impl Strategy<Value = String> {
        "[a-zA-Z_][a-zA-Z0-9_]{0,10}"
    }

    fn text() -> impl Strategy<Value = String> {
        ".{0,16}"
    }

    fn quote(value: &str) -> String {
        format!("'{}'", value.replace('\'', "''").replace('\\', "\\\\"))
    }

    fn run_clause() -> impl Strategy<Value = (String, RunClause)> {
        prop_oneof![
            (
                key(),
                prop::sample::select(vec![">", ">=", "<", "<=", "=", "!="]),
                -1e6f64..1e6
            )
                .prop_map(|(k, op, v)| {
                    let comparator = match op {
                        ">" => Comparator::Gt,
                        ">=" => Comparator::Ge,
                        "<" => Comparator::Lt,
                        "<=" => Comparator::Le,
                        "=" => Comparator::Eq,
                        _ => Comparator::Ne,
                    };
                    (
                        format!("metrics.{k} {op} {v:?}"),
                        clause(RunField::Metric(k), comparator, Literal::Number(v)),
                    )
                }),
            (
                key(),
                prop::sample::select(vec!["=", "!=", "LIKE", "ilike"]),
                text()
            )
                .prop_map(|(k, op, v)| {
                    let comparator = match op {
                        "=" => Comparator::Eq,
                        "!=" => Comparator::Ne,
                        "LIKE" => Comparator::Like,
                        _ => Comparator::ILike,
                    };
                    (
                        format!("params.`{}` {op} {}", k, quote(&v)),
                        clause(RunField::Param(k), comparator, Literal::String(v)),
                    )
                }),
            key().prop_map(|k| (
                format!("tags.{k} IS NULL"),
                clause(RunField::Tag(k), Comparator::IsNull, Literal::Null)
            )),
            prop::collection::vec("[a-f0-9]{1,8}", 1..4).prop_map(|ids| {
                let list = ids
                    .iter()
                    .map(|id| quote(id))
                    .collect::<Vec<_>>()
                    .join(", ");
                (
                    format!("attributes.run_id IN ({list})"),
                    clause(
                        RunField::Attribute(RunAttribute::RunId),
                        Comparator::In,
                        Literal::List(ids),
                    ),
                )
            }),
        ]
    }

    proptest! {
        /// Rendering clauses as text and parsing them back gives the same clauses.
        #[test]
        fn rendered_filters_parse_back(clauses in prop::collection::vec(run_clause(), 1..5)) {
            let text = clauses.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>().join(" and ");
            let parsed = RunFilter::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            let expected: Vec<RunClause> = clauses.into_iter().map(|(_, c)| c).collect();
            prop_assert_eq!(parsed.clauses, expected);
        }

        /// Arbitrary text never panics the parser.
        #[test]
        fn arbitrary_text_never_panics(input in ".{0,64}") {
            let _ = RunFilter::parse(&input);
            let _ = parse_run_order(&input);
            let _ = parse_registry_filter(&input, true);
            let _ = parse_experiment_filter(&input);
        }
    }
}
