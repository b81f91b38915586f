//! The checked-in OpenAPI document is the one the code generates.

use std::path::PathBuf;

use aloft_control::Control;

/// Set to `1` to rewrite the checked-in document (what `cargo xtask openapi` does).
const UPDATE_ENV: &str = "ALOFT_UPDATE_OPENAPI";

fn document_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../openapi/aloft.json")
}

#[test]
fn the_checked_in_openapi_document_is_current() {
    let mut generated = serde_json::to_string_pretty(&Control::openapi()).unwrap();
    generated.push('\n');
    let path = document_path();
    if std::env::var(UPDATE_ENV).is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} cannot be read ({e}); run `cargo xtask openapi`",
            path.display()
        )
    });
    assert!(
        checked_in == generated,
        "{} differs from what the code generates: run `cargo xtask openapi` and commit the result",
        path.display()
    );
}

#[test]
fn the_document_describes_fly_s_machine_endpoints() {
    let document = serde_json::to_value(Control::openapi()).unwrap();
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/v1/apps",
        "/v1/apps/{app}",
        "/v1/apps/{app}/machines",
        "/v1/apps/{app}/machines/{id}",
        "/v1/apps/{app}/machines/{id}/start",
        "/v1/apps/{app}/machines/{id}/stop",
        "/v1/apps/{app}/machines/{id}/wait",
        "/v1/apps/{app}/machines/{id}/lease",
        "/v1/apps/{app}/machines/{id}/exec",
        "/v1/apps/{app}/secrets",
        "/v1/apps/{app}/volumes/{id}/extend",
        "/v1/tokens",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} is missing from the document"
        );
    }
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for schema in [
        "MachineConfig",
        "MachineResponse",
        "MachineRequest",
        "ErrorBody",
        "VolumeResponse",
    ] {
        assert!(schemas.contains_key(schema), "schema {schema} is missing");
    }
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}
