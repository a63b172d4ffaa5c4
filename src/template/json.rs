//! whorl's own JSON template format (serde).
//!
//! ```json
//! {"whorl_templates": 1, "templates": [{"finger_position": 2, ..., "minutiae": [{"x": 10.0, ...}]}]}
//! ```
//!
//! The reader also takes a bare template object or an array of them. Values
//! use the crate conventions of [`super::model`] (pixels, radians) and round
//! trip exactly: `f32` values are printed in their shortest exact form.

use super::{Format, Parsed, Template, TemplateError};
use serde::{Deserialize, Serialize};

/// Version of the JSON envelope.
pub const JSON_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Envelope {
    whorl_templates: u32,
    templates: Vec<Template>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AnyJson {
    Envelope(Envelope),
    Many(Vec<Template>),
    One(Template),
}

/// Parses whorl JSON.
pub fn parse(bytes: &[u8]) -> Result<Parsed, TemplateError> {
    // Fast path: the envelope whorl writes. Anything else (a bare template,
    // an array, or an error to explain) goes through a Value.
    let templates = match serde_json::from_slice::<Envelope>(bytes) {
        Ok(env) if env.whorl_templates == JSON_VERSION => env.templates,
        _ => slow_parse(bytes)?,
    };
    finish(templates)
}

/// Parses any accepted shape via a `Value`, so that syntax errors keep
/// serde_json's position and shape errors name the template that did not fit.
fn slow_parse(bytes: &[u8]) -> Result<Vec<Template>, TemplateError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| syntax_error(bytes, &e))?;
    let templates = match serde_json::from_value::<AnyJson>(value.clone()) {
        Ok(AnyJson::Envelope(env)) => {
            if env.whorl_templates != JSON_VERSION {
                return Err(TemplateError::invalid(
                    Format::Json,
                    "whorl_templates",
                    0,
                    format!("version {} is not supported (expected {JSON_VERSION})", env.whorl_templates),
                ));
            }
            env.templates
        }
        Ok(AnyJson::Many(t)) => t,
        Ok(AnyJson::One(t)) => vec![t],
        Err(_) => return Err(shape_error(&value)),
    };
    Ok(templates)
}

fn finish(templates: Vec<Template>) -> Result<Parsed, TemplateError> {
    for (v, t) in templates.iter().enumerate() {
        for (i, m) in t.minutiae.iter().enumerate() {
            if !(m.x.is_finite() && m.y.is_finite() && m.angle.is_finite()) {
                return Err(TemplateError::invalid(
                    Format::Json,
                    format!("minutia {i} of template {v}"),
                    0,
                    "coordinates and angle must be finite numbers",
                ));
            }
        }
    }
    let mut parsed = Parsed::new(Format::Json);
    parsed.templates = templates
        .into_iter()
        .map(|mut t| {
            for m in &mut t.minutiae {
                m.angle = super::wrap_angle(m.angle);
            }
            t
        })
        .collect();
    Ok(parsed)
}

/// Writes templates as whorl JSON (one line, no trailing newline).
pub fn write(templates: &[Template]) -> Result<Vec<u8>, TemplateError> {
    let env = EnvelopeRef { whorl_templates: JSON_VERSION, templates };
    serde_json::to_vec(&env).map_err(|e| TemplateError::Unwritable { format: Format::Json, reason: e.to_string() })
}

#[derive(Serialize)]
struct EnvelopeRef<'a> {
    whorl_templates: u32,
    templates: &'a [Template],
}

fn syntax_error(bytes: &[u8], e: &serde_json::Error) -> TemplateError {
    let offset = offset_of(bytes, e.line(), e.column());
    TemplateError::invalid(Format::Json, format!("line {} column {}", e.line(), e.column()), offset, e.to_string())
}

/// Byte offset of a 1-based line and column.
fn offset_of(bytes: &[u8], line: usize, column: usize) -> usize {
    let mut off = 0;
    for _ in 1..line {
        match bytes[off..].iter().position(|&b| b == b'\n') {
            Some(p) => off += p + 1,
            None => return bytes.len(),
        }
    }
    (off + column.saturating_sub(1)).min(bytes.len())
}

/// Explains why a syntactically valid document is not a template: the first
/// template that does not deserialise, with serde's reason.
fn shape_error(value: &serde_json::Value) -> TemplateError {
    let list = match value {
        serde_json::Value::Object(o) if o.contains_key("templates") => o.get("templates"),
        serde_json::Value::Array(_) => Some(value),
        _ => None,
    };
    if let Some(serde_json::Value::Array(items)) = list {
        for (i, item) in items.iter().enumerate() {
            if let Err(e) = serde_json::from_value::<Template>(item.clone()) {
                return TemplateError::invalid(Format::Json, format!("template {i}"), 0, e.to_string());
            }
        }
    }
    let reason = match serde_json::from_value::<Template>(value.clone()) {
        Err(e) => e.to_string(),
        Ok(_) => "unexpected shape".into(),
    };
    TemplateError::invalid(
        Format::Json,
        "document",
        0,
        format!("not a whorl template, template array or envelope: {reason}"),
    )
}
