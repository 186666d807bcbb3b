//! Annotation templates: text with `{{ $labels.<name> }}` and `{{ $value }}`
//! (the spelling Prometheus and Alertmanager users know), checked when the
//! rules file is read so that a typo is an error there, not at 3 a.m.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Label(String),
    Value,
}

/// A checked annotation template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`; the error says what to write instead.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| "a \"{{\" without its \"}}\"".to_owned())?;
            let reference = after[..close].trim();
            parts.push(if reference == "$value" {
                Part::Value
            } else if let Some(label) = reference.strip_prefix("$labels.") {
                if label.is_empty()
                    || !label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(format!("\"{reference}\" is not a label name"));
                }
                Part::Label(label.to_owned())
            } else {
                return Err(format!(
                    "unknown reference \"{{{{ {reference} }}}}\": use {{{{ $labels.<name> }}}} or {{{{ $value }}}}"
                ));
            });
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The text for an alert with `labels` and `value`; a label the alert
    /// does not have renders empty.
    pub fn render(&self, labels: &BTreeMap<String, String>, value: f64) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Label(name) => out.push_str(labels.get(name).map_or("", String::as_str)),
                Part::Value => out.push_str(&value.to_string()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_value_render_and_typos_are_refused() {
        let t = Template::parse("CPU of {{ $labels.host }} at {{$value}}%").unwrap();
        let labels = BTreeMap::from([("host".to_owned(), "web-1".to_owned())]);
        assert_eq!(t.render(&labels, 93.5), "CPU of web-1 at 93.5%");
        assert_eq!(t.render(&BTreeMap::new(), 1.0), "CPU of  at 1%");
        assert_eq!(
            Template::parse("{{ $label.host }}").unwrap_err(),
            "unknown reference \"{{ $label.host }}\": use {{ $labels.<name> }} or {{ $value }}"
        );
        assert!(
            Template::parse("{{ $value")
                .unwrap_err()
                .contains("without")
        );
        assert!(Template::parse("{{ $labels.a-b }}").is_err());
        assert_eq!(
            Template::parse("plain").unwrap().render(&labels, 0.0),
            "plain"
        );
    }
}
