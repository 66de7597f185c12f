//! Versions of registered workflows: registering adds a version unless
//! nothing changed, a flow runs the version it started with, and starts
//! pick the latest or the one they name.

use super::*;
use distribot::store::WorkflowRegistry;

/// The gated workflow as a definition to register: `work`, then `more`
/// (with `extra`, a phase between them that counts too), then `done`.
pub(crate) fn gated_definition(extra: bool) -> Value {
    if extra {
        json!({
            "workflow": "gated",
            "phases": {
                "work": {"is_initial": true, "transitions_to": "extra", "handlers": ["Gated"]},
                "extra": {"transitions_to": "more", "handlers": ["Count"]},
                "more": {"transitions_to": "done", "handlers": ["Count"]},
                "done": {"is_final": true}
            }
        })
    } else {
        json!({
            "workflow": "gated",
            "phases": {
                "work": {"is_initial": true, "transitions_to": "more", "handlers": ["Gated"]},
                "more": {"transitions_to": "done", "handlers": ["Count"]},
                "done": {"is_final": true}
            }
        })
    }
}

pub(crate) async fn registering_adds_a_version_unless_nothing_changed(kind: Kind) {
    let (store, _scratch) = Harness::store(kind).await;
    let store = store.as_ref();
    let now = Timestamp::now();
    assert!(store.workflow("gated", None).await.unwrap().is_none());
    assert!(store.versions("gated").await.unwrap().is_empty());

    let first = store
        .put_workflow(workflow(gated_definition(false)), now)
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.version.version, 1);
    assert_eq!(first.version.created_at, Some(now));

    // The same definition again, its keys in another order (phases among
    // them): nothing new, and the answer is version 1.
    let reordered = workflow(json!({
        "phases": {
            "done": {"is_final": true},
            "more": {"handlers": ["Count"], "transitions_to": "done"},
            "work": {"handlers": ["Gated"], "transitions_to": "more", "is_initial": true}
        },
        "workflow": "gated"
    }));
    let again = store
        .put_workflow(reordered, now.plus(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(!again.created, "the same definition adds no version");
    assert_eq!(again.version.version, 1);
    assert_eq!(again.version.created_at, Some(now), "version 1's own time");

    let later = now.plus(Duration::from_secs(2));
    let second = store
        .put_workflow(workflow(gated_definition(true)), later)
        .await
        .unwrap();
    assert!(second.created);
    assert_eq!(second.version.version, 2);

    // Back to the first definition: a new version, not version 1 again.
    let third = store
        .put_workflow(workflow(gated_definition(false)), later)
        .await
        .unwrap();
    assert_eq!((third.version.version, third.created), (3, true));

    let latest = store.workflow("gated", None).await.unwrap().unwrap();
    assert_eq!(latest.version, 3);
    let one = store.workflow("gated", Some(1)).await.unwrap().unwrap();
    assert_eq!(
        one.workflow.to_json(),
        workflow(gated_definition(false)).to_json()
    );
    let two = store.workflow("gated", Some(2)).await.unwrap().unwrap();
    assert_eq!(two.workflow.phases.len(), 4);
    assert_eq!(two.created_at, Some(later));
    assert!(store.workflow("gated", Some(4)).await.unwrap().is_none());
    assert!(store.workflow("gated", Some(0)).await.unwrap().is_none());
    assert!(store.workflow("other", Some(1)).await.unwrap().is_none());

    let versions: Vec<u32> = store
        .versions("gated")
        .await
        .unwrap()
        .iter()
        .map(|registered| registered.version)
        .collect();
    assert_eq!(versions, [1, 2, 3]);

    store
        .put_workflow(
            workflow(json!({
                "workflow": "another",
                "phases": {"only": {"is_initial": true, "is_final": true}}
            })),
            now,
        )
        .await
        .unwrap();
    let listed: Vec<(String, u32)> = store
        .workflows()
        .await
        .unwrap()
        .iter()
        .map(|latest| (latest.workflow.name.to_string(), latest.version))
        .collect();
    assert_eq!(
        listed,
        [("another".to_owned(), 1), ("gated".to_owned(), 3)],
        "the latest of each, by name"
    );
}

pub(crate) async fn registrations_at_once_get_versions_of_their_own(kind: Kind) {
    let (store, _scratch) = Harness::store(kind).await;
    let now = Timestamp::now();
    // Ten different definitions at once: ten versions, each its own.
    let mut puts = Vec::new();
    for n in 0..10 {
        let store = store.clone();
        let definition = workflow(json!({
            "workflow": "busy",
            "data": {"n": n},
            "phases": {"only": {"is_initial": true, "is_final": true}}
        }));
        puts.push(tokio::spawn(async move {
            store.put_workflow(definition, now).await
        }));
    }
    let mut made = Vec::new();
    for put in puts {
        let registered = put.await.unwrap().unwrap();
        assert!(registered.created);
        made.push(registered.version.version);
    }
    made.sort_unstable();
    assert_eq!(made, (1..=10).collect::<Vec<u32>>());

    // Ten identical ones at once: one version.
    let same = workflow(json!({
        "workflow": "busy",
        "data": {"n": "same"},
        "phases": {"only": {"is_initial": true, "is_final": true}}
    }));
    let mut puts = Vec::new();
    for _ in 0..10 {
        let store = store.clone();
        let same = same.clone();
        puts.push(tokio::spawn(
            async move { store.put_workflow(same, now).await },
        ));
    }
    let mut created = 0;
    for put in puts {
        let registered = put.await.unwrap().unwrap();
        assert_eq!(registered.version.version, 11);
        created += usize::from(registered.created);
    }
    assert_eq!(created, 1, "one of the identical registrations adds it");
    assert_eq!(store.versions("busy").await.unwrap().len(), 11);
}

pub(crate) async fn a_flow_runs_the_version_it_started_with(kind: Kind) {
    let gated = Gated::new(1);
    let counter = Counter::new();
    let harness = Harness::start(
        kind,
        registry(vec![("Gated", gated.clone()), ("Count", counter.clone())]),
    )
    .await;
    let client = &harness.client;
    let data = || json!({"more": 1, "extra": 1}).as_object().cloned().unwrap();
    let first = client
        .register_workflow(&gated_definition(false), Some("gated"))
        .await
        .unwrap();
    assert_eq!((first.version.version, first.created), (1, true));

    let on_v1 = client
        .start_from(
            WorkflowSource::registered("gated"),
            data(),
            StartOptions::default(),
        )
        .await
        .unwrap()
        .id;
    eventually("the first flow's job runs", || async {
        gated.started.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(
        client.status(&on_v1).await.unwrap().workflow_version,
        Some(1)
    );

    // A new version while the flow runs; registering it twice adds it once.
    let second = client
        .register_workflow(&gated_definition(true), None)
        .await
        .unwrap();
    assert_eq!((second.version.version, second.created), (2, true));
    let again = client
        .register_workflow(&gated_definition(true), None)
        .await
        .unwrap();
    assert_eq!((again.version.version, again.created), (2, false));

    gated.open();
    let record = harness.wait(&on_v1).await;
    assert!(rules::ended_well(&record));
    assert_eq!(
        phases_entered(&record),
        ["work", "more", "done"],
        "the flow finished on version 1's phases"
    );
    assert_eq!(record.workflow_version, Some(1));
    assert_eq!(
        record.workflow.to_json(),
        workflow(gated_definition(false)).to_json()
    );

    // A start without a version runs the latest.
    let latest = client
        .start_from(
            WorkflowSource::registered("gated"),
            data(),
            StartOptions::default(),
        )
        .await
        .unwrap()
        .id;
    let record = harness.wait(&latest).await;
    assert_eq!(record.workflow_version, Some(2));
    assert_eq!(phases_entered(&record), ["work", "extra", "more", "done"]);

    // A start naming version 1 runs version 1.
    let pinned = client
        .start_from(
            WorkflowSource::Registered {
                name: "gated".into(),
                version: Some(1),
            },
            data(),
            StartOptions::default(),
        )
        .await
        .unwrap()
        .id;
    let record = harness.wait(&pinned).await;
    assert_eq!(record.workflow_version, Some(1));
    assert_eq!(phases_entered(&record), ["work", "more", "done"]);

    // A version never registered, or of a workflow never registered.
    match client
        .start_from(
            WorkflowSource::Registered {
                name: "gated".into(),
                version: Some(3),
            },
            data(),
            StartOptions::default(),
        )
        .await
    {
        Err(error @ ClientError::UnknownVersion { latest: 2, .. }) => assert_eq!(
            error.to_string(),
            "workflow `gated` has no version 3: its versions are 1 to 2"
        ),
        other => panic!("an unknown version is refused: {other:?}"),
    }
    assert!(matches!(
        client
            .start_from(
                WorkflowSource::Registered {
                    name: "nothing".into(),
                    version: Some(1),
                },
                data(),
                StartOptions::default(),
            )
            .await,
        Err(ClientError::UnknownWorkflow(name)) if name == "nothing"
    ));

    // A definition given inline is no registered version.
    let inline = client
        .start_from(
            WorkflowSource::Inline(gated_definition(false)),
            data(),
            StartOptions::default(),
        )
        .await
        .unwrap()
        .id;
    assert_eq!(harness.wait(&inline).await.workflow_version, None);

    // The version is kept with the flow, as every reading shows it.
    let listed = client
        .list(&FlowQuery {
            limit: 10,
            ..FlowQuery::default()
        })
        .await
        .unwrap();
    let versions: Vec<Option<u32>> = listed.iter().map(|r| r.workflow_version).collect();
    assert_eq!(versions, [None, Some(1), Some(2), Some(1)], "newest first");
}

/// A SQLite file from before versions: its registered definitions are
/// version 1, and a definition an older release replaced in place is the
/// version after the last one kept. Flows keep their versions too.
#[tokio::test]
pub(crate) async fn a_database_from_before_versions_reads_its_definitions_as_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let flow = {
        let store = EmbeddedStore::open(&path).unwrap();
        store
            .put_workflow(workflow(gated_definition(false)), Timestamp::now())
            .await
            .unwrap();
        let mut record = FlowRecord::new(
            FlowId::generate(),
            workflow(gated_definition(false)),
            Map::new(),
            Timestamp::now(),
        );
        record.workflow_version = Some(1);
        let id = record.id.clone();
        store.create_flow(record).await.unwrap();
        id
    };
    // What an older release wrote: the definition, and no versions.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("DELETE FROM workflow_versions", []).unwrap();
    drop(conn);
    {
        let store = EmbeddedStore::open(&path).unwrap();
        let versions = store.versions("gated").await.unwrap();
        assert_eq!(versions.len(), 1);
        assert_eq!((versions[0].version, versions[0].created_at), (1, None));
        let same = store
            .put_workflow(workflow(gated_definition(false)), Timestamp::now())
            .await
            .unwrap();
        assert_eq!((same.version.version, same.created), (1, false));
        assert_eq!(
            store.flow(&flow).await.unwrap().unwrap().workflow_version,
            Some(1)
        );
    }
    // An older release replaces the definition in place.
    let replaced = workflow(gated_definition(true)).to_json().to_string();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE workflows SET definition = ?1 WHERE name = 'gated'",
        [&replaced],
    )
    .unwrap();
    drop(conn);
    let store = EmbeddedStore::open(&path).unwrap();
    let versions: Vec<(u32, bool)> = store
        .versions("gated")
        .await
        .unwrap()
        .iter()
        .map(|v| (v.version, v.created_at.is_some()))
        .collect();
    assert_eq!(versions, [(1, false), (2, false)]);
    let next = store
        .put_workflow(
            workflow(json!({
                "workflow": "gated",
                "phases": {"only": {"is_initial": true, "is_final": true}}
            })),
            Timestamp::now(),
        )
        .await
        .unwrap();
    assert_eq!((next.version.version, next.created), (3, true));
    drop(store);
    // The versions adopted were written down: a reopen numbers them alike,
    // and keeps when the one registered here was.
    let store = EmbeddedStore::open(&path).unwrap();
    let numbers: Vec<(u32, Option<Timestamp>)> = store
        .versions("gated")
        .await
        .unwrap()
        .iter()
        .map(|v| (v.version, v.created_at))
        .collect();
    assert_eq!(
        numbers,
        [(1, None), (2, None), (3, next.version.created_at)]
    );
    assert!(next.version.created_at.is_some());
}

/// Redis from before versions: `P:{P}:workflows` alone holds a definition,
/// which reads as version 1; a definition an older release put there
/// over a versioned one is the version after the last one kept.
#[tokio::test]
pub(crate) async fn redis_from_before_versions_reads_its_definitions_as_versions() {
    let Some(url) = redis_url() else {
        eprintln!("skipped: set DISTRIBOT_REDIS_URL to run the Redis tier");
        return;
    };
    let prefix = Harness::test_prefix();
    let _guard = PrefixGuard {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let old = |definition: Value| {
        let client = ::redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let text = workflow(definition).to_json().to_string();
        let _: () = ::redis::cmd("HSET")
            .arg(format!("{prefix}:{{{prefix}}}:workflows"))
            .arg("gated")
            .arg(text)
            .query(&mut conn)
            .unwrap();
    };
    old(gated_definition(false));
    let store = RedisStore::connect(&url, &prefix).await.unwrap();
    let latest = store.workflow("gated", None).await.unwrap().unwrap();
    assert_eq!((latest.version, latest.created_at), (1, None));
    assert_eq!(store.workflows().await.unwrap()[0].version, 1);
    let same = store
        .put_workflow(workflow(gated_definition(false)), Timestamp::now())
        .await
        .unwrap();
    assert_eq!((same.version.version, same.created), (1, false));
    let now = Timestamp::now();
    let second = store
        .put_workflow(workflow(gated_definition(true)), now)
        .await
        .unwrap();
    assert_eq!((second.version.version, second.created), (2, true));

    // An older release, still running beside this one, replaces it.
    old(json!({
        "workflow": "gated",
        "phases": {"only": {"is_initial": true, "is_final": true}}
    }));
    let numbers = |versions: Vec<distribot::store::WorkflowVersion>| -> Vec<(u32, usize)> {
        versions
            .iter()
            .map(|v| (v.version, v.workflow.phases.len()))
            .collect()
    };
    assert_eq!(
        numbers(store.versions("gated").await.unwrap()),
        [(1, 3), (2, 4), (3, 1)]
    );
    let third = store.workflow("gated", Some(3)).await.unwrap().unwrap();
    assert_eq!(third.created_at, None);
    assert_eq!(
        store
            .workflow("gated", Some(2))
            .await
            .unwrap()
            .unwrap()
            .created_at,
        Some(now)
    );
    let fourth = store
        .put_workflow(workflow(gated_definition(false)), Timestamp::now())
        .await
        .unwrap();
    assert_eq!((fourth.version.version, fourth.created), (4, true));
    assert_eq!(
        numbers(store.versions("gated").await.unwrap()),
        [(1, 3), (2, 4), (3, 1), (4, 3)]
    );
}
