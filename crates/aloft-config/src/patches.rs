//! Legacy forms rewritten to today's, the way flyctl does (`internal/appconfig/patches.go`),
//! each with a warning that names the modern spelling. Runs on the tree before decoding, so
//! spans keep pointing at what the user wrote.
//!
//! Values of a shape no rewrite knows are left alone for the decoder to report.

use crate::diagnostic::Diagnostic;
use crate::source::Span;
use crate::tree::{Key, KeyPath, Node, Value, path};

/// Applies every rewrite to the root table.
pub(crate) fn apply(root: &mut Node, out: &mut Vec<Diagnostic>) {
    if root.as_table().is_none() {
        return;
    }
    string_map(
        root,
        "env",
        &path!["env"],
        "environment values are strings",
        out,
    );
    services(root, out);
    processes(root, out);
    experimental(root, out);
    top_level_checks(root, out);
    merge_arrays(root, &["compute", "computes"], "vm", out);
    merge_arrays(root, &["mount"], "mounts", out);
    merge_arrays(root, &["metric"], "metrics", out);
    mounts(root, out);
    build(root, out);
    http_service(root, out);
}

fn key(name: &str, span: Span) -> Key {
    Key {
        name: name.to_owned(),
        span,
    }
}

/// Wraps a single table into a one-element array, as flyctl's `ensureArrayOfMap` does.
fn ensure_array(node: &mut Node) {
    if node.as_table().is_some() {
        let span = node.span;
        let table = std::mem::replace(node, Node::new(Value::Null, span));
        *node = Node::new(Value::Array(vec![table]), span);
    }
}

/// The tables of an array (other items are left for the decoder).
fn tables_mut(node: &mut Node) -> impl Iterator<Item = (usize, &mut Node)> {
    let items: &mut [Node] = match &mut node.value {
        Value::Array(items) => items,
        _ => &mut [],
    };
    items
        .iter_mut()
        .enumerate()
        .filter(|(_, item)| item.as_table().is_some())
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Int(number) => Some(number.to_string()),
        Value::Float(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Datetime(text) => Some(text.clone()),
        _ => None,
    }
}

/// A table of strings in which numbers and booleans were written: they become strings.
/// An array of such tables (a Nomad-era form) is merged into one.
fn string_map(parent: &mut Node, name: &str, at: &KeyPath, why: &str, out: &mut Vec<Diagnostic>) {
    let Some(node) = parent.get_mut(name) else {
        return;
    };
    if let Value::Array(items) = &node.value
        && items.iter().all(|item| item.as_table().is_some())
    {
        let mut merged = Vec::new();
        for item in items {
            for (key, value) in item.as_table().into_iter().flatten() {
                merged.retain(|(k, _): &(Key, Node)| k.name != key.name);
                merged.push((key.clone(), value.clone()));
            }
        }
        out.push(
            Diagnostic::warning(
                at.clone(),
                "a list of tables here is a legacy form; the tables were merged",
            )
            .with_help(format!("write a single `[{at}]` table"))
            .at(node.span),
        );
        *node = Node::table(merged, node.span);
    }
    for (key, value) in node.as_table_mut().into_iter().flatten() {
        if let Some(text) = scalar_text(&value.value) {
            out.push(
                Diagnostic::warning(
                    at.child(key.name.as_str()),
                    format!(
                        "{} is not a string; {why}, so it was read as \"{text}\"",
                        value.value.kind()
                    ),
                )
                .with_help(format!("write `{} = \"{text}\"`", key.name))
                .at(value.span),
            );
            value.value = Value::String(text);
        }
    }
}

/// A number written as a string (`port = "443"`) becomes a number, as flyctl's `castToInt`.
fn integer_from_string(table: &mut Node, name: &str, at: &KeyPath, out: &mut Vec<Diagnostic>) {
    let Some(node) = table.get_mut(name) else {
        return;
    };
    let Value::String(text) = &node.value else {
        return;
    };
    let Ok(number) = text.trim().parse::<i64>() else {
        return;
    };
    out.push(
        Diagnostic::warning(
            at.child(name),
            format!("the port is written as a string (\"{text}\")"),
        )
        .with_help(format!("write `{name} = {number}`"))
        .at(node.span),
    );
    node.value = Value::Int(number);
}

/// `auto_stop_machines = true/false` is read as `"stop"`/`"off"`.
fn auto_stop(table: &mut Node, at: &KeyPath, out: &mut Vec<Diagnostic>) {
    let Some(node) = table.get_mut("auto_stop_machines") else {
        return;
    };
    let Value::Bool(flag) = node.value else {
        return;
    };
    let modern = if flag { "stop" } else { "off" };
    out.push(
        Diagnostic::warning(
            at.child("auto_stop_machines"),
            format!("a boolean here is a legacy form; `{flag}` means \"{modern}\""),
        )
        .with_help(format!("write `auto_stop_machines = \"{modern}\"`"))
        .at(node.span),
    );
    node.value = Value::String(modern.to_owned());
}

/// Removes a key that has no effect on machines apps, with a warning saying so.
fn drop_legacy(table: &mut Node, name: &str, at: &KeyPath, why: &str, out: &mut Vec<Diagnostic>) {
    if let Some((key, _)) = table.remove(name) {
        out.push(
            Diagnostic::warning(
                at.child(name),
                format!("`{name}` is a legacy key and is ignored: {why}"),
            )
            .with_help(format!("remove `{name}`"))
            .at(key.span),
        );
    }
}

fn services(root: &mut Node, out: &mut Vec<Diagnostic>) {
    let Some(node) = root.get_mut("services") else {
        return;
    };
    ensure_array(node);
    if let Value::Array(items) = &mut node.value {
        let mut index = 0;
        items.retain(|item| {
            let keep = !matches!(&item.value, Value::Table(entries) if entries.is_empty());
            if !keep {
                out.push(
                    Diagnostic::warning(path!["services", index], "empty `[[services]]` entry ignored")
                        .with_help("remove the empty `[[services]]` header, or give it an internal_port and ports")
                        .at(item.span),
                );
            }
            index += 1;
            keep
        });
    }
    for (index, service) in tables_mut(node) {
        let at = path!["services", index];
        concurrency_string(service, &at, out);
        integer_from_string(service, "internal_port", &at, out);
        auto_stop(service, &at, out);
        if let Some(ports) = service.get_mut("ports") {
            ensure_array(ports);
            for (port_index, port) in tables_mut(ports) {
                let port_at = at.child("ports").child(port_index);
                for name in ["port", "start_port", "end_port"] {
                    integer_from_string(port, name, &port_at, out);
                }
            }
        }
        for kind in ["tcp_checks", "http_checks"] {
            service_checks(service, kind, &at, out);
        }
        drop_legacy(
            service,
            "script_checks",
            &at,
            "script checks ran on Nomad hosts; use [checks] or [[services.machine_checks]]",
            out,
        );
    }
}

/// `concurrency = "20,25"` (soft,hard) becomes a `requests` concurrency table.
fn concurrency_string(service: &mut Node, at: &KeyPath, out: &mut Vec<Diagnostic>) {
    let Some(node) = service.get_mut("concurrency") else {
        return;
    };
    let Value::String(text) = &node.value else {
        return;
    };
    let span = node.span;
    let at = at.child("concurrency");
    let parsed = text.split_once(',').and_then(|(soft, hard)| {
        Some((
            soft.trim().parse::<i64>().ok()?,
            hard.trim().parse::<i64>().ok()?,
        ))
    });
    match parsed {
        Some((soft, hard)) => {
            out.push(
                Diagnostic::warning(at, format!("concurrency as a string (\"{text}\") is a legacy form"))
                    .with_help(format!(
                        "write `concurrency = {{ type = \"requests\", soft_limit = {soft}, hard_limit = {hard} }}`"
                    ))
                    .at(span),
            );
            *node = Node::table(
                vec![
                    (key("type", span), Node::new(Value::String("requests".to_owned()), span)),
                    (key("hard_limit", span), Node::new(Value::Int(hard), span)),
                    (key("soft_limit", span), Node::new(Value::Int(soft), span)),
                ],
                span,
            );
        }
        None => out.push(
            Diagnostic::error(at, format!("invalid concurrency {text:?}"))
                .with_help("write a table: `concurrency = { type = \"connections\", soft_limit = 20, hard_limit = 25 }`")
                .at(span),
        ),
    }
}

fn service_checks(service: &mut Node, kind: &str, at: &KeyPath, out: &mut Vec<Diagnostic>) {
    let Some(node) = service.get_mut(kind) else {
        return;
    };
    ensure_array(node);
    if matches!(&node.value, Value::Array(items) if items.is_empty()) {
        service.remove(kind);
        return;
    }
    for (index, check) in tables_mut(node) {
        let check_at = at.child(kind).child(index);
        check_fields(check, &check_at, out);
        drop_legacy(
            check,
            "port",
            &check_at,
            "service checks always connect to the service's internal_port",
            out,
        );
    }
}

/// What every kind of check shares: durations in milliseconds, header forms, restart_limit.
fn check_fields(check: &mut Node, at: &KeyPath, out: &mut Vec<Diagnostic>) {
    for name in ["interval", "timeout", "grace_period"] {
        if let Some(node) = check.get_mut(name) {
            let millis = match node.value {
                Value::Int(number) => Some(number.to_string()),
                Value::Float(number) if number.is_finite() => Some(number.to_string()),
                _ => None,
            };
            if let Some(millis) = millis {
                node.value = Value::String(format!("{millis}ms"));
            }
        }
    }
    headers(check, at, out);
    drop_legacy(
        check,
        "restart_limit",
        at,
        "checks never restart machines; use [[restart]] for restart policy",
        out,
    );
}

/// Check headers as `[{ name, value }]` (the API's form) become a table; empty ones go.
fn headers(check: &mut Node, at: &KeyPath, out: &mut Vec<Diagnostic>) {
    let at = at.child("headers");
    let Some(node) = check.get_mut("headers") else {
        return;
    };
    if let Value::Array(items) = &node.value {
        let mut entries = Vec::new();
        for (index, item) in items.iter().enumerate() {
            match item.get("name").and_then(Node::as_str) {
                Some(name) => {
                    let value = item
                        .get("value")
                        .cloned()
                        .unwrap_or_else(|| Node::new(Value::String(String::new()), item.span));
                    entries.push((key(name, item.span), value));
                }
                // `[[...headers]]` with `Name = "value"` lines: an array of tables where a
                // table is meant; flyctl reads the pairs, and so do we.
                None if item.as_table().is_some_and(|t| !t.is_empty()) => {
                    out.push(
                        Diagnostic::warning(
                            at.child(index),
                            "check headers written as an array of tables (`[[...headers]]`); read as one table (`--strict` refuses it)",
                        )
                        .with_help("write `[services.http_checks.headers]`, with one pair of brackets")
                        .at(item.span),
                    );
                    entries.extend(item.as_table().into_iter().flatten().cloned());
                }
                None => {
                    out.push(
                        Diagnostic::error(
                            at.child(index),
                            "check headers must be a table of `Name = \"value\"` pairs",
                        )
                        .with_help("write `[services.http_checks.headers]` (one pair of brackets) followed by `Name = \"value\"` lines")
                        .at(item.span),
                    );
                    check.remove("headers");
                    return;
                }
            }
        }
        *node = Node::table(entries, node.span);
    }
    if matches!(&node.value, Value::Table(entries) if entries.is_empty()) {
        check.remove("headers");
        return;
    }
    let mut parent = Node::table(vec![(key("headers", node.span), node.clone())], node.span);
    string_map(
        &mut parent,
        "headers",
        &at,
        "header values are strings",
        out,
    );
    if let Some((_, patched)) = parent.remove("headers") {
        *node = patched;
    }
}

fn processes(root: &mut Node, out: &mut Vec<Diagnostic>) {
    let Some(node) = root.get_mut("processes") else {
        return;
    };
    let Value::Array(items) = &node.value else {
        return;
    };
    let span = node.span;
    if items.is_empty() {
        root.remove("processes");
        out.push(
            Diagnostic::warning(
                path!["processes"],
                "`processes = []` is a legacy form and is ignored",
            )
            .with_help("remove it, or name process groups in a `[processes]` table")
            .at(span),
        );
        return;
    }
    let mut entries = Vec::new();
    for item in items {
        if let Some(name) = item.get("name").and_then(Node::as_str) {
            let command = item
                .get("command")
                .cloned()
                .unwrap_or_else(|| Node::new(Value::String(String::new()), item.span));
            entries.push((key(name, item.span), command));
        }
    }
    out.push(
        Diagnostic::warning(
            path!["processes"],
            "a list of `{ name, command }` here is a legacy form",
        )
        .with_help("write a `[processes]` table of `name = \"command\"`")
        .at(span),
    );
    *node = Node::table(entries, span);
}

fn experimental(root: &mut Node, out: &mut Vec<Diagnostic>) {
    let at = path!["experimental"];
    let Some(mut section) = root.remove("experimental") else {
        return;
    };
    if section.1.as_table().is_none() {
        root.insert(section.0, section.1);
        return;
    }
    let table = &mut section.1;
    for name in ["cmd", "entrypoint", "exec"] {
        if let Some(node) = table.get_mut(name)
            && let Value::String(text) = &node.value
        {
            out.push(
                Diagnostic::warning(
                    at.child(name),
                    "a string here is read as a one-element list",
                )
                .with_help(format!(
                    "write `{name} = [{text:?}]`, or split the words into a list"
                ))
                .at(node.span),
            );
            let span = node.span;
            node.value = Value::Array(vec![Node::new(Value::String(text.clone()), span)]);
        }
    }
    if let Some((key, value)) = table.remove("kill_timeout") {
        let moved = root.get("kill_timeout").is_none();
        out.push(
            Diagnostic::warning(
                at.child("kill_timeout"),
                if moved {
                    "`[experimental] kill_timeout` is a legacy key; it was read as the top-level `kill_timeout`"
                } else {
                    "`[experimental] kill_timeout` is a legacy key and is ignored: the top-level `kill_timeout` is set"
                },
            )
            .with_help("move it to the top level: `kill_timeout = ...` before any [section]")
            .at(key.span),
        );
        if moved {
            root.insert(
                Key {
                    name: "kill_timeout".to_owned(),
                    span: key.span,
                },
                value,
            );
        }
    }
    let mut metrics = Vec::new();
    for name in ["metrics_port", "metrics_path"] {
        if let Some((key, value)) = table.remove(name) {
            out.push(
                Diagnostic::warning(
                    at.child(name),
                    format!(
                        "`[experimental] {name}` is a legacy key; it was read as `[metrics] {}`",
                        &name[8..]
                    ),
                )
                .with_help(format!(
                    "write it as `{}` in a `[metrics]` section",
                    &name[8..]
                ))
                .at(key.span),
            );
            metrics.push((
                Key {
                    name: name[8..].to_owned(),
                    span: key.span,
                },
                value,
            ));
        }
    }
    if !metrics.is_empty() && root.get("metrics").is_none() && root.get("metric").is_none() {
        let span = metrics[0].0.span;
        root.insert(key("metrics", span), Node::table(metrics, span));
    }
    for (name, why) in [
        (
            "allowed_public_ports",
            "public ports come from [[services]] and [http_service]",
        ),
        (
            "private_network",
            "every machine is on its organization's private network",
        ),
    ] {
        drop_legacy(table, name, &at, why, out);
    }
    if !matches!(&section.1.value, Value::Table(entries) if entries.is_empty()) {
        root.insert(section.0, section.1);
    }
}

fn top_level_checks(root: &mut Node, out: &mut Vec<Diagnostic>) {
    let Some(node) = root.get_mut("checks") else {
        return;
    };
    if let Value::Array(items) = &node.value
        && items
            .iter()
            .all(|item| item.get("name").and_then(Node::as_str).is_some())
    {
        let entries = items
            .iter()
            .filter_map(|item| {
                let name = item.get("name")?.as_str()?.to_owned();
                let mut check = item.clone();
                check.remove("name");
                Some((key(&name, item.span), check))
            })
            .collect();
        out.push(
            Diagnostic::warning(path!["checks"], "a list of named checks is a legacy form")
                .with_help("write each check as a `[checks.<name>]` table")
                .at(node.span),
        );
        *node = Node::table(entries, node.span);
    }
    // Nomad-era `script` checks: machines have no such check; flyctl deploys the file
    // and the check never runs. Said so, and left out.
    if let Some(entries) = node.as_table_mut() {
        entries.retain(|(name, check)| {
            let script = check.get("type").and_then(Node::as_str) == Some("script");
            if script {
                out.push(
                    Diagnostic::warning(
                        path!["checks", name.name.as_str(), "type"],
                        "script checks ran on Nomad hosts and machines have none: this check is not run (`--strict` refuses it)",
                    )
                    .with_help("use an `http` or `tcp` check")
                    .at(check.get("type").map_or(name.span, |t| t.span)),
                );
            }
            !script
        });
    }
    for (name, check) in node.as_table_mut().into_iter().flatten() {
        if check.as_table().is_some() {
            check_fields(check, &path!["checks", name.name.as_str()], out);
        }
    }
    if matches!(&node.value, Value::Table(entries) if entries.is_empty()) {
        root.remove("checks");
    }
}

/// Collects the legacy names (`[compute]`, `[mount]`, `[[metric]]`) and the modern one,
/// each a table or an array of tables, into one array under the modern name.
fn merge_arrays(root: &mut Node, legacy: &[&str], modern: &str, out: &mut Vec<Diagnostic>) {
    let mut items = Vec::new();
    let mut first: Option<Span> = None;
    for name in legacy.iter().copied().chain([modern]) {
        let Some((found_key, node)) = root.remove(name) else {
            continue;
        };
        if name != modern {
            out.push(
                Diagnostic::warning(
                    path![name],
                    format!("`{name}` is a legacy name; it was read as `{modern}`"),
                )
                .with_help(format!("rename `[{name}]` to `[[{modern}]]`"))
                .at(found_key.span),
            );
        }
        match node.value {
            Value::Array(array) => items.extend(array),
            Value::Table(_) => items.push(node),
            // Not a table: left under the modern name for the decoder to report.
            _ => {
                root.insert(
                    Key {
                        name: modern.to_owned(),
                        span: found_key.span,
                    },
                    node,
                );
                return;
            }
        }
        first.get_or_insert(found_key.span);
    }
    if let Some(span) = first {
        root.insert(key(modern, span), Node::new(Value::Array(items), span));
    }
}

fn mounts(root: &mut Node, out: &mut Vec<Diagnostic>) {
    let Some(node) = root.get_mut("mounts") else {
        return;
    };
    for (index, mount) in tables_mut(node) {
        drop_legacy(
            mount,
            "encrypted",
            &path!["mounts", index],
            "encryption is chosen when the volume is created (`aloft volumes create`)",
            out,
        );
    }
}

fn build(root: &mut Node, out: &mut Vec<Diagnostic>) {
    let Some(build) = root.get_mut("build") else {
        return;
    };
    if build.as_table().is_none() {
        return;
    }
    if let Some((old, value)) = build.remove("build_target") {
        out.push(
            Diagnostic::warning(
                path!["build", "build_target"],
                "`build_target` is a legacy spelling",
            )
            .with_help("write `build-target`")
            .at(old.span),
        );
        if build.get("build-target").is_none() {
            build.insert(
                Key {
                    name: "build-target".to_owned(),
                    span: old.span,
                },
                value,
            );
        }
    }
    string_map(
        build,
        "args",
        &path!["build", "args"],
        "build arguments are strings",
        out,
    );
}

fn http_service(root: &mut Node, out: &mut Vec<Diagnostic>) {
    let at = path!["http_service"];
    let Some(service) = root.get_mut("http_service") else {
        return;
    };
    if service.as_table().is_none() {
        return;
    }
    integer_from_string(service, "internal_port", &at, out);
    auto_stop(service, &at, out);
    if let Some(checks) = service.get_mut("checks") {
        ensure_array(checks);
        for (index, check) in tables_mut(checks) {
            check_fields(check, &at.child("checks").child(index), out);
        }
    }
}
