//! Server render time of the app page at 10, 100 and 1,000 machines (the page's work after
//! the API answered: the view models and the HTML), beside the anchor measured in the same
//! run: serializing the same machines to JSON, which the API does for that page's request.
//! The target: under 50 ms at 1,000 machines. Run with `cargo xtask bench web`.

use std::hint::black_box;

use aloft_types::api::{
    AppResponse, CheckResponse, DeploymentResponse, DeploymentStepResponse, EventResponse,
    ImageRef, MachineResponse, OrgRef, ReleaseResponse,
};
use aloft_types::machine::MachineConfig;
use aloft_web::AppPage;
use aloft_web::view::Chrome;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn machine(n: usize) -> MachineResponse {
    let mut config = MachineConfig {
        image: "registry.example/app:v42".to_owned(),
        ..MachineConfig::default()
    };
    config.metadata.insert(
        "fly_process_group".to_owned(),
        ["app", "worker"][n % 2].to_owned(),
    );
    config.env.insert("RELEASE".to_owned(), "42".to_owned());
    MachineResponse {
        id: format!("{n:014x}"),
        name: format!("machine-{n:08x}"),
        state: ["started", "stopped", "starting"][n % 3].to_owned(),
        region: ["ams", "fra", "iad", "sin"][n % 4].to_owned(),
        instance_id: format!("01J{n:023}"),
        version: "42".to_owned(),
        private_ip: format!("fdaa:0:1:a7b:{:x}::2", n),
        config,
        image_ref: ImageRef::parse("registry.example/app:v42"),
        events: (0..5)
            .map(|e| EventResponse {
                id: format!("ev{n}-{e}"),
                kind: "start".to_owned(),
                status: "started".to_owned(),
                source: "flyd".to_owned(),
                timestamp: 1_765_000_000_000 + e,
                request: serde_json::Value::Null,
            })
            .collect(),
        checks: vec![CheckResponse {
            name: "servicecheck-00-http-8080".to_owned(),
            status: aloft_types::CheckStatus::Passing,
            output: "200 OK".to_owned(),
            updated_at: "2026-12-07T10:00:00Z".to_owned(),
        }],
        host_status: "ok".to_owned(),
        cordoned: false,
        created_at: "2026-12-07T09:00:00Z".to_owned(),
        updated_at: "2026-12-07T10:00:00Z".to_owned(),
        nonce: None,
        host: Some("01jhost0000000000000000000".to_owned()),
    }
}

fn release(version: i64) -> ReleaseResponse {
    ReleaseResponse {
        id: format!("rel{version}"),
        version,
        image: format!("registry.example/app:v{version}"),
        status: aloft_types::deploy::ReleaseStatus::Complete,
        process_group: "app".to_owned(),
        description: "deploy".to_owned(),
        user: "admin".to_owned(),
        created_at: "2026-12-07T09:00:00Z".to_owned(),
    }
}

/// A finished rolling deploy of every machine: three steps each.
fn deployment(machines: &[MachineResponse]) -> DeploymentResponse {
    let steps = machines
        .iter()
        .flat_map(|m| ["update", "waiting", "healthy"].map(|kind| (m.id.clone(), kind)))
        .enumerate()
        .map(|(number, (machine, kind))| DeploymentStepResponse {
            number: i64::try_from(number).unwrap_or(i64::MAX),
            machine_id: Some(machine),
            kind: kind
                .parse()
                .unwrap_or(aloft_types::deploy::StepKind::Update),
            message: format!("machine {kind}"),
            at: "2026-12-07T10:00:00Z".to_owned(),
        })
        .collect();
    DeploymentResponse {
        id: "dep42".to_owned(),
        release: release(42),
        strategy: aloft_types::deploy::Strategy::Rolling,
        max_unavailable: 0.33,
        wait_timeout: 300,
        smoke_check_seconds: 10,
        status: aloft_types::deploy::DeploymentStatus::Succeeded,
        error: None,
        scope: None,
        steps,
        created_at: "2026-12-07T10:00:00Z".to_owned(),
        updated_at: "2026-12-07T10:05:00Z".to_owned(),
    }
}

fn app() -> AppResponse {
    AppResponse {
        id: "app1".to_owned(),
        name: "big".to_owned(),
        organization: OrgRef {
            slug: "personal".to_owned(),
            name: "Personal".to_owned(),
        },
        network: "default".to_owned(),
        status: "deployed".to_owned(),
        machine_count: 0,
        volume_count: 0,
        created_at: "2026-12-07T09:00:00Z".to_owned(),
        hostname: Some("big.aloft.localhost".to_owned()),
        url: Some("https://big.aloft.localhost/".to_owned()),
    }
}

fn chrome() -> Chrome {
    Chrome {
        name: "admin".to_owned(),
        kind: "org".to_owned(),
        org: "personal".to_owned(),
        orgs: vec!["personal".to_owned()],
        operator: false,
        can_change: true,
        csrf: "x".repeat(43),
    }
}

fn app_page(c: &mut Criterion) {
    let mut group = c.benchmark_group("app_page");
    for count in [10, 100, 1000] {
        let machines: Vec<MachineResponse> = (0..count).map(machine).collect();
        let deployments = vec![deployment(&machines)];
        let releases: Vec<ReleaseResponse> = (1..=42).rev().map(release).collect();
        group.bench_with_input(BenchmarkId::new("render", count), &count, |b, _| {
            b.iter(|| {
                let page = AppPage::new(
                    chrome(),
                    app(),
                    None,
                    &machines,
                    &deployments,
                    &releases,
                    Vec::new(),
                    Vec::new(),
                    Vec::new(),
                    Vec::new(),
                );
                black_box(page.html().map(|html| html.len()).unwrap_or(0))
            });
        });
        group.bench_with_input(
            BenchmarkId::new("anchor_api_json", count),
            &count,
            |b, _| b.iter(|| black_box(serde_json::to_vec(&machines).map(|json| json.len()))),
        );
    }
    group.finish();
}

criterion_group!(benches, app_page);
criterion_main!(benches);
