//! paho-mqtt (the Eclipse Paho C library underneath) as a [`Client`], 3.1.1 and 5.0.
//!
//! Paho's tokens complete when the broker has answered, so publish and subscribe need no
//! bookkeeping; incoming messages and connection loss arrive on its stream, which a task
//! forwards to an [`Inbox`].

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use paho_mqtt as paho;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::client::{
    BoxFuture, Client, ConnAckInfo, ConnectOptions, Message, Net, Props, SubAckInfo, SubOptions,
    TopicAliases, Version,
};
use crate::inbox::{Event, Inbox};
use crate::pki::Pki;

const PATIENCE: Duration = Duration::from_secs(5);

struct Paho {
    client: paho::AsyncClient,
    v5: bool,
    inbox: Inbox,
    connack: ConnAckInfo,
    task: AbortHandle,
}

/// A handle to every Paho client the process made, kept until it exits (see [`keep`]).
static KEPT: std::sync::Mutex<Vec<paho::AsyncClient>> = std::sync::Mutex::new(Vec::new());

impl Drop for Paho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps a handle to `client` until the process exits, so that Paho never destroys it.
///
/// Paho's C library destroys a client when its last handle goes, and the token of a request
/// holds a handle too, released by the request's callback on Paho's receive thread. If that
/// one is the last, the client is destroyed on that thread while it holds the library's
/// global lock, and every Paho call deadlocks (gdb: MQTTAsync_destroy from
/// TokenInner::on_failure5 on MQTTAsync_rcv, every other thread waiting for the lock; it hung
/// the matrix until its watchdog). Keeping a handle for a while after a drop was not enough: a
/// failure callback can come later. The cases disconnect their clients or sever them at the
/// proxy; none relies on destruction to close a connection, and the matrix makes a few
/// hundred clients at most.
fn keep(client: &paho::AsyncClient) {
    KEPT.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(client.clone());
}

fn properties(props: &Props) -> anyhow::Result<paho::Properties> {
    let mut p = paho::Properties::new();
    for (k, v) in &props.user {
        p.push_string_pair(paho::PropertyCode::UserProperty, k, v)?;
    }
    if let Some(t) = &props.response_topic {
        p.push_string(paho::PropertyCode::ResponseTopic, t)?;
    }
    if let Some(c) = &props.correlation_data {
        p.push_binary(paho::PropertyCode::CorrelationData, c.clone())?;
    }
    if let Some(c) = &props.content_type {
        p.push_string(paho::PropertyCode::ContentType, c)?;
    }
    if let Some(e) = props.message_expiry {
        p.push_u32(paho::PropertyCode::MessageExpiryInterval, e)?;
    }
    if let Some(a) = props.topic_alias {
        p.push_u16(paho::PropertyCode::TopicAlias, a)?;
    }
    Ok(p)
}

fn int<T: TryFrom<i32>>(p: &paho::Properties, code: paho::PropertyCode) -> Option<T> {
    p.get_int(code).and_then(|v| T::try_from(v).ok())
}

fn props_of(p: &paho::Properties) -> Props {
    Props {
        user: p.user_iter().collect(),
        response_topic: p.get_string(paho::PropertyCode::ResponseTopic),
        correlation_data: p.get_binary(paho::PropertyCode::CorrelationData),
        content_type: p.get_string(paho::PropertyCode::ContentType),
        message_expiry: int(p, paho::PropertyCode::MessageExpiryInterval),
        topic_alias: int(p, paho::PropertyCode::TopicAlias),
        subscription_ids: p
            .iter(paho::PropertyCode::SubscriptionIdentifier)
            .filter_map(|id| id.get_int().and_then(|v| u32::try_from(v).ok()))
            .collect(),
    }
}

fn to_paho(message: &Message, v5: bool) -> anyhow::Result<paho::Message> {
    let mut builder = paho::MessageBuilder::new()
        .topic(&message.topic)
        .payload(message.payload.clone())
        .qos(i32::from(message.qos))
        .retained(message.retain);
    if v5 {
        builder = builder.properties(properties(&message.props)?);
    }
    Ok(builder.finalize())
}

/// Paho's builder holds raw pointers, so it is built and finished outside any `await`.
fn connect_options(
    options: &ConnectOptions,
    v5: bool,
    net: Net,
) -> anyhow::Result<paho::ConnectOptions> {
    let mut connect = if v5 {
        paho::ConnectOptionsBuilder::new_v5()
    } else {
        paho::ConnectOptionsBuilder::new_v3()
    };
    if net.is_tls() {
        let pki = Pki::shared();
        let mut ssl = paho::SslOptionsBuilder::new();
        ssl.trust_store(&pki.ca_file)?;
        if options.client_certificate {
            ssl.key_store(&pki.client_cert_file)?
                .private_key(&pki.client_key_file)?;
        }
        connect.ssl_options(ssl.finalize());
    }
    connect
        .keep_alive_interval(options.keep_alive)
        .connect_timeout(PATIENCE);
    if v5 {
        use paho::PropertyCode as Code;
        connect.clean_start(options.clean);
        let mut p = paho::Properties::new();
        if let Some(expiry) = options.session_expiry {
            p.push_u32(Code::SessionExpiryInterval, expiry)?;
        }
        if let Some(max) = options.receive_maximum {
            p.push_u16(Code::ReceiveMaximum, max)?;
        }
        if let Some(max) = options.packet_bytes_max {
            p.push_u32(Code::MaximumPacketSize, max)?;
        }
        if let Some(max) = options.topic_alias_max {
            p.push_u16(Code::TopicAliasMaximum, max)?;
        }
        if options.request_response_information {
            p.push_byte(Code::RequestResponseInformation, 1)?;
        }
        if !options.request_problem_information {
            p.push_byte(Code::RequestProblemInformation, 0)?;
        }
        connect.properties(p);
    } else {
        connect.clean_session(options.clean);
    }
    if let Some(will) = &options.will {
        let mut message = to_paho(will, v5)?;
        if let (true, Some(delay)) = (v5, options.will_delay) {
            // Paho sends the will message's properties as the will properties.
            let mut properties = message.properties().clone();
            properties.push_u32(paho::PropertyCode::WillDelayInterval, delay)?;
            message = paho::MessageBuilder::new()
                .topic(message.topic())
                .payload(message.payload())
                .qos(message.qos())
                .retained(message.retained())
                .properties(properties)
                .finalize();
        }
        connect.will_message(message);
    }
    if let Some((user, password)) = &options.credentials {
        connect.user_name(user).password(password.as_bytes());
    }
    Ok(connect.finalize())
}

pub async fn connect(
    version: Version,
    net: Net,
    addr: SocketAddr,
    options: ConnectOptions,
) -> anyhow::Result<Box<dyn Client>> {
    let uri = match net {
        Net::Tcp => format!("tcp://{addr}"),
        Net::Tls => format!("ssl://{addr}"),
        Net::Ws => format!("ws://{addr}/mqtt"),
        Net::Wss => format!("wss://{addr}/mqtt"),
    };
    let v5 = version == Version::V5;
    let mqtt_version = if v5 {
        paho::MQTT_VERSION_5
    } else {
        paho::MQTT_VERSION_3_1_1
    };
    let mut client = paho::CreateOptionsBuilder::new()
        .server_uri(uri)
        .client_id(&options.client_id)
        .mqtt_version(mqtt_version)
        .persistence(None)
        .create_client()?;
    // From the start: a CONNECT that fails (a refused login, a moved broker, a case timing
    // out) drops this handle before any `Paho` exists.
    keep(&client);
    let stream = client.get_stream(1024);
    let connect = connect_options(&options, v5, net)?;
    let response = client.connect(connect).await.context("paho connect")?;
    let connack = {
        use paho::PropertyCode as Code;
        let p = response.properties();
        let flag = |code| int::<u8>(p, code).map(|v| v == 1);
        ConnAckInfo {
            session_present: response
                .connect_response()
                .is_some_and(|r| r.session_present),
            assigned_client_id: p.get_string(Code::AssignedClientIdentifer),
            server_keep_alive: int(p, Code::ServerKeepAlive),
            response_information: p.get_string(Code::ResponseInformation),
            receive_maximum: int(p, Code::ReceiveMaximum),
            maximum_packet_size: p.get_int(Code::MaximumPacketSize).map(|v| v as u32),
            topic_alias_maximum: int(p, Code::TopicAliasMaximum),
            wildcard_available: flag(Code::WildcardSubscriptionAvailable),
            subscription_ids_available: flag(Code::SubscriptionIdentifiersAvailable),
            shared_available: flag(Code::SharedSubscriptionAvailable),
        }
    };

    let (sender, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut aliases = TopicAliases::default();
        while let Ok(item) = stream.recv().await {
            let event = match item {
                Some(m) => {
                    let props = props_of(m.properties());
                    let topic = match aliases.resolve(m.topic(), props.topic_alias) {
                        Ok(topic) => topic,
                        Err(error) => {
                            let _ = sender.send(Event::Closed(error.to_string()));
                            return;
                        }
                    };
                    Event::Publish(Message {
                        topic,
                        payload: m.payload().to_vec(),
                        qos: m.qos() as u8,
                        retain: m.retained(),
                        props,
                    })
                }
                None => Event::Closed("connection lost".into()),
            };
            if sender.send(event).is_err() {
                return;
            }
        }
    });
    Ok(Box::new(Paho {
        client,
        v5,
        inbox: Inbox::new(events),
        connack,
        task: task.abort_handle(),
    }))
}

impl Client for Paho {
    fn connack(&self) -> &ConnAckInfo {
        &self.connack
    }

    fn try_subscribe<'a>(
        &'a mut self,
        filter: &'a str,
        options: SubOptions,
    ) -> BoxFuture<'a, anyhow::Result<SubAckInfo>> {
        Box::pin(async move {
            let qos = i32::from(options.qos);
            let token = if self.v5 {
                let mut properties = paho::Properties::new();
                if let Some(id) = options.id {
                    properties.push_int(paho::PropertyCode::SubscriptionIdentifier, id as i32)?;
                }
                let retain_handling = match options.retain_handling {
                    0 => paho::RetainHandling::SendRetainedOnSubscribe,
                    1 => paho::RetainHandling::SendRetainedOnNew,
                    _ => paho::RetainHandling::DontSendRetained,
                };
                let sub_options = paho::SubscribeOptionsBuilder::new()
                    .no_local(options.no_local)
                    .retain_as_published(options.retain_as_published)
                    .retain_handling(retain_handling)
                    .finalize();
                self.client
                    .subscribe_with_options(filter, qos, sub_options, properties)
            } else {
                self.client.subscribe(filter, qos)
            };
            match token.await {
                Ok(response) => Ok(SubAckInfo {
                    granted: response.subscribe_response().is_none_or(|code| code < 0x80),
                    reason_string: response
                        .properties()
                        .get_string(paho::PropertyCode::ReasonString),
                }),
                // Paho reports a refusing SUBACK as a failed token, with its properties.
                Err(paho::Error::ReasonCode(code, properties)) if (code as i32) >= 0x80 => {
                    Ok(SubAckInfo {
                        granted: false,
                        reason_string: properties.get_string(paho::PropertyCode::ReasonString),
                    })
                }
                // Paho C reports a 3.1.1 SUBACK failure code (0x80) as a generic failure.
                Err(paho::Error::Failure) if !self.v5 => Ok(SubAckInfo {
                    granted: false,
                    reason_string: None,
                }),
                Err(error) => Err(error).context("paho subscribe"),
            }
        })
    }

    fn unsubscribe<'a>(&'a mut self, filter: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            self.client
                .unsubscribe(filter)
                .await
                .context("paho unsubscribe")?;
            Ok(())
        })
    }

    fn publish(&mut self, message: Message) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let message = to_paho(&message, self.v5)?;
            self.client.publish(message).await.context("paho publish")?;
            Ok(())
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
        secs: u32,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let mut properties = paho::Properties::new();
            properties.push_u32(paho::PropertyCode::SessionExpiryInterval, secs)?;
            let options = paho::DisconnectOptionsBuilder::new()
                .properties(properties)
                .finalize();
            self.client
                .disconnect(options)
                .await
                .context("paho disconnect")?;
            Ok(())
        })
    }

    fn disconnect(self: Box<Self>) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            self.client
                .disconnect(None)
                .await
                .context("paho disconnect")?;
            Ok(())
        })
    }
}
