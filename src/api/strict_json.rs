//! JSON whose objects name each key once. serde_json reads `{"name":"a","name":"b"}` as the last
//! `name`, while a proxy, a WAF or an audit tool in front of the API may read the first: the two
//! would disagree about what was asked. Every JSON body and WebSocket frame is read through
//! [`StrictValue`], which refuses a repeated key as invalid JSON (RFC 8259 says names SHOULD be
//! unique; RFC 7493, I-JSON, says MUST).

use std::fmt;

use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A JSON value with no object naming a key twice.
#[derive(Debug, Clone, PartialEq)]
pub struct StrictValue(pub Value);

impl std::ops::Deref for StrictValue {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.0
    }
}

/// `bytes` as JSON, refusing repeated keys.
pub fn from_slice(bytes: &[u8]) -> serde_json::Result<Value> {
    serde_json::from_slice::<StrictValue>(bytes).map(|v| v.0)
}

/// `text` as JSON, refusing repeated keys.
pub fn from_str(text: &str) -> serde_json::Result<Value> {
    serde_json::from_str::<StrictValue>(text).map(|v| v.0)
}

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        StrictValue::deserialize(deserializer).map(|v| v.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(A::Error::custom(format_args!(
                    "the key `{}` appears twice in one object",
                    key.escape_debug()
                )));
            }
            let StrictValue(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_what_serde_json_reads() {
        let text = r#"{"a":[1,-2,3.5,true,null,"x",{"b":{}}],"c":18446744073709551615}"#;
        assert_eq!(
            from_str(text).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        assert_eq!(from_slice(b" [] ").unwrap(), json!([]));
    }

    #[test]
    fn a_key_named_twice_is_refused_at_any_depth() {
        let top = from_str(r#"{"name":"a","name":"b"}"#).unwrap_err();
        assert!(top.to_string().contains("`name` appears twice"), "{top}");
        assert!(from_str(r#"{"spec":{"cpu":1,"cpu":2}}"#).is_err());
        assert!(from_str(r#"[{"x":1},{"x":1,"x":1}]"#).is_err());
        // The same key in different objects is fine.
        assert!(from_str(r#"[{"x":1},{"x":1}]"#).is_ok());
    }

    #[test]
    fn invalid_json_stays_invalid() {
        assert!(from_str("{").is_err());
        assert!(from_str(r#"{"a":1}x"#).is_err());
    }
}
