//! Plain aligned tables for listings (`--json` prints the API's own JSON instead).

/// Renders `rows` under `headers`, columns padded to their widest cell.
pub(crate) fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(index) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                format!(
                    "{cell:<width$}",
                    width = widths.get(i).copied().unwrap_or(0)
                )
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    if rows.is_empty() {
        // Headers alone read as a broken listing.
        return "(none)\n".to_owned();
    }
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// An image reference short enough for a table: an image id (`sha256:<64 hex>`) as its
/// first 12 hex digits, a digest reference (`name@sha256:...`) with 12 digits kept.
pub(crate) fn short_image(image: &str) -> String {
    const SHOWN: usize = 12;
    if let Some(hex) = image.strip_prefix("sha256:") {
        return hex.chars().take(SHOWN).collect();
    }
    if let Some((name, hex)) = image.split_once("@sha256:") {
        return format!(
            "{name}@sha256:{}",
            hex.chars().take(SHOWN).collect::<String>()
        );
    }
    image.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_and_empty_tables_are_short() {
        let id = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(short_image(&id), "abababababab");
        assert_eq!(
            short_image(&format!("registry/app@{id}")),
            "registry/app@sha256:abababababab"
        );
        assert_eq!(short_image("busybox:1"), "busybox:1");
        assert_eq!(render(&["ID"], &[]), "(none)\n");
    }

    #[test]
    fn columns_line_up() {
        let table = render(
            &["ID", "STATE"],
            &[
                vec!["abc".into(), "started".into()],
                vec!["a".into(), "stopped".into()],
            ],
        );
        assert_eq!(table, "ID   STATE\nabc  started\na    stopped\n");
    }
}
