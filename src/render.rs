//! Renders an EmailTemplate with a message's `data`, strictly: a variable
//! the data lacks is an error that names it. Values are HTML-escaped in the
//! html body and inserted as they are in the subject and text body.

use handlebars::{Handlebars, RenderErrorReason};
use serde_json::Value;

use crate::api::EmailTemplateSpec;

/// The rendered subject and bodies.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The subject.
    pub subject: String,
    /// The text body.
    pub text: Option<String>,
    /// The html body.
    pub html: Option<String>,
}

fn registry(escape_html: bool) -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    if !escape_html {
        hb.register_escape_fn(handlebars::no_escape);
    }
    hb
}

/// The parts of a template, by name, that are set.
fn parts(spec: &EmailTemplateSpec) -> Vec<(&'static str, &str)> {
    let mut parts = vec![("subject", spec.subject.as_str())];
    if let Some(text) = &spec.text {
        parts.push(("text", text));
    }
    if let Some(html) = &spec.html {
        parts.push(("html", html));
    }
    parts
}

/// Checks that every part parses; the error names the part, line and column.
pub fn check(spec: &EmailTemplateSpec) -> Result<(), String> {
    for (part, source) in parts(spec) {
        handlebars::Template::compile(source).map_err(|e| format!("spec.{part}: {e}"))?;
    }
    Ok(())
}

/// Checks that every part parses and, given `example`, renders strictly
/// with it; the error names the part and the line, or the variable.
pub fn validate(spec: &EmailTemplateSpec) -> Result<(), String> {
    check(spec)?;
    match &spec.example_data {
        Some(example) => render(spec, example).map(|_| ()).map_err(|e| {
            format!(
                "{} (rendering with spec.exampleData)",
                e.replace("spec.data", "spec.exampleData")
            )
        }),
        None => Ok(()),
    }
}

/// Renders every part with `data`.
pub fn render(spec: &EmailTemplateSpec, data: &Value) -> Result<Rendered, String> {
    let plain = registry(false);
    let html = registry(true);
    let render = |part: &str, source: &str, hb: &Handlebars<'_>| {
        hb.render_template(source, data)
            .map_err(|e| match e.reason() {
                RenderErrorReason::MissingVariable(Some(name)) => {
                    format!("the template's {part} uses \"{name}\", which spec.data does not set")
                }
                _ => format!("the template's {part} could not be rendered: {e}"),
            })
    };
    let subject = render("subject", &spec.subject, &plain)?;
    if subject.contains(['\r', '\n']) {
        return Err("the rendered subject contains a line break".into());
    }
    Ok(Rendered {
        subject,
        text: spec
            .text
            .as_deref()
            .map(|t| render("text", t, &plain))
            .transpose()?,
        html: spec
            .html
            .as_deref()
            .map(|h| render("html", h, &html))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> EmailTemplateSpec {
        EmailTemplateSpec {
            subject: "Hello {{name}}".into(),
            text: Some("Hi {{name}}, you have {{count}} items".into()),
            html: Some("<p>Hi {{name}}</p>".into()),
            example_data: None,
        }
    }

    #[test]
    fn example_data_a_part_cannot_render_with_is_named() {
        let mut template = spec();
        assert_eq!(validate(&template), Ok(()));
        template.example_data = Some(json!({"name": "Ann", "count": 2}));
        assert_eq!(validate(&template), Ok(()));
        template.example_data = Some(json!({"name": "Ann"}));
        let error = validate(&template).expect_err("count is missing");
        assert!(
            error.contains(
                "the template's text uses \"count\", which spec.exampleData does not set"
            ),
            "{error}"
        );
    }

    #[test]
    fn renders_and_escapes_only_html() {
        let out = render(&spec(), &json!({"name": "<Bob & Co>", "count": 3})).expect("renders");
        assert_eq!(out.subject, "Hello <Bob & Co>");
        assert_eq!(out.text.as_deref(), Some("Hi <Bob & Co>, you have 3 items"));
        assert_eq!(out.html.as_deref(), Some("<p>Hi &lt;Bob &amp; Co&gt;</p>"));
    }

    #[test]
    fn a_missing_variable_is_named() {
        let err = render(&spec(), &json!({"name": "Bob"})).expect_err("count is missing");
        assert!(err.contains("\"count\""), "{err}");
    }

    #[test]
    fn syntax_errors_name_the_part() {
        let mut bad = spec();
        bad.html = Some("<p>{{#if name}}unclosed</p>".into());
        let err = check(&bad).expect_err("unclosed block");
        assert!(err.starts_with("spec.html"), "{err}");
    }

    #[test]
    fn a_value_cannot_inject_a_header_through_the_subject() {
        let err = render(
            &spec(),
            &json!({"name": "x\r\nBcc: eve@example.org", "count": 1}),
        )
        .expect_err("CRLF");
        assert!(err.contains("line break"), "{err}");
    }
}
