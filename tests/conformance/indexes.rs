//! The Redis store's installation-wide indexes after a crash between a
//! flow's step and its indexes' step (the two are in different hash slots
//! on a Redis Cluster, so no script changes both). Each case below writes
//! the indexes as such a crash leaves them, with raw commands, and checks
//! that the sweep over unfinished flows puts them right: on one Redis and
//! on a cluster.

use super::*;

fn run(conn: &mut dyn ::redis::ConnectionLike, args: &[&str]) {
    let mut cmd = ::redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    let _: ::redis::Value = cmd.query(conn).unwrap();
}

fn millis_ago(ago: Duration) -> String {
    Timestamp::now()
        .millis()
        .saturating_sub(ago.as_millis() as u64)
        .to_string()
}

async fn count(store: &dyn Store, status: Option<FlowStatus>) -> u64 {
    store
        .count_flows(&FlowQuery {
            status,
            limit: 100,
            ..FlowQuery::default()
        })
        .await
        .unwrap()
}

pub(crate) async fn the_sweep_repairs_indexes_a_crash_left_between_two_steps(kind: Kind) {
    let (store, scratch) = Harness::store(kind).await;
    let (url, prefix) = match &scratch {
        Scratch::Redis(guard) => (guard.url.clone(), guard.prefix.clone()),
        _ => unreachable!("a Redis case"),
    };
    let store = store.as_ref();
    let mut conn = raw_connection(&url).expect("a connection to the store's Redis");
    let conn = conn.as_mut();
    let index = |name: &str| format!("{prefix}:{{{prefix}}}:{name}");
    let by_status = |status: FlowStatus| index(&format!("flows:status:{status}"));

    // 1. A flow ended, and the engine died before its indexes followed:
    //    they still say it runs.
    let (ended, cursor) = flow_in_a_phase(store, 0).await;
    let at = Timestamp::now();
    assert!(store
        .end_flow(&ended, &cursor, FlowStatus::Failed, None, at)
        .await
        .unwrap());
    let id = ended.as_str();
    run(
        conn,
        &[
            "HSET",
            &index("unfinished"),
            id,
            &format!("0|{}|w", at.millis()),
        ],
    );
    run(conn, &["ZADD", &by_status(FlowStatus::Running), "0", id]);
    run(conn, &["ZREM", &by_status(FlowStatus::Failed), id]);
    run(conn, &["ZREM", &index("ended"), id]);
    run(conn, &["ZREM", &index("ended:feed"), id]);

    // 2. A pause applied to a flow, and its listing never moved.
    let (paused, _) = flow_in_a_phase(store, 1).await;
    store
        .apply_command(
            &paused,
            Command::Pause,
            Requester::Library,
            Timestamp::now(),
        )
        .await
        .unwrap();
    run(
        conn,
        &["ZREM", &by_status(FlowStatus::Paused), paused.as_str()],
    );
    run(
        conn,
        &[
            "ZADD",
            &by_status(FlowStatus::Running),
            "0",
            paused.as_str(),
        ],
    );

    // 3. A creation that died after indexing its flow and before writing
    //    it, long ago; and one that may still be under way.
    let abandoned = FlowId::generate();
    let under_way = FlowId::generate();
    for (id, written) in [
        (&abandoned, millis_ago(Duration::from_secs(3600))),
        (&under_way, millis_ago(Duration::ZERO)),
    ] {
        let id = id.as_str();
        run(
            conn,
            &["HSET", &index("unfinished"), id, &format!("0|{written}|w")],
        );
        run(conn, &["ZADD", &index("flows"), "0", id]);
        run(conn, &["ZADD", &index("flows:workflow:w"), "0", id]);
        run(conn, &["ZADD", &by_status(FlowStatus::Running), "0", id]);
    }

    // 4. A retry that died after making its flow unfinished again and
    //    before the flow's own step, long ago.
    let (retried, cursor) = flow_in_a_phase(store, 0).await;
    let at = Timestamp::now();
    assert!(store
        .end_flow(&retried, &cursor, FlowStatus::Failed, None, at)
        .await
        .unwrap());
    run(
        conn,
        &[
            "HSET",
            &index("unfinished"),
            retried.as_str(),
            &format!("1|{}|w", millis_ago(Duration::from_secs(3600))),
        ],
    );

    let unfinished = store.unfinished_flows().await.unwrap();
    assert_eq!(
        unfinished,
        vec![paused.clone()],
        "only the paused flow runs"
    );

    // The indexes now say what the flows' keys say.
    assert_eq!(
        count(store, Some(FlowStatus::Running)).await,
        1,
        "the creation under way"
    );
    assert_eq!(count(store, Some(FlowStatus::Paused)).await, 1);
    assert_eq!(count(store, Some(FlowStatus::Failed)).await, 2);
    assert_eq!(
        count(store, None).await,
        4,
        "the abandoned creation is forgotten"
    );
    let feed: Vec<FlowId> = store
        .ended_after(FeedPosition(0), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.flow)
        .collect();
    assert!(feed.contains(&ended) && feed.contains(&retried), "{feed:?}");
    let failed = store
        .list_flows(&FlowQuery {
            status: Some(FlowStatus::Failed),
            limit: 10,
            ..FlowQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 2);
    // Retention finds the flow that ended while its indexes lagged.
    let later = Timestamp::now().plus(Duration::from_secs(1));
    assert_eq!(store.remove_ended(later, 10).await.unwrap(), 2);
    assert_eq!(count(store, None).await, 2);

    // A second sweep changes nothing.
    assert_eq!(store.unfinished_flows().await.unwrap(), vec![paused]);
    assert_eq!(count(store, Some(FlowStatus::Running)).await, 1);
}
