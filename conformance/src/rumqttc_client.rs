//! rumqttc (pure Rust) as a [`Client`], through its 3.1.1 and 5.0 async APIs.
//!
//! The event loop runs in a task that reports to an [`Inbox`] and stops at the first error:
//! the cases decide when to reconnect, never rumqttc's automatic reconnection.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use std::sync::Arc;

use crate::client::{
    BoxFuture, Client, ConnAckInfo, ConnectOptions, Message, Net, Props, SubAckInfo, SubOptions,
    TopicAliases, Version,
};
use crate::inbox::{Event, Inbox};
use crate::pki::Pki;

const PATIENCE: Duration = Duration::from_secs(5);

/// Where and how rumqttc connects: its host string (a URL for WebSocket) and transport.
struct Target {
    host: String,
    port: u16,
    transport: rumqttc::Transport,
}

impl Target {
    fn new(net: Net, addr: SocketAddr, client_certificate: bool) -> anyhow::Result<Target> {
        let tls = || -> anyhow::Result<rumqttc::TlsConfiguration> {
            let config = Pki::shared().client_config(client_certificate)?;
            Ok(rumqttc::TlsConfiguration::Rustls(Arc::new(config)))
        };
        let (host, transport) = match net {
            Net::Tcp => (addr.ip().to_string(), rumqttc::Transport::tcp()),
            Net::Tls => (
                addr.ip().to_string(),
                rumqttc::Transport::tls_with_config(tls()?),
            ),
            Net::Ws => (format!("ws://{addr}/mqtt"), rumqttc::Transport::ws()),
            Net::Wss => (
                format!("wss://{addr}/mqtt"),
                rumqttc::Transport::wss_with_config(tls()?),
            ),
        };
        Ok(Target {
            host,
            port: addr.port(),
            transport,
        })
    }
}
/// rumqttc's default incoming limit is 10 KiB; the cases send up to 1 MiB.
const PACKET_BYTES_MAX: usize = 2 * 1024 * 1024;

pub async fn connect(
    version: Version,
    net: Net,
    addr: SocketAddr,
    options: ConnectOptions,
) -> anyhow::Result<Box<dyn Client>> {
    let (sender, events) = mpsc::unbounded_channel();
    let mut inbox = Inbox::new(events);
    let target = Target::new(net, addr, options.client_certificate)?;
    let (client, task) = match version {
        Version::V311 => {
            let (client, task) = v4::start(&target, &options, sender);
            (Api::V4(client), task)
        }
        Version::V5 => {
            let (client, task) = v5::start(&target, &options, sender);
            (Api::V5(client), task)
        }
    };
    let connack = match inbox
        .wait_for(PATIENCE, |e| match e {
            Event::ConnAck(info) => Some(info.clone()),
            _ => None,
        })
        .await
    {
        Ok(connack) => connack,
        Err(error) => {
            task.abort();
            return Err(error).context("rumqttc connect");
        }
    };
    Ok(Box::new(Rumqttc {
        client,
        inbox,
        connack,
        task,
    }))
}

enum Api {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

struct Rumqttc {
    client: Api,
    inbox: Inbox,
    connack: ConnAckInfo,
    task: AbortHandle,
}

impl Drop for Rumqttc {
    fn drop(&mut self) {
        // Dropping the event loop closes the socket (with FIN) without DISCONNECT.
        self.task.abort();
    }
}

fn qos(q: u8) -> rumqttc::QoS {
    rumqttc::mqttbytes::qos(q).expect("QoS 0, 1 or 2")
}

fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    rumqttc::v5::mqttbytes::qos(q).expect("QoS 0, 1 or 2")
}

impl Rumqttc {
    async fn wait_ack(&mut self, q: u8) -> anyhow::Result<()> {
        match q {
            1 => {
                self.inbox
                    .wait_for(PATIENCE, |e| matches!(e, Event::PubAck).then_some(()))
                    .await
            }
            2 => {
                self.inbox
                    .wait_for(PATIENCE, |e| matches!(e, Event::PubComp).then_some(()))
                    .await
            }
            _ => Ok(()),
        }
    }
}

impl Client for Rumqttc {
    fn connack(&self) -> &ConnAckInfo {
        &self.connack
    }

    fn try_subscribe<'a>(
        &'a mut self,
        filter: &'a str,
        options: SubOptions,
    ) -> BoxFuture<'a, anyhow::Result<SubAckInfo>> {
        Box::pin(async move {
            match &self.client {
                Api::V4(c) => c.subscribe(filter, qos(options.qos)).await?,
                Api::V5(c) => {
                    let (filter, properties) = v5::subscription(filter, options);
                    c.subscribe_many_with_properties([filter], properties)
                        .await?
                }
            }
            self.inbox
                .wait_for(PATIENCE, |e| match e {
                    Event::SubAck(ack) => Some(ack.clone()),
                    _ => None,
                })
                .await
        })
    }

    fn unsubscribe<'a>(&'a mut self, filter: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            match &self.client {
                Api::V4(c) => c.unsubscribe(filter).await?,
                Api::V5(c) => c.unsubscribe(filter).await?,
            }
            self.inbox
                .wait_for(PATIENCE, |e| matches!(e, Event::UnsubAck).then_some(()))
                .await
        })
    }

    fn publish(&mut self, message: Message) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let q = message.qos;
            match &self.client {
                Api::V4(c) => {
                    c.publish(message.topic, qos(q), message.retain, message.payload)
                        .await?
                }
                Api::V5(c) => {
                    let props = v5::publish_properties(&message.props);
                    c.publish_with_properties(
                        message.topic,
                        qos5(q),
                        message.retain,
                        message.payload,
                        props,
                    )
                    .await?
                }
            }
            self.wait_ack(q).await
        })
    }

    fn recv(&mut self, within: Duration) -> BoxFuture<'_, Option<Message>> {
        Box::pin(self.inbox.recv(within))
    }

    fn closed_by_broker(&mut self, within: Duration) -> BoxFuture<'_, bool> {
        Box::pin(self.inbox.closed_by_broker(within))
    }

    fn disconnect_with_session_expiry(
        self: Box<Self>,
        _secs: u32,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async { anyhow::bail!("rumqttc 0.25 cannot send DISCONNECT properties") })
    }

    fn disconnect(mut self: Box<Self>) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            match &self.client {
                Api::V4(c) => c.disconnect().await?,
                Api::V5(c) => c.disconnect().await?,
            }
            // Let the event loop write the DISCONNECT before the task is dropped.
            let _ = self
                .inbox
                .wait_for(Duration::from_millis(500), |e| {
                    matches!(e, Event::Closed(_)).then_some(())
                })
                .await;
            Ok(())
        })
    }
}

mod v4 {
    use super::*;
    use rumqttc::{Event as RumqttcEvent, Incoming, LastWill, MqttOptions, SubscribeReasonCode};

    pub fn start(
        target: &Target,
        options: &ConnectOptions,
        events: mpsc::UnboundedSender<Event>,
    ) -> (rumqttc::AsyncClient, AbortHandle) {
        let mut opts = MqttOptions::new(&options.client_id, &target.host, target.port);
        opts.set_transport(target.transport.clone());
        opts.set_keep_alive(options.keep_alive)
            .set_clean_session(options.clean)
            .set_max_packet_size(PACKET_BYTES_MAX, PACKET_BYTES_MAX);
        if let Some(will) = &options.will {
            opts.set_last_will(LastWill::new(
                &will.topic,
                will.payload.clone(),
                qos(will.qos),
                will.retain,
            ));
        }
        if let Some((user, password)) = &options.credentials {
            opts.set_credentials(user, password);
        }
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 64);
        let task = tokio::spawn(async move {
            loop {
                let event = match eventloop.poll().await {
                    Ok(RumqttcEvent::Incoming(incoming)) => match incoming {
                        Incoming::ConnAck(c) => Event::ConnAck(ConnAckInfo {
                            session_present: c.session_present,
                            ..ConnAckInfo::default()
                        }),
                        Incoming::Publish(p) => Event::Publish(Message {
                            topic: p.topic,
                            payload: p.payload.to_vec(),
                            qos: p.qos as u8,
                            retain: p.retain,
                            props: Props::default(),
                        }),
                        Incoming::PubAck(_) => Event::PubAck,
                        Incoming::PubComp(_) => Event::PubComp,
                        Incoming::SubAck(s) => Event::SubAck(SubAckInfo {
                            granted: s
                                .return_codes
                                .iter()
                                .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
                            reason_string: None,
                        }),
                        Incoming::UnsubAck(_) => Event::UnsubAck,
                        _ => continue,
                    },
                    Ok(RumqttcEvent::Outgoing(_)) => continue,
                    Err(error) => {
                        let _ = events.send(Event::Closed(error.to_string()));
                        return;
                    }
                };
                if events.send(event).is_err() {
                    return;
                }
            }
        });
        (client, task.abort_handle())
    }
}

mod v5 {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::{
        ConnAckProperties, Filter, LastWill, LastWillProperties, Packet, PublishProperties,
        RetainForwardRule, SubscribeProperties, SubscribeReasonCode,
    };
    use rumqttc::v5::{Event as RumqttcEvent, MqttOptions};

    pub fn publish_properties(props: &Props) -> PublishProperties {
        PublishProperties {
            user_properties: props.user.clone(),
            response_topic: props.response_topic.clone(),
            correlation_data: props.correlation_data.clone().map(Bytes::from),
            content_type: props.content_type.clone(),
            message_expiry_interval: props.message_expiry,
            topic_alias: props.topic_alias,
            ..PublishProperties::default()
        }
    }

    fn connack_info(session_present: bool, p: Option<ConnAckProperties>) -> ConnAckInfo {
        let Some(p) = p else {
            return ConnAckInfo {
                session_present,
                ..ConnAckInfo::default()
            };
        };
        ConnAckInfo {
            session_present,
            assigned_client_id: p.assigned_client_identifier,
            server_keep_alive: p.server_keep_alive,
            response_information: p.response_information,
            receive_maximum: p.receive_max,
            maximum_packet_size: p.max_packet_size,
            topic_alias_maximum: p.topic_alias_max,
            wildcard_available: p.wildcard_subscription_available.map(|v| v == 1),
            subscription_ids_available: p.subscription_identifiers_available.map(|v| v == 1),
            shared_available: p.shared_subscription_available.map(|v| v == 1),
        }
    }

    pub fn subscription(filter: &str, options: SubOptions) -> (Filter, SubscribeProperties) {
        let filter = Filter {
            path: filter.to_string(),
            qos: qos5(options.qos),
            nolocal: options.no_local,
            preserve_retain: options.retain_as_published,
            retain_forward_rule: match options.retain_handling {
                0 => RetainForwardRule::OnEverySubscribe,
                1 => RetainForwardRule::OnNewSubscribe,
                _ => RetainForwardRule::Never,
            },
        };
        let properties = SubscribeProperties {
            id: options.id.map(|id| id as usize),
            user_properties: Vec::new(),
        };
        (filter, properties)
    }

    fn props_of(p: Option<PublishProperties>) -> Props {
        let Some(p) = p else { return Props::default() };
        Props {
            user: p.user_properties,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data.map(|b| b.to_vec()),
            content_type: p.content_type,
            message_expiry: p.message_expiry_interval,
            topic_alias: p.topic_alias,
            subscription_ids: p
                .subscription_identifiers
                .into_iter()
                .map(|id| id as u32)
                .collect(),
        }
    }

    pub fn start(
        target: &Target,
        options: &ConnectOptions,
        events: mpsc::UnboundedSender<Event>,
    ) -> (rumqttc::v5::AsyncClient, AbortHandle) {
        let mut opts = MqttOptions::new(&options.client_id, &target.host, target.port);
        opts.set_transport(target.transport.clone());
        opts.set_keep_alive(options.keep_alive)
            .set_clean_start(options.clean)
            .set_max_packet_size(Some(
                options.packet_bytes_max.unwrap_or(PACKET_BYTES_MAX as u32),
            ))
            .set_session_expiry_interval(options.session_expiry)
            .set_receive_maximum(options.receive_maximum)
            .set_topic_alias_max(options.topic_alias_max)
            .set_request_response_info(options.request_response_information.then_some(1))
            .set_request_problem_info((!options.request_problem_information).then_some(0));
        if let Some(will) = &options.will {
            let properties = options.will_delay.map(|delay| LastWillProperties {
                delay_interval: Some(delay),
                payload_format_indicator: None,
                message_expiry_interval: None,
                content_type: None,
                response_topic: None,
                correlation_data: None,
                user_properties: Vec::new(),
            });
            opts.set_last_will(LastWill::new(
                &will.topic,
                will.payload.clone(),
                qos5(will.qos),
                will.retain,
                properties,
            ));
        }
        if let Some((user, password)) = &options.credentials {
            opts.set_credentials(user, password);
        }
        let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(opts, 64);
        let task = tokio::spawn(async move {
            let mut aliases = TopicAliases::default();
            loop {
                let event = match eventloop.poll().await {
                    Ok(RumqttcEvent::Incoming(incoming)) => match incoming {
                        Packet::ConnAck(c) => {
                            Event::ConnAck(connack_info(c.session_present, c.properties))
                        }
                        Packet::Publish(p) => {
                            let props = props_of(p.properties);
                            let topic = String::from_utf8_lossy(&p.topic);
                            match aliases.resolve(&topic, props.topic_alias) {
                                Ok(topic) => Event::Publish(Message {
                                    topic,
                                    payload: p.payload.to_vec(),
                                    qos: p.qos as u8,
                                    retain: p.retain,
                                    props,
                                }),
                                Err(error) => Event::Closed(error.to_string()),
                            }
                        }
                        Packet::PubAck(_) => Event::PubAck,
                        Packet::PubComp(_) => Event::PubComp,
                        Packet::SubAck(s) => Event::SubAck(SubAckInfo {
                            granted: s
                                .return_codes
                                .iter()
                                .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
                            reason_string: s.properties.and_then(|p| p.reason_string),
                        }),
                        Packet::UnsubAck(_) => Event::UnsubAck,
                        Packet::Disconnect(d) => {
                            Event::Closed(format!("DISCONNECT {:?}", d.reason_code))
                        }
                        _ => continue,
                    },
                    Ok(RumqttcEvent::Outgoing(_)) => continue,
                    Err(error) => {
                        let _ = events.send(Event::Closed(error.to_string()));
                        return;
                    }
                };
                if events.send(event).is_err() {
                    return;
                }
            }
        });
        (client, task.abort_handle())
    }
}
