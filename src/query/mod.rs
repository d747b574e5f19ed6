//! The URL query language of `GET /T/?...`, compatible with Harper's where Harper is right.
//!
//! [`parse`] turns the raw query string into a [`Query`]; [`bind`] converts its values by the
//! table's schema; the [`planner`] picks an index range or a scan; the [`executor`] streams the
//! answer, with conditions, sort order and `select` [`evaluate`]d on records.
//!
//! | file | holds |
//! | --- | --- |
//! | `mod.rs` | the parsed [`Query`] and its parts |
//! | `parser/` | the query string: conditions and grouping (`mod.rs`), calls (`calls.rs`), values (`values.rs`) |
//! | `bind.rs`, `date.rs` | values converted by the schema's types; ISO 8601 dates |
//! | `planner.rs`, `executor.rs`, `evaluate.rs` | index range or scan; the streamed answer; conditions, sort and `select` on records |
//!
//! ```text
//! name=Lamp&price=gt=10&lt=20          conditions joined by & (and); range chaining
//! [category=lighting|category=desk]     | (or) inside ( ) or [ ] groups; & and | never mix unless grouped
//! name==Lamp*   name=sw=La   tags=ct=le   name=ew=mp   price=ne=3   price!=3   missing=null
//! price=number:12   flag=boolean:true   code=string:007   born=date:2001-01-01   dims.w=gt=20
//! select(name,price)   sort(-price,+name)   limit(10)   limit(20,30)   after(42)
//! ```

mod bind;
mod date;
pub mod evaluate;
pub mod executor;
mod parser;
pub mod planner;

pub use bind::bind;
pub use parser::parse;

/// A parsed query.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    /// Which records match; `None` for all.
    pub filter: Option<Filter>,
    /// What of each record to return; `None` for the whole record.
    pub select: Option<Select>,
    /// Sort keys, most significant first; empty for key order.
    pub sort: Vec<SortKey>,
    /// Records to skip.
    pub offset: usize,
    /// Records to return at most; `None` for all.
    pub limit: Option<usize>,
    /// `after(id)`: start after this primary key (in the order of the answer), and where the id
    /// starts in the query string.
    pub after: Option<(String, usize)>,
    /// Byte ranges of `limit(...)` and `after(...)` in the query string, so that the link to the
    /// next page can replace them.
    pub paging: Vec<std::ops::Range<usize>>,
}

/// A boolean combination of conditions.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// Every part matches (`&`).
    All(Vec<Filter>),
    /// Some part matches (`|`).
    Any(Vec<Filter>),
    /// One condition.
    Condition(Condition),
}

/// `path op value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// The attribute, as a path into nested objects (`dims.w` is `["dims", "w"]`).
    pub path: Vec<String>,
    /// The comparison.
    pub op: Op,
    /// What to compare with.
    pub value: Literal,
    /// Where the condition starts in the query string.
    pub position: usize,
    /// Where its value starts in the query string.
    pub value_position: usize,
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `=`, `==`, `=eq=`
    Eq,
    /// `!=`, `=ne=`
    Ne,
    /// `=lt=`
    Lt,
    /// `=le=`
    Le,
    /// `=gt=`
    Gt,
    /// `=ge=`
    Ge,
    /// `=sw=`, or `=value*`
    StartsWith,
    /// `=ct=`
    Contains,
    /// `=ew=`
    EndsWith,
}

/// A value in a condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// `null`: matches null and missing alike.
    Null,
    /// Untyped text, converted by the attribute's schema type when the query is bound.
    Text(String),
    /// `number:`, or text bound to a numeric attribute.
    Number(f64),
    /// `boolean:`, or text bound to a boolean attribute.
    Bool(bool),
    /// `string:`, or text bound to a string attribute.
    String(String),
    /// `date:`, or text bound to a `date` / `date-time` attribute: ms since the Unix epoch.
    Date(i64),
}

/// `select(...)`.
#[derive(Clone, Debug, PartialEq)]
pub enum Select {
    /// `select(a)`: the bare value of one attribute (`null` if missing).
    Value(Vec<String>),
    /// `select(a,b)`, `select(a,)`, `select(dims{w,h})`: objects with these properties.
    Fields(Vec<Field>),
}

/// One property of a `select`, with the nested properties to keep (`dims{w,h}`).
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// The property name.
    pub name: String,
    /// Nested properties to keep; empty for the whole value.
    pub children: Vec<Field>,
}

/// One key of `sort(...)`.
#[derive(Clone, Debug, PartialEq)]
pub struct SortKey {
    /// The attribute.
    pub path: Vec<String>,
    /// `-attr`.
    pub descending: bool,
    /// Where the key starts in the query string.
    pub position: usize,
}

#[cfg(test)]
mod tests;
