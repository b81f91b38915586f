//! `aloft dig`: what the private network's DNS answers an app's machines.

use crate::Failure;
use crate::api::client;
use crate::output::Output;

/// `aloft dig [TYPE] NAME`: one or two words, the type first when there are two.
pub(crate) fn type_and_name(words: &[String]) -> anyhow::Result<(String, String)> {
    match words {
        [name] => Ok(("AAAA".to_owned(), name.clone())),
        [kind, name] => Ok((kind.to_ascii_uppercase(), name.clone())),
        _ => anyhow::bail!("give a NAME, or a TYPE and a NAME (aloft dig TXT vms.my-app.internal)"),
    }
}

pub(crate) async fn dig(
    words: &[String],
    app: &str,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let (kind, name) = type_and_name(words)?;
    let answer = client()?
        .dig(app, &name, &kind)
        .await
        .map_err(anyhow::Error::from)?;
    if json {
        out.json(&answer)?;
        return Ok(());
    }
    let mut text = format!(
        ";; {kind} {name} as a machine of {app} asks: status {}\n",
        answer.status
    );
    for (title, records) in [
        ("ANSWER", &answer.answers),
        ("AUTHORITY", &answer.authority),
    ] {
        if !records.is_empty() {
            text.push_str(&format!("\n;; {title} SECTION:\n"));
        }
        for record in records {
            text.push_str(&format!(
                "{}\t{}\tIN\t{}\t{}\n",
                record.name, record.ttl, record.record_type, record.data
            ));
        }
    }
    out.data(text.trim_end());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_comes_first_and_defaults_to_aaaa() {
        let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            type_and_name(&words(&["web.internal"])).unwrap(),
            ("AAAA".to_owned(), "web.internal".to_owned())
        );
        assert_eq!(
            type_and_name(&words(&["txt", "vms.web.internal"])).unwrap(),
            ("TXT".to_owned(), "vms.web.internal".to_owned())
        );
        assert!(type_and_name(&words(&["a", "b", "c"])).is_err());
    }
}
