//! The broker objects the relay needs, from the channel configuration.
//!
//! One durable topic exchange (default `orchestrator`) receives every event with routing key =
//! its channel. Each organization gets a durable queue named by its MSP id, bound to the
//! exchange once per channel the configuration lists it on, so a consumer reading its queue
//! sees exactly its channels' events (the reference got the same effect with a fanout exchange
//! per channel, made by a separate operator). Declarations are idempotent: every start and
//! every reconnect declares them again.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, ExchangeKind};

use crate::channels::ChannelConfig;

/// One consumer queue and the channels bound to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueBindings {
    /// Queue name: the organization's MSP id.
    pub queue: String,
    /// Routing keys bound: the organization's channels.
    pub channels: Vec<String>,
}

/// Exchange and queues to declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The topic exchange events are published to.
    pub exchange: String,
    /// Consumer queues (empty when the operator manages queues).
    pub queues: Vec<QueueBindings>,
}

impl Topology {
    /// The exchange, plus one queue per organization of `channels` (named `<prefix><MSP id>`)
    /// when `queue_prefix` is given.
    pub fn new(exchange: &str, channels: &ChannelConfig, queue_prefix: Option<&str>) -> Self {
        let queues = match queue_prefix {
            Some(prefix) => channels
                .organizations()
                .map(|(org, channels)| QueueBindings {
                    queue: format!("{prefix}{org}"),
                    channels: channels.iter().cloned().collect(),
                })
                .collect(),
            None => Vec::new(),
        };
        Self { exchange: exchange.to_owned(), queues }
    }

    /// Declares everything on `channel`.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() },
                FieldTable::default(),
            )
            .await?;
        for queue in &self.queues {
            channel
                .queue_declare(
                    queue.queue.as_str().into(),
                    QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() },
                    FieldTable::default(),
                )
                .await?;
            for routing_key in &queue.channels {
                channel
                    .queue_bind(
                        queue.queue.as_str().into(),
                        self.exchange.as_str().into(),
                        routing_key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_queue_per_organization_bound_to_its_channels() {
        let yaml = "channels:\n  mychannel: [MyOrg1MSP, MyOrg2MSP]\n  yourchannel: [MyOrg1MSP]\n";
        let Ok(config) = ChannelConfig::from_yaml(yaml, "test") else { panic!("config") };
        let topology = Topology::new("orchestrator", &config, Some(""));
        assert_eq!(topology.exchange, "orchestrator");
        assert_eq!(
            topology.queues,
            vec![
                QueueBindings { queue: "MyOrg1MSP".into(), channels: vec!["mychannel".into(), "yourchannel".into()] },
                QueueBindings { queue: "MyOrg2MSP".into(), channels: vec!["mychannel".into()] },
            ]
        );
        assert!(Topology::new("x", &config, None).queues.is_empty());
        assert_eq!(Topology::new("x", &config, Some("t1.")).queues[1].queue, "t1.MyOrg2MSP");
    }
}
