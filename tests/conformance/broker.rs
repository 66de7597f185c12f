//! What the RabbitMQ broker promises beyond the shared cases: queues made
//! by a release before priorities keep working.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_queues_made_without_priorities_keep_working() {
    let Some(url) = amqp_url() else {
        eprintln!("DISTRIBOT_AMQP_URL is not set: skipped");
        return;
    };
    let prefix = Harness::test_prefix();
    let handler = distribot::ids::HandlerName::from("Old");
    let queue = format!(
        "{prefix}.task.{}",
        distribot::broker::queue_name(&handler, &v1())
    );
    // The queue as an older release declared it: durable, no arguments.
    let connection = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_declare(
            &queue,
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let broker = AmqpBroker::connect(&url, &url, &prefix).await.unwrap();
    let _guard = QueueGuard {
        url: url.clone(),
        broker: broker.clone(),
    };
    let tasks: Vec<Task> = (0..3u8)
        .map(|priority| Task::Process {
            key: JobKey {
                flow: FlowId::new("f"),
                seq: 0,
                slot: 0,
                index: u32::from(priority),
            },
            phase: "a".into(),
            handler: handler.clone(),
            version: v1(),
            attempt: 1,
            job: Value::Null,
            priority: priority * 4,
        })
        .collect();
    broker.publish(tasks.clone()).await.unwrap();
    let mut consumer = broker
        .consume(vec![distribot::broker::queue_name(&handler, &v1())], 8)
        .await
        .unwrap();
    let mut received = Vec::new();
    for _ in 0..tasks.len() {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a task within 10s")
            .expect("a delivery");
        received.push(delivery.task.clone());
        delivery.ack.ack().await.unwrap();
    }
    received.sort_by_key(Task::priority);
    assert_eq!(received, tasks);
    broker.shutdown();
    let _ = channel.queue_delete(&queue, Default::default()).await;
    let _ = connection.close(0, "done").await;
}
