//! Any component's typed exports as tools: a function's WIT types become a JSON Schema,
//! JSON arguments become component values ([`Val`]) and the values it returns become JSON.
//!
//! The JSON shapes (README, "Plugins of any component"):
//! - `bool`, strings and integers as themselves; `s64`/`u64` as numbers up to 2^53 and as
//!   decimal strings beyond (JSON parsers in JavaScript lose digits past 2^53); a string
//!   is accepted in input at any size.
//! - floats as numbers, and the non-finite ones as `"NaN"`, `"Infinity"`, `"-Infinity"`;
//! - `char` as a one-character string; `list<u8>` as a base64 string; other lists and
//!   tuples as arrays; records as objects keyed by field name;
//! - a variant as an object with one key, the case (`{"circle": 2.0}`, `{"empty": null}`);
//!   an enum as its case name; flags as an array of the names set;
//! - `option<T>` as `null` or the value; when `T` is itself an option, whose `none` is
//!   also `null`, `some(v)` is written `{"some": v}` so the two stay apart;
//! - `result<T, E>` as `{"ok": v}` or `{"err": v}`; the result of the function itself is
//!   unwrapped: `ok` is the tool's result, `err` is a `tool_error` with the value in it.
//!
//! Resources (and the async types) have no JSON form: a function that takes or returns
//! one is refused by name and the component's other functions still load.

use base64::Engine as _;
use serde_json::{Map, Value, json};
use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};
use wasmtime::component::{Component, ComponentExportIndex, Val};

/// The largest JSON Schema (input and output together) a function's types may make.
const MAX_SCHEMA_BYTES: usize = 256 << 10;

/// Integers beyond this are written as strings (the largest exactly representable in f64).
const SAFE_INTEGER: u64 = (1 << 53) - 1;

/// One exported function offered as a tool.
#[derive(Clone)]
pub struct Function {
    /// The tool's name: `function`, or `interface-function` inside an exported interface.
    pub tool: String,
    /// The export's name as WIT spells it, e.g. `add` or `my:calc/ops@1.0.0#add`.
    pub export: String,
    /// Where the function is, for a fresh instance.
    pub index: ComponentExportIndex,
    /// The parameters, by name.
    pub params: Vec<(String, Type)>,
    /// The result type, if it returns one.
    pub result: Option<Type>,
}

/// What a component exports, as tools.
pub struct Reflected {
    /// The functions that can be tools.
    pub functions: Vec<Function>,
    /// Functions that cannot, each with why.
    pub refused: Vec<String>,
}

/// The exported functions of `component` (at its root and in the interfaces it exports)
/// that can be tools, and those that cannot with why. WASI exports (`wasi:cli/run`, an
/// HTTP handler) are entry points for other hosts, not tools, and are left out.
pub fn exports(engine: &wasmtime::Engine, component: &Component) -> Reflected {
    let mut reflected = Reflected { functions: Vec::new(), refused: Vec::new() };
    let ty = component.component_type();
    for (name, item) in ty.exports(engine) {
        match item.ty {
            ComponentItem::ComponentFunc(func) => {
                let Some((_, index)) = component.get_export(None, name) else { continue };
                reflected.add(name.to_string(), name, index, &func);
            }
            ComponentItem::ComponentInstance(instance) if !name.starts_with("wasi:") => {
                let Some((_, parent)) = component.get_export(None, name) else { continue };
                let interface = interface_name(name);
                for (function, item) in instance.exports(engine) {
                    let ComponentItem::ComponentFunc(func) = item.ty else { continue };
                    let Some((_, index)) = component.get_export(Some(&parent), function) else {
                        continue;
                    };
                    let tool = format!("{interface}-{function}");
                    reflected.add(tool, &format!("{name}#{function}"), index, &func);
                }
            }
            _ => {}
        }
    }
    reflected
}

/// The short name of an exported interface: `ops` for `my:calc/ops@1.0.0`.
fn interface_name(export: &str) -> &str {
    let path = export.split_once('/').map_or(export, |(_, path)| path);
    path.split_once('@').map_or(path, |(name, _)| name)
}

impl Reflected {
    fn add(&mut self, tool: String, export: &str, index: ComponentExportIndex, f: &ComponentFunc) {
        let refuse = |why: String| format!("function `{export}` is not a tool: {why}");
        if export.contains('[') {
            // `[constructor]x`, `[method]x.y`, `[static]x.y`: the functions of a resource.
            self.refused.push(refuse("it belongs to a resource, which has no JSON form".into()));
            return;
        }
        if f.async_() {
            self.refused.push(refuse("async functions are not supported yet".into()));
            return;
        }
        let params: Vec<(String, Type)> = f.params().map(|(n, t)| (n.to_string(), t)).collect();
        let results: Vec<Type> = f.results().collect();
        let types = params.iter().map(|(_, t)| t).chain(&results);
        if let Some(why) = types.filter_map(unsupported).next() {
            self.refused.push(refuse(why));
            return;
        }
        let result = results.into_iter().next();
        // WIT allows upper-case words (`get-URL`); tool names are lower case.
        let tool = tool.to_ascii_lowercase();
        let function = Function { tool, export: export.to_string(), index, params, result };
        // The validator bounds a type's nesting (100) but not its breadth: a record of
        // thousands of records would be a schema of megabytes, sent with every tool list.
        let size =
            function.input_schema().to_string().len() + function.output_schema().to_string().len();
        if size > MAX_SCHEMA_BYTES {
            let why =
                format!("its types make a JSON Schema of {size} bytes, over {MAX_SCHEMA_BYTES}");
            self.refused.push(refuse(why));
            return;
        }
        self.functions.push(function);
    }
}

/// Why `ty` (or a type inside it) has no JSON form, if it has none.
fn unsupported(ty: &Type) -> Option<String> {
    match ty {
        Type::Own(_) | Type::Borrow(_) => {
            Some("it takes or returns a resource, which has no JSON form".into())
        }
        Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            Some("it takes or returns a future, stream or error-context".into())
        }
        Type::List(list) => unsupported(&list.ty()),
        Type::FixedLengthList(list) => unsupported(&list.ty()),
        Type::Map(map) => unsupported(&map.key()).or_else(|| unsupported(&map.value())),
        Type::Record(record) => record.fields().find_map(|f| unsupported(&f.ty)),
        Type::Tuple(tuple) => tuple.types().find_map(|t| unsupported(&t)),
        Type::Variant(variant) => variant.cases().find_map(|c| c.ty.as_ref().and_then(unsupported)),
        Type::Option(option) => unsupported(&option.ty()),
        Type::Result(result) => (result.ok().as_ref().and_then(unsupported))
            .or_else(|| result.err().as_ref().and_then(unsupported)),
        _ => None,
    }
}

impl Function {
    /// The JSON Schema of the arguments: an object with one property per parameter.
    pub fn input_schema(&self) -> Value {
        let properties: Map<String, Value> =
            self.params.iter().map(|(name, ty)| (name.clone(), schema(ty))).collect();
        let required: Vec<&str> = (self.params.iter())
            .filter(|(_, ty)| !matches!(ty, Type::Option(_)))
            .map(|(name, _)| name.as_str())
            .collect();
        json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
    }

    /// The JSON Schema of the tool's result: the result type's, or its `ok` type's when the
    /// function returns a `result` (an `err` is the call's error, not a result).
    pub fn output_schema(&self) -> Value {
        match &self.result {
            None => json!({"type": "null"}),
            Some(Type::Result(result)) => {
                result.ok().as_ref().map_or(json!({"type": "null"}), schema)
            }
            Some(ty) => schema(ty),
        }
    }

    /// The function's signature in WIT, e.g. `add(a: s32, b: s32) -> s32`.
    pub fn signature(&self) -> String {
        let params: Vec<String> =
            self.params.iter().map(|(name, ty)| format!("{name}: {}", wit(ty))).collect();
        let name = self.export.rsplit_once('#').map_or(self.export.as_str(), |(_, f)| f);
        match &self.result {
            Some(ty) => format!("{name}({}) -> {}", params.join(", "), wit(ty)),
            None => format!("{name}({})", params.join(", ")),
        }
    }

    /// The call's parameters from the JSON arguments (an object already checked against
    /// [`Function::input_schema`]); the error names the argument and what it needs.
    pub fn params_from_json(&self, args: &Value) -> Result<Vec<Val>, String> {
        (self.params.iter())
            .map(|(name, ty)| match args.get(name) {
                Some(value) => from_json(ty, value, name),
                None if matches!(ty, Type::Option(_)) => Ok(Val::Option(None)),
                None => Err(format!("missing argument `{name}`")),
            })
            .collect()
    }

    /// The tool's result from what the function returned: `Err` with the error value
    /// (as JSON text) when it returned a `result`'s `err`.
    pub fn result_to_json(&self, results: &[Val]) -> Result<Value, String> {
        let (Some(ty), Some(value)) = (&self.result, results.first()) else {
            return Ok(Value::Null);
        };
        match (ty, value) {
            (Type::Result(result), Val::Result(outcome)) => {
                let payload = |ty: Option<Type>, val: &Option<Box<Val>>| match (ty, val) {
                    (Some(ty), Some(val)) => to_json(&ty, val),
                    _ => Value::Null,
                };
                match outcome {
                    Ok(ok) => Ok(payload(result.ok(), ok)),
                    Err(err) => match payload(result.err(), err) {
                        // A string error reads best as itself, not as JSON text.
                        Value::String(text) => Err(text),
                        other => Err(other.to_string()),
                    },
                }
            }
            (ty, value) => Ok(to_json(ty, value)),
        }
    }
}

/// Whether the JSON form of `ty` can be `null`, so an option around it needs `{"some": v}`.
fn may_be_null(ty: &Type) -> bool {
    matches!(ty, Type::Option(_))
}

/// The JSON Schema of values of `ty`.
pub fn schema(ty: &Type) -> Value {
    let integer = |min: i64, max: u64| json!({"type": "integer", "minimum": min, "maximum": max});
    let wide = |min: i128, max: u128| {
        json!({"anyOf": [
            {"type": "integer", "minimum": min.max(-(SAFE_INTEGER as i128)) as i64, "maximum": max.min(SAFE_INTEGER as u128) as u64},
            {"type": "string", "pattern": if min < 0 { "^-?[0-9]{1,20}$" } else { "^[0-9]{1,20}$" }},
        ], "description": format!("an integer from {min} to {max}; as a decimal string beyond 2^53")})
    };
    let float =
        || json!({"anyOf": [{"type": "number"}, {"enum": ["NaN", "Infinity", "-Infinity"]}]});
    let single_key = |key: &str, value: Value| json!({"type": "object", "properties": {key: value}, "required": [key], "additionalProperties": false});
    match ty {
        Type::Bool => json!({"type": "boolean"}),
        Type::S8 => integer(i8::MIN.into(), i8::MAX as u64),
        Type::U8 => integer(0, u8::MAX.into()),
        Type::S16 => integer(i16::MIN.into(), i16::MAX as u64),
        Type::U16 => integer(0, u16::MAX.into()),
        Type::S32 => integer(i32::MIN.into(), i32::MAX as u64),
        Type::U32 => integer(0, u32::MAX.into()),
        Type::S64 => wide(i64::MIN.into(), i64::MAX as u128),
        Type::U64 => wide(0, u64::MAX.into()),
        Type::Float32 | Type::Float64 => float(),
        Type::Char => json!({"type": "string", "minLength": 1, "maxLength": 1}),
        Type::String => json!({"type": "string"}),
        Type::List(list) if list.ty() == Type::U8 => {
            json!({"type": "string", "contentEncoding": "base64", "description": "bytes, in padded standard base64"})
        }
        Type::List(list) => json!({"type": "array", "items": schema(&list.ty())}),
        Type::FixedLengthList(list) => {
            json!({"type": "array", "items": schema(&list.ty()), "minItems": list.len(), "maxItems": list.len()})
        }
        Type::Map(map) => json!({"type": "array", "items": {
            "type": "array", "prefixItems": [schema(&map.key()), schema(&map.value())],
            "minItems": 2, "maxItems": 2, "items": false,
        }}),
        Type::Tuple(tuple) => {
            let items: Vec<Value> = tuple.types().map(|t| schema(&t)).collect();
            let n = items.len();
            json!({"type": "array", "prefixItems": items, "minItems": n, "maxItems": n, "items": false})
        }
        Type::Record(record) => {
            let properties: Map<String, Value> =
                record.fields().map(|f| (f.name.to_string(), schema(&f.ty))).collect();
            let required: Vec<&str> = (record.fields())
                .filter(|f| !matches!(f.ty, Type::Option(_)))
                .map(|f| f.name)
                .collect();
            json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
        }
        Type::Variant(variant) => {
            let cases: Vec<Value> = (variant.cases())
                .map(|c| single_key(c.name, c.ty.as_ref().map_or(json!({"type": "null"}), schema)))
                .collect();
            json!({"oneOf": cases})
        }
        Type::Enum(names) => json!({"type": "string", "enum": names.names().collect::<Vec<_>>()}),
        Type::Flags(names) => json!({
            "type": "array", "uniqueItems": true,
            "items": {"type": "string", "enum": names.names().collect::<Vec<_>>()},
        }),
        Type::Option(option) => {
            let inner = option.ty();
            let some = match may_be_null(&inner) {
                true => single_key("some", schema(&inner)),
                false => schema(&inner),
            };
            json!({"anyOf": [{"type": "null"}, some]})
        }
        Type::Result(result) => {
            let case = |ty: Option<Type>| ty.as_ref().map_or(json!({"type": "null"}), schema);
            json!({"oneOf": [single_key("ok", case(result.ok())), single_key("err", case(result.err()))]})
        }
        // Refused when the function is reflected (see `unsupported`).
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            json!(false)
        }
    }
}

/// `ty` as WIT writes it, for descriptions.
fn wit(ty: &Type) -> String {
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(list) => format!("list<{}>", wit(&list.ty())),
        Type::FixedLengthList(list) => format!("list<{}, {}>", wit(&list.ty()), list.len()),
        Type::Map(map) => format!("map<{}, {}>", wit(&map.key()), wit(&map.value())),
        Type::Tuple(tuple) => {
            format!("tuple<{}>", tuple.types().map(|t| wit(&t)).collect::<Vec<_>>().join(", "))
        }
        Type::Record(_) => "record".into(),
        Type::Variant(_) => "variant".into(),
        Type::Enum(_) => "enum".into(),
        Type::Flags(_) => "flags".into(),
        Type::Option(option) => format!("option<{}>", wit(&option.ty())),
        Type::Result(result) => {
            let side = |t: Option<Type>| t.map_or("_".to_string(), |t| wit(&t));
            format!("result<{}, {}>", side(result.ok()), side(result.err()))
        }
        Type::Own(_) | Type::Borrow(_) => "resource".into(),
        Type::Future(_) => "future".into(),
        Type::Stream(_) => "stream".into(),
        Type::ErrorContext => "error-context".into(),
    }
}

/// `value` (at `at`, a path for errors) as a value of `ty`.
pub fn from_json(ty: &Type, value: &Value, at: &str) -> Result<Val, String> {
    let wrong = |what: &str| Err(format!("`{at}` must be {what}, not {value}"));
    macro_rules! int {
        ($variant:ident, $t:ty) => {
            match integer(value) {
                Some(n) => <$t>::try_from(n)
                    .map(Val::$variant)
                    .or_else(|_| wrong(&format!("an integer from {} to {}", <$t>::MIN, <$t>::MAX))),
                None => wrong(concat!("an integer (", stringify!($t), ")")),
            }
        };
    }
    match ty {
        Type::Bool => value.as_bool().map(Val::Bool).map_or_else(|| wrong("true or false"), Ok),
        Type::S8 => int!(S8, i8),
        Type::U8 => int!(U8, u8),
        Type::S16 => int!(S16, i16),
        Type::U16 => int!(U16, u16),
        Type::S32 => int!(S32, i32),
        Type::U32 => int!(U32, u32),
        Type::S64 => int!(S64, i64),
        Type::U64 => int!(U64, u64),
        Type::Float32 => match float(value) {
            Some(f) if f.is_finite() && f.abs() > f64::from(f32::MAX) => {
                wrong("a number within the range of f32")
            }
            Some(f) => Ok(Val::Float32(f as f32)),
            None => wrong("a number"),
        },
        Type::Float64 => float(value).map(Val::Float64).map_or_else(|| wrong("a number"), Ok),
        Type::Char => {
            let mut chars = value.as_str().unwrap_or_default().chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Ok(Val::Char(c)),
                _ => wrong("a string of one character"),
            }
        }
        Type::String => {
            value.as_str().map(|s| Val::String(s.into())).map_or_else(|| wrong("a string"), Ok)
        }
        Type::List(list) if list.ty() == Type::U8 => {
            let Some(text) = value.as_str() else { return wrong("a base64 string") };
            match base64::engine::general_purpose::STANDARD.decode(text) {
                Ok(bytes) => Ok(Val::List(bytes.into_iter().map(Val::U8).collect())),
                Err(e) => Err(format!("`{at}` is not valid base64: {e}")),
            }
        }
        Type::List(list) => Ok(Val::List(items(&list.ty(), value, at, None)?)),
        Type::FixedLengthList(list) => {
            Ok(Val::FixedLengthList(items(&list.ty(), value, at, Some(list.len() as usize))?))
        }
        Type::Map(map) => {
            let Some(pairs) = value.as_array() else {
                return wrong("an array of [key, value] pairs");
            };
            let pair = |(i, pair): (usize, &Value)| match pair.as_array().map(Vec::as_slice) {
                Some([k, v]) => Ok((
                    from_json(&map.key(), k, &format!("{at}[{i}][0]"))?,
                    from_json(&map.value(), v, &format!("{at}[{i}][1]"))?,
                )),
                _ => Err(format!("`{at}[{i}]` must be a [key, value] pair")),
            };
            Ok(Val::Map(pairs.iter().enumerate().map(pair).collect::<Result<_, _>>()?))
        }
        Type::Tuple(tuple) => {
            let types: Vec<Type> = tuple.types().collect();
            let Some(values) = value.as_array().filter(|v| v.len() == types.len()) else {
                return wrong(&format!("an array of {} items", types.len()));
            };
            let vals = types.iter().zip(values).enumerate();
            let vals = vals.map(|(i, (t, v))| from_json(t, v, &format!("{at}[{i}]")));
            Ok(Val::Tuple(vals.collect::<Result<_, _>>()?))
        }
        Type::Record(record) => {
            let Some(object) = value.as_object() else { return wrong("an object") };
            if let Some(unknown) = object.keys().find(|k| record.fields().all(|f| f.name != *k)) {
                return Err(format!("`{at}` has no field `{unknown}`"));
            }
            let field = |f: wasmtime::component::types::Field<'_>| {
                let path = format!("{at}.{}", f.name);
                let val = match object.get(f.name) {
                    Some(v) => from_json(&f.ty, v, &path)?,
                    None if matches!(f.ty, Type::Option(_)) => Val::Option(None),
                    None => return Err(format!("`{at}` needs the field `{}`", f.name)),
                };
                Ok((f.name.to_string(), val))
            };
            Ok(Val::Record(record.fields().map(field).collect::<Result<_, _>>()?))
        }
        Type::Variant(variant) => {
            let Some((case, payload)) = single(value) else {
                return wrong("an object with one key, the case");
            };
            let Some(found) = variant.cases().find(|c| c.name == case) else {
                let names: Vec<&str> = variant.cases().map(|c| c.name).collect();
                return Err(format!("`{at}` has no case `{case}` (cases: {})", names.join(", ")));
            };
            let path = format!("{at}.{case}");
            let payload = match (&found.ty, payload) {
                (Some(ty), v) => Some(Box::new(from_json(ty, v, &path)?)),
                (None, Value::Null) => None,
                (None, _) => return Err(format!("`{path}` carries no value: write null")),
            };
            Ok(Val::Variant(case.to_string(), payload))
        }
        Type::Enum(names) => match value.as_str() {
            Some(name) if names.names().any(|n| n == name) => Ok(Val::Enum(name.into())),
            _ => wrong(&format!("one of {}", names.names().collect::<Vec<_>>().join(", "))),
        },
        Type::Flags(names) => {
            let Some(set) = value.as_array() else { return wrong("an array of flag names") };
            let flag = |v: &Value| match v.as_str() {
                Some(name) if names.names().any(|n| n == name) => Ok(name.to_string()),
                _ => Err(format!(
                    "`{at}` holds {v}, not one of {}",
                    names.names().collect::<Vec<_>>().join(", ")
                )),
            };
            Ok(Val::Flags(set.iter().map(flag).collect::<Result<_, _>>()?))
        }
        Type::Option(option) => {
            let inner = option.ty();
            match (value, may_be_null(&inner)) {
                (Value::Null, _) => Ok(Val::Option(None)),
                (value, true) => match single(value) {
                    Some(("some", v)) => Ok(Val::Option(Some(Box::new(from_json(
                        &inner,
                        v,
                        &format!("{at}.some"),
                    )?)))),
                    _ => wrong("null or {\"some\": value}"),
                },
                (value, false) => Ok(Val::Option(Some(Box::new(from_json(&inner, value, at)?)))),
            }
        }
        Type::Result(result) => {
            let side = |ty: Option<Type>, v: &Value, path: String| match ty {
                Some(ty) => from_json(&ty, v, &path).map(|v| Some(Box::new(v))),
                None if v.is_null() => Ok(None),
                None => Err(format!("`{path}` carries no value: write null")),
            };
            match single(value) {
                Some(("ok", v)) => Ok(Val::Result(Ok(side(result.ok(), v, format!("{at}.ok"))?))),
                Some(("err", v)) => {
                    Ok(Val::Result(Err(side(result.err(), v, format!("{at}.err"))?)))
                }
                _ => wrong("{\"ok\": value} or {\"err\": value}"),
            }
        }
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            Err(format!("`{at}` has a type with no JSON form"))
        }
    }
}

/// The items of the JSON array `value` as values of `ty`, exactly `len` of them if given.
fn items(ty: &Type, value: &Value, at: &str, len: Option<usize>) -> Result<Vec<Val>, String> {
    let Some(values) = value.as_array().filter(|v| len.is_none_or(|n| v.len() == n)) else {
        let what = len.map_or("an array".to_string(), |n| format!("an array of {n} items"));
        return Err(format!("`{at}` must be {what}, not {value}"));
    };
    let vals = values.iter().enumerate().map(|(i, v)| from_json(ty, v, &format!("{at}[{i}]")));
    vals.collect()
}

/// The one key of a single-key object, and its value.
fn single(value: &Value) -> Option<(&str, &Value)> {
    let object = value.as_object().filter(|o| o.len() == 1)?;
    object.iter().next().map(|(k, v)| (k.as_str(), v))
}

/// An integer from a JSON number or a decimal string (wide integers), as i128.
fn integer(value: &Value) -> Option<i128> {
    match value {
        // `5.0` is an integer to JSON Schema (and to Python and most models), so here too.
        Value::Number(n) => (n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)))
            .or_else(|| {
                n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e38).map(|f| f as i128)
            }),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn float(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s == "NaN" => Some(f64::NAN),
        Value::String(s) if s == "Infinity" => Some(f64::INFINITY),
        Value::String(s) if s == "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// The value `val` of type `ty` as JSON.
pub fn to_json(ty: &Type, val: &Val) -> Value {
    let wide = |n: i128| match n.unsigned_abs() <= SAFE_INTEGER as u128 {
        true => json!(n as i64),
        false => json!(n.to_string()),
    };
    let float = |f: f64| match f {
        f if f.is_nan() => json!("NaN"),
        f if f.is_infinite() && f > 0.0 => json!("Infinity"),
        f if f.is_infinite() => json!("-Infinity"),
        f => json!(f),
    };
    let payload = |ty: Option<Type>, val: &Option<Box<Val>>| match (ty, val) {
        (Some(ty), Some(val)) => to_json(&ty, val),
        _ => Value::Null,
    };
    match (ty, val) {
        (_, Val::Bool(b)) => json!(b),
        (_, Val::S8(n)) => json!(n),
        (_, Val::U8(n)) => json!(n),
        (_, Val::S16(n)) => json!(n),
        (_, Val::U16(n)) => json!(n),
        (_, Val::S32(n)) => json!(n),
        (_, Val::U32(n)) => json!(n),
        (_, Val::S64(n)) => wide((*n).into()),
        (_, Val::U64(n)) => wide((*n).into()),
        // Through f32's shortest form, so 0.1 comes back as 0.1, not 0.10000000149011612.
        (_, Val::Float32(f)) => float(f.to_string().parse().unwrap_or(f64::NAN)),
        (_, Val::Float64(f)) => float(*f),
        (_, Val::Char(c)) => json!(c.to_string()),
        (_, Val::String(s)) => json!(s),
        (Type::List(list), Val::List(vals)) if list.ty() == Type::U8 => {
            let bytes: Vec<u8> = vals
                .iter()
                .filter_map(|v| match v {
                    Val::U8(b) => Some(*b),
                    _ => None,
                })
                .collect();
            json!(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        (Type::List(list), Val::List(vals)) => {
            Value::Array(vals.iter().map(|v| to_json(&list.ty(), v)).collect())
        }
        (Type::FixedLengthList(list), Val::FixedLengthList(vals)) => {
            Value::Array(vals.iter().map(|v| to_json(&list.ty(), v)).collect())
        }
        (Type::Map(map), Val::Map(pairs)) => Value::Array(
            (pairs.iter())
                .map(|(k, v)| json!([to_json(&map.key(), k), to_json(&map.value(), v)]))
                .collect(),
        ),
        (Type::Tuple(tuple), Val::Tuple(vals)) => {
            Value::Array(tuple.types().zip(vals).map(|(t, v)| to_json(&t, v)).collect())
        }
        (Type::Record(record), Val::Record(fields)) => Value::Object(
            (record.fields().zip(fields))
                .map(|(f, (name, v))| (name.clone(), to_json(&f.ty, v)))
                .collect(),
        ),
        (Type::Variant(variant), Val::Variant(case, v)) => {
            let ty = variant.cases().find(|c| c.name == case).and_then(|c| c.ty);
            json!({case.as_str(): payload(ty, v)})
        }
        (_, Val::Enum(name)) => json!(name),
        (_, Val::Flags(names)) => json!(names),
        (Type::Option(option), Val::Option(inner)) => match inner {
            None => Value::Null,
            Some(v) if may_be_null(&option.ty()) => json!({"some": to_json(&option.ty(), v)}),
            Some(v) => to_json(&option.ty(), v),
        },
        (Type::Result(result), Val::Result(outcome)) => match outcome {
            Ok(v) => json!({"ok": payload(result.ok(), v)}),
            Err(v) => json!({"err": payload(result.err(), v)}),
        },
        // A value that does not match its type, or one with no JSON form (refused at load).
        _ => Value::Null,
    }
}
