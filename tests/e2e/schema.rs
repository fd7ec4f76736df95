//! The manifests a real server writes validate against the JSON Schemas in
//! schema/: repository definitions, cells, chunks, publications, ref entries and
//! capability blocks.

use std::path::Path;

use base64::Engine;
use serde_json::Value;

use crate::harness::*;

fn schema(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schema")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: Value = serde_json::from_str(&text).unwrap();
    jsonschema::draft202012::new(&value)
        .unwrap_or_else(|e| panic!("{name} is not a valid schema: {e}"))
}

fn assert_valid(validator: &jsonschema::Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match its schema: {errors:#?}\n{instance:#}"
    );
}

fn newest_ref(dir: &Path) -> Value {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    serde_json::from_slice(&std::fs::read(files.last().unwrap()).unwrap()).unwrap()
}

fn blob(data: &DataDir, digest: &str) -> Value {
    let path = data
        .path
        .join("store/blobs/sha256")
        .join(&digest[..2])
        .join(digest);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn real_manifests_match_the_schemas() {
    let data = DataDir::init(&[]);
    data.repo_add("s", "stable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/s/dists/stable/main/binary-amd64", "1h");
    assert!(
        server
            .upload(
                &cap,
                &[
                    fixture("debs/hello_2.10-3_amd64.deb"),
                    fixture("debs/lsb-base_11.6_all.deb")
                ],
                true
            )
            .status
            .success()
    );
    let refs = data.path.join("store/refs");
    let ref_entry = schema("ref-entry.schema.json");

    let repo_ref = newest_ref(&refs.join("repos/apt/s"));
    assert_valid(&ref_entry, &repo_ref, "repository ref");
    assert_valid(
        &schema("apt-repo.schema.json"),
        &blob(&data, repo_ref["target"].as_str().unwrap()),
        "repository",
    );

    let cell_ref = newest_ref(&refs.join("cells/apt/s/stable/main/amd64"));
    assert_valid(&ref_entry, &cell_ref, "cell ref");
    let cell = blob(&data, cell_ref["target"].as_str().unwrap());
    assert_valid(&schema("apt-cell.schema.json"), &cell, "cell");
    let chunk = blob(&data, cell["chunks"][0]["digest"].as_str().unwrap());
    assert_valid(&schema("apt-chunk.schema.json"), &chunk, "chunk");

    // Each uploaded package claimed its pool path in one of the repository's claim shards.
    let mut claimed = 0;
    for shard in std::fs::read_dir(refs.join("claims/apt/s")).unwrap() {
        let shard_ref = newest_ref(&shard.unwrap().path());
        assert_valid(&ref_entry, &shard_ref, "claims shard ref");
        let cell = blob(&data, shard_ref["target"].as_str().unwrap());
        assert_valid(&schema("claim-cell.schema.json"), &cell, "claims shard");
        for chunk in cell["chunks"].as_array().unwrap() {
            let chunk = blob(&data, chunk["digest"].as_str().unwrap());
            assert_valid(&schema("claim-chunk.schema.json"), &chunk, "claims chunk");
            claimed += chunk["packages"].as_array().unwrap().len();
        }
    }
    assert_eq!(claimed, 2, "hello and lsb-base each claim their pool path");

    let published = newest_ref(&refs.join("published/apt/s/stable"));
    assert_valid(&ref_entry, &published, "publication ref");
    let publication = blob(&data, published["target"].as_str().unwrap());
    assert_valid(
        &schema("apt-publication.schema.json"),
        &publication,
        "publication",
    );
    // Binary packages' pool paths live in per-chunk blobs; together they list both uploads.
    let mut pool_paths = 0;
    for chunk in publication["pool_chunks"].as_array().unwrap() {
        pool_paths += blob(&data, chunk.as_str().unwrap())
            .as_object()
            .unwrap()
            .len();
    }
    assert_eq!(pool_paths, 2);

    let block = cap.split('.').nth(1).unwrap();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(block)
        .unwrap();
    assert_valid(
        &schema("cap-block.schema.json"),
        &serde_json::from_slice(&payload).unwrap(),
        "cap block",
    );

    // The cap registry and the revocation list.
    let read = data.cap_with("apt/s", "read", "1d", &[]);
    let id = serde_json::from_str::<Value>(&run_ok(
        caprepo()
            .args(["cap", "inspect", "--json", "--data"])
            .arg(&data.path)
            .arg(&read),
    ))
    .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    run_ok(
        caprepo()
            .args(["cap", "revoke", "--data"])
            .arg(&data.path)
            .arg(&id),
    );
    let issued = newest_ref(&refs.join("caps/issued"));
    assert_valid(&ref_entry, &issued, "registry ref");
    let registry = blob(&data, issued["target"].as_str().unwrap());
    assert_valid(
        &schema("cap-registry.schema.json"),
        &registry,
        "cap registry",
    );
    assert_eq!(registry["caps"].as_object().unwrap().len(), 2);
    let revoked = newest_ref(&refs.join("caps/revoked"));
    assert_valid(
        &schema("cap-revocations.schema.json"),
        &blob(&data, revoked["target"].as_str().unwrap()),
        "revocations",
    );

    // RPM: the repository, both cells, the chunk and the publication of a tree.
    data.repo_add_rpm("fed", "12", "x86_64", &[]);
    let rpm_cap = data.cap("rpm/fed/12/x86_64", "1h");
    let rpms = [
        "hello-caprepo-1.0-1.x86_64.rpm",
        "noarch-caprepo-0.5-1.noarch.rpm",
    ]
    .map(|f| fixture(&format!("rpms/{f}")));
    assert!(server.upload(&rpm_cap, &rpms, true).status.success());
    let rpm_repo = newest_ref(&refs.join("repos/rpm/fed"));
    assert_valid(
        &schema("rpm-repo.schema.json"),
        &blob(&data, rpm_repo["target"].as_str().unwrap()),
        "rpm repository",
    );
    for arch in ["x86_64", "noarch"] {
        let cell_ref = newest_ref(&refs.join(format!("cells/rpm/fed/12/{arch}")));
        let cell = blob(&data, cell_ref["target"].as_str().unwrap());
        assert_valid(&schema("rpm-cell.schema.json"), &cell, "rpm cell");
        let chunk = blob(&data, cell["chunks"][0]["digest"].as_str().unwrap());
        assert_valid(&schema("rpm-chunk.schema.json"), &chunk, "rpm chunk");
    }
    let tree = newest_ref(&refs.join("published/rpm/fed/12/x86_64"));
    let rpm_publication = blob(&data, tree["target"].as_str().unwrap());
    assert_valid(
        &schema("rpm-publication.schema.json"),
        &rpm_publication,
        "rpm publication",
    );
    // The tree's pool is named by per-chunk blobs, with paths under the tree.
    assert!(rpm_publication["pool"].as_object().unwrap().is_empty());
    let mut pool_paths: Vec<String> = rpm_publication["pool_chunks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| {
            blob(&data, d.as_str().unwrap())
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect();
    pool_paths.sort();
    assert_eq!(
        pool_paths,
        [
            "12/x86_64/Packages/h/hello-caprepo-1.0-1.x86_64.rpm",
            "12/x86_64/Packages/n/noarch-caprepo-0.5-1.noarch.rpm"
        ]
    );

    // The schemas are not vacuous: a manifest with a bad digest is refused.
    let mut broken = chunk.clone();
    broken["packages"][0]["sha256"] = Value::String("xyz".into());
    assert!(!schema("apt-chunk.schema.json").is_valid(&broken));
}
