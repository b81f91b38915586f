//! Fly's API contract as fly-go (Fly's own Go client, `flaps`) exercises it: each call
//! below sends the method, path, query and JSON body exactly as fly-go's source builds
//! them (zero values and nulls included, since Go sends them), and the answer must decode
//! into fly-go's field types. Run against the simulated platform (no Docker).

use serde_json::{Value, json};

use aloft_testplatform::SimPlatform;

/// A raw HTTP client for the API, as fly-go's `_sendRequest` is.
struct Raw {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Raw {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
        };
        (status, value)
    }

    /// Calls and expects a 2xx; returns the answer.
    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method.clone(), path, body.clone()).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} {body:?}: {status} {value}"
        );
        value
    }
}

/// Fields of fly-go's types and the JSON type Go decodes each from (`s` string, `n`
/// number, `b` bool, `o` object, `a` array): a value of another type fails Go's decoder.
fn decodes(what: &str, value: &Value, fields: &[(&str, char)]) {
    for (field, kind) in fields {
        let Some(found) = value.get(*field) else {
            continue;
        };
        let fits = match kind {
            's' => found.is_string() || found.is_null(),
            'n' => found.is_number() || found.is_null(),
            'b' => found.is_boolean() || found.is_null(),
            'o' => found.is_object() || found.is_null(),
            'a' => found.is_array() || found.is_null(),
            _ => false,
        };
        assert!(fits, "{what}.{field} is {found}, fly-go decodes a {kind}");
    }
}

const APP_FIELDS: &[(&str, char)] = &[
    ("id", 's'),
    ("name", 's'),
    ("internal_numeric_id", 'n'),
    ("network", 's'),
    ("status", 's'),
    ("machine_count", 'n'),
    ("volume_count", 'n'),
    ("organization", 'o'),
];

const MACHINE_FIELDS: &[(&str, char)] = &[
    ("id", 's'),
    ("name", 's'),
    ("state", 's'),
    ("region", 's'),
    ("image_ref", 'o'),
    ("instance_id", 's'),
    ("version", 's'),
    ("private_ip", 's'),
    ("created_at", 's'),
    ("updated_at", 's'),
    ("config", 'o'),
    ("events", 'a'),
    ("checks", 'a'),
    ("lease_nonce", 's'),
    ("host_status", 's'),
    ("incomplete_config", 'o'),
];

const VOLUME_FIELDS: &[(&str, char)] = &[
    ("id", 's'),
    ("name", 's'),
    ("state", 's'),
    ("size_gb", 'n'),
    ("region", 's'),
    ("zone", 's'),
    ("encrypted", 'b'),
    ("attached_machine_id", 's'),
    ("attached_alloc_id", 's'),
    ("created_at", 's'),
    ("host_dedication_id", 's'),
    ("snapshot_retention", 'n'),
    ("auto_backup_enabled", 'b'),
    ("fstype", 's'),
];

#[tokio::test]
async fn fly_go_calls_succeed_and_their_answers_decode() {
    use reqwest::Method;
    let platform = SimPlatform::start(1).await;
    let (base, token) = platform.api();
    let raw = Raw {
        http: aloft_testkit::http(),
        base,
        token,
    };

    // flaps.CreateApp: POST /apps?wait=true, {name, org_slug, network, app_role_id}.
    let app = raw
        .ok(
            Method::POST,
            "/apps?wait=true",
            Some(
                json!({"name": "gofly", "org_slug": "personal", "network": "", "app_role_id": ""}),
            ),
        )
        .await;
    decodes("App", &app, APP_FIELDS);
    let app = raw.ok(Method::GET, "/apps/gofly", None).await;
    decodes("App", &app, APP_FIELDS);
    assert_eq!(app["name"], "gofly");
    // flaps.ListApps: GET /apps?org_slug=personal ("personal" is the token's organization).
    let apps = raw.ok(Method::GET, "/apps?org_slug=personal", None).await;
    assert!(
        apps["apps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "gofly"),
        "{apps}"
    );

    // flaps.Launch: POST /apps/gofly/machines with LaunchMachineInput as Go marshals it.
    let machine = raw
        .ok(
            Method::POST,
            "/apps/gofly/machines",
            Some(json!({
                "config": {
                    "image": "sim/idle:1",
                    "env": {"A": "1"},
                    "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
                    "restart": {"policy": "on-failure", "max_retries": 3},
                    "metadata": {"fly_process_group": "app"},
                    "auto_destroy": false,
                    "dns": {},
                    "init": {}
                },
                "region": "",
                "skip_secrets": false
            })),
        )
        .await;
    decodes("Machine", &machine, MACHINE_FIELDS);
    let id = machine["id"].as_str().unwrap().to_owned();
    let machines = |path: &str| format!("/apps/gofly/machines{path}");

    // flaps.Wait: GET .../wait?state=started&timeout=60 (several states allowed).
    let waited = raw
        .ok(
            Method::GET,
            &machines(&format!("/{id}/wait?state=started&timeout=60")),
            None,
        )
        .await;
    decodes(
        "Wait",
        &waited,
        &[
            ("ok", 'b'),
            ("state", 's'),
            ("event_id", 's'),
            ("version", 's'),
        ],
    );
    raw.ok(
        Method::GET,
        &machines(&format!("/{id}/wait?state=started&state=stopped&timeout=5")),
        None,
    )
    .await;

    // flaps.List: GET .../machines and with a state filter.
    let listed = raw.ok(Method::GET, &machines(""), None).await;
    decodes("Machine", &listed[0], MACHINE_FIELDS);
    raw.ok(
        Method::GET,
        &machines("?include_deleted=false&state=started"),
        None,
    )
    .await;

    // Leases: POST .../lease?ttl=30 with no body, GET, DELETE with the nonce header.
    let lease = raw
        .ok(
            Method::POST,
            &machines(&format!("/{id}/lease?ttl=30")),
            None,
        )
        .await;
    decodes(
        "MachineLease",
        &lease,
        &[
            ("status", 's'),
            ("data", 'o'),
            ("message", 's'),
            ("code", 's'),
        ],
    );
    let nonce = lease["data"]["nonce"].as_str().unwrap().to_owned();
    let found = raw
        .ok(Method::GET, &machines(&format!("/{id}/lease")), None)
        .await;
    assert_eq!(found["data"]["nonce"], nonce.as_str(), "{found}");
    let released = raw
        .http
        .delete(format!(
            "{}/v1{}",
            raw.base,
            machines(&format!("/{id}/lease"))
        ))
        .bearer_auth(&raw.token)
        .header("fly-machine-lease-nonce", &nonce)
        .send()
        .await
        .unwrap();
    assert!(
        released.status().is_success(),
        "{}",
        released.text().await.unwrap()
    );

    // flaps.GetProcesses: GET .../ps, decoded as MachinePsResponse ([]ProcessStat); the
    // simulated runtime runs no host processes, so the list is empty (the end-to-end test
    // against Docker reads real ones).
    let processes = raw
        .ok(Method::GET, &machines(&format!("/{id}/ps")), None)
        .await;
    assert!(processes.is_array(), "{processes}");

    // Cordon and uncordon: POST with no body.
    raw.ok(Method::POST, &machines(&format!("/{id}/cordon")), None)
        .await;
    raw.ok(Method::POST, &machines(&format!("/{id}/uncordon")), None)
        .await;

    // flaps.Stop: {id, signal, timeout: "10s"}; flaps.Start: no body.
    raw.ok(
        Method::POST,
        &machines(&format!("/{id}/stop")),
        Some(json!({"id": id, "signal": "SIGTERM", "timeout": "10s"})),
    )
    .await;
    raw.ok(
        Method::GET,
        &machines(&format!("/{id}/wait?state=stopped&timeout=60")),
        None,
    )
    .await;
    let started = raw
        .ok(Method::POST, &machines(&format!("/{id}/start")), None)
        .await;
    decodes(
        "MachineStartResponse",
        &started,
        &[("message", 's'), ("status", 's'), ("previous_state", 's')],
    );
    raw.ok(
        Method::GET,
        &machines(&format!("/{id}/wait?state=started&timeout=60")),
        None,
    )
    .await;
    // flaps.Restart: the options in the query string.
    raw.ok(
        Method::POST,
        &machines(&format!(
            "/{id}/restart?force_stop=false&timeout=10s&signal=SIGTERM"
        )),
        None,
    )
    .await;
    raw.ok(
        Method::GET,
        &machines(&format!("/{id}/wait?state=started&timeout=60")),
        None,
    )
    .await;

    // flaps.Update: POST .../ID with LaunchMachineInput (skip_secrets, no id in the body).
    let updated = raw
        .ok(
            Method::POST,
            &machines(&format!("/{id}")),
            Some(json!({
                "config": {"image": "sim/idle:2", "metadata": {"fly_process_group": "app"}},
                "region": "sim",
                "skip_secrets": false
            })),
        )
        .await;
    decodes("Machine", &updated, MACHINE_FIELDS);

    // flaps.Exec: {cmd (one string), container, stdin, timeout}; the answer decodes as
    // MachineExecResponse.
    raw.ok(
        Method::GET,
        &machines(&format!("/{id}/wait?state=started&timeout=60")),
        None,
    )
    .await;
    let exec = raw
        .ok(
            Method::POST,
            &machines(&format!("/{id}/exec")),
            Some(json!({"cmd": "echo hello", "container": "", "timeout": 5})),
        )
        .await;
    decodes(
        "MachineExecResponse",
        &exec,
        &[("exit_code", 'n'), ("stdout", 's'), ("stderr", 's')],
    );
    assert_eq!(exec["stdout"], "echo hello\n", "{exec}");

    // Events decode as fly-go's MachineEvent.
    let got = raw
        .ok(Method::GET, &machines(&format!("/{id}")), None)
        .await;
    for event in got["events"].as_array().unwrap() {
        decodes(
            "MachineEvent",
            event,
            &[
                ("type", 's'),
                ("status", 's'),
                ("request", 'o'),
                ("source", 's'),
                ("timestamp", 'n'),
            ],
        );
    }

    // Metadata: SetMetadata ({value}), GetMetadata (a map), DeleteMetadata; in place, so
    // the machine keeps its version (no restart).
    let before = raw
        .ok(Method::GET, &machines(&format!("/{id}")), None)
        .await;
    raw.ok(
        Method::POST,
        &machines(&format!("/{id}/metadata/role")),
        Some(json!({"value": "primary"})),
    )
    .await;
    let metadata = raw
        .ok(Method::GET, &machines(&format!("/{id}/metadata")), None)
        .await;
    assert_eq!(metadata["role"], "primary", "{metadata}");
    assert_eq!(metadata["fly_process_group"], "app", "{metadata}");
    let after = raw
        .ok(Method::GET, &machines(&format!("/{id}")), None)
        .await;
    assert_eq!(
        after["instance_id"], before["instance_id"],
        "no new version"
    );
    assert_eq!(after["config"]["metadata"]["role"], "primary");
    raw.ok(
        Method::DELETE,
        &machines(&format!("/{id}/metadata/role")),
        None,
    )
    .await;
    let metadata = raw
        .ok(Method::GET, &machines(&format!("/{id}/metadata")), None)
        .await;
    assert!(metadata.get("role").is_none(), "{metadata}");
    // Fly's OpenAPI document: PATCH (and PUT) .../metadata sets and removes several keys
    // ({metadata, machine_version}; null or "" removes), 412 on another version; GET
    // .../metadata/{key} answers {value}.
    let version = after["version"].as_str().unwrap().to_owned();
    for method in [Method::PATCH, Method::PUT] {
        let (status, _) = raw
            .call(
                method.clone(),
                &machines(&format!("/{id}/metadata")),
                Some(json!({
                    "metadata": {"tier": "gold", "zone": "a", "fly_process_group": "app"},
                    "machine_version": version,
                })),
            )
            .await;
        assert_eq!(status, 204, "{method}");
    }
    let one = raw
        .ok(
            Method::GET,
            &machines(&format!("/{id}/metadata/tier")),
            None,
        )
        .await;
    assert_eq!(one, json!({"value": "gold"}));
    let (status, stale) = raw
        .call(
            Method::PATCH,
            &machines(&format!("/{id}/metadata")),
            Some(json!({"metadata": {"tier": "lead"}, "machine_version": "999"})),
        )
        .await;
    assert_eq!(status, 412, "{stale}");
    raw.ok(
        Method::PATCH,
        &machines(&format!("/{id}/metadata")),
        Some(json!({"metadata": {"tier": null, "zone": ""}})),
    )
    .await;
    let metadata = raw
        .ok(Method::GET, &machines(&format!("/{id}/metadata")), None)
        .await;
    assert!(
        metadata.get("tier").is_none() && metadata.get("zone").is_none(),
        "removed by null and by an empty value: {metadata}"
    );
    assert_eq!(metadata["fly_process_group"], "app", "{metadata}");
    let (status, _) = raw
        .call(
            Method::GET,
            &machines(&format!("/{id}/metadata/tier")),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let unchanged = raw
        .ok(Method::GET, &machines(&format!("/{id}")), None)
        .await;
    assert_eq!(
        unchanged["instance_id"], before["instance_id"],
        "no new version"
    );

    // Fly's OpenAPI document: GET .../memory {limit_mb, available_mb}; PUT {limit_mb}
    // changes the running machine's limit in place, within its size; reclaim is refused
    // (a container has no balloon).
    let memory = raw
        .ok(Method::GET, &machines(&format!("/{id}/memory")), None)
        .await;
    assert_eq!(memory, json!({"limit_mb": 256, "available_mb": 256}));
    let lowered = raw
        .ok(
            Method::PUT,
            &machines(&format!("/{id}/memory")),
            Some(json!({"limit_mb": 128})),
        )
        .await;
    assert_eq!(lowered, json!({"limit_mb": 128, "available_mb": 256}));
    let memory = raw
        .ok(Method::GET, &machines(&format!("/{id}/memory")), None)
        .await;
    assert_eq!(memory["limit_mb"], 128, "{memory}");
    for too in [1024, 16] {
        let (status, refused) = raw
            .call(
                Method::PUT,
                &machines(&format!("/{id}/memory")),
                Some(json!({"limit_mb": too})),
            )
            .await;
        assert_eq!(status, 400, "{refused}");
        assert!(
            refused["error"].as_str().unwrap().contains("64 to 256 MB"),
            "{refused}"
        );
    }
    let (status, refused) = raw
        .call(
            Method::POST,
            &machines(&format!("/{id}/memory/reclaim")),
            Some(json!({"amount_mb": 64})),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    let unchanged = raw
        .ok(Method::GET, &machines(&format!("/{id}")), None)
        .await;
    assert_eq!(
        unchanged["instance_id"], before["instance_id"],
        "no new version"
    );

    // flaps.Suspend: a container cannot be suspended; it stops, and the event says so.
    raw.ok(Method::POST, &machines(&format!("/{id}/suspend")), None)
        .await;
    raw.ok(
        Method::GET,
        &machines(&format!(
            "/{id}/wait?state=stopped&state=suspended&timeout=60"
        )),
        None,
    )
    .await;
    let suspended = raw
        .ok(Method::GET, &machines(&format!("/{id}")), None)
        .await;
    assert!(
        suspended["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "suspend"),
        "{suspended}"
    );
    raw.ok(Method::POST, &machines(&format!("/{id}/start")), None)
        .await;
    raw.ok(
        Method::GET,
        &machines(&format!("/{id}/wait?state=started&timeout=60")),
        None,
    )
    .await;
    // Started again, the machine runs under its size again.
    let memory = raw
        .ok(Method::GET, &machines(&format!("/{id}/memory")), None)
        .await;
    assert_eq!(memory["limit_mb"], 256, "{memory}");

    // flaps.Restart with force_stop=true kills the old run at once: a machine that
    // ignores its stop signal (with a 60 s kill timeout) is back within 10 s.
    let stubborn = raw
        .ok(
            Method::POST,
            "/apps/gofly/machines",
            Some(json!({
                "config": {
                    "image": "sim/idle:1",
                    "env": {"SIM_HANG_ON_STOP": "1"},
                    "stop_config": {"timeout": "60s"}
                },
                "region": ""
            })),
        )
        .await;
    let stubborn = stubborn["id"].as_str().unwrap().to_owned();
    raw.ok(
        Method::GET,
        &machines(&format!("/{stubborn}/wait?state=started&timeout=60")),
        None,
    )
    .await;
    let before = raw
        .ok(Method::GET, &machines(&format!("/{stubborn}")), None)
        .await;
    raw.ok(
        Method::POST,
        &machines(&format!("/{stubborn}/restart?force_stop=true")),
        None,
    )
    .await;
    let started = std::time::Instant::now();
    aloft_testkit::eventually(
        "the forced restart",
        std::time::Duration::from_secs(10),
        || async {
            let events = raw
                .ok(Method::GET, &machines(&format!("/{stubborn}/events")), None)
                .await;
            let exits = events
                .as_array()?
                .iter()
                .filter(|e| e["type"] == "exit")
                .count();
            let now = raw
                .ok(Method::GET, &machines(&format!("/{stubborn}")), None)
                .await;
            (exits >= 1 && now["state"] == "started").then_some(())
        },
    )
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(before["state"], "started");
    raw.ok(
        Method::DELETE,
        &machines(&format!("/{stubborn}?kill=true")),
        None,
    )
    .await;

    // Volumes: flaps.CreateVolume sends every pointer field, nil ones as null.
    let volume = raw
        .ok(
            Method::POST,
            "/apps/gofly/volumes",
            Some(json!({
                "name": "data", "region": "sim", "size_gb": 1, "encrypted": null,
                "require_unique_zone": null, "unique_zone_app_wide": null,
                "snapshot_retention": null, "auto_backup_enabled": null, "fstype": null,
                "snapshot_id": null, "source_volume_id": null, "compute": null
            })),
        )
        .await;
    decodes("Volume", &volume, VOLUME_FIELDS);
    // flaps.UpdateVolume: both fields, a nil one as null.
    let updated = raw
        .ok(
            Method::PUT,
            &format!("/apps/gofly/volumes/{}", volume["id"].as_str().unwrap()),
            Some(json!({ "snapshot_retention": 10, "auto_backup_enabled": null })),
        )
        .await;
    decodes("Volume", &updated, VOLUME_FIELDS);
    assert_eq!(updated["snapshot_retention"], 10, "{updated}");
    let volume_id = volume["id"].as_str().unwrap().to_owned();
    assert_eq!(
        updated["auto_backup_enabled"], true,
        "daily snapshots are on by default: {updated}"
    );
    // auto_backup_enabled (flyctl's --scheduled-snapshots) turns daily snapshots off and on.
    let off = raw
        .ok(
            Method::PUT,
            &format!("/apps/gofly/volumes/{volume_id}"),
            Some(json!({ "snapshot_retention": null, "auto_backup_enabled": false })),
        )
        .await;
    assert_eq!(off["auto_backup_enabled"], false, "{off}");
    assert_eq!(
        off["snapshot_retention"], 10,
        "a null leaves the retention: {off}"
    );
    raw.ok(
        Method::PUT,
        &format!("/apps/gofly/volumes/{volume_id}"),
        Some(json!({ "snapshot_retention": null, "auto_backup_enabled": true })),
    )
    .await;

    // flaps.GetVolumeSnapshots (none yet), flaps.CreateVolumeSnapshot (POST, no body; the
    // answer is ignored by fly-go), then the list as fly.VolumeSnapshot.
    let snapshots = format!("/apps/gofly/volumes/{volume_id}/snapshots");
    let none = raw.ok(Method::GET, &snapshots, None).await;
    assert_eq!(none, json!([]), "{none}");
    raw.ok(Method::POST, &snapshots, None).await;
    let listed = raw.ok(Method::GET, &snapshots, None).await;
    let snapshot = &listed[0];
    decodes(
        "VolumeSnapshot",
        snapshot,
        &[
            ("id", 's'),
            ("size", 'n'),
            ("volume_size", 'n'),
            ("digest", 's'),
            ("created_at", 's'),
            ("status", 's'),
            ("retention_days", 'n'),
        ],
    );
    assert_eq!(snapshot["status"], "created", "{listed}");
    assert_eq!(snapshot["volume_size"], 1, "{listed}");
    assert_eq!(snapshot["retention_days"], 10, "{listed}");
    assert!(
        snapshot["id"].as_str().unwrap().starts_with("vs_"),
        "{listed}"
    );
    assert!(
        snapshot["digest"].as_str().unwrap().starts_with("sha256:"),
        "{listed}"
    );
    // flaps.CreateVolume with snapshot_id: a new volume from it, on the snapshot's host.
    let restored = raw
        .ok(
            Method::POST,
            "/apps/gofly/volumes",
            Some(json!({
                "name": "data_copy", "region": "sim", "size_gb": null, "encrypted": null,
                "require_unique_zone": null, "unique_zone_app_wide": null,
                "snapshot_retention": null, "auto_backup_enabled": null, "fstype": null,
                "snapshot_id": snapshot["id"], "source_volume_id": null, "compute": null
            })),
        )
        .await;
    decodes("Volume", &restored, VOLUME_FIELDS);
    assert_eq!(restored["state"], "created", "{restored}");
    assert_eq!(restored["size_gb"], 1, "{restored}");
    assert_eq!(restored["zone"], volume["zone"], "{restored}");
    let (status, unknown) = raw
        .call(
            Method::POST,
            "/apps/gofly/volumes",
            Some(json!({"name": "nope", "snapshot_id": "vs_aaaaaaaaaaaaaaaa"})),
        )
        .await;
    assert_eq!(status, 404, "{unknown}");
    // Its copy is made where it is kept: another region is refused, saying which.
    let (status, elsewhere) = raw
        .call(
            Method::POST,
            "/apps/gofly/volumes",
            Some(json!({"name": "far", "region": "ams", "snapshot_id": snapshot["id"]})),
        )
        .await;
    assert_eq!(status, 400, "{elsewhere}");
    assert!(
        elsewhere["error"].as_str().unwrap().contains("kept in sim"),
        "{elsewhere}"
    );
    // flaps.ExtendVolume ({size_gb} → {volume, needs_restart}), flaps.DeleteVolume.
    let extended = raw
        .ok(
            Method::PUT,
            &format!(
                "/apps/gofly/volumes/{}/extend",
                restored["id"].as_str().unwrap()
            ),
            Some(json!({"size_gb": 2})),
        )
        .await;
    decodes("Volume", &extended["volume"], VOLUME_FIELDS);
    assert_eq!(extended["volume"]["size_gb"], 2, "{extended}");
    assert_eq!(extended["needs_restart"], false, "{extended}");
    let destroyed = raw
        .ok(
            Method::DELETE,
            &format!("/apps/gofly/volumes/{}", restored["id"].as_str().unwrap()),
            None,
        )
        .await;
    decodes("Volume", &destroyed, VOLUME_FIELDS);
    let volumes = raw.ok(Method::GET, "/apps/gofly/volumes", None).await;
    decodes("Volume", &volumes[0], VOLUME_FIELDS);
    let app = raw.ok(Method::GET, "/apps/gofly", None).await;
    assert_eq!(app["volume_count"], 1, "{app}");
    assert!(app["machine_count"].as_u64().unwrap() >= 1, "{app}");

    // Secrets: UpdateAppSecrets ({values}, null unsets), SetAppSecret, List, Delete.
    let updated = raw
        .ok(
            Method::POST,
            "/apps/gofly/secrets",
            Some(json!({"values": {"API_KEY": "k1", "OLD": null}})),
        )
        .await;
    decodes(
        "UpdateAppSecretsResp",
        &updated,
        &[("secrets", 'a'), ("version", 'n')],
    );
    assert_eq!(updated["secrets"][0]["name"], "API_KEY", "{updated}");
    let set = raw
        .ok(
            Method::POST,
            "/apps/gofly/secrets/TOKEN",
            Some(json!({"value": "t"})),
        )
        .await;
    decodes(
        "SetAppSecretResp",
        &set,
        &[("version", 'n'), ("name", 's'), ("digest", 's')],
    );
    let listed = raw.ok(Method::GET, "/apps/gofly/secrets", None).await;
    decodes("ListAppSecretsResp", &listed, &[("secrets", 'a')]);
    let names: Vec<&str> = listed["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["API_KEY", "TOKEN"], "{listed}");
    for secret in listed["secrets"].as_array().unwrap() {
        decodes(
            "AppSecret",
            secret,
            &[("name", 's'), ("digest", 's'), ("created_at", 's')],
        );
        assert!(secret.get("value").is_none(), "values are never shown");
    }
    // flaps.GetAppSecrets: GET .../secrets/TOKEN?version=N (the answer reflects at least
    // that version); show_secrets=true is refused, never answered with the value.
    let version = set["version"].as_i64().unwrap();
    let one = raw
        .ok(
            Method::GET,
            &format!("/apps/gofly/secrets/TOKEN?version={version}"),
            None,
        )
        .await;
    decodes(
        "AppSecret",
        &one,
        &[("name", 's'), ("digest", 's'), ("created_at", 's')],
    );
    assert_eq!(one["name"], "TOKEN", "{one}");
    assert_eq!(one["digest"], set["digest"], "{one}");
    assert!(one.get("value").is_none(), "{one}");
    let (status, refused) = raw
        .call(
            Method::GET,
            "/apps/gofly/secrets/TOKEN?show_secrets=true",
            None,
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    assert!(refused.get("value").is_none(), "{refused}");
    let (status, ahead) = raw
        .call(
            Method::GET,
            &format!("/apps/gofly/secrets?version={}", version + 1),
            None,
        )
        .await;
    assert_eq!(status, 409, "{ahead}");
    let (status, _) = raw
        .call(Method::GET, "/apps/gofly/secrets/NOPE", None)
        .await;
    assert_eq!(status, 404);
    let deleted = raw
        .ok(Method::DELETE, "/apps/gofly/secrets/TOKEN", None)
        .await;
    decodes("DeleteAppSecretResp", &deleted, &[("version", 'n')]);

    // flaps.Kill: POST .../signal with the signal as a number; Destroy: ?kill=true.
    raw.ok(
        Method::POST,
        &machines(&format!("/{id}/signal")),
        Some(json!({"signal": 9})),
    )
    .await;
    raw.ok(Method::DELETE, &machines(&format!("/{id}?kill=true")), None)
        .await;

    // IP assignments: AssignIP ({type, region, org_slug, network, service_name} as Go
    // marshals AssignIPRequest), GetIPAssignments, DeleteIPAssignment.
    let assigned = raw
        .ok(
            Method::POST,
            "/apps/gofly/ip_assignments",
            Some(json!({"type": "v4", "region": "", "org_slug": "", "network": "", "service_name": ""})),
        )
        .await;
    let fields = [
        ("ip", 's'),
        ("region", 's'),
        ("service_name", 's'),
        ("shared", 'b'),
        ("created_at", 's'),
    ];
    decodes("IPAssignment", &assigned, &fields);
    let ip = assigned["ip"].as_str().unwrap().to_owned();
    let listed = raw
        .ok(Method::GET, "/apps/gofly/ip_assignments", None)
        .await;
    decodes("ListIPAssignmentsResponse", &listed, &[("ips", 'a')]);
    assert_eq!(listed["ips"][0]["ip"], ip.as_str(), "{listed}");
    decodes("IPAssignment", &listed["ips"][0], &fields);
    let (status, refused) = raw
        .call(
            Method::POST,
            "/apps/gofly/ip_assignments",
            Some(json!({"type": "shared_v4", "region": "", "org_slug": "", "network": "", "service_name": ""})),
        )
        .await;
    assert_eq!(status, 400, "a type Aloft cannot allocate: {refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("shared_v4"),
        "{refused}"
    );
    raw.ok(
        Method::DELETE,
        &format!("/apps/gofly/ip_assignments/{ip}"),
        None,
    )
    .await;
    let listed = raw
        .ok(Method::GET, "/apps/gofly/ip_assignments", None)
        .await;
    assert_eq!(listed["ips"], json!([]), "{listed}");

    // flaps.GetRegions: GET /platform/regions, decoded into RegionData.
    let regions = raw.ok(Method::GET, "/platform/regions", None).await;
    decodes(
        "RegionData",
        &regions,
        &[("Regions", 'a'), ("Nearest", 's')],
    );
    assert_eq!(regions["Nearest"], "sim", "{regions}");
    assert_eq!(regions["Regions"][0]["code"], "sim", "{regions}");
    decodes(
        "Region",
        &regions["Regions"][0],
        &[
            ("code", 's'),
            ("name", 's'),
            ("latitude", 'n'),
            ("longitude", 'n'),
            ("gateway_available", 'b'),
            ("requires_paid_plan", 'b'),
            ("deprecated", 'b'),
            ("capacity", 'n'),
            ("geo_region", 's'),
            ("mpg_available", 'b'),
        ],
    );
    // flaps.GetPlacements: POST /platform/placements with GetPlacementsRequest as Go
    // marshals it (compute null, weights null).
    let placed = raw
        .ok(
            Method::POST,
            "/platform/placements",
            Some(json!({
                "compute": null, "region": "sim,any", "count": 3, "volume_name": "",
                "volume_size_bytes": 0, "weights": null, "org_slug": "personal"
            })),
        )
        .await;
    decodes("GetPlacementsResponse", &placed, &[("Regions", 'a')]);
    assert_eq!(
        placed["Regions"],
        json!([{"Region": "sim", "Count": 3, "Concurrency": 3}]),
        "one host in sim takes all three"
    );
    let (status, _) = raw
        .call(
            Method::POST,
            "/platform/placements",
            Some(json!({"region": "xyz", "count": 1})),
        )
        .await;
    assert_eq!(status, 400, "a region without hosts is named");

    platform.stop().await;
}
