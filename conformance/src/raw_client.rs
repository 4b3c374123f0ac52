//! The raw codec client as a [`Client`]: Tern's own encoder on the wire, every exchange done
//! by hand, which makes it the reference the third-party clients are compared with.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use tern::codec::*;
use tern::types::{PacketId, QoS};

use crate::client::{
    BoxFuture, Client, ConnAckInfo, ConnectOptions, Message, Props, SubAckInfo, SubOptions,
    TopicAliases, Version,
};
use crate::raw::{s, RawClient};

const PATIENCE: Duration = Duration::from_secs(5);

struct Raw {
    client: RawClient,
    connack: ConnAckInfo,
    keep_alive: Duration,
    next_id: u16,
    /// Messages that arrived while waiting for something else.
    inbox: VecDeque<Message>,
    /// Topic aliases the broker set on this connection.
    aliases: TopicAliases,
}

fn qos(q: u8) -> QoS {
    QoS::from_bits(q).expect("QoS 0, 1 or 2")
}

fn properties(props: &Props) -> Properties {
    let mut p = Properties::new();
    for (k, v) in &props.user {
        p.push(Property::UserProperty(s(k), s(v)));
    }
    if let Some(t) = &props.response_topic {
        p.push(Property::ResponseTopic(s(t)));
    }
    if let Some(c) = &props.correlation_data {
        p.push(Property::CorrelationData(Bytes::from(c.clone())));
    }
    if let Some(c) = &props.content_type {
        p.push(Property::ContentType(s(c)));
    }
    if let Some(e) = props.message_expiry {
        p.push(Property::MessageExpiryInterval(e));
    }
    if let Some(a) = props.topic_alias {
        p.push(Property::TopicAlias(a));
    }
    p
}

fn props_of(p: &Properties) -> Props {
    Props {
        user: p
            .user_properties()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        response_topic: p.response_topic().map(|t| t.to_string()),
        correlation_data: p.correlation_data().map(|c| c.to_vec()),
        content_type: p.content_type().map(|c| c.to_string()),
        message_expiry: p.message_expiry_interval(),
        topic_alias: p.topic_alias(),
        subscription_ids: p.subscription_identifiers().collect(),
    }
}

pub async fn connect(
    version: Version,
    addr: SocketAddr,
    options: ConnectOptions,
) -> anyhow::Result<Box<dyn Client>> {
    let protocol = match version {
        Version::V311 => ProtocolVersion::V3_1_1,
        Version::V5 => ProtocolVersion::V5,
    };
    let mut connect = crate::raw::connect_packet(protocol, &options.client_id, options.clean);
    connect.keep_alive = options.keep_alive.as_secs() as u16;
    if version == Version::V5 {
        let p = &mut connect.properties;
        if let Some(expiry) = options.session_expiry {
            p.push(Property::SessionExpiryInterval(expiry));
        }
        if let Some(max) = options.receive_maximum {
            p.push(Property::ReceiveMaximum(max));
        }
        if let Some(max) = options.packet_bytes_max {
            p.push(Property::MaximumPacketSize(max));
        }
        if let Some(max) = options.topic_alias_max {
            p.push(Property::TopicAliasMaximum(max));
        }
        if options.request_response_information {
            p.push(Property::RequestResponseInformation(true));
        }
        if !options.request_problem_information {
            p.push(Property::RequestProblemInformation(false));
        }
    }
    if let Some(will) = &options.will {
        let mut properties = Properties::new();
        if let (Version::V5, Some(delay)) = (version, options.will_delay) {
            properties.push(Property::WillDelayInterval(delay));
        }
        connect.will = Some(Will {
            topic: s(&will.topic),
            payload: Bytes::from(will.payload.clone()),
            qos: qos(will.qos),
            retain: will.retain,
            properties,
        });
    }
    if let Some((user, password)) = &options.credentials {
        connect.username = Some(s(user));
        connect.password = Some(Bytes::from(password.clone()));
    }
    let mut client = RawClient::try_open(addr, protocol).await?;
    client.try_send(Packet::Connect(Box::new(connect))).await?;
    match client.recv_within(PATIENCE).await {
        Ok(Some(Packet::ConnAck(ack))) if ack.reason_code == ReasonCode::Success => {
            let p = &ack.properties;
            let connack = ConnAckInfo {
                session_present: ack.session_present,
                assigned_client_id: p.assigned_client_identifier().map(|id| id.to_string()),
                server_keep_alive: p.server_keep_alive(),
                response_information: p.response_information().map(|r| r.to_string()),
                receive_maximum: p.receive_maximum(),
                maximum_packet_size: p.maximum_packet_size(),
                topic_alias_maximum: p.topic_alias_maximum(),
                wildcard_available: p.wildcard_subscription_available(),
                subscription_ids_available: p.subscription_identifier_available(),
                shared_available: p.shared_subscription_available(),
            };
            let keep_alive = match connack.server_keep_alive {
                Some(secs) => Duration::from_secs(u64::from(secs)),
                None => options.keep_alive,
            };
            Ok(Box::new(Raw {
                client,
                connack,
                keep_alive,
                next_id: 0,
                inbox: VecDeque::new(),
                aliases: TopicAliases::default(),
            }))
        }
        Ok(Some(Packet::ConnAck(ack))) => {
            let reference = ack
                .properties
                .server_reference()
                .map(|r| format!(", use {r}"))
                .unwrap_or_default();
            bail!(
                "connection refused: {}{reference}",
                ack.reason_code.description()
            )
        }
        other => bail!("expected CONNACK, got {other:?}"),
    }
}

impl Raw {
    fn packet_id(&mut self) -> PacketId {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        PacketId::new(self.next_id).expect("non-zero")
    }

    /// Reads the next packet, answering the broker's QoS flows on the way. Incoming messages
    /// are returned; everything else for the caller to judge.
    async fn next(&mut self, within: Duration) -> anyhow::Result<Packet> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            // Keep the connection alive while waiting, as a real client does.
            let wait = if self.keep_alive.is_zero() {
                left
            } else {
                left.min(self.keep_alive / 2)
            };
            match self.client.recv_within(wait).await {
                Err(()) if left.is_zero() || wait == left => bail!("timed out"),
                Err(()) => {
                    self.client.try_send(Packet::PingReq).await?;
                }
                Ok(None) => bail!("connection closed"),
                Ok(Some(Packet::Publish(p))) => {
                    match (p.qos, p.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => {
                            self.client.try_send(Packet::PubAck(Ack::new(id))).await?
                        }
                        (QoS::ExactlyOnce, Some(id)) => {
                            self.client.try_send(Packet::PubRec(Ack::new(id))).await?
                        }
                        _ => {}
                    }
                    return Ok(Packet::Publish(p));
                }
                Ok(Some(Packet::PubRel(ack))) => {
                    self.client
                        .try_send(Packet::PubComp(Ack::new(ack.packet_id)))
                        .await?
                }
                Ok(Some(Packet::PingResp)) => {}
                Ok(Some(other)) => return Ok(other),
            }
        }
    }

    /// Waits for a packet `pick` accepts, keeping messages that arrive meanwhile.
    async fn wait_for<T>(
        &mut self,
        mut pick: impl FnMut(&Packet) -> Option<T>,
    ) -> anyhow::Result<T> {
        loop {
            let packet = self.next(PATIENCE).await?;
            if let Some(found) = pick(&packet) {
                return Ok(found);
            }
            match packet {
                Packet::Publish(p) => {
                    let message = self.message_of(&p)?;
                    self.inbox.push_back(message);
                }
                other => bail!("unexpected {other:?}"),
            }
        }
    }

    fn send_disconnect(
        self: Box<Self>,
        properties: Properties,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let mut client = self.client;
            let disconnect = Disconnect {
                reason_code: ReasonCode::Success,
                properties,
            };
            client.try_send(Packet::Disconnect(disconnect)).await?;
            Ok(())
        })
    }

    /// The message a PUBLISH carries, its topic alias resolved.
    fn message_of(&mut self, p: &Publish) -> anyhow::Result<Message> {
        let props = props_of(&p.properties);
        let topic = self.aliases.resolve(p.topic(), props.topic_alias)?;
        Ok(Message {
            topic,
            payload: p.payload().to_vec(),
            qos: p.qos.bits(),
            retain: p.retain,
            props,
        })
    }
}

impl Client for Raw {
    fn connack(&self) -> &ConnAckInfo {
        &self.connack
    }

    fn try_subscribe<'a>(
        &'a mut self,
        filter: &'a str,
        options: SubOptions,
    ) -> BoxFuture<'a, anyhow::Result<SubAckInfo>> {
        Box::pin(async move {
            let id = self.packet_id();
            let mut sub_options = SubscriptionOptions::new(qos(options.qos));
            sub_options.no_local = options.no_local;
            sub_options.retain_as_published = options.retain_as_published;
            sub_options.retain_handling = match options.retain_handling {
                0 => RetainHandling::SendAtSubscribe,
                1 => RetainHandling::SendAtNewSubscribe,
                _ => RetainHandling::DoNotSend,
            };
            let filters = vec![(s(filter), sub_options)];
            let mut properties = Properties::new();
            if let Some(sub_id) = options.id {
                properties.push(Property::SubscriptionIdentifier(sub_id));
            }
            self.client
                .try_send(Packet::Subscribe(Subscribe {
                    packet_id: id,
                    properties,
                    filters,
                }))
                .await?;
            let ack = self
                .wait_for(|p| match p {
                    Packet::SubAck(ack) if ack.packet_id == id => Some(ack.clone()),
                    _ => None,
                })
                .await?;
            Ok(SubAckInfo {
                granted: ack.reason_codes.first().is_some_and(|c| !c.is_error()),
                reason_string: ack.properties.reason_string().map(|r| r.to_string()),
            })
        })
    }

    fn unsubscribe<'a>(&'a mut self, filter: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let id = self.packet_id();
            let packet = Packet::Unsubscribe(Unsubscribe {
                packet_id: id,
                properties: Properties::new(),
                filters: vec![s(filter)],
            });
            self.client.try_send(packet).await?;
            self.wait_for(|p| {
                matches!(p, Packet::UnsubAck(ack) if ack.packet_id == id).then_some(())
            })
            .await
        })
    }

    fn publish(&mut self, message: Message) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let q = qos(message.qos);
            let id = (q != QoS::AtMostOnce).then(|| self.packet_id());
            let packet = Packet::Publish(Publish {
                dup: false,
                qos: q,
                retain: message.retain,
                content: Content::new(s(&message.topic), Bytes::from(message.payload)),
                packet_id: id,
                properties: properties(&message.props),
            });
            self.client.try_send(packet).await?;
            match (q, id) {
                (QoS::AtLeastOnce, Some(id)) => {
                    self.wait_for(|p| {
                        matches!(p, Packet::PubAck(a) if a.packet_id == id).then_some(())
                    })
                    .await
                }
                (QoS::ExactlyOnce, Some(id)) => {
                    self.wait_for(|p| {
                        matches!(p, Packet::PubRec(a) if a.packet_id == id).then_some(())
                    })
                    .await?;
                    self.client.try_send(Packet::PubRel(Ack::new(id))).await?;
                    self.wait_for(|p| {
                        matches!(p, Packet::PubComp(a) if a.packet_id == id).then_some(())
                    })
                    .await
                }
                _ => Ok(()),
            }
        })
    }

    fn recv(&mut self, within: Duration) -> BoxFuture<'_, Option<Message>> {
        Box::pin(async move {
            if let Some(message) = self.inbox.pop_front() {
                return Some(message);
            }
            match self.next(within).await {
                Ok(Packet::Publish(p)) => self.message_of(&p).ok(),
                _ => None,
            }
        })
    }

    fn closed_by_broker(&mut self, within: Duration) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + within;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.client.recv_within(left).await {
                    Ok(None) => return true,
                    Ok(Some(_)) => continue,
                    Err(()) => return false,
                }
            }
        })
    }

    fn disconnect(self: Box<Self>) -> BoxFuture<'static, anyhow::Result<()>> {
        self.send_disconnect(Properties::new())
    }

    fn disconnect_with_session_expiry(
        self: Box<Self>,
        secs: u32,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        self.send_disconnect(vec![Property::SessionExpiryInterval(secs)].into())
    }
}
