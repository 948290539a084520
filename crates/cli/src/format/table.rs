//! The docker CLI's list rendering (`formatter.Context.Write`): a `table`
//! prefix turns on a header row and column alignment with Go's tabwriter
//! settings (minwidth 10, padding 3, pad with spaces); other formats are
//! executed once per row.

use std::io::Write;

use serde_json::Value;

use super::template::{Mode, Template};

/// The quiet format every list command uses with `-q`.
pub const QUIET_FORMAT: &str = "{{.ID}}";

/// Renders rows (one JSON object of display fields each) with a user or
/// default format; `header` maps each field name to its column title.
pub fn render_list(format: &str, header: &Value, rows: &[Value]) -> Result<String, String> {
    render_rows(format, header, rows).map_err(|e| format!("template parsing error: {e}"))
}

fn render_rows(format: &str, header: &Value, rows: &[Value]) -> Result<String, String> {
    let is_table = format.starts_with("table");
    let body = if is_table {
        &format["table".len()..]
    } else {
        format
    };
    let body = body
        .trim_matches(' ')
        .replace("\\t", "\t")
        .replace("\\n", "\n");
    let template = Template::parse(&body)?;

    let mut lines = String::new();
    for row in rows {
        lines.push_str(&template.execute(row, Mode::Strict)?);
        lines.push('\n');
    }
    if !is_table {
        return Ok(lines);
    }
    let mut table = template.execute(header, Mode::Header)?;
    table.push('\n');
    table.push_str(&lines);
    Ok(align(&table))
}

/// Aligns tab-separated cells exactly as Go's
/// `tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)` does. The tabwriter crate adds
/// the padding after applying minwidth while Go applies minwidth to the padded
/// cell, so minwidth here is Go's minus the padding.
pub fn align(text: &str) -> String {
    let mut writer = tabwriter::TabWriter::new(Vec::new())
        .minwidth(10 - 3)
        .padding(3);
    // Writing into a Vec cannot fail.
    let _ = writer.write_all(text.as_bytes());
    let _ = writer.flush();
    String::from_utf8_lossy(&writer.into_inner().unwrap_or_default()).into_owned()
}

/// Builds the header object from (field, title) pairs.
pub fn header(pairs: &[(&str, &str)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(field, title)| (field.to_string(), Value::String(title.to_string())))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_matches_go_tabwriter() {
        let head = header(&[("ID", "ID"), ("Name", "NAME")]);
        let rows = vec![
            json!({"ID": "abc", "Name": "web"}),
            json!({"ID": "0123456789abcdef", "Name": "x"}),
        ];
        let out = render_list("table {{.ID}}\t{{.Name}}", &head, &rows).unwrap();
        assert_eq!(
            out,
            "ID                 NAME\nabc                web\n0123456789abcdef   x\n"
        );
    }

    #[test]
    fn short_columns_take_minwidth() {
        let head = header(&[("A", "A"), ("B", "B")]);
        let out = render_list(
            "table {{.A}}\t{{.B}}",
            &head,
            &[json!({"A": "x", "B": "y"})],
        )
        .unwrap();
        assert_eq!(out, "A         B\nx         y\n");
    }

    #[test]
    fn empty_table_prints_header() {
        let head = header(&[("ID", "ID"), ("Name", "NAME")]);
        assert_eq!(
            render_list("table {{.ID}}\t{{.Name}}", &head, &[]).unwrap(),
            "ID        NAME\n"
        );
    }

    #[test]
    fn plain_format_has_no_header() {
        let head = header(&[("ID", "ID")]);
        let rows = vec![json!({"ID": "a"}), json!({"ID": "b"})];
        assert_eq!(render_list("{{.ID}}", &head, &rows).unwrap(), "a\nb\n");
        assert_eq!(
            render_list("{{.ID}}\\t|", &head, &rows).unwrap(),
            "a\t|\nb\t|\n"
        );
    }
}
