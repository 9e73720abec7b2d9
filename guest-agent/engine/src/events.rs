//! The engine's event stream (`GET /events`).
//!
//! Every state change the Docker API reports as an event (container create,
//! start, die, destroy, ...; image load, pull, tag, delete) is published here
//! once. Subscribers get a bounded history replay (for `since`) plus a live
//! broadcast; slow subscribers lose events rather than stall the engine.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::broadcast;

/// How many past events are kept for `since` queries.
const HISTORY: usize = 1024;

/// One event, in the Docker API's `EventMessage` shape.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `container`, `image`, `network`, `volume`.
    #[serde(rename = "Type")]
    pub kind: &'static str,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    #[serde(rename = "scope")]
    pub scope: &'static str,
    #[serde(rename = "time")]
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
    // Legacy fields the docker CLI still reads for formatting.
    #[serde(rename = "status", skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(rename = "id", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "from", skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// The object an event is about.
#[derive(Debug, Clone, Serialize)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

/// Publishes events and hands out subscriptions.
pub struct EventBus {
    sender: broadcast::Sender<Event>,
    history: Mutex<VecDeque<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(256);
        Self {
            sender,
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
        }
    }

    /// Publishes an event about `id` of type `kind` (`container`, `image`, ...).
    pub fn publish(
        &self,
        kind: &'static str,
        action: &str,
        id: &str,
        attributes: BTreeMap<String, String>,
    ) {
        let now = chrono::Utc::now();
        let nanos = now.timestamp_nanos_opt().unwrap_or_default();
        let legacy = kind == "container" || kind == "image";
        let event = Event {
            kind,
            action: action.to_owned(),
            status: legacy.then(|| action.to_owned()),
            id: legacy.then(|| id.to_owned()),
            from: if kind == "container" {
                attributes.get("image").cloned()
            } else {
                None
            },
            actor: Actor {
                id: id.to_owned(),
                attributes,
            },
            scope: "local",
            time: now.timestamp(),
            time_nano: nanos,
        };
        let mut history = self
            .history
            .lock()
            .expect("invariant: event history lock is never poisoned");
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        // Subscribe while holding the history lock so no event is lost or doubled.
        let _ = self.sender.send(event);
    }

    /// Past events (oldest first) and a receiver for everything after them.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let history = self
            .history
            .lock()
            .expect("invariant: event history lock is never poisoned");
        (history.iter().cloned().collect(), self.sender.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriber_sees_history_then_live_events() {
        let bus = EventBus::new();
        bus.publish("container", "create", "abc", BTreeMap::new());
        let (past, mut live) = bus.subscribe();
        bus.publish("container", "start", "abc", BTreeMap::new());
        assert_eq!(past.len(), 1);
        assert_eq!(past[0].action, "create");
        assert_eq!(live.try_recv().unwrap().action, "start");
    }
}
