//! What the document says about text the server refuses everywhere.
//!
//! Every string the API reads passes `api::input`, which refuses a NUL character (PostgreSQL's
//! `text` and `jsonb` cannot hold one) with 400 `VALIDATION_ERROR`. The handlers' annotations
//! declare each field's own rules; this pass adds the one rule they all share, so that a client
//! generated from the document, or a fuzzer reading it, knows a string with a NUL is not valid
//! input rather than finding out from a 400: each string schema without a `pattern`, `enum`,
//! `const` or `format` of its own gets [`NO_NUL`], and each map (an object with
//! `additionalProperties`) gets it for its keys. Answers never carry a NUL either, since nothing
//! stored holds one, so the rule is true of the response schemas it also reaches.

use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayItems, Object, ObjectBuilder, SchemaType, Type,
};
use utoipa::openapi::{OpenApi, RefOr, Schema};

/// Any text without a NUL character.
pub const NO_NUL: &str = "^[^\\u0000]*$";

/// The document's [`Modify`](utoipa::Modify) that runs [`declare`].
pub struct Storable;

impl utoipa::Modify for Storable {
    fn modify(&self, doc: &mut OpenApi) {
        declare(doc);
    }
}

/// Adds [`NO_NUL`] to every schema of `doc` (components, parameters, bodies and answers) wherever
/// a string or a map key has no rule of its own.
pub fn declare(doc: &mut OpenApi) {
    if let Some(components) = doc.components.as_mut() {
        components.schemas.values_mut().for_each(ref_or);
    }
    for item in doc.paths.paths.values_mut() {
        for (_, op) in super::operations(item) {
            op.iter_mut().for_each(operation);
        }
    }
}

fn operation(op: &mut Operation) {
    for parameter in op.parameters.iter_mut().flatten() {
        if let RefOr::T(parameter) = parameter {
            if let Some(schema) = parameter.schema.as_mut() {
                ref_or(schema);
            }
        }
    }
    let bodies = op
        .request_body
        .iter_mut()
        .filter_map(|b| match b {
            RefOr::T(body) => Some(body),
            RefOr::Ref(_) => None,
        })
        .flat_map(|b| b.content.values_mut());
    let answers = op
        .responses
        .responses
        .values_mut()
        .filter_map(|r| match r {
            RefOr::T(response) => Some(response),
            RefOr::Ref(_) => None,
        })
        .flat_map(|r| r.content.values_mut());
    for content in bodies.chain(answers) {
        if let RefOr::T(content) = content {
            if let Some(schema) = content.schema.as_mut() {
                ref_or(schema);
            }
        }
    }
}

fn ref_or(node: &mut RefOr<Schema>) {
    if let RefOr::T(node) = node {
        schema(node);
    }
}

fn schema(node: &mut Schema) {
    match node {
        Schema::Object(o) => object(o),
        Schema::Array(a) => {
            if let ArrayItems::RefOrSchema(items) = &mut a.items {
                ref_or(items);
            }
            a.prefix_items.iter_mut().for_each(schema);
        }
        Schema::OneOf(o) => o.items.iter_mut().for_each(ref_or),
        Schema::AllOf(o) => o.items.iter_mut().for_each(ref_or),
        Schema::AnyOf(o) => o.items.iter_mut().for_each(ref_or),
        // `Schema` may grow kinds; one without strings of its own is left as it is.
        _ => {}
    }
}

fn object(o: &mut Object) {
    if is_string(&o.schema_type)
        && o.pattern.is_none()
        && o.enum_values.is_none()
        && o.format.is_none()
    {
        o.pattern = Some(NO_NUL.into());
    }
    o.properties.values_mut().for_each(ref_or);
    let is_map = match o.additional_properties.as_deref_mut() {
        Some(AdditionalProperties::RefOr(values)) => {
            ref_or(values);
            true
        }
        Some(AdditionalProperties::FreeForm(any)) => *any,
        None => false,
    };
    if is_map && o.property_names.is_none() {
        o.property_names = Some(Box::new(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(NO_NUL))
                .build(),
        )));
    }
}

fn is_string(t: &SchemaType) -> bool {
    match t {
        SchemaType::Type(t) => *t == Type::String,
        SchemaType::Array(types) => types.contains(&Type::String),
        SchemaType::AnyValue => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn, PathsBuilder};
    use utoipa::openapi::schema::{ArrayBuilder, ComponentsBuilder, OneOfBuilder};
    use utoipa::openapi::{HttpMethod, KnownFormat, OpenApiBuilder, PathItem, SchemaFormat};

    /// `node` as the component `C` of a document, through `declare`, as JSON.
    fn declared(node: Schema) -> Value {
        let mut doc = OpenApiBuilder::new()
            .components(Some(ComponentsBuilder::new().schema("C", node).build()))
            .build();
        declare(&mut doc);
        serde_json::to_value(&doc).expect("JSON")["components"]["schemas"]["C"].clone()
    }

    fn string() -> ObjectBuilder {
        ObjectBuilder::new().schema_type(Type::String)
    }

    #[test]
    fn a_plain_string_gets_the_rule() {
        let c = declared(string().min_length(Some(1)).into());
        assert_eq!(c["pattern"], NO_NUL);
        assert_eq!(c["minLength"], 1);
    }

    #[test]
    fn a_nullable_string_gets_the_rule() {
        let c = declared(
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                .into(),
        );
        assert_eq!(c["pattern"], NO_NUL);
    }

    #[test]
    fn a_string_with_its_own_rule_keeps_it() {
        let own = [
            string().pattern(Some("^[a-z]+$")).build(),
            string().enum_values(Some(["a", "b"])).build(),
            string()
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                .build(),
        ];
        for o in own {
            let before = serde_json::to_value(&o).expect("JSON");
            assert_eq!(declared(o.into()), before);
        }
    }

    #[test]
    fn other_types_are_left_alone() {
        let o = ObjectBuilder::new().schema_type(Type::Integer).build();
        let before = serde_json::to_value(&o).expect("JSON");
        assert_eq!(declared(o.into()), before);
    }

    #[test]
    fn properties_maps_arrays_and_alternatives_are_reached() {
        let c = declared(
            ObjectBuilder::new()
                .property("name", string())
                .property(
                    "labels",
                    ObjectBuilder::new().additional_properties(Some(string())),
                )
                .property("tags", ArrayBuilder::new().items(string()))
                .property("either", OneOfBuilder::new().item(string()).item(string()))
                .into(),
        );
        let p = &c["properties"];
        assert_eq!(p["name"]["pattern"], NO_NUL);
        assert_eq!(p["labels"]["propertyNames"]["pattern"], NO_NUL);
        assert_eq!(p["labels"]["additionalProperties"]["pattern"], NO_NUL);
        assert_eq!(p["tags"]["items"]["pattern"], NO_NUL);
        assert_eq!(p["either"]["oneOf"][1]["pattern"], NO_NUL);
    }

    #[test]
    fn an_operations_parameters_get_the_rule() {
        let op = OperationBuilder::new()
            .parameter(
                ParameterBuilder::new()
                    .name("q")
                    .parameter_in(ParameterIn::Query)
                    .schema(Some(string())),
            )
            .build();
        let mut doc = OpenApiBuilder::new()
            .paths(PathsBuilder::new().path("/x", PathItem::new(HttpMethod::Get, op)))
            .build();
        declare(&mut doc);
        let doc = serde_json::to_value(&doc).expect("JSON");
        assert_eq!(
            doc["paths"]["/x"]["get"]["parameters"][0]["schema"]["pattern"],
            NO_NUL
        );
    }

    #[test]
    fn a_json_schema_validator_reads_the_pattern_as_refusing_exactly_a_nul() {
        let schema = json!({"type": "string", "pattern": NO_NUL});
        let valid = |text: &str| jsonschema::is_valid(&schema, &json!(text));
        assert!(valid("any text, even \u{1}, \\u0000 spelled out, or é"));
        assert!(valid(""));
        assert!(!valid("a\0b"));
        assert!(!valid("\0"));
    }
}
