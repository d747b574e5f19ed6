//! What GraphQL type each property of a JSON Schema becomes.
//!
//! `string`, `number`, `boolean` are `String`, `Float`, `Boolean`; `integer` is `Int` when its
//! bounds fit 32 bits, `Long` otherwise; an `enum` of names is a GraphQL enum; an object with
//! `properties` is an object type of its own; an array with `items` a list; a property that
//! names another table (`x-references`) that table's type. Anything else (several types, a
//! free-form object) is the `JSON` scalar, which carries any JSON value.

use serde_json::Value;

/// The scalar that carries any JSON value.
pub const JSON: &str = "JSON";
/// The scalar of 64-bit integers.
pub const LONG: &str = "Long";

/// The GraphQL shape of one property.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// A built-in or custom scalar, by name.
    Scalar(&'static str),
    /// An enum type of these names, to be named by its place.
    Enum(Vec<String>),
    /// An object type with these properties (GraphQL-nameable ones), to be named by its place.
    Object(Vec<(String, Shape)>),
    /// A list of the shape.
    List(Box<Shape>),
}

/// The shape of the property schema `property`.
pub fn of(property: &Value) -> Shape {
    if let Some(Value::Array(values)) = property.get("enum") {
        let names: Option<Vec<String>> = values
            .iter()
            .map(|v| v.as_str().filter(|s| is_enum_name(s)).map(str::to_owned))
            .collect();
        return match names {
            Some(names) if !names.is_empty() => Shape::Enum(names),
            _ => Shape::Scalar(JSON),
        };
    }
    match single_type(property) {
        Some("string") => Shape::Scalar("String"),
        Some("number") => Shape::Scalar("Float"),
        Some("boolean") => Shape::Scalar("Boolean"),
        Some("integer") => Shape::Scalar(integer(property)),
        Some("array") => match property.get("items") {
            Some(items @ Value::Object(_)) => Shape::List(Box::new(of(items))),
            _ => Shape::List(Box::new(Shape::Scalar(JSON))),
        },
        Some("object") => match property.get("properties").and_then(Value::as_object) {
            Some(properties) if !properties.is_empty() => Shape::Object(fields(properties)),
            _ => Shape::Scalar(JSON),
        },
        _ => Shape::Scalar(JSON),
    }
}

/// The shapes of the properties GraphQL can name (`[_A-Za-z][_0-9A-Za-z]*`, not `__...`).
pub fn fields(properties: &serde_json::Map<String, Value>) -> Vec<(String, Shape)> {
    properties
        .iter()
        .filter(|(name, _)| is_field_name(name))
        .map(|(name, property)| (name.clone(), of(property)))
        .collect()
}

/// Whether GraphQL can name a field `name`.
pub fn is_field_name(name: &str) -> bool {
    crate::schema::is_field_name(name) && !name.starts_with("__")
}

fn is_enum_name(name: &str) -> bool {
    is_field_name(name) && !matches!(name, "true" | "false" | "null")
}

/// The one type a property declares, ignoring `"null"` beside it.
fn single_type(property: &Value) -> Option<&str> {
    match property.get("type")? {
        Value::String(t) => Some(t),
        Value::Array(types) => {
            let mut named = types
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null");
            let first = named.next()?;
            named.next().is_none().then_some(first)
        }
        _ => None,
    }
}

/// `Int` if the declared bounds fit 32 bits, `Long` otherwise.
fn integer(property: &Value) -> &'static str {
    let bound = |name: &str| property.get(name).and_then(Value::as_f64);
    let fits =
        |b: Option<f64>| b.is_some_and(|b| b >= f64::from(i32::MIN) && b <= f64::from(i32::MAX));
    if fits(bound("minimum")) && fits(bound("maximum")) {
        "Int"
    } else {
        LONG
    }
}

/// `dimensions` of `Product` -> `ProductDimensions`.
pub fn nested_name(owner: &str, property: &str) -> String {
    let mut chars = property.chars();
    let first = chars.next().map(|c| c.to_ascii_uppercase());
    format!(
        "{owner}{}{}",
        first.map(String::from).unwrap_or_default(),
        chars.as_str()
    )
}

/// `Product` -> `product`: the name of a table's root fields.
pub fn field_of_table(table: &str) -> String {
    let mut chars = table.chars();
    let first = chars.next().map(|c| c.to_ascii_lowercase());
    format!(
        "{}{}",
        first.map(String::from).unwrap_or_default(),
        chars.as_str()
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_schema_types_become_graphql_types() {
        assert_eq!(of(&json!({"type": "string"})), Shape::Scalar("String"));
        assert_eq!(
            of(&json!({"type": ["string", "null"]})),
            Shape::Scalar("String")
        );
        assert_eq!(
            of(&json!({"type": ["string", "integer"]})),
            Shape::Scalar(JSON)
        );
        assert_eq!(of(&json!({"type": "integer"})), Shape::Scalar(LONG));
        assert_eq!(
            of(&json!({"type": "integer", "minimum": 0, "maximum": 100})),
            Shape::Scalar("Int")
        );
        assert_eq!(
            of(&json!({"type": "string", "enum": ["EUR", "USD"]})),
            Shape::Enum(vec!["EUR".into(), "USD".into()])
        );
        assert_eq!(
            of(&json!({"enum": ["in stock", "gone"]})),
            Shape::Scalar(JSON)
        );
        assert_eq!(
            of(&json!({"type": "array", "items": {"type": "number"}})),
            Shape::List(Box::new(Shape::Scalar("Float")))
        );
        assert_eq!(
            of(&json!({"type": "object", "properties": {"w": {"type": "number"}, "bad-name": {}}})),
            Shape::Object(vec![("w".into(), Shape::Scalar("Float"))])
        );
        assert_eq!(of(&json!({"type": "object"})), Shape::Scalar(JSON));
        assert_eq!(of(&json!({})), Shape::Scalar(JSON));
    }

    #[test]
    fn names() {
        assert_eq!(nested_name("Product", "dimensions"), "ProductDimensions");
        assert_eq!(field_of_table("Product"), "product");
        assert!(!is_field_name("__typename"));
        assert!(!is_field_name("first-name"));
    }
}
