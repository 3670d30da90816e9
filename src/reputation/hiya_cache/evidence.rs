//! The local cache's answer as evidence carries it: its fields typed, and
//! written as the JSON object the history, the API and the console show.
//!
//! Why typed: the answer is built on the packet path for every listed
//! caller, where a `serde_json::Value` costs an eight-key map and a dozen
//! allocations, and as much again for the history writer to write out and
//! drop. [`crate::reputation::Raw`] turns it into a `Value` only when
//! something reads it as one.

use serde::Serialize;

/// One Hiya cache entry's fields, as `Evidence::raw` holds them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HiyaRaw {
    // In alphabetical order, the order serde_json gives an object's keys:
    // the history holds the same text as when this was a JSON object.
    pub category: Option<String>,
    pub category_id: Option<u32>,
    pub description: String,
    pub detail: String,
    pub display_name: String,
    pub generation: String,
    pub image: String,
    pub level: &'static str,
}

impl HiyaRaw {
    /// A string field by its JSON name; `None` for a null or a number.
    pub fn str_field(&self, key: &str) -> Option<&str> {
        match key {
            "category" => self.category.as_deref(),
            "description" => Some(&self.description),
            "detail" => Some(&self.detail),
            "display_name" => Some(&self.display_name),
            "generation" => Some(&self.generation),
            "image" => Some(&self.image),
            "level" => Some(self.level),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HiyaRaw {
        HiyaRaw {
            category: Some("Telemarketer".into()),
            category_id: Some(7),
            description: "Calls about \"warranties\"".into(),
            detail: String::new(),
            display_name: "Acme <Sales>".into(),
            generation: "g1764547200000".into(),
            image: String::new(),
            level: "SPAM",
        }
    }

    #[test]
    fn serializes_as_the_json_object_the_history_has_always_held() {
        let h = sample();
        let as_value = serde_json::json!({
            "level": h.level,
            "category_id": h.category_id,
            "category": h.category,
            "display_name": h.display_name,
            "description": h.description,
            "detail": h.detail,
            "image": h.image,
            "generation": h.generation,
        });
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            serde_json::to_string(&as_value).unwrap(),
            "same keys, same order, same escaping"
        );
        let none = HiyaRaw {
            category: None,
            category_id: None,
            ..h
        };
        let text = serde_json::to_string(&none).unwrap();
        assert!(
            text.contains(r#""category":null,"category_id":null"#),
            "{text}"
        );
    }

    #[test]
    fn string_fields_are_read_by_their_json_names() {
        let h = sample();
        assert_eq!(h.str_field("level"), Some("SPAM"));
        assert_eq!(h.str_field("display_name"), Some("Acme <Sales>"));
        assert_eq!(h.str_field("category"), Some("Telemarketer"));
        assert_eq!(h.str_field("category_id"), None, "a number");
        assert_eq!(h.str_field("nonesuch"), None);
    }
}
