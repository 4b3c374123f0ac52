//! What a third-party client's background task reports, and waiting on it.
//!
//! rumqttc and paho-mqtt deliver incoming packets from a background event loop. Each adapter
//! turns them into [`Event`]s on a channel; [`Inbox`] waits for the one an operation needs and
//! keeps the messages that arrive meanwhile for the next `recv`.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::bail;
use tokio::sync::mpsc;

use crate::client::{ConnAckInfo, Message, SubAckInfo};

#[derive(Debug)]
pub enum Event {
    ConnAck(ConnAckInfo),
    Publish(Message),
    PubAck,
    PubComp,
    SubAck(SubAckInfo),
    UnsubAck,
    /// The connection ended (or was refused); the text says why.
    Closed(String),
}

pub struct Inbox {
    events: mpsc::UnboundedReceiver<Event>,
    messages: VecDeque<Message>,
    closed: Option<String>,
}

impl Inbox {
    pub fn new(events: mpsc::UnboundedReceiver<Event>) -> Inbox {
        Inbox {
            events,
            messages: VecDeque::new(),
            closed: None,
        }
    }

    async fn next_event(&mut self, within: Duration) -> Option<Event> {
        if self.closed.is_some() {
            return None;
        }
        match tokio::time::timeout(within, self.events.recv()).await {
            Ok(Some(Event::Closed(why))) => {
                self.closed = Some(why.clone());
                Some(Event::Closed(why))
            }
            Ok(Some(event)) => Some(event),
            Ok(None) => {
                self.closed = Some("event loop ended".into());
                None
            }
            Err(_) => None,
        }
    }

    /// Waits up to `within` for an event `pick` accepts; messages meanwhile are kept.
    pub async fn wait_for<T>(
        &mut self,
        within: Duration,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(event) = self.next_event(left).await else {
                match &self.closed {
                    Some(why) => bail!("connection closed: {why}"),
                    None => bail!("timed out"),
                }
            };
            if let Some(found) = pick(&event) {
                return Ok(found);
            }
            match event {
                Event::Publish(message) => self.messages.push_back(message),
                Event::Closed(why) => bail!("connection closed: {why}"),
                _ => {}
            }
        }
    }

    pub async fn recv(&mut self, within: Duration) -> Option<Message> {
        if let Some(message) = self.messages.pop_front() {
            return Some(message);
        }
        self.wait_for(within, |e| match e {
            Event::Publish(m) => Some(m.clone()),
            _ => None,
        })
        .await
        .ok()
    }

    pub async fn closed_by_broker(&mut self, within: Duration) -> bool {
        if self.closed.is_some() {
            return true;
        }
        self.wait_for(within, |e| matches!(e, Event::Closed(_)).then_some(()))
            .await
            .is_ok()
            || self.closed.is_some()
    }
}
