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

use crate::client::{BoxFuture, Client, ConnectOptions, Message, Props, Version};
use crate::inbox::{Event, Inbox};

const PATIENCE: Duration = Duration::from_secs(5);

struct Paho {
    client: paho::AsyncClient,
    v5: bool,
    inbox: Inbox,
    session_present: bool,
    task: AbortHandle,
}

impl Drop for Paho {
    fn drop(&mut self) {
        self.task.abort();
    }
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
    Ok(p)
}

fn props_of(p: &paho::Properties) -> Props {
    Props {
        user: p.user_iter().collect(),
        response_topic: p.get_string(paho::PropertyCode::ResponseTopic),
        correlation_data: p.get_binary(paho::PropertyCode::CorrelationData),
        content_type: p.get_string(paho::PropertyCode::ContentType),
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
fn connect_options(options: &ConnectOptions, v5: bool) -> anyhow::Result<paho::ConnectOptions> {
    let mut connect = if v5 {
        paho::ConnectOptionsBuilder::new_v5()
    } else {
        paho::ConnectOptionsBuilder::new_v3()
    };
    connect
        .keep_alive_interval(options.keep_alive)
        .connect_timeout(PATIENCE);
    if v5 {
        connect.clean_start(options.clean);
        if let Some(expiry) = options.session_expiry {
            let mut p = paho::Properties::new();
            p.push_u32(paho::PropertyCode::SessionExpiryInterval, expiry)?;
            connect.properties(p);
        }
    } else {
        connect.clean_session(options.clean);
    }
    if let Some(will) = &options.will {
        connect.will_message(to_paho(will, v5)?);
    }
    if let Some((user, password)) = &options.credentials {
        connect.user_name(user).password(password.as_bytes());
    }
    Ok(connect.finalize())
}

pub async fn connect(
    version: Version,
    addr: SocketAddr,
    options: ConnectOptions,
) -> anyhow::Result<Box<dyn Client>> {
    let v5 = version == Version::V5;
    let mqtt_version = if v5 {
        paho::MQTT_VERSION_5
    } else {
        paho::MQTT_VERSION_3_1_1
    };
    let mut client = paho::CreateOptionsBuilder::new()
        .server_uri(format!("tcp://{addr}"))
        .client_id(&options.client_id)
        .mqtt_version(mqtt_version)
        .persistence(None)
        .create_client()?;
    let stream = client.get_stream(1024);
    let connect = connect_options(&options, v5)?;
    let response = client.connect(connect).await.context("paho connect")?;
    let session_present = response
        .connect_response()
        .is_some_and(|r| r.session_present);

    let (sender, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok(item) = stream.recv().await {
            let event = match item {
                Some(m) => Event::Publish(Message {
                    topic: m.topic().to_string(),
                    payload: m.payload().to_vec(),
                    qos: m.qos() as u8,
                    retain: m.retained(),
                    props: props_of(m.properties()),
                }),
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
        session_present,
        task: task.abort_handle(),
    }))
}

impl Client for Paho {
    fn session_present(&self) -> bool {
        self.session_present
    }

    fn subscribe<'a>(&'a mut self, filter: &'a str, qos: u8) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let response = self
                .client
                .subscribe(filter, i32::from(qos))
                .await
                .context("paho subscribe")?;
            if let Some(code) = response.subscribe_response() {
                anyhow::ensure!(code < 0x80, "subscription refused: {code:#x}");
            }
            Ok(())
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
