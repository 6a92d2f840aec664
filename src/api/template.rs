//! `EmailTemplate`: a subject, text and html in Handlebars, rendered with a
//! message's `data`. Rendering is strict: a missing variable fails the
//! message, naming it, before anything is sent.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::schema;

/// A reusable email: Handlebars templates (`{{name}}`, `{{#if}}`, `{{#each}}`)
/// for the subject, the text body and the html body. Values are escaped in
/// the html body and inserted as they are in the subject and text.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mailroom.dev",
    version = "v1alpha1",
    kind = "EmailTemplate",
    namespaced,
    status = "EmailTemplateStatus",
    shortname = "etpl",
    category = "mailroom",
    doc = "A reusable email in Handlebars (subject, text, html), rendered with each message's data.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.text) || has(self.html)").message("a body template is required: set text, html or both"))]
#[serde(rename_all = "camelCase")]
pub struct EmailTemplateSpec {
    /// The subject template. The rendered subject may not contain line breaks.
    #[schemars(length(min = 1, max = 998))]
    pub subject: String,
    /// The plain-text body template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1048576))]
    pub text: Option<String>,
    /// The html body template; values are HTML-escaped (`{{{raw}}}` opts out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1048576))]
    pub html: Option<String>,
    /// Data the template must render with, strictly, as a message's `data`
    /// would supply it, e.g. `{name: Ann, items: []}`. The controller
    /// renders every part with it when the template changes: a variable
    /// it lacks makes `Valid` False naming the part and the variable, so a
    /// mistake shows at apply rather than when a message is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::free_form_object")]
    pub example_data: Option<serde_json::Value>,
}

/// Whether the templates parse.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EmailTemplateStatus {
    /// `Valid` (and `Ready`, the same, for kstatus) is True when every part
    /// parses and renders strictly with `exampleData` (reason Parsed), else
    /// False (reason InvalidTemplate, naming the part, the line and column
    /// or the missing variable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
