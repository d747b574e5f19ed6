//! The GraphQL schema generated from the tables' JSON Schemas.
//!
//! For a table `Product` (root fields `product...`):
//!
//! ```graphql
//! type Query {
//!   product(id: ID!): Product
//!   productList(filter: String, where: ProductWhere, sort: String, first: Int, after: String): ProductConnection!
//! }
//! type Mutation {
//!   putProduct(id: ID!, record: ProductInput!): Product
//!   patchProduct(id: ID!, patch: ProductInput!): Product      # not on cache tables
//!   createProduct(record: ProductInput!): Product             # not on cache tables
//!   deleteProduct(id: ID!): Boolean!
//! }
//! type Subscription {
//!   product(id: ID!): ProductChange!
//!   productList(filter: String): ProductChange!
//! }
//! ```
//!
//! `Product` has a field per property (see `shape.rs`), a reference property is the referenced
//! table's type, and each relation a list field with `filter`, `sort` and `first`. `ProductWhere`
//! has a field per indexed attribute (and the primary key) taking `eq`, `ne`, `lt`, `le`, `gt`,
//! `ge` (and `sw` on strings).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_graphql::dynamic::{
    Enum, Field, InputObject, InputValue, Object, Scalar, Schema, SchemaBuilder, Subscription,
    SubscriptionField, TypeRef,
};
use serde_json::Value;

use super::Settings;
use super::arguments::MAX_PAGE;
use super::guard::Guard;
use super::mutate::{self, Mutation};
use super::page;
use super::resolve;
use super::shape::{self, JSON, LONG, Shape};
use super::subscribe::{self, CHANGE_TYPES, Watch};
use crate::catalog::{Catalog, Resource};
use crate::schema::TableSchema;
use crate::storage::KeyType;

/// The schema of `catalog`'s tables, or why one cannot be made.
pub fn build(catalog: &Catalog, settings: Settings) -> Result<Schema, String> {
    let mut query = Object::new("Query").description("Records by id, and pages of queries");
    let mut mutation = Object::new("Mutation")
        .description("Writes, through the same validation and storage as REST");
    let mut subscription = Subscription::new("Subscription");
    let mut types = Types::default();
    let mut seen = BTreeMap::new();
    for resource in catalog.resources() {
        let schema = resource.table().schema();
        let name: Arc<str> = schema.name.clone();
        let field = shape::field_of_table(&name);
        if let Some(other) = seen.insert(field.clone(), name.clone()) {
            return Err(format!(
                "tables `{other}` and `{name}` would both have the GraphQL field `{field}`: rename one"
            ));
        }
        types.table(catalog, schema);
        let cached = matches!(resource, Resource::Cached(_));
        query = query
            .field(
                Field::new(
                    &field,
                    TypeRef::named(&*name),
                    resolve::record(name.clone()),
                )
                .argument(id_argument()),
            )
            .field(list_field(&field, &name, types.wheres(schema)));
        mutation = mutation
            .field(
                Field::new(
                    format!("put{name}"),
                    TypeRef::named(&*name),
                    mutate::mutate(name.clone(), Mutation::Put),
                )
                .argument(id_argument())
                .argument(InputValue::new(
                    "record",
                    TypeRef::named_nn(format!("{name}Input")),
                )),
            )
            .field(
                Field::new(
                    format!("delete{name}"),
                    TypeRef::named_nn(TypeRef::BOOLEAN),
                    mutate::mutate(name.clone(), Mutation::Delete),
                )
                .argument(id_argument()),
            );
        if !cached {
            mutation = mutation
                .field(
                    Field::new(
                        format!("patch{name}"),
                        TypeRef::named(&*name),
                        mutate::mutate(name.clone(), Mutation::Patch),
                    )
                    .description("A JSON merge patch (RFC 7396): a field given as null is removed")
                    .argument(id_argument())
                    .argument(InputValue::new(
                        "patch",
                        TypeRef::named_nn(format!("{name}Input")),
                    )),
                )
                .field(
                    Field::new(
                        format!("create{name}"),
                        TypeRef::named(&*name),
                        mutate::mutate(name.clone(), Mutation::Create),
                    )
                    .description("Creates a record under a generated key")
                    .argument(InputValue::new(
                        "record",
                        TypeRef::named_nn(format!("{name}Input")),
                    )),
                );
        }
        let change = format!("{name}Change");
        subscription = subscription
            .field(
                SubscriptionField::new(
                    &field,
                    TypeRef::named_nn(&change),
                    subscribe::subscribe(name.clone(), Watch::Record),
                )
                .argument(id_argument()),
            )
            .field(
                SubscriptionField::new(
                    format!("{field}List"),
                    TypeRef::named_nn(&change),
                    subscribe::subscribe(name.clone(), Watch::Table),
                )
                .argument(InputValue::new("filter", TypeRef::named(TypeRef::STRING))),
            );
    }
    let mut builder = Schema::build("Query", Some("Mutation"), Some("Subscription"))
        .register(query)
        .register(mutation)
        .register(subscription)
        .extension(Guard::new(settings))
        .limit_depth(settings.max_depth)
        .limit_complexity(settings.max_complexity);
    if !settings.introspection {
        builder = builder.disable_introspection();
    }
    builder = types.register(builder);
    builder
        .finish()
        .map_err(|e| format!("the GraphQL schema could not be built: {e}"))
}

fn id_argument() -> InputValue {
    InputValue::new("id", TypeRef::named_nn(TypeRef::ID))
}

fn list_field(field: &str, table: &Arc<str>, wheres: Arc<Vec<(String, Vec<String>)>>) -> Field {
    let has_where = !wheres.is_empty();
    let mut list = Field::new(
        format!("{field}List"),
        TypeRef::named_nn(format!("{table}Connection")),
        resolve::list(table.clone(), wheres),
    )
    .description("The records that match, a page at a time, through the same planner and executor as GET /T/?query")
    .argument(InputValue::new("filter", TypeRef::named(TypeRef::STRING)).description("Conditions in the URL query language: `category=lighting&price=lt=50`"))
    .argument(InputValue::new("sort", TypeRef::named(TypeRef::STRING)).description("`-price,+name`"))
    .argument(InputValue::new("first", TypeRef::named(TypeRef::INT)).description(format!("Records per page, at most {MAX_PAGE}")))
    .argument(InputValue::new("after", TypeRef::named(TypeRef::STRING)).description("The `endCursor` of the previous page"));
    if has_where {
        list = list.argument(InputValue::new(
            "where",
            TypeRef::named(format!("{table}Where")),
        ));
    }
    list
}

/// The types besides the root ones, collected table by table.
#[derive(Default)]
struct Types {
    objects: Vec<Object>,
    inputs: Vec<InputObject>,
    enums: Vec<Enum>,
}

impl Types {
    fn table(&mut self, catalog: &Catalog, schema: &TableSchema) {
        let name = &*schema.name;
        let settings = &schema.settings;
        let document = schema.document();
        let empty = serde_json::Map::new();
        let properties = document
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let mut object = Object::new(name).field(Field::new(
            &settings.primary_key,
            TypeRef::named_nn(TypeRef::ID),
            resolve::id,
        ));
        if let Some(title) = document.get("title").and_then(Value::as_str) {
            object = object.description(title);
        }
        let mut input = InputObject::new(format!("{name}Input"));
        for (property, shape) in shape::fields(properties) {
            if property == settings.primary_key {
                continue;
            }
            let description = properties[&property]
                .get("description")
                .and_then(Value::as_str);
            let field = match settings.references.get(&property) {
                Some(target) => Field::new(&property, TypeRef::named(target), resolve::linked)
                    .description(format!(
                        "The `{target}` this record's `{property}` names; null if there is none"
                    )),
                None => {
                    let ty = self.output(name, &property, &shape);
                    let mut field = Field::new(
                        &property,
                        ty,
                        resolve::property(property.clone(), shape.clone()),
                    );
                    if let Some(description) = description {
                        field = field.description(description);
                    }
                    field
                }
            };
            object = object.field(field);
            let server_set = settings.timestamps
                && (property == crate::schema::CREATED_AT || property == crate::schema::UPDATED_AT);
            if !server_set {
                let ty = match settings.references.get(&property) {
                    Some(target) => TypeRef::named(key_scalar(catalog, target)),
                    None => self.input(name, &property, &shape),
                };
                input = input.field(InputValue::new(&property, ty));
            }
        }
        for (relation, link) in &settings.relations {
            object = object.field(
                Field::new(
                    relation,
                    TypeRef::named_nn_list_nn(&link.table),
                    resolve::linked,
                )
                .description(format!(
                    "The `{}` records whose `{}` is this record's key",
                    link.table, link.by
                ))
                .argument(InputValue::new("filter", TypeRef::named(TypeRef::STRING)))
                .argument(InputValue::new("sort", TypeRef::named(TypeRef::STRING)))
                .argument(
                    InputValue::new("first", TypeRef::named(TypeRef::INT))
                        .description(format!("At most {MAX_PAGE}; 100 if not given")),
                ),
            );
        }
        self.objects.push(object);
        self.inputs.push(input);
        self.connection(name);
    }

    /// The `TConnection`, `TEdge` and `TChange` types of table `name`.
    fn connection(&mut self, name: &str) {
        self.objects.push(
            Object::new(format!("{name}Connection"))
                .field(
                    Field::new("totalCount", TypeRef::named_nn(LONG), page::total_count)
                        .description("How many records match, over all pages"),
                )
                .field(Field::new(
                    "nodes",
                    TypeRef::named_nn_list_nn(name),
                    page::nodes,
                ))
                .field(Field::new(
                    "edges",
                    TypeRef::named_nn_list_nn(format!("{name}Edge")),
                    page::edges,
                ))
                .field(Field::new(
                    "pageInfo",
                    TypeRef::named_nn("PageInfo"),
                    page::page_info,
                )),
        );
        self.objects.push(
            Object::new(format!("{name}Edge"))
                .field(Field::new(
                    "cursor",
                    TypeRef::named_nn(TypeRef::STRING),
                    page::cursor,
                ))
                .field(Field::new("node", TypeRef::named_nn(name), page::node)),
        );
        self.objects.push(
            Object::new(format!("{name}Change"))
                .description(
                    "A change to a subscribed record: the record after a PUT, none after a DELETE",
                )
                .field(Field::new(
                    "type",
                    TypeRef::named_nn("ChangeType"),
                    subscribe::change_field("type"),
                ))
                .field(Field::new(
                    "id",
                    TypeRef::named(TypeRef::ID),
                    subscribe::change_field("id"),
                ))
                .field(
                    Field::new(
                        "version",
                        TypeRef::named(TypeRef::STRING),
                        subscribe::change_field("version"),
                    )
                    .description("The record's ETag value"),
                )
                .field(Field::new(
                    "record",
                    TypeRef::named(name),
                    resolve::change_record,
                )),
        );
    }

    /// The `TWhere` input type of `schema`'s table, and for each of its fields the attribute
    /// path it filters: the indexed attributes and the primary key, whose values an index
    /// finds.
    fn wheres(&mut self, schema: &TableSchema) -> Arc<Vec<(String, Vec<String>)>> {
        let document = schema.document();
        let settings = &schema.settings;
        let mut wheres = Vec::new();
        let mut input = InputObject::new(format!("{}Where", schema.name))
            .description("Conditions on indexed attributes, all of which must hold");
        let paths = std::iter::once(&settings.primary_key).chain(&settings.indexes);
        for path in paths {
            let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
            let field = segments.join("_");
            if !shape::is_field_name(&field) {
                continue;
            }
            let mut property = document.get("properties").and_then(|p| p.get(&segments[0]));
            for segment in &segments[1..] {
                property = property
                    .and_then(|p| p.get("properties"))
                    .and_then(|p| p.get(segment));
            }
            let Some(range) = property.and_then(|p| range_type(&shape::of(p))) else {
                continue;
            };
            input = input.field(InputValue::new(&field, TypeRef::named(range)));
            wheres.push((field, segments));
        }
        if !wheres.is_empty() {
            self.inputs.push(input);
        }
        Arc::new(wheres)
    }

    fn output(&mut self, owner: &str, property: &str, shape: &Shape) -> TypeRef {
        match shape {
            Shape::Scalar(name) => TypeRef::named(*name),
            Shape::Enum(values) => TypeRef::named(self.enumeration(owner, property, values)),
            Shape::Object(fields) => {
                let name = shape::nested_name(owner, property);
                let mut object = Object::new(&name);
                for (field, inner) in fields {
                    let ty = self.output(&name, field, inner);
                    object = object.field(Field::new(
                        field,
                        ty,
                        resolve::property(field.clone(), inner.clone()),
                    ));
                }
                self.objects.push(object);
                TypeRef::named(name)
            }
            Shape::List(inner) => TypeRef::List(Box::new(self.output(owner, property, inner))),
        }
    }

    fn input(&mut self, owner: &str, property: &str, shape: &Shape) -> TypeRef {
        match shape {
            Shape::Scalar(name) => TypeRef::named(*name),
            // The output pass made the enum type.
            Shape::Enum(_) => TypeRef::named(shape::nested_name(owner, property)),
            Shape::Object(fields) => {
                let nested = shape::nested_name(owner, property);
                let name = format!("{nested}Input");
                let mut input = InputObject::new(&name);
                for (field, inner) in fields {
                    input = input.field(InputValue::new(field, self.input(&nested, field, inner)));
                }
                self.inputs.push(input);
                TypeRef::named(name)
            }
            Shape::List(inner) => TypeRef::List(Box::new(self.input(owner, property, inner))),
        }
    }

    fn enumeration(&mut self, owner: &str, property: &str, values: &[String]) -> String {
        let name = shape::nested_name(owner, property);
        self.enums
            .push(Enum::new(&name).items(values.iter().map(String::as_str)));
        name
    }

    fn register(self, mut builder: SchemaBuilder) -> SchemaBuilder {
        builder = builder
            .register(Scalar::new(JSON).description("Any JSON value"))
            .register(Scalar::new(LONG).description("A 64-bit integer").validator(|value| {
                matches!(value, async_graphql::Value::Number(n) if n.is_i64() || n.is_u64())
            }))
            .register(Enum::new("ChangeType").items(CHANGE_TYPES))
            .register(
                Object::new("PageInfo")
                    .field(Field::new("hasNextPage", TypeRef::named_nn(TypeRef::BOOLEAN), page::has_next_page))
                    .field(Field::new("endCursor", TypeRef::named(TypeRef::STRING), page::end_cursor)),
            );
        for (name, ty, string) in [
            ("StringRange", TypeRef::STRING, true),
            ("FloatRange", TypeRef::FLOAT, false),
            ("LongRange", LONG, false),
        ] {
            let mut range = InputObject::new(name);
            for op in ["eq", "ne", "lt", "le", "gt", "ge"] {
                range = range.field(InputValue::new(op, TypeRef::named(ty)));
            }
            if string {
                range = range
                    .field(InputValue::new("sw", TypeRef::named(ty)).description("starts with"));
            }
            builder = builder.register(range);
        }
        builder = builder.register(
            InputObject::new("BooleanRange")
                .field(InputValue::new("eq", TypeRef::named(TypeRef::BOOLEAN)))
                .field(InputValue::new("ne", TypeRef::named(TypeRef::BOOLEAN))),
        );
        for object in self.objects {
            builder = builder.register(object);
        }
        for input in self.inputs {
            builder = builder.register(input);
        }
        for enumeration in self.enums {
            builder = builder.register(enumeration);
        }
        builder
    }
}

/// The range input type of an attribute of `shape` (of an array's elements for an array).
fn range_type(shape: &Shape) -> Option<&'static str> {
    match shape {
        Shape::Scalar("String") | Shape::Enum(_) => Some("StringRange"),
        Shape::Scalar("Float") => Some("FloatRange"),
        Shape::Scalar("Int") | Shape::Scalar(LONG) => Some("LongRange"),
        Shape::Scalar("Boolean") => Some("BooleanRange"),
        Shape::List(inner) => range_type(inner),
        _ => None,
    }
}

/// The scalar that holds a key of `table`: for a reference property in an input type.
fn key_scalar(catalog: &Catalog, table: &str) -> &'static str {
    let key_type = catalog
        .resource(table)
        .map(|r| r.table().schema().settings.key_type);
    match key_type {
        Ok(KeyType::Integer) => LONG,
        _ => TypeRef::STRING,
    }
}
