//! What every operation goes through, over HTTP and WebSocket alike: the limits on its size,
//! checked on the parsed document before async-graphql validates it, and the path of each
//! resolver error; and the documents HTTP requests parsed recently.
//!
//! Fields and aliases are counted with every fragment spread expanded, a fragment counted once
//! and reused, so a document that doubles a fragment at each of many levels is refused in time
//! linear in its text, before async-graphql walks (or validates) it exponentially.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextResolve, ResolveInfo,
};
use async_graphql::parser::types::{
    ExecutableDocument, FragmentDefinition, Selection, SelectionSet,
};
use async_graphql::{
    Name, PathSegment, Positioned, QueryPathSegment, ServerError, ServerResult, Value, Variables,
};

use super::Settings;
use super::errors::with_code;

/// The extension; see the module documentation.
pub struct Guard {
    max_fields: usize,
    max_aliases: usize,
}

impl Guard {
    pub fn new(settings: Settings) -> Guard {
        Guard {
            max_fields: settings.max_complexity,
            max_aliases: settings.max_aliases,
        }
    }
}

/// Marks a request whose document [`Guard::check`] has passed.
pub struct Checked;

impl Guard {
    /// Refuses `document` if it has more fields or aliases, fragments spread, than allowed.
    pub fn check(&self, document: &ExecutableDocument) -> ServerResult<()> {
        let mut counter = Counter {
            fragments: &document.fragments,
            counted: HashMap::new(),
            open: HashSet::new(),
        };
        let mut total = Size::default();
        for (_, operation) in document.operations.iter() {
            total = total.plus(counter.count(&operation.node.selection_set.node));
        }
        let exceeded = |what: String| {
            let mut error = ServerError::new(what, None);
            error
                .extensions
                .get_or_insert_with(Default::default)
                .set("code", "LIMIT_EXCEEDED");
            Err(error)
        };
        if total.aliases > self.max_aliases {
            let (found, most) = (total.aliases, self.max_aliases);
            return exceeded(format!(
                "the operation has {found} aliases; at most {most} are answered"
            ));
        }
        if total.fields > self.max_fields {
            let (found, most) = (total.fields, self.max_fields);
            return exceeded(format!(
                "the operation selects {found} fields once its fragments are spread; at most {most} are answered"
            ));
        }
        Ok(())
    }
}

impl ExtensionFactory for Guard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Guard {
            max_fields: self.max_fields,
            max_aliases: self.max_aliases,
        })
    }
}

#[async_trait::async_trait]
impl Extension for Guard {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        // Checked on a parse of our own, before async-graphql's, whose check of the recursion
        // depth walks every spread of every fragment; HTTP requests come checked.
        if ctx.data_opt::<Checked>().is_none() {
            self.check(&async_graphql::parser::parse_query(query)?)?;
        }
        next.run(ctx, query, variables).await
    }

    /// Gives a resolver's error the path of its field: async-graphql's dynamic schema leaves
    /// it out, and without it the answer could not say which field failed (nor put its null in).
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        let node = info.path_node;
        next.run(ctx, info).await.map_err(|mut error| {
            if error.path.is_empty() {
                let mut path = Vec::new();
                let mut current = Some(node);
                while let Some(node) = current {
                    path.push(match node.segment {
                        QueryPathSegment::Name(name) => PathSegment::Field(name.to_owned()),
                        QueryPathSegment::Index(i) => PathSegment::Index(i),
                    });
                    current = node.parent;
                }
                path.reverse();
                error.path = path;
            }
            error
        })
    }
}

/// Fields and aliases of a selection, fragments spread.
#[derive(Clone, Copy, Default)]
struct Size {
    fields: usize,
    aliases: usize,
}

impl Size {
    fn plus(self, other: Size) -> Size {
        Size {
            fields: self.fields.saturating_add(other.fields),
            aliases: self.aliases.saturating_add(other.aliases),
        }
    }
}

struct Counter<'a> {
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
    counted: HashMap<&'a str, Size>,
    /// Fragments being counted: a cycle counts nothing here (validation refuses it).
    open: HashSet<&'a str>,
}

impl<'a> Counter<'a> {
    fn count(&mut self, selection: &'a SelectionSet) -> Size {
        let mut size = Size::default();
        for item in &selection.items {
            let more = match &item.node {
                Selection::Field(field) => Size {
                    fields: 1,
                    aliases: usize::from(field.node.alias.is_some()),
                }
                .plus(self.count(&field.node.selection_set.node)),
                Selection::InlineFragment(fragment) => {
                    self.count(&fragment.node.selection_set.node)
                }
                Selection::FragmentSpread(spread) => self.fragment(&spread.node.fragment_name.node),
            };
            size = size.plus(more);
        }
        size
    }

    fn fragment(&mut self, name: &'a Name) -> Size {
        if let Some(size) = self.counted.get(name.as_str()) {
            return *size;
        }
        let Some(fragment) = self.fragments.get(name) else {
            return Size::default();
        };
        if !self.open.insert(name.as_str()) {
            return Size::default();
        }
        let size = self.count(&fragment.node.selection_set.node);
        self.open.remove(name.as_str());
        self.counted.insert(name.as_str(), size);
        size
    }
}

/// Documents parsed recently, by query text: a query asked again with other variables (the
/// usual case) is not parsed again.
pub struct Documents(std::sync::Mutex<lru::LruCache<Arc<str>, Arc<ExecutableDocument>>>);

/// Documents kept parsed.
const DOCUMENTS: usize = 1_000;

impl Default for Documents {
    fn default() -> Documents {
        let capacity = std::num::NonZeroUsize::new(DOCUMENTS).expect("not zero");
        Documents(std::sync::Mutex::new(lru::LruCache::new(capacity)))
    }
}

impl Documents {
    /// `query` parsed, and checked by `guard`; the error that refuses it otherwise.
    pub fn parsed(
        &self,
        query: &Arc<str>,
        guard: &Guard,
    ) -> Result<Arc<ExecutableDocument>, ServerError> {
        let lock = || {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(document) = lock().get(query) {
            return Ok(document.clone());
        }
        let document = async_graphql::parser::parse_query(&**query)
            .map_err(|error| with_code(error.into(), "GRAPHQL_PARSE_FAILED"))?;
        guard.check(&document)?;
        let document = Arc::new(document);
        lock().put(query.clone(), document.clone());
        Ok(document)
    }
}
