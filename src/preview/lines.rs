//! The line a field is on in a message's YAML: errors name a field
//! (`spec.recipients[2].to`, `spec.templateRef ("welcome")`); the CLI adds
//! the line, found by walking the field's keys through the document's
//! indentation.

/// The 1-based line in `text` of the field `error` names first, if found.
pub fn line_of(text: &str, error: &str) -> Option<usize> {
    let path = error.split([':', ' ']).next()?.trim();
    if !path.starts_with("spec") {
        return None;
    }
    let keys: Vec<(String, Option<usize>)> = path
        .split('.')
        .map(|part| match part.split_once('[') {
            Some((key, index)) => (key.to_string(), index.trim_end_matches(']').parse().ok()),
            None => (part.to_string(), None),
        })
        .collect();
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    let mut indent: Option<usize> = None;
    let mut found = None;
    for (key, index) in keys {
        let at = (from..lines.len()).find(|&i| {
            let line = lines[i];
            let own = line.len() - line.trim_start().len();
            indent.is_none_or(|outer| own > outer)
                && line
                    .trim_start()
                    .trim_start_matches("- ")
                    .starts_with(&format!("{key}:"))
        })?;
        found = Some(at);
        let own = lines[at].len() - lines[at].trim_start().len();
        indent = Some(own);
        from = at + 1;
        if let Some(index) = index {
            // The index-th list item after the key.
            let items: Vec<usize> = (from..lines.len())
                .take_while(|&i| {
                    let line = lines[i];
                    line.trim().is_empty()
                        || line.len() - line.trim_start().len() > own
                        || line.trim_start().starts_with("- ")
                })
                .filter(|&i| lines[i].trim_start().starts_with("- "))
                .collect();
            let item = *items.get(index)?;
            found = Some(item);
            from = item;
            // The item's first key is on its own `- ` line.
            let item_indent = lines[item].len() - lines[item].trim_start().len();
            indent = item_indent.checked_sub(1);
        }
    }
    found.map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &str = "apiVersion: mailroom.dev/v1alpha1
kind: EmailMessage
metadata:
  name: news
spec:
  providerRef:
    name: mailpit
  templateRef:
    name: monthly-news
  recipients:
    - to: alice@example.org
    - to: bob@example.org
      data: {name: Bob}
";

    #[test]
    fn a_field_is_found_through_keys_and_list_items() {
        assert_eq!(
            line_of(MESSAGE, "spec.templateRef (\"monthly-news\"): x"),
            Some(8)
        );
        assert_eq!(
            line_of(MESSAGE, "spec.recipients[1].to: not an address"),
            Some(12)
        );
        assert_eq!(line_of(MESSAGE, "spec.subject: missing"), None);
        assert_eq!(line_of(MESSAGE, "no field here"), None);
    }
}
